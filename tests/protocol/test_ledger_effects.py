"""Cross-bucket effects: an entry that changes an account another bucket owns emits an
effect batch, and the target bucket applies it exactly once, keyed by (source bucket,
index) and numbered per (source, target), whatever the duplication or order of delivery.

Method: accounts are picked so that they land in chosen buckets of a 4-bucket ledger;
each bucket applies only its own log; batches are delivered by hand (duplicated, out
of order, misrouted) and then by the seeded simulation in testnet/ledger_sim.py."""

from __future__ import annotations

import hashlib
import random

import pytest

from swarm.protocol import cbor
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.errors import DecodeError, LocalProtocolError
from swarm.protocol.ledger import BucketLedger, InvalidOp, WrongBucket
from swarm.protocol.ledger_ops import (
    Credit,
    EffectAck,
    EffectBatch,
    Escrow,
    LedgerEntry,
    Release,
    Share,
    SlashOrder,
    Transfer,
    decode_body,
    encode_body,
)
from swarm.testnet.ledger_sim import LedgerReplica, LedgerSim

U = 1_000_000
N = 4
EVIDENCE = dag_cbor_cid(b"evidence")


def account_in(bucket: int, nth: int = 0) -> bytes:
    """The nth account (by a fixed search) owned by `bucket` among N buckets."""
    found = 0
    for i in range(10_000):
        acct = hashlib.sha256(b"acct%d" % i).digest()
        if bucket_of(acct, N) == bucket:
            if found == nth:
                return acct
            found += 1
    raise AssertionError("no account found")


A0, B0 = account_in(0), account_in(0, 1)
A1, B1 = account_in(1), account_in(1, 1)
A2, V2, W2 = account_in(2), account_in(2, 1), account_in(2, 2)
V3 = account_in(3)


def oid(n: int) -> bytes:
    return hashlib.sha256(b"op%d" % n).digest()


def make_genesis() -> genesis_mod.Genesis:
    return genesis_mod.new(
        name="effects", created_ms=0,
        validators=[{"account": v, "org": f"o{i}", "asn": i, "region": "r", "stake": 200 * U}
                    for i, v in enumerate((V2, V3, W2))],
        accounts=[{"account": a, "balance": 100 * U} for a in (A0, B0, A1, B1, A2)],
        params={"replicas": 1, "bucket_count": N},
    )


class World:
    def __init__(self) -> None:
        self.genesis = make_genesis()
        self.replica = LedgerReplica.from_genesis(self.genesis)
        self.index = dict.fromkeys(range(N), 0)

    def commit(self, bucket: int, body: object, ts_ms: int = 0):  # type: ignore[no-untyped-def]
        self.index[bucket] += 1
        entry = LedgerEntry(self.index[bucket], ts_ms, body)  # type: ignore[arg-type]
        return self.replica.buckets[bucket].apply(entry)


def test_bucket_of_is_stable_and_in_range() -> None:
    assert bucket_of(A0, N) == 0 and bucket_of(A1, N) == 1
    assert bucket_of(b"x", 1) == 0
    assert all(0 <= bucket_of(bytes([i]) * 32, 256) < 256 for i in range(256))
    assert bucket_of(b"\x00" * 32, 256) == int.from_bytes(
        hashlib.sha256(b"\x00" * 32).digest()[:8], "big") % 256
    with pytest.raises(LocalProtocolError):
        bucket_of(b"x", 0)


def test_a_debit_is_refused_outside_the_owning_bucket() -> None:
    w = World()
    r = w.commit(1, Transfer(oid(1), A0, A1, U))
    assert isinstance(r.error, WrongBucket)
    assert str(r.error) == f"account {A0.hex()[:16]} belongs to bucket 0, not 1"
    assert w.replica.account(A0).balance == 100 * U


def test_a_transfer_to_another_bucket_emits_one_credit_batch() -> None:
    w = World()
    r = w.commit(0, Transfer(oid(1), A0, A1, 30 * U))
    assert r.error is None
    (batch,) = r.effects
    assert (batch.source_bucket, batch.source_index, batch.seq, batch.target_bucket) == (
        0, 1, 0, 1)
    assert batch.key == (0, 1)
    assert batch.effects == (Credit(A1, 30 * U, "transfer", A0),)
    assert r.record.emitted == ((1, 0),)
    # In flight: debited at the source, not yet credited; conservation counts it.
    assert w.replica.account(A1).balance == 100 * U
    assert w.replica.totals().in_flight == 30 * U
    w.replica.check_conservation()
    assert w.commit(1, batch).error is None
    assert w.replica.account(A1).balance == 130 * U
    assert w.replica.totals().in_flight == 0
    w.replica.check_conservation()


def test_a_batch_delivered_twice_is_applied_once() -> None:
    w = World()
    (batch,) = w.commit(0, Transfer(oid(1), A0, A1, 30 * U)).effects
    assert w.commit(1, batch).error is None
    again = w.commit(1, batch)
    assert again.error is not None and again.error.code == "duplicate_effect"
    assert again.record.changes == ()
    assert w.replica.account(A1).balance == 130 * U
    # A duplicate that travelled through the wire format is the same batch.
    decoded = decode_body(encode_body(batch))
    assert decoded == batch and w.commit(1, decoded).error is not None


def test_batches_out_of_order_are_each_applied_once() -> None:
    w = World()
    batches = [w.commit(0, Transfer(oid(i), A0, A1, U)).effects[0] for i in range(5)]
    assert [b.seq for b in batches] == [0, 1, 2, 3, 4]
    target = w.replica.buckets[1]
    for b in (batches[3], batches[1], batches[3], batches[4], batches[0], batches[2],
              batches[1]):
        w.commit(1, b)
    assert w.replica.account(A1).balance == 105 * U
    assert target.applied_seq(0) == 5  # contiguous now: no gap left to remember
    assert target.state_value()["in"] == [[0, 5, []]]
    w.replica.check_conservation()


def test_a_batch_for_another_bucket_is_refused() -> None:
    w = World()
    (batch,) = w.commit(0, Transfer(oid(1), A0, A1, U)).effects
    r = w.commit(2, batch)
    assert isinstance(r.error, WrongBucket)
    forged = EffectBatch(0, 1, 0, 2, oid(1), (Credit(A1, U, "transfer"),))
    assert isinstance(w.commit(2, forged).error, WrongBucket)  # A1 is not in bucket 2


def test_a_release_pays_several_buckets_and_slashes_remote_verifiers() -> None:
    w = World()
    assert w.commit(0, Escrow(oid(1), A0, oid(50), 100 * U, 0)).error is None
    release = Release(oid(2), A0, oid(50),
                      (Share(B0, 10 * U), Share(A1, 40 * U), Share(B1, 40 * U)), burn=10 * U,
                      slashes=(SlashOrder(V3, "failed_challenge", EVIDENCE, challenger=A1,
                                          honest=(W2, B0)),))
    r = w.commit(0, release)
    assert r.error is None
    assert w.replica.account(B0).balance == 110 * U  # same bucket: credited at once
    by_target = {b.target_bucket: b for b in r.effects}
    assert set(by_target) == {1, 3}
    assert by_target[1].effects == (Credit(A1, 40 * U, "payout", A0),
                                    Credit(B1, 40 * U, "payout", A0))
    w.commit(1, by_target[1])
    # Bucket 3 slashes V3 (50% of 200) and sends the shares on: 50 to A1 (bucket 1),
    # 20 each to W2 (bucket 2) and B0 (bucket 0), 10 burned.
    slashed = w.commit(3, by_target[3])
    assert slashed.error is None and w.replica.account(V3).locked == 100 * U
    for batch in slashed.effects:
        assert w.commit(batch.target_bucket, batch).error is None
    assert w.replica.account(A1).balance == 190 * U
    assert w.replica.account(W2).balance == 20 * U
    assert w.replica.account(B0).balance == 130 * U
    assert w.replica.totals().burned == 20 * U and w.replica.totals().in_flight == 0
    w.replica.check_conservation()
    # The audit trail links each effect to its cause.
    rec = w.replica.buckets[3].history(V3)[-1]
    assert rec.kind == "effects" and rec.op_id == oid(2)
    assert rec.cause.startswith("effects from bucket 0 entry 2")


def test_replicas_applying_the_same_logs_agree_on_the_root() -> None:
    def run(deliver_in: list[int]) -> bytes:
        w = World()
        batches = [w.commit(0, Transfer(oid(i), A0, A1, U)).effects[0] for i in range(3)]
        for i in deliver_in:
            w.commit(1, batches[i])
        return w.replica.root()

    assert run([0, 1, 2]) == run([0, 1, 2])
    # Credits commute, and once no gap is left the dedupe state is the same too: the
    # order batches arrived in leaves no trace in the root (the log length does).
    assert run([2, 1, 0]) == run([0, 1, 2])
    # A gap is state: different batches applied, different roots.
    assert run([2]) != run([0])


@pytest.mark.parametrize("seed", range(8))
def test_simulation_with_reordering_and_duplication_conserves_and_applies_once(
        seed: int) -> None:
    # Goal: many transfers, escrows and payouts across 4 buckets, effects delivered in a
    # seeded random order with duplicates; after every step conservation holds and no
    # batch is applied twice; after draining, every batch was applied exactly once.
    rng = random.Random(seed)
    sim = LedgerSim(make_genesis(), rng, dup_bp=3000)
    people = [A0, B0, A1, B1, A2, V2, V3, W2]
    ts = 0
    for step in range(200):
        ts += rng.randrange(0, 50)
        who = rng.choice(people)
        if rng.random() < 0.6:
            sim.submit(Transfer(oid(step), who, rng.choice(people),
                                rng.randrange(1, 40 * U)), ts)
        elif rng.random() < 0.5:
            sim.submit(Escrow(oid(step), who, oid(10_000 + step), rng.randrange(1, 20 * U), 0),
                       ts)
        else:
            mine = [e for e in sim.replica.bucket_for(who).escrows() if e.payer == who]
            if mine:
                esc = mine[0]
                half = esc.amount // 2
                shares = (Share(rng.choice(people), half),) if half else ()
                sim.submit(Release(oid(step), who, esc.escrow_id, shares,
                                   burn=esc.amount - half), ts)
        for _ in range(rng.randrange(0, 3)):
            sim.deliver_one(ts)
        sim.check()
    sim.drain(ts)
    sim.check()
    assert sim.emitted and sim.deliveries >= len(sim.emitted)


def test_bucket_ledger_refuses_a_bucket_outside_the_range() -> None:
    with pytest.raises(LocalProtocolError):
        BucketLedger(make_genesis().params, N)


def test_the_outbox_keeps_batches_until_the_target_acknowledges() -> None:
    w = World()
    batches = [w.commit(0, Transfer(oid(i), A0, A1, U)).effects[0] for i in range(3)]
    source = w.replica.buckets[0]
    assert source.outbox(1) == batches and source.outbox() == batches
    w.commit(1, batches[0])
    w.commit(1, batches[2])
    progress = w.replica.buckets[1].applied_seq(0)
    assert progress == 1 and w.replica.buckets[1].has_applied(0, 2)
    assert w.commit(0, EffectAck(1, progress)).error is None
    assert source.outbox(1) == batches[1:]  # seq 2 waits behind the gap at seq 1
    bogus = w.commit(0, EffectAck(1, 4))
    assert isinstance(bogus.error, InvalidOp) and "3 were sent" in str(bogus.error)
    w.commit(1, batches[1])
    w.commit(0, EffectAck(1, w.replica.buckets[1].applied_seq(0)))
    assert source.outbox() == [] and source.state_value()["outbox"] == []
    # Acknowledging again, or less, changes nothing.
    before = source.state_value()
    assert w.commit(0, EffectAck(1, 2)).error is None
    assert w.commit(0, EffectAck(1, 3)).error is None
    after = source.state_value()
    assert after["last"] != before["last"]  # only the log position moved
    assert after | {"last": None} == before | {"last": None}
    assert decode_body(encode_body(EffectAck(1, 2))) == EffectAck(1, 2)


def test_a_snapshot_restores_the_same_state_and_root() -> None:
    rng = random.Random(7)
    sim = LedgerSim(make_genesis(), rng, dup_bp=5000)
    people = [A0, B0, A1, B1, A2, V2, V3, W2]
    for step in range(150):
        who = rng.choice(people)
        if rng.random() < 0.7:
            sim.submit(Transfer(oid(step), who, rng.choice(people), rng.randrange(1, 30 * U)),
                       step)
        else:
            sim.submit(Escrow(oid(step), who, oid(10_000 + step), U, 10), step)
        if rng.random() < 0.5:
            sim.deliver_one(step)
    params = make_genesis().params
    for b, led in sim.replica.buckets.items():
        data = led.snapshot()
        back = BucketLedger.restore(params, data)
        assert back.root() == led.root() and back.snapshot() == data
        assert back.outbox() == led.outbox() and back.escrows() == led.escrows()
        sim.replica.buckets[b] = back  # carry on from the restored copies
    sim.drain(10_000)
    sim.check()


def test_a_damaged_snapshot_is_refused() -> None:
    led = LedgerReplica.from_genesis(make_genesis()).buckets[0]
    value = cbor.decode(led.snapshot())
    value["accounts"] = [["not", "an", "account"]]
    with pytest.raises(DecodeError, match="not a ledger snapshot"):
        BucketLedger.restore(make_genesis().params, cbor.encode(value))
    with pytest.raises(DecodeError):
        BucketLedger.restore(make_genesis().params, b"\x00")
