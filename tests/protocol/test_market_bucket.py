"""The market in the buckets: a NEED debits its poster's bucket and funds the task in
the NEED's bucket by an authenticated effect; lifecycle envelopes are applied there,
checked on apply like ledger envelopes; tick entries fire the task timers; refunds and
payouts travel back as credits; credits are conserved across buckets throughout, and a
read replica fed only certified chain entries holds the same tasks."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from test_bucket_machine import GENESIS, V2, Bucket, U, envelope, identity_in

from swarm.protocol import bucket_machine as bm
from swarm.protocol.bucket_machine import (
    BucketMachine,
    LedgerApplied,
    LedgerOutcome,
    draw_command,
    effects_command,
    pool_view_command,
    pool_views_command,
    tick_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.errors import SchemaError
from swarm.protocol.ledger import genesis_supply
from swarm.protocol.ledger_ops import (
    POOL_VIEWS_MAX,
    PoolRow,
    PoolViews,
    body_from_value,
    decode_body,
    encode_body,
)
from swarm.protocol.task import (
    ATTESTED,
    CANCELLED,
    CLAIMED,
    COMMITTED,
    DECIDED,
    FINALIZED,
    OPEN,
)

N = 4
A0, B0 = identity_in(0), identity_in(0, 1)
A1, C3 = identity_in(1), identity_in(3)
X1 = identity_in(1, 1)  # a verifier that joins the pool in bucket 1
_lamport = itertools.count(10)


def signed(who: Identity, kind: str, payload: dict[str, Any], ts: int = 1_000) -> Envelope:
    return make_envelope(who, kind=kind, swarm=GENESIS.swarm_id, lamport=next(_lamport),
                         ts=ts, payload=payload)


def need_in(bucket: int, budget: int = 10 * U, **extra: Any) -> Envelope:
    """A NEED by A0 whose id lands in `bucket`."""
    for i in range(1_000):
        env = signed(A0, "NEED", {"class": "simple", "budget": budget, "title": f"t{i}",
                                  **extra})
        if bucket_of(env.id.raw, N) == bucket:
            return env
    raise AssertionError("no NEED id found in that bucket")


class Swarm:
    """Four buckets fed like Raft feeds them; effects delivered with their proofs."""

    def __init__(self) -> None:
        self.b = [Bucket(i) for i in range(N)]
        self.ts = 1_000

    def submit(self, bucket: int, env: Envelope) -> Any:
        out = self.b[bucket].submit(env.wire, ts=self.ts)
        self.deliver()
        return out

    def tick(self, bucket: int, ts: int) -> LedgerApplied:
        self.ts = ts
        result = self.b[bucket].commit(tick_command(bucket).stamp(ts))
        assert isinstance(result, LedgerApplied)
        self.deliver()
        return result

    def deliver(self) -> None:
        """Every batch in every outbox, to its target, with its source's proof."""
        moved = True
        while moved:
            moved = False
            for src in self.b:
                for batch in src.machine.ledger.outbox():
                    dst = self.b[batch.target_bucket]
                    if dst.machine.ledger.has_applied(batch.source_bucket, batch.seq):
                        continue
                    cmd = effects_command(batch, src.proof_of(batch))
                    dst.commit(cmd.stamp(self.ts))
                    assert dst.machine.ledger.has_applied(batch.source_bucket, batch.seq), \
                        f"batch {batch} was not applied"
                    moved = True

    def command(self, bucket: int, data: bytes) -> LedgerOutcome:
        result = self.b[bucket].commit(data)
        assert isinstance(result, LedgerApplied)
        self.deliver()
        return result.outcome

    def task(self, need: Envelope) -> Any:
        return self.b[bucket_of(need.id.raw, N)].machine.ledger.tasks.get(need.id)

    def balance(self, who: Identity) -> int:
        return self.b[bucket_of(who.public_key, N)].machine.ledger.account(who.public_key).balance

    def conserved(self) -> None:
        totals = [b.machine.ledger.totals() for b in self.b]
        held = sum(t.held for t in totals)
        assert held == genesis_supply(GENESIS)
        for b in self.b:
            assert b.reader.root() == b.machine.part.root(), "the read replica diverged"


def test_a_need_in_another_bucket_is_funded_by_an_authenticated_effect() -> None:
    s = Swarm()
    need = need_in(2)
    before = s.balance(A0)
    out = s.submit(0, need)
    assert out.ok, out
    assert s.balance(A0) == before - 10 * U
    task = s.task(need)
    assert task.state == OPEN and task.terms.poster == A0.public_key
    assert s.b[2].machine.ledger.totals().tasks == 10 * U
    s.conserved()


def test_a_need_in_the_posters_own_bucket_is_funded_at_once() -> None:
    s = Swarm()
    need = need_in(0)
    assert s.submit(0, need).ok
    assert s.task(need).state == OPEN
    assert s.b[0].machine.ledger.totals().tasks == 10 * U
    s.conserved()


def test_a_poster_without_the_budget_is_refused_and_nothing_moves() -> None:
    s = Swarm()
    need = need_in(1, budget=1_000 * U)
    out = s.submit(0, need)
    assert out.code == "insufficient_balance"
    assert s.task(need) is None and s.balance(A0) == 100 * U
    over = need_in(1, budget=50 * U, verify_bounty=11 * U)  # over the simple class's cap
    assert s.submit(0, over).code == "over_cap"
    s.conserved()


def test_an_auction_in_the_needs_bucket_decides_and_the_winner_claims() -> None:
    s = Swarm()
    need = need_in(3)
    s.submit(0, need)
    for who, cost in ((B0, 6 * U), (A1, 4 * U)):
        out = s.submit(3, signed(who, "PROPOSE", {
            "need_id": need.id, "proposal_id": "p", "cost": cost, "eta_ms": 1_000,
            "ballot": who.public_key.hex()[:8]}))
        assert out.ok, out
    result = s.tick(3, s.task(need).close_ms)
    assert s.task(need).state == DECIDED
    (step,) = [st for st in result.tasks if st.decisions]
    assert step.decisions[0].winner == A1.public_key
    loser = s.submit(3, signed(B0, "CLAIM", {"task_id": str(need.id), "lease_ttl_ms": 60_000,
                                             "heartbeat_interval_ms": 5_000}))
    assert loser.code == "not_winner"
    claim = signed(A1, "CLAIM", {"task_id": str(need.id), "lease_ttl_ms": 60_000,
                                 "heartbeat_interval_ms": 5_000})
    assert s.submit(3, claim).ok
    assert s.task(need).state == CLAIMED
    hb = signed(A1, "HEARTBEAT", {"task_id": str(need.id), "lease_id": claim.id,
                                  "progress": 50})
    assert s.submit(3, hb).ok
    assert s.submit(3, hb).code == "duplicate_op", "a heartbeat cannot be replayed"
    commit = signed(A1, "COMMIT", {"task_id": str(need.id), "lease_id": claim.id,
                                   "result": need.id})
    assert s.submit(3, commit).ok
    assert s.task(need).state == COMMITTED
    s.conserved()
    # A replica restored from the bucket's snapshot holds the same tasks.
    machine = s.b[3].machine
    again = BucketMachine.restore(machine.snapshot(), 3, GENESIS.swarm_id, GENESIS.params,
                                  GENESIS)
    assert again.part.root() == machine.part.root()
    assert again.ledger.tasks.get(need.id) == s.task(need)


def test_lifecycle_envelopes_only_in_their_needs_bucket() -> None:
    s = Swarm()
    need = need_in(3)
    s.submit(0, need)
    bid = signed(B0, "PROPOSE", {"need_id": need.id, "proposal_id": "p", "cost": U,
                                 "eta_ms": 1, "ballot": "x"})
    assert s.submit(1, bid).code == "wrong_bucket"
    assert s.submit(3, bid).ok


def test_no_bids_cancels_and_refunds_the_poster_across_buckets() -> None:
    s = Swarm()
    need = need_in(2)
    s.submit(0, need)
    assert s.balance(A0) == 90 * U
    for _ in range(GENESIS.params["auction_rounds_max"]):
        s.tick(2, s.task(need).close_ms)
    assert s.task(need).state == CANCELLED
    assert s.balance(A0) == 100 * U
    assert s.b[2].machine.ledger.totals().tasks == 0
    s.conserved()


def test_an_old_or_far_future_envelope_is_refused() -> None:
    s = Swarm()
    half = GENESIS.params["op_validity_ms_max"] // 2
    s.ts = 10 * half
    old = need_in(1)  # ts 1000: far older than half the window
    assert s.submit(0, old).code == "expired"
    ahead = signed(A0, "NEED", {"class": "simple", "budget": U}, ts=s.ts + 3 * half)
    assert s.submit(0, ahead).code == "validity_too_long"


def committed_in_bucket_3(s: Swarm, k: int) -> tuple[Envelope, Envelope]:
    """X1 joins the pool in bucket 1 (V2 is a genesis validator in bucket 2); a NEED in
    bucket 3 asking for `k` verifiers is won, claimed and committed by A1. Returns the
    NEED and the COMMIT."""
    assert s.b[1].submit(envelope(A1, "TRANSFER", {"to": X1.public_key, "amount": 80 * U}),
                         ts=s.ts).ok
    for lamport, kind, payload in (
            (1, "STAKE", {"amount": 60 * U}),
            (2, "POOL_REGISTER", {"capabilities": [], "org": "o2", "asn": 2, "region": "r"})):
        assert s.b[1].submit(envelope(X1, kind, payload, lamport=lamport), ts=s.ts).ok
    need = need_in(3, verify_bounty=2 * U, k_result=k)
    assert s.submit(0, need).ok
    assert s.submit(3, signed(A1, "PROPOSE", {
        "need_id": need.id, "proposal_id": "p", "cost": 4 * U, "eta_ms": 1_000,
        "ballot": "b"})).ok
    s.tick(3, s.task(need).close_ms)
    claim = signed(A1, "CLAIM", {"task_id": str(need.id), "lease_ttl_ms": 60_000,
                                 "heartbeat_interval_ms": 5_000})
    assert s.submit(3, claim).ok
    commit = signed(A1, "COMMIT", {"task_id": str(need.id), "lease_id": claim.id,
                                   "result": need.id})
    assert s.submit(3, commit).ok
    assert s.task(need).state == COMMITTED and not s.task(need).commit.committee
    return need, commit


def test_a_committee_is_drawn_from_certified_pool_views_and_the_escrow_pays_once() -> None:
    s = Swarm()
    need, _ = committed_in_bucket_3(s, k=2)
    b1, b2 = s.b[1], s.b[2]
    # Bucket 1's verifiers, proven by its certified chain entry; bucket 2's, as genesis
    # made them. Forged, stale or misdirected views change nothing.
    forged = [replace(r, stake=r.stake * 10) for r in b1.machine.part.rows()]
    assert s.command(3, pool_view_command(3, 1, forged, b1.last_entry_proof()).stamp(
        s.ts)).code == "unauthenticated"
    assert s.command(3, pool_view_command(3, 1, b1.machine.part.rows(), None).stamp(
        s.ts)).code == "unauthenticated", "bucket 1's verifiers are not its genesis ones"
    assert s.command(3, pool_view_command(3, 3, [], None).stamp(s.ts)).code == \
        "unauthenticated"
    view = pool_view_command(3, 1, b1.machine.part.rows(), b1.last_entry_proof())
    assert s.command(3, view.stamp(s.ts)).ok
    assert s.command(3, view.stamp(s.ts)).code == "stale_view"
    assert s.command(3, pool_view_command(3, 2, b2.machine.part.rows(), None).stamp(
        s.ts)).ok
    assert sorted(s.b[3].machine.ledger.views()) == [1, 2]

    b3 = s.b[3]
    task = s.task(need)
    claim_entry = [e for e in b3.chain if e.index < task.commit.index][-1]
    assert s.command(3, draw_command(3, need.id, b3.proof(claim_entry.index)).stamp(
        s.ts)).code == "unauthenticated", "a draw is seeded by the COMMIT's certificate"
    drawn = b3.commit(draw_command(3, need.id, b3.proof(task.commit.index)).stamp(s.ts))
    assert isinstance(drawn, LedgerApplied) and drawn.outcome.ok, drawn
    members = {V2.public_key, X1.public_key}
    assert set(s.task(need).commit.committee) == members
    # Both share region "r": with two seats the region cap (one each) had to be lifted.
    [why] = [t.cause for st in drawn.tasks for t in st.transitions]
    assert why == "committee of 2 drawn (region cap lifted)"
    again = s.command(3, draw_command(3, need.id, b3.proof(task.commit.index)).stamp(s.ts))
    assert again.code == "wrong_state", "one committee per commit"

    commit_id = s.task(need).commit.commit_id
    for who in (V2, X1):
        assert s.submit(3, signed(who, "ATTEST", {"task_id": str(need.id),
                                                  "commit_id": commit_id,
                                                  "verdict": "valid"})).ok
    assert s.task(need).state == ATTESTED
    s.tick(3, s.task(need).finalize_ms)
    assert s.task(need).state == FINALIZED
    s.tick(3, s.task(need).pay_ms)
    assert s.task(need).paid
    assert s.balance(A1) == 100 * U - 80 * U + 4 * U
    assert s.balance(V2) == 100 * U + U and s.balance(X1) == 80 * U - 60 * U + U
    assert s.balance(A0) == 100 * U - 10 * U + 4 * U
    s.conserved()  # and every read replica, fed the chain, holds the same views and tasks
    machine = b3.machine
    restored = BucketMachine.restore(machine.snapshot(), 3, GENESIS.swarm_id,
                                     GENESIS.params, GENESIS)
    assert restored.part.root() == machine.part.root()
    assert restored.ledger.views() == machine.ledger.views()


def test_a_committee_that_cannot_be_filled_cancels_and_refunds() -> None:
    s = Swarm()
    need, _ = committed_in_bucket_3(s, k=3)
    b1 = s.b[1]
    assert s.command(3, pool_view_command(3, 1, b1.machine.part.rows(),
                                          b1.last_entry_proof()).stamp(s.ts)).ok
    b3 = s.b[3]
    drawn = b3.commit(draw_command(3, need.id, b3.proof(s.task(need).commit.index)).stamp(
        s.ts))
    assert isinstance(drawn, LedgerApplied) and drawn.outcome.ok
    s.deliver()
    assert s.task(need).state == CANCELLED
    assert s.balance(A0) == 100 * U
    s.conserved()


def test_a_bidder_related_to_the_poster_is_refused_and_reputation_comes_from_views() -> None:
    s = Swarm()
    assert s.b[1].submit(envelope(A1, "TRANSFER", {"to": X1.public_key, "amount": 80 * U}),
                         ts=s.ts).ok
    for lamport, kind, payload in (  # X1 shares V2's ASN
            (1, "STAKE", {"amount": 60 * U}),
            (2, "POOL_REGISTER", {"capabilities": [], "org": "o2", "asn": 1, "region": "r"})):
        assert s.b[1].submit(envelope(X1, kind, payload, lamport=lamport), ts=s.ts).ok
    need = signed(V2, "NEED", {"class": "simple", "budget": 10 * U, "title": "x"})
    for i in range(1_000):
        if bucket_of(need.id.raw, N) == 3:
            break
        need = signed(V2, "NEED", {"class": "simple", "budget": 10 * U, "title": f"x{i}"})
    assert s.submit(2, need).ok
    bid = signed(X1, "PROPOSE", {"need_id": need.id, "proposal_id": "p", "cost": U,
                                 "eta_ms": 1_000, "ballot": "b"})
    # Bucket 3 does not know yet that X1 is a verifier: the bid stands, at the initial
    # reputation. Once it holds both views, a related bid is refused.
    assert s.submit(3, bid).ok
    for source, proof in ((1, s.b[1].last_entry_proof()), (2, None)):
        assert s.command(3, pool_view_command(3, source, s.b[source].machine.part.rows(),
                                              proof).stamp(s.ts)).ok
    again = signed(X1, "PROPOSE", {"need_id": need.id, "proposal_id": "p2", "cost": U // 2,
                                   "eta_ms": 1_000, "ballot": "c"})
    assert s.submit(3, again).code == "related_party"
    assert s.b[3].machine.part.bid_facts(A1.public_key, V2.public_key, s.ts) == (
        GENESIS.params["reputation_initial_bp"], False)
    s.conserved()


def test_a_bucket_holds_at_most_a_views_worth_of_verifiers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm, "POOL_VIEW_ROWS_MAX", 1)  # bucket 2 holds V2 already
    s = Swarm()
    joiner = identity_in(2, 1)
    assert s.b[2].submit(envelope(V2, "TRANSFER", {"to": joiner.public_key, "amount": 80 * U}),
                         ts=s.ts).ok
    assert s.b[2].submit(envelope(joiner, "STAKE", {"amount": 60 * U}), ts=s.ts).ok
    out = s.b[2].submit(envelope(joiner, "POOL_REGISTER", {
        "capabilities": [], "org": "o3", "asn": 3, "region": "r"}, lamport=2), ts=s.ts)
    assert out.code == "pool_full"


def seat_committee(s: Swarm, need: Envelope) -> None:
    """Bring bucket 3 the views of buckets 1 (proven) and 2 (genesis), then draw the
    committee of `need`'s committed result."""
    for source, proof in ((1, s.b[1].last_entry_proof()), (2, None)):
        assert s.command(3, pool_view_command(3, source, s.b[source].machine.part.rows(),
                                              proof).stamp(s.ts)).ok
    b3 = s.b[3]
    assert s.command(3, draw_command(3, need.id, b3.proof(s.task(need).commit.index)).stamp(
        s.ts)).ok


def test_judged_members_reputation_moves_in_their_own_buckets() -> None:
    s = Swarm()
    need, _ = committed_in_bucket_3(s, k=2)
    seat_committee(s, need)
    b3 = s.b[3]
    commit_id = s.task(need).commit.commit_id
    s.ts += 1_000
    assert s.submit(3, signed(V2, "ATTEST", {"task_id": str(need.id), "commit_id": commit_id,
                                             "verdict": "valid"})).ok
    # X1 stays silent: the attest window closes, the result waits for a new committee
    # without X1, and each member's bucket hears how it was judged.
    s.tick(3, s.task(need).commit.attest_by_ms)
    assert s.task(need).epoch == 0 and s.task(need).silent == (X1.public_key,)
    redrawn, _ = b3.machine.committee(s.task(need), b"\x00" * 32)
    assert redrawn and X1.public_key not in redrawn  # as many as are left, k at most
    initial = GENESIS.params["reputation_initial_bp"]
    v2 = s.b[2].machine.part.pool.member(V2.public_key)
    x1 = s.b[1].machine.part.pool.member(X1.public_key)
    assert v2 is not None and x1 is not None
    assert v2.reputation_bp == initial and v2.active_ms == s.ts
    assert x1.reputation_bp == initial - GENESIS.params["reputation_failed_attestation_bp"]
    s.conserved()


def test_several_views_go_in_one_entry_checked_each_and_older_ones_skipped() -> None:
    """`pool_views`: one entry holding what a draw needs from several buckets. Each view
    is checked as a `pool_view` is (one forged view refuses the whole entry); a view not
    newer than the one held is skipped; the bodies round-trip; a draw then seats the
    same committee as with separate views."""
    s = Swarm()
    need, _ = committed_in_bucket_3(s, k=2)
    b1, b2, b3 = s.b[1], s.b[2], s.b[3]
    rows1, proof1 = b1.machine.part.rows(), b1.last_entry_proof()
    forged = [replace(r, stake=r.stake * 10) for r in rows1]
    assert s.command(3, pool_views_command(3, [(1, forged, proof1),
                                               (2, b2.machine.part.rows(), None)]).stamp(
        s.ts)).code == "unauthenticated"
    assert b3.machine.ledger.views() == {}
    both = pool_views_command(3, [(2, b2.machine.part.rows(), None), (1, rows1, proof1)])
    assert [v["bucket"] for v in both.value["views"]] == [1, 2]  # in bucket order
    applied = b3.commit(both.stamp(s.ts))
    assert isinstance(applied, LedgerApplied) and applied.outcome.ok, applied
    assert sorted(b3.machine.ledger.views()) == [1, 2]
    assert b3.machine.entry_kinds["PoolViews"] == 1
    body = b3.chain[-1].body
    assert isinstance(body, PoolViews) and decode_body(encode_body(body)) == body
    # The same views again: both older than held, skipped; the entry changes no view.
    before = b3.machine.ledger.views()
    again = b3.commit(pool_views_command(3, [(1, rows1, proof1)]).stamp(s.ts + 1))
    assert isinstance(again, LedgerApplied) and again.outcome.ok
    assert b3.machine.ledger.views() == before
    drawn = b3.commit(draw_command(3, need.id, b3.proof(s.task(need).commit.index)).stamp(
        s.ts))
    assert isinstance(drawn, LedgerApplied) and drawn.outcome.ok
    assert set(s.task(need).commit.committee) == {V2.public_key, X1.public_key}
    s.conserved()


def test_a_views_entry_is_bounded_and_in_bucket_order() -> None:
    row = PoolRow(bytes(32), 1, (), "o", 1, "r", 0, 5_000, 0, 0)
    too_many = {"op": "pool_views", "views": [
        {"bucket": b, "index": 0, "rows": [row.value()]} for b in range(POOL_VIEWS_MAX + 1)]}
    with pytest.raises(SchemaError):
        body_from_value(too_many)
    unordered = {"op": "pool_views", "views": [
        {"bucket": 2, "index": 0, "rows": []}, {"bucket": 1, "index": 0, "rows": []}]}
    with pytest.raises(SchemaError, match="sorted by bucket"):
        body_from_value(unordered)
