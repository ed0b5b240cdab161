"""The market in the buckets: a NEED debits its poster's bucket and funds the task in
the NEED's bucket by an authenticated effect; lifecycle envelopes are applied there,
checked on apply like ledger envelopes; tick entries fire the task timers; refunds and
payouts travel back as credits; credits are conserved across buckets throughout, and a
read replica fed only certified chain entries holds the same tasks."""

from __future__ import annotations

import itertools
from typing import Any

from test_bucket_machine import GENESIS, Bucket, U, identity_in

from swarm.protocol.bucket_machine import (
    BucketMachine,
    LedgerApplied,
    effects_command,
    tick_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.ledger import genesis_supply
from swarm.protocol.task import CANCELLED, CLAIMED, COMMITTED, DECIDED, OPEN

N = 4
A0, B0 = identity_in(0), identity_in(0, 1)
A1, C3 = identity_in(1), identity_in(3)
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
