"""The bucket state machine: DECIDE and the ledger in one log, user envelopes checked at
apply, effects between buckets authenticated by certified chain entries, the certified
chain a read replica rebuilds from, and snapshots.

Method: identities are picked so that their accounts land in chosen buckets of a
4-bucket genesis whose one validator (V2) replicates every bucket; each bucket's machine
is fed entries the way Raft's apply loop does (index, term, stamped data); V2 signs each
chain entry as the bucket's quorum would, which is the proof effects and
acknowledgements carry; a read replica (`LedgerPart` from genesis) is fed only the chain
entries, encoded and decoded, and must reach the same root."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.protocol import bucket_machine as bm
from swarm.protocol import cbor, certificate
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.bucket_machine import (
    BucketMachine,
    ChainEntry,
    ChainGap,
    LedgerApplied,
    LedgerOutcome,
    LedgerPart,
    Proof,
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
from swarm.protocol.ledger_ops import Credit
from swarm.testnet.ledger_sim import LedgerReplica

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


VALID_UNTIL_MS = 3_000_000  # beyond every test's bucket clock, within op_validity_ms_max


def envelope(who: Identity, kind: str, payload: dict[str, object], lamport: int = 1,
             swarm: bytes | None = None, op_id: bytes | None = None,
             valid_until_ms: int = VALID_UNTIL_MS) -> bytes:
    """A signed ledger envelope; its client op id defaults to one derived from the
    lamport time, kind and payload, so a different lamport time makes another op."""
    if op_id is None:
        op_id = hashlib.sha256(repr((lamport, kind, sorted(payload.items()))).encode()
                               ).digest()[:16]
    if kind in bm.LEDGER_VERBS:
        payload = {**payload, "op_id": op_id, "valid_until_ms": valid_until_ms}
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

    def proof(self, index: int) -> Proof:
        """The chain entry at `index`, certified by the bucket's replicas (V2)."""
        [entry] = [e for e in self.chain if e.index == index]
        data = entry.encode()
        note = certificate.sign(V2, GENESIS.swarm_id, self.machine.bucket, index, 1,
                                bm.chain_digest(data))
        return Proof(self.machine.bucket, index, 1, data, ((note.signer, note.sig),))

    def proof_of(self, batch: bm.EffectBatch) -> Proof:
        return self.proof(batch.source_index)

    def last_entry_proof(self) -> Proof:
        return self.proof(self.chain[-1].index)

    def submit(self, wire: bytes, ts: int = 1000) -> LedgerOutcome:
        cmd = ledger_command(self.machine.bucket, wire)
        result = self.commit(cmd.stamp(ts))
        assert isinstance(result, LedgerApplied)
        assert result.outcome.key == cmd.key
        return result.outcome


def bucket_for(who: Identity) -> Bucket:
    return Bucket(bucket_of(who.public_key, N))


def test_a_transfer_envelope_applies_as_a_transfer_with_the_client_op_id() -> None:
    b0 = Bucket(0)
    wire = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 30 * U})
    out = b0.submit(wire)
    assert out.ok and out.kind == "transfer"
    from swarm.protocol.envelope import decode_envelope
    env = decode_envelope(wire)
    assert out.op_id == op_id_of(env) == bm.ledger_op_id(
        A0.public_key, env.payload["op_id"], VALID_UNTIL_MS)
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
    plan = envelope(A0, "UPDATE_PLAN", {"ops": [{"op": "ADD_TASK", "task_id": "t"}],
                                        "base_lamport": 0})
    assert b0.submit(plan).code == "not_ledger_verb"
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


def test_a_retry_signed_anew_with_the_same_op_id_is_the_same_operation() -> None:
    """A client whose connection broke after submitting signs its retry again (another
    lamport time and envelope id) with the same op id and validity limit: it is applied
    once and the retry answers the first outcome."""
    b0 = Bucket(0)
    op = b"\x07" * 16
    first = b0.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 10 * U},
                               lamport=1, op_id=op))
    retry = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 10 * U}, lamport=9,
                     op_id=op)
    assert bm.ledger_command(0, retry).key == first.key
    assert b0.submit(retry).code == "duplicate_op"
    assert b0.machine.outcome(first.key) == first
    assert b0.machine.ledger.account(A0.public_key).balance == 90 * U
    # Another validity limit is another operation (the client chose it).
    other = b0.submit(envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": 10 * U},
                               lamport=9, op_id=op, valid_until_ms=VALID_UNTIL_MS - 1))
    assert other.ok and other.key != first.key


def test_an_old_envelope_is_refused_and_op_ids_are_forgotten_after_their_limit() -> None:
    """Goal: a signed ledger envelope cannot be applied after its validity limit, nor
    one valid for longer than `op_validity_ms_max`; the bucket remembers an op id only
    until its limit, and never applies it twice. Method: bucket clocks around the
    limit."""
    b0 = Bucket(0)
    limit = GENESIS.params["op_validity_ms_max"]
    wire = envelope(A0, "TRANSFER", {"to": B0.public_key, "amount": U},
                    valid_until_ms=50_000)
    assert b0.submit(wire, ts=10_000).ok
    assert b0.machine.ledger.is_decided(bm.ledger_command(0, wire).key)
    assert b0.submit(wire, ts=40_000).code == "duplicate_op"
    # Past its limit the id is forgotten (any entry moves the clock), and the same
    # envelope is refused as expired: never applied twice.
    other = envelope(B0, "STAKE", {"amount": U})
    assert b0.submit(other, ts=50_001).ok
    assert not b0.machine.ledger.is_decided(bm.ledger_command(0, wire).key)
    late = b0.submit(wire, ts=60_000)
    assert late.code == "expired" and late.reason == "the operation expired 10 s ago"
    assert not b0.machine.ledger.is_decided(late.key)
    assert b0.machine.ledger.account(A0.public_key).balance == 99 * U
    far = b0.submit(envelope(A0, "STAKE", {"amount": U}, valid_until_ms=70_000 + limit + 1),
                    ts=70_000)
    assert far.code == "validity_too_long"
    assert b0.reader.root() == b0.machine.part.root()


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
    assert res.chain is not None and [(e.target_bucket, e.seq) for e in res.chain.out] == [
        (1, 0)]
    assert b0.machine.ledger.outbox() == [batch]
    fx = effects_command(batch, b0.proof_of(batch))
    assert decode_command(1, fx.encode()) == fx
    applied = b1.commit(fx.stamp(6))
    assert isinstance(applied, LedgerApplied) and applied.outcome.ok
    assert applied.chain is not None and applied.chain.applied_below == 1
    assert b1.machine.ledger.account(A1.public_key).balance == 125 * U
    [rec] = b1.machine.ledger.history(A1.public_key)
    assert rec.counterparty == A0.public_key  # the payer, for `ledger history`
    dup = b1.commit(fx.stamp(7))  # delivered again (a retry after a leader change)
    assert isinstance(dup, LedgerApplied) and dup.outcome.code == "duplicate_effect"
    assert dup.chain is not None and dup.chain.applied_below == 1  # acknowledged again
    assert b1.machine.outcome(fx.key) == applied.outcome
    # An effect's outcome travels like any other (its key is no envelope's).
    assert LedgerOutcome.from_value(cbor.decode(cbor.encode(applied.outcome.to_value()))) \
        == applied.outcome
    ack = b0.commit(ack_command(0, 1, b1.last_entry_proof(), 1).stamp(8))
    assert isinstance(ack, LedgerApplied) and ack.outcome.ok
    assert b0.machine.ledger.outbox() == []
    replica = LedgerReplica({0: b0.machine.ledger, 1: b1.machine.ledger,
                             2: Bucket(2).machine.ledger, 3: Bucket(3).machine.ledger},
                            sum(100 * U for _ in EVERYONE) + 200 * U)
    replica.check_conservation()
    assert replica.totals().in_flight == 0
    for b in (b0, b1):
        assert b.reader.root() == b.machine.part.root()


def test_a_forged_batch_or_acknowledgement_is_refused_and_changes_nothing() -> None:
    """Goal: only a batch its source bucket committed is applied, and only a target's
    certified word drops a batch from an outbox. Method: a rogue validator (A0, not a
    replica of bucket 0) signs a credit batch and an acknowledgement; also a real proof
    for another batch, and a real batch with its amount changed."""
    b0, b1 = Bucket(0), Bucket(1)
    res = b0.commit(ledger_command(0, envelope(A0, "TRANSFER", {"to": A1.public_key,
                                                               "amount": 25 * U})).stamp(5))
    assert isinstance(res, LedgerApplied)
    [batch] = res.emitted
    root = b1.machine.part.root()
    forged = bm.EffectBatch(0, batch.source_index, batch.seq, 1, batch.source_op_id,
                            (Credit(A1.public_key, 10_000 * U, "transfer"),))
    rogue = b0.proof_of(batch)
    note = certificate.sign(A0, GENESIS.swarm_id, 0, rogue.index, 1,
                            bm.chain_digest(rogue.entry))
    attempts = [
        effects_command(forged, b0.proof_of(batch)),  # a real proof, another batch
        effects_command(batch, Proof(0, rogue.index, 1, rogue.entry,
                                     ((note.signer, note.sig),))),  # not a replica's
        effects_command(batch, Proof(0, rogue.index, 2, rogue.entry, rogue.sigs)),  # term
    ]
    for cmd in attempts:
        out = b1.commit(cmd.stamp(6))
        assert isinstance(out, LedgerApplied) and out.chain is None
        assert out.outcome.code == "unauthenticated" and out.outcome.kind == "unauthenticated"
    assert b1.machine.part.root() == root and not b1.chain
    assert b1.machine.refused["unauthenticated"] == 3
    assert not b1.machine.ledger.has_applied(0, batch.seq)  # the real one still can
    assert b1.commit(effects_command(batch, b0.proof_of(batch)).stamp(7)).outcome.ok  # type: ignore[union-attr]
    # An acknowledgement not proven by the target: the outbox keeps the batch.
    b0_root = b0.machine.part.root()
    fake = b0.commit(ack_command(0, 1, b0.proof_of(batch), 1).stamp(8))  # bucket 0's entry
    assert isinstance(fake, LedgerApplied) and fake.outcome.code == "unauthenticated"
    overstated = b0.commit(ack_command(0, 1, b1.last_entry_proof(), 2).stamp(9))
    assert isinstance(overstated, LedgerApplied)
    assert overstated.outcome.code == "unauthenticated"
    assert b0.machine.part.root() == b0_root and b0.machine.ledger.outbox() == [batch]
    assert b0.commit(ack_command(0, 1, b1.last_entry_proof(), 1).stamp(10)).outcome.ok  # type: ignore[union-attr]
    assert b0.machine.ledger.outbox() == []


def test_an_exception_midway_rolls_the_entry_back_and_is_refused_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Goal: an entry is applied all or nothing. Method: a fault injected into the
    ledger after a transfer has debited the payer (as a bug would raise); the state is
    the one before the entry, the outcome is `internal` and decides nothing; the next
    entry applies normally and a read replica still agrees."""
    b0 = Bucket(0)
    before = b0.machine.part.root()
    real_credit = bm.BucketLedger.__dict__["_mutate"]

    def broken(self: bm.BucketLedger, op: object, ts_ms: int, tx: object) -> None:
        real_credit(self, op, ts_ms, tx)
        raise KeyError("injected after the debit")

    monkeypatch.setattr(bm.BucketLedger, "_mutate", broken)
    out = b0.submit(envelope(A0, "TRANSFER", {"to": A1.public_key, "amount": 5 * U}))
    assert out.code == "internal" and out.kind == "internal"
    assert "rolled back" in out.reason
    assert b0.machine.part.root() == before
    assert b0.machine.ledger.account(A0.public_key).balance == 100 * U
    assert b0.machine.ledger.outbox() == [] and not b0.chain
    assert not b0.machine.ledger.is_decided(out.key)
    monkeypatch.undo()
    again = b0.submit(envelope(A0, "TRANSFER", {"to": A1.public_key, "amount": 5 * U}))
    assert again.ok and again.key == out.key  # the same operation applies once fixed
    assert b0.reader.root() == b0.machine.part.root()


def test_an_error_that_need_not_repeat_halts_the_bucket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that need not happen alike on every replica (out of memory) cannot be
    turned into a shared rejection: the machine rolls back and halts, and keeps
    refusing entries."""
    b0 = Bucket(0)
    before = b0.machine.part.root()

    def oom(self: bm.BucketLedger, op: object, ts_ms: int) -> None:
        raise MemoryError()

    monkeypatch.setattr(bm.BucketLedger, "_validate", oom)
    with pytest.raises(bm.BucketHalted):
        b0.submit(envelope(A0, "TRANSFER", {"to": A1.public_key, "amount": 5 * U}))
    monkeypatch.undo()
    assert b0.machine.part.root() == before and b0.machine.halted
    with pytest.raises(bm.BucketHalted):
        b0.commit(b"")


def test_a_pool_operation_that_raises_midway_is_rolled_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = bucket_for(A0)
    assert b.submit(envelope(A0, "STAKE", {"amount": 60 * U})).ok
    before = b.machine.part.root()

    def broken(self: bm.BucketLedger, *args: object, **kwargs: object) -> None:
        raise ValueError("injected after the pool changed")

    monkeypatch.setattr(bm.BucketLedger, "record_other", broken)
    reg = {"capabilities": ["python"], "org": "acme", "asn": 64500, "region": "eu"}
    out = b.submit(envelope(A0, "POOL_REGISTER", reg, lamport=2))
    assert out.code == "internal"
    assert b.machine.part.pool.member(A0.public_key) is None
    assert b.machine.part.root() == before


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
                proof = buckets[batch.source_bucket].proof_of(batch)
                buckets[batch.target_bucket].commit(effects_command(batch, proof).stamp(ts))
            continue
        if kind == "ACK":
            src, dst = rng.randrange(N), rng.randrange(N)
            proven = [e for e in buckets[dst].chain if isinstance(e.body, bm.EffectBatch)
                      and e.body.source_bucket == src]
            if src != dst and proven:
                entry = rng.choice(proven)
                assert entry.applied_below is not None
                buckets[src].commit(ack_command(src, dst, buckets[dst].proof(entry.index),
                                                entry.applied_below).stamp(ts))
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
                target = buckets[batch.target_bucket]
                target.commit(effects_command(batch, b.proof_of(batch)).stamp(ts))
                below = target.chain[-1].applied_below
                assert below is not None
                b.commit(ack_command(batch.source_bucket, batch.target_bucket,
                                     target.last_entry_proof(), below).stamp(ts))
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
