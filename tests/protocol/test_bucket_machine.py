"""The bucket state machine: DECIDE and the ledger in one log, user envelopes checked at
apply, effects between buckets, the certified chain a read replica rebuilds from, and
snapshots.

Method: identities are picked so that their accounts land in chosen buckets of a
4-bucket genesis; each bucket's machine is fed entries the way Raft's apply loop does
(index, term, stamped data); a read replica (`LedgerPart` from genesis) is fed only the
chain entries, encoded and decoded, and must reach the same root."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.protocol import bucket_machine as bm
from swarm.protocol import cbor
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.bucket_machine import (
    BucketMachine,
    ChainEntry,
    ChainGap,
    LedgerApplied,
    LedgerOutcome,
    LedgerPart,
    ack_command,
    decode_command,
    effects_command,
    ledger_command,
    op_id_of,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import DecideMachine, TryDecide, encode_command
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.errors import DecodeError, RemoteProtocolError
from swarm.protocol.ledger import EffectAck, LedgerReplica

U = 1_000_000
N = 4
SWARM = b"\x05" * 32
UNBONDING_MS = 60_000


def identity_in(bucket: int, nth: int = 0) -> Identity:
    found = 0
    for i in range(1, 10_000):
        ident = Identity(i.to_bytes(32, "big"))
        if bucket_of(ident.public_key, N) == bucket:
            if found == nth:
                return ident
            found += 1
    raise AssertionError("no identity found")


A0, B0 = identity_in(0), identity_in(0, 1)
A1 = identity_in(1)
V2 = identity_in(2)
C3 = identity_in(3)
EVERYONE = (A0, B0, A1, V2, C3)


def make_genesis() -> genesis_mod.Genesis:
    return genesis_mod.new(
        name="bm", created_ms=0,
        validators=[{"account": V2.public_key, "org": "o", "asn": 1, "region": "r",
                     "stake": 200 * U}],
        accounts=[{"account": i.public_key, "balance": 100 * U} for i in EVERYONE],
        params={"replicas": 1, "bucket_count": N, "unbonding_ms": UNBONDING_MS,
                "min_verifier_stake": 50 * U})


GENESIS = make_genesis()


def envelope(who: Identity, kind: str, payload: dict[str, object], lamport: int = 1,
             swarm: bytes | None = None) -> bytes:
    return make_envelope(who, kind=kind, swarm=swarm or GENESIS.swarm_id, lamport=lamport,
                         ts=0, payload=payload).wire


class Bucket:
    """One bucket: its machine fed like Raft feeds it, and a read replica fed only the
    chain entries (through their encoding)."""

    def __init__(self, bucket: int) -> None:
        self.machine = BucketMachine.fresh(bucket, GENESIS.swarm_id, GENESIS.params, GENESIS)
        self.reader = LedgerPart.from_genesis(GENESIS, bucket)
        self.index = 0
        self.chain: list[ChainEntry] = []

    def commit(self, data: bytes, ts: int = 0) -> object:
        self.index += 1
        result = self.machine.apply(self.index, 1, data)
        if isinstance(result, LedgerApplied) and result.chain is not None:
            entry = ChainEntry.decode(result.chain.encode())
            assert entry == result.chain
            self.chain.append(entry)
            self.reader.apply_chain(entry)
        return result

    def submit(self, wire: bytes, ts: int = 1000) -> LedgerOutcome:
        cmd = ledger_command(self.machine.bucket, wire)
        result = self.commit(cmd.stamp(ts))
        assert isinstance(result, LedgerApplied)
        assert result.outcome.key == cmd.key
        return result.outcome


def bucket_for(who: Identity) -> Bucket:
    return Bucket(bucket_of(who.public_key, N))


def test_a_transfer_envelope_applies_as_a_transfer_with_the_envelope_digest_as_id() -> None:
    b0 = Bucket(0)
    wire = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 30 * U})
    out = b0.submit(wire)
    assert out.ok and out.kind == "transfer"
    from swarm.protocol.envelope import decode_envelope
    assert out.op_id == op_id_of(decode_envelope(wire))
    assert out.account is not None and out.account.balance == 70 * U
    assert b0.machine.ledger.account(B0.public_key).balance == 130 * U
    assert b0.reader.root() == b0.machine.part.root()


def test_a_refusal_is_typed_and_audited_identically() -> None:
    b0 = Bucket(0)
    out = b0.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 155 * U}))
    assert not out.ok
    assert out.code == "insufficient_balance"
    assert out.reason == "insufficient balance: have 100, need 155"
    [record] = b0.machine.ledger.history(A0.public_key)
    assert record.error_code == "insufficient_balance"
    assert b0.reader.root() == b0.machine.part.root()  # the refusal is in the chain too


def test_bad_envelopes_are_rejected_without_deciding_their_id() -> None:
    b0 = Bucket(0)
    good = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 1 * U})
    forged = good[:7] + bytes([good[7] ^ 1]) + good[8:]  # one bit of the signature
    out = b0.submit(forged)
    assert out.code == "bad_signature" and out.kind == "envelope"
    assert not b0.machine.ledger.is_decided(out.op_id)
    assert b0.machine.rejections[-1] == out
    assert not b0.chain, "a rejected envelope is not a chain entry"
    # The real envelope with the same id still applies: a forged copy cannot block it.
    real = b0.submit(good)
    assert real.ok and b0.machine.outcome(real.key) == real
    other_swarm = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": U}, swarm=b"\1" * 32)
    assert b0.submit(other_swarm).code == "wrong_swarm"
    need = envelope(A0, "NEED", {"class": "simple", "budget": 5})
    assert b0.submit(need).code == "not_ledger_verb"
    garbage = b0.submit(b"\x00garbage")
    assert garbage.kind == "envelope" and not garbage.ok


def test_a_repeated_envelope_is_applied_once_and_answers_the_first_outcome() -> None:
    b0 = Bucket(0)
    wire = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 10 * U})
    first = b0.submit(wire)
    again = b0.submit(wire)
    assert again.code == "duplicate_op"
    assert b0.machine.outcome(first.key) == first
    assert b0.machine.ledger.account(A0.public_key).balance == 90 * U


def test_an_envelope_ordered_in_the_wrong_bucket_is_refused() -> None:
    b1 = Bucket(1)
    out = b1.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": U}))
    assert out.code == "wrong_bucket"
    assert b1.machine.ledger.account(A0.public_key).balance == 0


def test_effects_cross_buckets_once_and_are_acknowledged() -> None:
    b0, b1 = Bucket(0), Bucket(1)
    res = b0.commit(ledger_command(0, envelope(A0, "TRANSFER", {"to": A1.public_key,
                                                               "amount": 25 * U})).stamp(5))
    assert isinstance(res, LedgerApplied) and len(res.emitted) == 1
    [batch] = res.emitted
    assert b0.machine.ledger.outbox() == [batch]
    fx = effects_command(batch)
    assert decode_command(1, fx.encode()) == fx
    applied = b1.commit(fx.stamp(6))
    assert isinstance(applied, LedgerApplied) and applied.outcome.ok
    assert applied.ack_to == (0, 1)
    assert b1.machine.ledger.account(A1.public_key).balance == 125 * U
    dup = b1.commit(fx.stamp(7))  # delivered again (a retry after a leader change)
    assert isinstance(dup, LedgerApplied) and dup.outcome.code == "duplicate_effect"
    assert dup.ack_to == (0, 1)  # acknowledged again, so the source stops resending
    assert b1.machine.outcome(fx.key) == applied.outcome
    ack = b0.commit(ack_command(0, EffectAck(1, 1)).stamp(8))
    assert isinstance(ack, LedgerApplied) and ack.outcome.ok
    assert b0.machine.ledger.outbox() == []
    replica = LedgerReplica({0: b0.machine.ledger, 1: b1.machine.ledger,
                             2: Bucket(2).machine.ledger, 3: Bucket(3).machine.ledger},
                            sum(100 * U for _ in EVERYONE) + 200 * U)
    replica.check_conservation()
    assert replica.totals().in_flight == 0
    for b in (b0, b1):
        assert b.reader.root() == b.machine.part.root()


def test_staking_and_unbonding_run_on_the_buckets_clock() -> None:
    b = bucket_for(A0)
    assert b.submit(envelope(A0, "STAKE", {"amount": 60 * U}), ts=1_000).ok
    out = b.submit(envelope(A0, "UNSTAKE", {"amount": 20 * U}, lamport=2), ts=2_000)
    assert out.ok and out.account is not None and out.account.unbonding == 20 * U
    early = b.submit(envelope(A0, "COMPLETE_UNBONDING", {}, lamport=3), ts=2_000 + 30_000)
    assert early.code == "unbonding_pending"
    assert early.reason == "unbonding completes in 30 s"
    # A leader whose clock is behind cannot move the bucket's time back.
    late_clock = b.submit(envelope(A0, "COMPLETE_UNBONDING", {}, lamport=4), ts=10)
    assert late_clock.reason == "unbonding completes in 30 s"
    done = b.submit(envelope(A0, "COMPLETE_UNBONDING", {}, lamport=5), ts=2_000 + UNBONDING_MS)
    assert done.ok and done.account is not None
    assert (done.account.balance, done.account.locked, done.account.unbonding) == (
        60 * U, 40 * U, 0)
    assert b.reader.root() == b.machine.part.root()


def test_pool_registration_needs_stake_and_is_ordered_in_the_verifiers_bucket() -> None:
    b = bucket_for(A0)
    reg = {"capabilities": ["python"], "org": "acme", "asn": 64500, "region": "eu"}
    low = b.submit(envelope(A0, "POOL_REGISTER", reg))
    assert low.code == "stake_too_low"
    assert low.reason == "stake 0 is below the verifier minimum of 50"
    assert b.submit(envelope(A0, "STAKE", {"amount": 50 * U}, lamport=2)).ok
    ok = b.submit(envelope(A0, "POOL_REGISTER", reg, lamport=3))
    assert ok.ok and ok.kind == "pool_register"
    member = b.machine.part.pool.member(A0.public_key)
    assert member is not None and member.org == "acme" and member.capabilities == ("python",)
    assert b.submit(envelope(A0, "POOL_REGISTER", reg, lamport=3)).code == "duplicate_op"
    assert b.submit(envelope(A0, "POOL_REGISTER", reg, lamport=4)).code == "already_registered"
    assert b.submit(envelope(A0, "POOL_LEAVE", {}, lamport=5)).ok
    assert b.machine.part.pool.member(A0.public_key) is None
    assert b.submit(envelope(A0, "POOL_LEAVE", {}, lamport=6)).code == "not_registered"
    assert [r.kind for r in b.machine.ledger.history(A0.public_key)][:2] == [
        "pool_register", "stake"]
    assert b.reader.root() == b.machine.part.root()


def test_genesis_validators_start_in_their_buckets_pool() -> None:
    b2 = Bucket(2)
    assert b2.machine.part.pool.member(V2.public_key) is not None
    assert Bucket(0).machine.part.pool.members() == []


def test_decide_entries_still_decide_first_writer_wins_on_the_shared_clock() -> None:
    b = Bucket(0)
    b.submit(envelope(A0, "STAKE", {"amount": U}), ts=5_000)
    first = b.commit(encode_command(TryDecide(b"need", b"p1"), 100))
    second = b.commit(encode_command(TryDecide(b"need", b"p2"), 200))
    assert first == second and b.machine.get(b"need") == first
    assert first is not None and first.ts_ms == 5_000  # type: ignore[union-attr]
    assert len(b.machine.decisions) == 1


def test_noops_garbage_and_malformed_entries_are_skipped_alike() -> None:
    b = Bucket(0)
    assert b.commit(b"") is None
    assert b.commit(b"\xff\x00") is None
    assert b.commit(cbor.encode({"op": "ledger", "env": b"x"})) is None  # no ts
    assert b.commit(cbor.encode({"op": "mint", "ts": 1})) is None
    assert b.machine.applied == 4 and not b.chain
    with pytest.raises(AssertionError):
        b.machine.apply(4, 1, b"")


def test_commands_from_elsewhere_are_decoded_strictly() -> None:
    for bad in (cbor.encode({"op": "ledger"}), cbor.encode({"op": "decide", "env": b""}),
                cbor.encode({"op": "ledger", "env": b"", "extra": 1}), b"\xff",
                cbor.encode({"op": "effects", "batch": {"op": "effects"}})):
        with pytest.raises(RemoteProtocolError):
            decode_command(0, bad)


def test_chain_entries_decode_strictly_and_gaps_are_caught() -> None:
    b = Bucket(0)
    b.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": U}))
    b.commit(b"")  # a no-op between chain entries
    b.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": U}, lamport=2))
    first, second = b.chain
    assert (first.index, first.prev, second.index, second.prev) == (1, 0, 3, 1)
    fresh = LedgerPart.from_genesis(GENESIS, 0)
    with pytest.raises(ChainGap):
        fresh.apply_chain(second)
    fresh.apply_chain(first)
    with pytest.raises(ChainGap):
        fresh.apply_chain(first)
    fresh.apply_chain(second)
    assert fresh.root() == b.machine.part.root()
    assert first.digest() != second.digest()
    with pytest.raises(RemoteProtocolError):
        ChainEntry.decode(cbor.encode({"index": 1, "prev": 1, "ts": 0, "body": {}}))


def test_outcomes_travel_as_values() -> None:
    b = Bucket(0)
    out = b.submit(envelope(A0, "UNSTAKE", {"amount": U}))
    assert LedgerOutcome.from_value(cbor.decode(cbor.encode(out.to_value()))) == out
    ok = b.submit(envelope(A0, "STAKE", {"amount": 2 * U}, lamport=2))
    assert LedgerOutcome.from_value(cbor.decode(cbor.encode(ok.to_value()))) == ok
    assert ok.to_json()["account"]["locked"] == 2 * U
    with pytest.raises(RemoteProtocolError):
        LedgerOutcome.from_value({"key": b"", "kind": 1})


def test_snapshot_round_trip_and_legacy_decide_snapshots() -> None:
    b = Bucket(0)
    b.submit(envelope(A0, "STAKE", {"amount": 10 * U}))
    b.commit(encode_command(TryDecide(b"need", b"p"), 7))
    b.submit(envelope(A0, "TRANSFER", {"to": A1.public_key, "amount": U}, lamport=2))
    snap = b.machine.snapshot()
    back = BucketMachine.restore(snap, 0, GENESIS.swarm_id, GENESIS.params, GENESIS)
    assert back.snapshot() == snap
    assert back.part.root() == b.machine.part.root()
    assert back.get(b"need") == b.machine.get(b"need") and back.applied == b.machine.applied
    assert back.ledger.outbox() == b.machine.ledger.outbox()
    legacy = DecideMachine(0)
    legacy.apply(1, 1, encode_command(TryDecide(b"n", b"p"), 3))
    old = BucketMachine.restore(legacy.snapshot(), 0, GENESIS.swarm_id, GENESIS.params,
                                GENESIS)
    assert old.get(b"n") is not None and old.applied == 1
    assert old.part.root() == LedgerPart.from_genesis(GENESIS, 0).root()
    with pytest.raises(DecodeError):
        BucketMachine.restore(cbor.encode({"v": 9}), 0, GENESIS.swarm_id, GENESIS.params)
    with pytest.raises(DecodeError):
        BucketMachine.restore(snap, 1, GENESIS.swarm_id, GENESIS.params)


# -- property: four buckets, random commands, effects delivered in random order --------

COMMANDS = st.lists(st.tuples(st.sampled_from(range(len(EVERYONE))),
                              st.sampled_from(["TRANSFER", "STAKE", "UNSTAKE",
                                               "COMPLETE_UNBONDING", "DELIVER", "ACK"]),
                              st.integers(1, 120), st.sampled_from(range(len(EVERYONE)))),
                    min_size=5, max_size=80)


@settings(max_examples=60)
@given(COMMANDS, st.integers(0, 2**32))
def test_buckets_conserve_credits_and_read_replicas_agree(
        commands: list[tuple[int, str, int, int]], seed: int) -> None:
    """Goal: whatever the users submit and however effects are delivered (in any order,
    repeated), credits are conserved, nothing goes negative, and every read replica
    built from chain entries equals its bucket. Method: random commands against four
    bucket machines; DELIVER commits a random outbox batch at its target (possibly again),
    ACK commits the target's applied seq at the source."""
    rng = random.Random(seed)
    buckets = {b: Bucket(b) for b in range(N)}
    supply = 100 * U * len(EVERYONE) + 200 * U
    ts = 0
    for lamport, (who_i, kind, amount, to_i) in enumerate(commands, start=1):
        ts += rng.randrange(0, 20_000)
        if kind == "DELIVER":
            waiting = [x for b in buckets.values() for x in b.machine.ledger.outbox()]
            if waiting:
                batch = rng.choice(waiting)
                buckets[batch.target_bucket].commit(effects_command(batch).stamp(ts))
            continue
        if kind == "ACK":
            src, dst = rng.randrange(N), rng.randrange(N)
            if src != dst:
                seq = buckets[dst].machine.ledger.applied_seq(src)
                buckets[src].commit(ack_command(src, EffectAck(dst, seq)).stamp(ts))
            continue
        who = EVERYONE[who_i]
        payload: dict[str, object] = {"amount": amount * U // 4}
        if kind == "TRANSFER":
            payload["to"] = EVERYONE[to_i].public_key
        elif kind == "COMPLETE_UNBONDING":
            payload = {}
        buckets[bucket_of(who.public_key, N)].submit(envelope(who, kind, payload, lamport), ts)
        replica = LedgerReplica({b: x.machine.ledger for b, x in buckets.items()}, supply)
        replica.check_conservation()
        for acct in replica.totals()._tuple():
            assert acct >= 0
    # Drain: deliver and acknowledge everything; nothing is left in flight.
    for _ in range(4 * N):
        for b in list(buckets.values()):
            for batch in b.machine.ledger.outbox():
                buckets[batch.target_bucket].commit(effects_command(batch).stamp(ts))
                seq = buckets[batch.target_bucket].machine.ledger.applied_seq(batch.source_bucket)
                b.commit(ack_command(batch.source_bucket,
                                     EffectAck(batch.target_bucket, seq)).stamp(ts))
    replica = LedgerReplica({b: x.machine.ledger for b, x in buckets.items()}, supply)
    replica.check_conservation()
    assert replica.totals().in_flight == 0
    assert all(not b.machine.ledger.outbox() for b in buckets.values())
    for b in buckets.values():
        assert b.reader.root() == b.machine.part.root()
        for view in b.machine.ledger.accounts():
            assert min(view.balance, view.locked, view.unbonding, view.escrowed) >= 0


# -- ledger submissions of nodes that are not validators --

def test_ledger_submission_round_trip_and_refusals() -> None:
    data = bm.encode_ledger_submission(7, b"\xa1\x61a\x01", 1500)
    assert bm.decode_ledger_submission(data, 16) == (7, b"\xa1\x61a\x01", 1500)
    for bad in ({"bucket": 16, "env": b"x", "timeout_ms": 5},
                {"bucket": 1, "env": b"", "timeout_ms": 5},
                {"bucket": 1, "env": b"x", "timeout_ms": 0},
                {"bucket": 1, "env": b"x"},
                {"bucket": True, "env": b"x", "timeout_ms": 5}):
        with pytest.raises(RemoteProtocolError):
            bm.decode_ledger_submission(cbor.encode(bad), 16)
    with pytest.raises(RemoteProtocolError):
        bm.decode_ledger_submission(b"\x00" * (bm.LEDGER_SUBMISSION_BYTES_MAX + 1), 16)
    assert bm.decode_ledger_answer(bm.encode_ledger_answer(None, "busy", "try later")) == (
        "busy", "try later")
    with pytest.raises(RemoteProtocolError):
        bm.decode_ledger_answer(cbor.encode({"ok": True}))
