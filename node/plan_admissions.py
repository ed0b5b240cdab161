"""Which winning bids' patches this node's plan has admitted, and keeping that.

Owns turning the task books' certified decisions into `Replica.admit` calls (the rule
itself is `protocol/replay.py`, docs/PROTOCOL.md §8.4) and remembering every admission
in the envelope store, so that a restarted node admits the same patches even for tasks
its buckets have since forgotten. A decision is certified where it is read: the node's
replica of the bucket or its certified read replica (docs/LEDGER.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from swarm.protocol import cbor
from swarm.protocol.cid import Cid
from swarm.protocol.errors import DecodeError
from swarm.protocol.replay import Replica
from swarm.protocol.task import Step, Task

from .store import Store

log = logging.getLogger(__name__)

_PREFIX = "admit/"


class PlanAdmissions:
    """`task_of(bucket, need)` reads a task from the node's view of its bucket;
    `tasks()` yields every task the node's buckets hold."""

    def __init__(self, replica: Replica, store: Store,
                 task_of: Callable[[int, Cid], Task | None],
                 tasks: Callable[[], Sequence[Task]]) -> None:
        self.replica = replica
        self.store = store
        self.task_of = task_of
        self.tasks = tasks

    def restore(self) -> int:
        """Admit what this node admitted before it stopped, then every decision its
        buckets hold now (one it applied while the listener was not yet there, or that
        came in a snapshot). Returns how many admissions it knows."""
        for name, value in self.store.meta_items(_PREFIX):
            try:
                need, k_plan = cbor.decode(value)
                proposal = Cid(bytes.fromhex(name[len(_PREFIX):]))
                self.replica.admit(proposal, Cid(need), int(k_plan))
            except (DecodeError, ValueError, TypeError) as exc:
                log.warning("plan admission %s is unreadable (%s); skipped", name, exc)
        for task in self.tasks():
            d = task.decision
            if d is not None:
                self._admit(d.proposal, d.need, task.terms.k_plan)
        return len(self.replica.admissions)

    def applied(self, bucket: int, steps: tuple[Step, ...]) -> None:
        """A ledger listener: each decision an applied entry made."""
        for step in steps:
            for d in step.decisions:
                task = self.task_of(bucket, d.need)
                self._admit(d.proposal, d.need, task.terms.k_plan if task else 0)

    def _admit(self, proposal: Cid, need: Cid, k_plan: int) -> None:
        if proposal in self.replica.admissions:
            return
        self.replica.admit(proposal, need, k_plan)
        # Not synced: a restart after a power cut finds it again in the bucket's task
        # book as long as the book keeps the task.
        self.store.put_meta(_PREFIX + proposal.raw.hex(), cbor.encode([need.raw, k_plan]),
                            sync=False)
