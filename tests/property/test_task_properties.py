"""Property tests of the task lifecycle (protocol/task.py).

A stateful machine drives one TaskBook with several NEEDs, bidders, workers and
committee members doing anything at any time (bids in and out of windows, claims and
heartbeats by anyone, yields, commits, draws, attestations, ticks, long silences),
refused steps included. After every step:

* P1 per round: at most one decision per (NEED, epoch), and a task's epoch only grows;
* escrow: no task pays out more than its budget, and a task that ended (cancelled or
  paid) has paid out exactly its budget, once;
* at most one lease per task, held by the epoch's winner;
* a refused step changes nothing;
* the book rebuilt from its snapshot has the same root and the same next deadline.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from swarm.protocol import cbor
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.task import (
    CANCELLED,
    CLAIMED,
    COMMITTED,
    Step,
    TaskBook,
    TaskError,
    Terms,
    restore,
)

SWARM = b"\x09" * 32
PARAMS = {**DEFAULT_PARAMS, "bid_window_ms": 1_000, "claim_window_ms": 1_000,
          "attest_window_ms": 1_500, "challenge_window_ms": 2_000, "lease_grace_ms": 100,
          "outage_gap_ms": 4_000, "heartbeat_interval_min_ms": 100, "lease_ttl_min_ms": 100,
          "auction_rounds_max": 2, "task_reopens_max": 3, "task_retention_ms": 1 << 40,
          "bids_per_round_max": 4}
PEOPLE = [Identity(bytes([0x70 + i]) * 32) for i in range(7)]
NEEDS = [dag_cbor_cid(cbor.encode(f"need-{i}")) for i in range(3)]
_counter = itertools.count(1)


def _env(who: Identity, kind: str, payload: dict[str, Any]) -> Envelope:
    return make_envelope(who, kind=kind, swarm=SWARM, lamport=next(_counter), ts=1,
                         payload=payload)


class TaskMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.book = TaskBook(PARAMS)
        self.ts = 1_000
        self.index = 0
        self.decisions: Counter[tuple[Cid, int]] = Counter()
        self.paid: Counter[Cid] = Counter()
        self.budgets: dict[Cid, int] = {}
        self.epochs: dict[Cid, int] = {}
        for need in NEEDS:  # every NEED funded from the start: the rules below act on them
            self.fund(need, 1_500, 150, 2)

    def _record(self, step: Step) -> None:
        for d in step.decisions:
            self.decisions[(d.need, d.epoch)] += 1
        for p in step.payments:
            self.paid[p.need] += p.amount

    def _next(self) -> int:
        self.index += 1
        self._record(self.book.advance(self.ts, self.index))
        return self.index

    def _try(self, do: Any) -> None:
        before = self.book.state_value()
        try:
            self._record(do())
        except TaskError:
            assert self.book.state_value() == before

    @rule(need=st.sampled_from(NEEDS), budget=st.integers(1, 2_000),
          bounty=st.integers(0, 300), k=st.integers(1, 3))
    def fund(self, need: Cid, budget: int, bounty: int, k: int) -> None:
        i = self._next()
        known = need in self.book.tasks
        step = self.book.fund(Terms(need, PEOPLE[0].public_key, budget, "simple",
                                    min(bounty, budget), 0, k), i, self.ts)
        self._record(step)
        if not known:
            self.budgets[need] = budget
        else:  # refunded at once: count it apart from the task's own escrow
            self.paid[need] -= budget

    @rule(dt=st.sampled_from([0, 50, 300, 1_000, 2_500, 9_000]))
    def tick(self, dt: int) -> None:
        self.ts += dt
        self._next()

    @rule(who=st.sampled_from(PEOPLE), need=st.sampled_from(NEEDS),
          cost=st.integers(0, 1_600), eta=st.integers(0, 100_000), ballot=st.integers(0, 5))
    def propose(self, who: Identity, need: Cid, cost: int, eta: int, ballot: int) -> None:
        e = _env(who, "PROPOSE", {"need_id": need, "proposal_id": "p", "cost": cost,
                                  "eta_ms": eta, "ballot": f"b{ballot}"})
        i = self._next()
        self._try(lambda: self.book.submit(e, i, self.ts, reputation_bp=cost % 10_000))

    @rule(who=st.sampled_from(PEOPLE), need=st.sampled_from(NEEDS),
          kind=st.sampled_from(["CLAIM", "HEARTBEAT", "YIELD", "COMMIT", "ATTEST"]),
          verdict=st.booleans(), current=st.booleans())
    def lifecycle(self, who: Identity, need: Cid, kind: str, verdict: bool,
                  current: bool) -> None:
        task = self.book.get(need)
        other = dag_cbor_cid(cbor.encode("stale"))
        lease = task.lease.lease_id if task and task.lease and current else other
        commit = task.commit.commit_id if task and task.commit and current else other
        payloads: dict[str, dict[str, Any]] = {
            "CLAIM": {"lease_ttl_ms": 3_000, "heartbeat_interval_ms": 500},
            "HEARTBEAT": {"lease_id": lease, "progress": 50},
            "YIELD": {"reason": "busy", "lease_id": lease},
            "COMMIT": {"lease_id": lease, "result": other},
            "ATTEST": {"commit_id": commit, "verdict": "valid" if verdict else "invalid"},
        }
        e = _env(who, kind, {"task_id": str(need), **payloads[kind]})
        i = self._next()
        self._try(lambda: self.book.submit(e, i, self.ts))

    # The guided move: what the party the task waits for would do next, so that runs
    # reach every state (random moves alone rarely get past DECIDED).
    @rule(need=st.sampled_from(NEEDS), pick=st.integers(0, 6), good=st.integers(0, 9))
    def move_on(self, need: Cid, pick: int, good: int) -> None:
        task = self.book.get(need)
        if task is None:
            return
        by_key = {p.public_key: p for p in PEOPLE}
        n = str(need)
        e: Envelope | None = None
        if task.state == "OPEN" and self.ts < task.close_ms and pick:
            e = _env(PEOPLE[pick], "PROPOSE", {"need_id": need, "proposal_id": "p",
                                               "cost": 100 * pick, "eta_ms": 1_000,
                                               "ballot": f"m{next(_counter)}"})
        elif task.state == "DECIDED" and task.decision is not None:
            e = _env(by_key[task.decision.winner], "CLAIM",
                     {"task_id": n, "lease_ttl_ms": 3_000, "heartbeat_interval_ms": 1_000})
        elif task.state == "CLAIMED" and task.lease is not None:
            kind = "HEARTBEAT" if good < 3 else "COMMIT"
            extra = ({"progress": 60} if kind == "HEARTBEAT"
                     else {"result": dag_cbor_cid(cbor.encode("result"))})
            e = _env(by_key[task.lease.worker], kind,
                     {"task_id": n, "lease_id": task.lease.lease_id, **extra})
        elif task.state == "COMMITTED" and task.commit is not None:
            c = task.commit
            if not c.committee:
                banned = {c.worker, task.terms.poster}
                members = [p.public_key for p in PEOPLE if p.public_key not in banned]
                self._next()
                self._try(lambda: self.book.draw(need, members[:pick % 4], self.ts,
                                                commit_index=c.index))
                return
            member = c.committee[pick % len(c.committee)]
            e = _env(by_key[member], "ATTEST", {"task_id": n, "commit_id": c.commit_id,
                                                "verdict": "valid" if good else "invalid"})
        if e is None:
            due = self.book.next_due_ms()
            self.ts = max(self.ts, due if due is not None else self.ts + 100)
            self._next()
            return
        sent = e
        i = self._next()
        self._try(lambda: self.book.submit(sent, i, self.ts))

    @rule(need=st.sampled_from(NEEDS), members=st.sets(st.sampled_from(PEOPLE), max_size=4))
    def draw(self, need: Cid, members: set[Identity]) -> None:
        self._next()
        task = self.book.get(need)
        at = task.commit.index if task is not None and task.commit is not None else 1
        self._try(lambda: self.book.draw(need, [m.public_key for m in members], self.ts,
                                         commit_index=at))

    @rule()
    def snapshot(self) -> None:
        again = restore(PARAMS, cbor.decode(cbor.encode(self.book.state_value())),
                        self.book.clock_ms)
        assert again.root() == self.book.root()
        assert again.next_due_ms() == self.book.next_due_ms()
        self.book = again

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "book"):
            return
        assert all(n == 1 for n in self.decisions.values()), self.decisions
        for need, task in self.book.tasks.items():
            assert task.epoch >= self.epochs.get(need, 0)
            self.epochs[need] = task.epoch
            assert 0 <= self.paid[need] <= task.terms.budget
            if task.state == CANCELLED or task.paid:
                assert self.paid[need] == task.terms.budget
            if task.state in (CLAIMED,):
                assert task.lease is not None and task.decision is not None
                assert task.lease.worker == task.decision.winner
            if task.state == COMMITTED:
                assert task.commit is not None and task.lease is not None


TestTaskMachine = TaskMachine.TestCase
