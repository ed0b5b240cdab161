"""Task events in the node: what the buckets' task books did, as a stream to follow.

Owns the node's recent task events and their followers. Every applied entry's task
steps (from a replica or a certified read replica, node/ledger_raft.py) become events,
numbered in the order this node applied them: a transition, a decision (with its
explanation memo's CID), a payment out of a task's escrow, a slash (missed heartbeats,
or an attestation an upheld challenge showed wrong).
They are kept in a ring of `EVENTS_KEPT` and counted in `/metrics`
(`swarm_task_transitions_total{state}`); `follow` yields those after a number, then
waits for more, so agents and watchers need not poll. A follower that falls more than
the ring behind is told how many it missed (`gap`) and goes on from the oldest kept.
Events are this node's view: a restart replays its log and numbers them afresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter

from swarm.protocol.task import Step

EVENTS_KEPT = 4096
FOLLOWERS_MAX = 64  # concurrent streams; another is refused (503) until one ends
KEEPALIVE_S = 10.0  # a comment line this often keeps an idle stream open through proxies


class TaskEvents:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.next_seq = 1
        self.followers = 0
        self._changed = trio.Event()
        self.transitions = Counter("swarm_task_transitions", "Task transitions applied, "
                                   "by the state entered", ["state"], registry=registry)

    def publish(self, bucket: int, steps: Sequence[Step]) -> None:
        """Called from the Raft round with what one entry did: never blocks."""
        for step in steps:
            for t in step.transitions:
                self.transitions.labels(t.after).inc()
                self._add({"kind": "transition", "need_id": str(t.need), "epoch": t.epoch,
                           "before": t.before, "after": t.after, "cause": t.cause,
                           "bucket": bucket})
            for d in step.decisions:
                self._add({"kind": "decision", "need_id": str(d.need), "epoch": d.epoch,
                           "winner": d.winner.hex(), "proposal": str(d.proposal),
                           "cost": d.cost, "memo": str(d.memo), "bucket": bucket})
            for p in step.payments:
                self._add({"kind": "payment", "need_id": str(p.need),
                           "account": p.account.hex(), "amount": p.amount, "why": p.kind,
                           "bucket": bucket})
            for s in step.slashes:
                self._add({"kind": "slash", "need_id": str(s.need), "account": s.account.hex(),
                           "lease_id": str(s.lease_id), "misses": s.misses,
                           "bucket": bucket})
            for c in step.challenge_slashes:
                self._add({"kind": "slash", "need_id": str(c.need), "account": c.account.hex(),
                           "reason": "failed_challenge", "challenge_id": str(c.challenge_id),
                           "challenger": c.challenger.hex(), "bucket": bucket})
        self._changed.set()
        self._changed = trio.Event()

    def _add(self, event: dict[str, Any]) -> None:
        event["seq"] = self.next_seq
        self.next_seq += 1
        self.events.append(event)

    async def follow(self, after: int = 0, need: str | None = None
                     ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Events numbered above `after` (only `need`'s, if given), then each new one
        as it comes; None every KEEPALIVE_S of silence. The caller bounds how many
        follow at once (`followers`, FOLLOWERS_MAX)."""
        self.followers += 1
        try:
            seq = max(after, 0)
            while True:
                oldest = self.events[0]["seq"] if self.events else self.next_seq
                if seq + 1 < oldest:
                    yield {"kind": "gap", "missed": oldest - seq - 1, "seq": oldest - 1}
                    seq = oldest - 1
                fresh = [e for e in self.events if e["seq"] > seq]
                for event in fresh:
                    seq = event["seq"]
                    if need is None or event["need_id"] == need:
                        yield event
                if fresh:
                    continue
                changed = self._changed
                with trio.move_on_after(KEEPALIVE_S):
                    await changed.wait()
                    continue
                yield None
        finally:
            self.followers -= 1
