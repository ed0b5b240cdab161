"""The ledger's rules one at a time, in a single bucket (bucket_count = 1, so no effects):
genesis minting, transfer, escrow, bounties, staking and unbonding, slashing, the audit
trail, the canonical encoding and the root. Cross-bucket effects: test_ledger_effects.py."""

from __future__ import annotations

import hashlib

import pytest

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.amounts import format_credits, format_duration
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.errors import SchemaError
from swarm.protocol.ledger import (
    BucketLedger,
    DuplicateOp,
    EscrowExists,
    EscrowHeld,
    InsufficientBalance,
    InsufficientStake,
    InvalidOp,
    NothingUnbonding,
    OverCap,
    UnbondingPending,
    UnknownEscrow,
    genesis_supply,
    split_challenge,
    split_equally,
)
from swarm.protocol.ledger_ops import (
    Bounty,
    Cancel,
    CompleteUnbonding,
    Escrow,
    LedgerEntry,
    Release,
    Share,
    Slash,
    SlashOrder,
    Stake,
    Transfer,
    Unstake,
    decode_body,
    decode_entry,
    encode_body,
    encode_entry,
    entry_hash,
)
from swarm.testnet.ledger_sim import LedgerReplica

U = 1_000_000
DAY = 24 * 3600 * 1000
A, B, C, V, W = (bytes([x]) * 32 for x in (0x0A, 0x0B, 0x0C, 0x1A, 0x1B))
EVIDENCE = dag_cbor_cid(b"evidence")


def oid(n: int) -> bytes:
    return hashlib.sha256(b"op%d" % n).digest()


def make_genesis(bucket_count: int = 1, **params: int) -> genesis_mod.Genesis:
    return genesis_mod.new(
        name="ledger-test", created_ms=0,
        validators=[{"account": V, "org": "o1", "asn": 1, "region": "r1", "stake": 200 * U},
                    {"account": W, "org": "o2", "asn": 2, "region": "r2", "stake": 100 * U}],
        accounts=[{"account": A, "balance": 40 * U}, {"account": B, "balance": 1000 * U}],
        params={"replicas": 1, "bucket_count": bucket_count, **params},
    )


class Log:
    """One bucket's log: appends entries with increasing index and the given time."""

    def __init__(self, **params: int) -> None:
        self.genesis = make_genesis(**params)
        self.led = BucketLedger.from_genesis(self.genesis, 0)
        self.index = 0
        self.ts = 0

    def __call__(self, op: object, ts_ms: int | None = None):  # type: ignore[no-untyped-def]
        self.index += 1
        if ts_ms is not None:
            self.ts = ts_ms
        return self.led.apply(LedgerEntry(self.index, self.ts, op))  # type: ignore[arg-type]

    def conserved(self) -> bool:
        return self.led.totals().held == genesis_supply(self.genesis)


# --- display ------------------------------------------------------------------------


def test_credits_are_shown_exactly() -> None:
    assert format_credits(40 * U, U) == "40"
    assert format_credits(1_500_000, U) == "1.5"
    assert format_credits(1, U) == "0.000001"
    assert format_credits(-2 * U, U) == "-2"
    assert format_credits(7, 3) == "2 1/3"  # a unit that is not a power of ten


def test_durations_round_up_so_nothing_completes_earlier_than_shown() -> None:
    assert format_duration((2 * 3600 + 13 * 60) * 1000) == "2 h 13 min"
    assert format_duration((2 * 3600 + 12 * 60) * 1000 + 1) == "2 h 13 min"
    assert format_duration(7 * DAY) == "7 d"
    assert format_duration(DAY + 3600_000) == "1 d 1 h"
    assert format_duration(45_000) == "45 s"
    assert format_duration(1) == "1 s"
    assert format_duration(90_000) == "1 min 30 s"
    assert format_duration(0) == "0 s"


# --- genesis ------------------------------------------------------------------------


def test_genesis_mints_balances_and_stakes_and_nothing_else() -> None:
    log = Log()
    assert log.led.account(A).balance == 40 * U
    assert log.led.account(V).locked == 200 * U
    assert genesis_supply(log.genesis) == 1340 * U
    assert log.led.totals().held == 1340 * U
    assert log.led.account(C).balance == 0  # unknown accounts are empty, not errors


def test_genesis_buckets_split_the_accounts_and_the_replica_sums_them() -> None:
    gen = make_genesis(bucket_count=4)
    replica = LedgerReplica.from_genesis(gen)
    owners = [b for b, led in replica.buckets.items() if led.account(A).balance]
    assert len(owners) == 1 and replica.account(A).balance == 40 * U
    replica.check_conservation()
    assert replica.totals().supply() == {"total": 1340 * U, "circulating": 1040 * U,
                                         "locked": 300 * U, "escrowed": 0, "burned": 0}


# --- transfer -----------------------------------------------------------------------


def test_transfer_moves_credits() -> None:
    log = Log()
    r = log(Transfer(oid(1), A, C, 15 * U))
    assert r.error is None and r.effects == ()
    assert (log.led.account(A).balance, log.led.account(C).balance) == (25 * U, 15 * U)
    assert log.conserved()


def test_insufficient_balance_says_what_you_have_and_need() -> None:
    log = Log()
    r = log(Transfer(oid(1), A, C, 55 * U))
    assert isinstance(r.error, InsufficientBalance)
    assert str(r.error) == "insufficient balance: have 40, need 55"
    assert (r.error.have, r.error.need) == (40 * U, 55 * U)  # exact units kept too
    assert r.error.to_dict()["code"] == "insufficient_balance"
    assert log.led.account(A).balance == 40 * U
    # The refusal is in the audit trail, with no changes.
    rec = log.led.history()[-1]
    assert rec.error_code == "insufficient_balance" and rec.changes == ()


def test_amounts_must_be_positive() -> None:
    log = Log()
    for amount in (0, -5):
        r = log(Transfer(oid(10 + amount), A, C, amount))
        assert isinstance(r.error, InvalidOp)
    assert log.conserved()


def test_two_nodes_spending_one_account_concurrently_never_overspend() -> None:
    # Both nodes saw a balance of 40 and proposed 30; the owning bucket orders both
    # entries, and the second one sees the first's debit.
    log = Log()
    first = log(Transfer(oid(1), A, B, 30 * U))
    second = log(Transfer(oid(2), A, C, 30 * U))
    assert first.error is None
    assert isinstance(second.error, InsufficientBalance)
    assert str(second.error) == "insufficient balance: have 10, need 30"
    assert log.led.account(A).balance == 10 * U


def test_an_op_id_is_decided_once_even_when_proposed_twice() -> None:
    log = Log()
    op = Transfer(oid(1), A, C, 10 * U)
    assert log(op).error is None
    again = log(op)
    assert isinstance(again.error, DuplicateOp)
    assert log.led.account(C).balance == 10 * U
    # A refused op id is decided too: proposing it again after funding does nothing.
    big = Transfer(oid(2), A, C, 100 * U)
    assert isinstance(log(big).error, InsufficientBalance)
    log(Transfer(oid(3), B, A, 100 * U))
    assert isinstance(log(big).error, DuplicateOp)


def test_entries_must_come_in_log_order() -> None:
    log = Log()
    log(Transfer(oid(1), A, C, U), ts_ms=100)
    stale = log.led.apply(LedgerEntry(1, 100, Transfer(oid(2), A, C, U)))
    assert stale.error is not None and stale.error.code == "out_of_order"
    back = log.led.apply(LedgerEntry(5, 50, Transfer(oid(3), A, C, U)))
    assert back.error is not None and back.error.code == "out_of_order"
    assert log.led.account(C).balance == U


def test_check_validates_without_applying() -> None:
    log = Log()
    with pytest.raises(InsufficientBalance, match="have 40, need 41"):
        log.led.check(Transfer(oid(1), A, C, 41 * U), 0)
    log.led.check(Transfer(oid(1), A, C, 40 * U), 0)
    assert log.led.account(A).balance == 40 * U and log.led.history() == []


# --- escrow ---------------------------------------------------------------------------


def test_escrow_then_release_after_the_hold() -> None:
    log = Log()
    assert log(Escrow(oid(1), A, oid(100), 30 * U, hold_ms=3600_000), ts_ms=1000).error is None
    assert log.led.account(A).escrowed == 30 * U and log.led.account(A).balance == 10 * U
    assert log.conserved()
    release = Release(oid(2), A, oid(100), (Share(C, 20 * U), Share(V, 9 * U)), burn=U)
    early = log(release, ts_ms=1000 + 3600_000 - 60_000)
    assert isinstance(early.error, EscrowHeld)
    assert str(early.error) == "escrow is held for another 1 min"
    ok = log(Release(oid(3), A, oid(100), release.shares, burn=U), ts_ms=1000 + 3600_000)
    assert ok.error is None
    assert log.led.account(C).balance == 20 * U and log.led.account(V).balance == 9 * U
    assert log.led.totals().burned == U and log.led.escrows() == []
    assert log.conserved()


def test_release_must_pay_out_exactly_the_escrow() -> None:
    log = Log()
    log(Escrow(oid(1), A, oid(100), 30 * U, hold_ms=0))
    r = log(Release(oid(2), A, oid(100), (Share(C, 20 * U),), burn=0))
    assert isinstance(r.error, InvalidOp)
    assert str(r.error) == "shares and burn add up to 20, the escrow holds 30"
    r = log(Release(oid(3), A, oid(100), (Share(C, 15 * U), Share(C, 15 * U))))
    assert isinstance(r.error, InvalidOp) and "twice" in str(r.error)
    assert log.led.account(A).escrowed == 30 * U


def test_cancel_returns_the_escrow() -> None:
    log = Log()
    log(Escrow(oid(1), A, oid(100), 30 * U, hold_ms=DAY))
    assert isinstance(log(Escrow(oid(2), A, oid(100), 1 * U, hold_ms=0)).error, EscrowExists)
    assert log(Cancel(oid(3), A, oid(100))).error is None
    assert log.led.account(A).balance == 40 * U and log.led.account(A).escrowed == 0
    assert isinstance(log(Cancel(oid(4), A, oid(100))).error, UnknownEscrow)
    # Only the payer's own escrow: an id someone else opened is unknown to you.
    log(Escrow(oid(5), B, oid(101), U, hold_ms=0))
    assert isinstance(log(Cancel(oid(6), A, oid(101))).error, UnknownEscrow)
    # Escrow ids are per payer: B holding id 101 does not stop A from using it.
    assert log(Escrow(oid(7), A, oid(101), U, hold_ms=0)).error is None
    assert log(Cancel(oid(8), B, oid(101))).error is None
    assert log.led.escrow(A, oid(101)) is not None and log.led.escrow(B, oid(101)) is None


def test_bounty_is_capped_by_class_and_held_two_challenge_windows() -> None:
    log = Log()
    over = log(Bounty(oid(1), B, oid(100), 11 * U, "simple"))
    assert isinstance(over.error, OverCap)
    assert str(over.error) == "bounty 11 is over the simple cap of 10"
    assert log(Bounty(oid(2), B, oid(100), 1000 * U, "critical"), ts_ms=5).error is None
    esc = log.led.escrow(B, oid(100))
    assert esc is not None and esc.release_ms == 5 + 2 * DAY and esc.task_class == "critical"
    bad = log(Bounty(oid(3), B, oid(101), U, "trivial"))
    assert isinstance(bad.error, InvalidOp)


# --- staking ------------------------------------------------------------------------


def test_stake_unstake_and_complete_unbonding_after_the_period() -> None:
    log = Log()
    assert log(Stake(oid(1), A, 30 * U), ts_ms=0).error is None
    assert (log.led.account(A).balance, log.led.account(A).locked) == (10 * U, 30 * U)
    assert isinstance(log(Stake(oid(2), A, 11 * U)).error, InsufficientBalance)
    unstake_too_much = log(Unstake(oid(3), A, 31 * U))
    assert isinstance(unstake_too_much.error, InsufficientStake)
    assert str(unstake_too_much.error) == "insufficient stake: have 30, need 31"
    assert log(Unstake(oid(4), A, 20 * U), ts_ms=1000).error is None
    view = log.led.account(A)
    assert (view.locked, view.unbonding, view.unbonding_entries) == (
        10 * U, 20 * U, ((20 * U, 1000 + 7 * DAY),))
    assert log.conserved()

    left_ms = (2 * 3600 + 13 * 60) * 1000
    early = log(CompleteUnbonding(oid(5), A), ts_ms=1000 + 7 * DAY - left_ms)
    assert isinstance(early.error, UnbondingPending)
    assert str(early.error) == "unbonding completes in 2 h 13 min"
    assert (early.error.remaining_ms, early.error.amount) == (left_ms, 20 * U)
    done = log(CompleteUnbonding(oid(6), A), ts_ms=1000 + 7 * DAY)
    assert done.error is None
    assert (log.led.account(A).balance, log.led.account(A).unbonding) == (30 * U, 0)
    assert isinstance(log(CompleteUnbonding(oid(7), A)).error, NothingUnbonding)
    assert log.conserved()


def test_complete_unbonding_takes_only_the_matured_entries() -> None:
    log = Log(unbonding_ms=100)
    log(Unstake(oid(1), V, 10 * U), ts_ms=0)
    log(Unstake(oid(2), V, 20 * U), ts_ms=50)
    assert log(CompleteUnbonding(oid(3), V), ts_ms=120).error is None
    view = log.led.account(V)
    assert (view.balance, view.unbonding, view.locked) == (10 * U, 20 * U, 170 * U)


# --- slashing -----------------------------------------------------------------------


def test_failed_challenge_slashes_half_the_stake_with_evidence() -> None:
    log = Log()
    r = log(Slash(oid(1), SlashOrder(V, "failed_challenge", EVIDENCE)))
    assert r.error is None
    assert log.led.account(V).locked == 100 * U
    assert log.led.totals().burned == 100 * U  # no challenger named: all burned
    assert str(EVIDENCE) in r.record.cause and "failed_challenge" in r.record.cause
    assert log.conserved()


def test_missed_heartbeats_cost_one_percent_each() -> None:
    log = Log()
    log(Slash(oid(1), SlashOrder(V, "missed_heartbeat", EVIDENCE, misses=3)))
    assert log.led.account(V).locked == 194 * U
    log(Slash(oid(2), SlashOrder(W, "missed_heartbeat", EVIDENCE, misses=500)))
    assert log.led.account(W).locked == 0  # capped at 100%, never negative


def test_policy_violations_escalate() -> None:
    log = Log()
    taken = []
    for i in range(4):
        before = log.led.account(V).locked
        log(Slash(oid(i), SlashOrder(V, "policy_violation", EVIDENCE)))
        taken.append(before - log.led.account(V).locked)
    # 10% of 200, then 20% of 180, 30% of 144, 40% of 100.8
    assert taken == [20 * U, 36 * U, 43_200_000, 40_320_000]
    assert log.led.account(V).violations == 4


def test_slash_reaches_unbonding_stake_latest_first() -> None:
    log = Log(unbonding_ms=1000)
    log(Unstake(oid(1), V, 100 * U), ts_ms=0)
    log(Unstake(oid(2), V, 60 * U), ts_ms=10)
    # base = 40 locked + 160 unbonding = 200; 50% = 100: 40 locked, then 60 (latest) ...
    log(Slash(oid(3), SlashOrder(V, "failed_challenge", EVIDENCE)))
    view = log.led.account(V)
    assert (view.locked, view.unbonding_entries) == (0, ((100 * U, 1000),))
    assert log.conserved()


def test_slash_with_a_challenger_splits_fifty_forty_ten() -> None:
    log = Log()
    order = SlashOrder(V, "failed_challenge", EVIDENCE, challenger=C, honest=(W, A))
    assert log(Slash(oid(1), order)).error is None
    # 100 slashed: 50 to C, 20 each to A and W, 10 burned.
    assert log.led.account(C).balance == 50 * U
    assert log.led.account(A).balance == 60 * U
    assert log.led.account(W).balance == 20 * U
    assert log.led.totals().burned == 10 * U
    assert log.conserved()


def test_a_slash_needs_a_reason_and_cannot_pay_the_slashed() -> None:
    log = Log()
    bad = log(Slash(oid(1), SlashOrder(V, "bad_mood", EVIDENCE)))
    assert isinstance(bad.error, InvalidOp)
    own = log(Slash(oid(2), SlashOrder(V, "failed_challenge", EVIDENCE, challenger=V)))
    assert isinstance(own.error, InvalidOp)
    assert log.led.account(V).locked == 200 * U


# --- splits -------------------------------------------------------------------------


def test_equal_split_gives_remainders_to_the_first_accounts() -> None:
    assert split_equally(10, [C, A, B]) == (Share(A, 4), Share(B, 3), Share(C, 3))
    assert split_equally(1, [C, A]) == (Share(A, 1),)


def test_challenge_split_burns_rounding_and_missing_parts() -> None:
    params = make_genesis().params
    shares, burn = split_challenge(101, C, [A, B], params)
    assert shares == (Share(C, 50), Share(A, 20), Share(B, 20)) and burn == 11
    assert split_challenge(100, None, [A], params) == ((Share(A, 40),), 60)
    assert split_challenge(100, None, [], params) == ((), 100)


# --- audit trail, encoding and root -----------------------------------------------


def test_audit_trail_records_id_cause_and_effect() -> None:
    log = Log()
    log(Transfer(oid(1), A, C, 5 * U), ts_ms=7)
    rec = log.led.history(C)[-1]
    assert (rec.index, rec.ts_ms, rec.op_id, rec.kind) == (1, 7, oid(1), "transfer")
    assert rec.cause == f"transfer by {A.hex()[:16]}"
    assert {(c.account, c.field, c.delta) for c in rec.changes} == {
        (A, "balance", -5 * U), (C, "balance", 5 * U)}
    assert log.led.history(V) == []
    # An account's history includes what it submitted and was refused.
    log(Transfer(oid(2), V, C, U))
    (refused,) = log.led.history(V)
    assert refused.account == V and refused.error_code == "insufficient_balance"


def test_operations_round_trip_through_canonical_cbor() -> None:
    ops = [
        Transfer(oid(1), A, C, 5), Escrow(oid(2), A, oid(9), 5, 0),
        Bounty(oid(3), A, oid(9), 5, "complex"),
        Release(oid(4), A, oid(9), (Share(C, 3),), 2,
                (SlashOrder(V, "failed_challenge", EVIDENCE, 1, C, (A, B)),)),
        Cancel(oid(5), A, oid(9)), Stake(oid(6), A, 1), Unstake(oid(7), A, 1),
        CompleteUnbonding(oid(8), A),
        Slash(oid(9), SlashOrder(V, "missed_heartbeat", EVIDENCE, misses=4)),
    ]
    for op in ops:
        assert decode_body(encode_body(op)) == op  # type: ignore[arg-type]
        entry = LedgerEntry(3, 4, op)  # type: ignore[arg-type]
        assert decode_entry(encode_entry(entry)) == entry
        assert entry_hash(entry) == hashlib.sha256(encode_entry(entry)).digest()


def test_decoding_refuses_malformed_operations() -> None:
    from swarm.protocol import cbor
    with pytest.raises(SchemaError, match="amount"):
        decode_body(cbor.encode({"op": "transfer", "id": oid(1), "from": A, "to": C,
                                 "amount": 0}))
    with pytest.raises(SchemaError, match="unknown field"):
        decode_body(cbor.encode({"op": "cancel", "id": oid(1), "payer": A, "escrow": oid(2),
                                 "extra": 1}))
    with pytest.raises(SchemaError, match="op"):
        decode_body(cbor.encode({"op": "mint", "id": oid(1)}))


def test_root_is_equal_for_equal_logs_and_differs_otherwise() -> None:
    one, two = Log(), Log()
    for log in (one, two):
        log(Transfer(oid(1), A, C, 5 * U), ts_ms=1)
        log(Stake(oid(2), B, 5 * U), ts_ms=2)
    assert one.led.root() == two.led.root()
    one(Transfer(oid(3), A, C, U))
    assert one.led.root() != two.led.root()


def test_a_drained_account_leaves_no_trace_in_the_state() -> None:
    log = Log()
    before = log.led.state_value()["accounts"]
    log(Transfer(oid(1), A, C, 40 * U))
    assert A not in {v.account for v in log.led.accounts()}
    # Slashing an account with no stake changes nothing and creates nothing.
    r = log(Slash(oid(2), SlashOrder(C, "failed_challenge", EVIDENCE)))
    assert r.error is None and r.record.changes == ()
    log(Transfer(oid(3), C, A, 40 * U))
    assert log.led.state_value()["accounts"] == before
