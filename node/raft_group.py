"""One bucket's Raft group on this node, and the shell's clock.

Owns what the shell keeps per bucket it replicates: the core (`RawNode`), its storage,
its state machine, how long it has been idle, and the signatures collected for its
entries (node/raft_certs.py). Driving it is node/multiraft.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from swarm.protocol.bucket_machine import BucketMachine
from swarm.protocol.raft import RawNode, Role

from .raft_certs import CertState
from .raftstore import BucketStorage

TICK_MS = 50  # the shell's clock: one tick of every group's Raft core
# A leader commits and tells its followers the new commit index at once (an append goes
# out as soon as the commit moves), so once everyone matches, heartbeats only renew the
# lease; beats do that for quiet buckets. One tick of being caught up is enough: a
# bucket touched by each DECIDE otherwise heartbeats for 300 ms after it, and under a
# stream of DECIDEs to random buckets that kept dozens of buckets beating (most of the
# Raft frames in a trace of one DECIDE).
QUIET_AFTER_TICKS = 1


@dataclass
class Group:
    bucket: int
    raw: RawNode
    storage: BucketStorage
    machine: BucketMachine
    idle_ticks: int = 0
    certs: dict[int, CertState] = field(default_factory=dict)  # index -> signatures

    @property
    def quiet(self) -> bool:
        """Idle and caught up: its leader stops ticking it (beats keep it alive)."""
        return self.idle_ticks >= QUIET_AFTER_TICKS

    def status(self, replicas: list[int], follows_beating_leader: bool) -> dict[str, Any]:
        """The group as `swarm-node raft status` shows it. A follower is quiet while
        its leader's node beats and says it leads the bucket
        (`follows_beating_leader`)."""
        r = self.raw.raft
        lag = 0
        if r.role == Role.LEADER:
            lag = max((r.log.last_index() - pr.match for pr in r.prs.values()), default=0)
        return {
            "bucket": self.bucket, "replica": True, "replicas": replicas,
            "voters": sorted(r.voters), "role": r.role.name.lower(),
            "leader": r.lead or None, "term": r.term, "commit": r.log.committed,
            "applied": r.log.applied, "last_index": r.log.last_index(), "lag": lag,
            "quiet": self.quiet or follows_beating_leader,
            "decisions": len(self.machine.decisions),
            "ledger_last": self.machine.part.last,
            "snapshot_index": self.storage.snapshot().index,
        }
