"""The other validators as this node sees them, and who leads what.

Owns peer liveness (a peer is alive while its frames keep coming and its connection
stands), the bitmaps of buckets each peer says it leads (its beats: CockroachDB's
coalesced heartbeats), and the two leadership moves the shell makes on them: taking
over the buckets of a leader that is gone (`take_over`) and handing idle buckets to
validators that lead less than their share (`balance`). The groups themselves are
node/multiraft.py's; this module only reads and nudges them.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarm.protocol.raft import NONE, Role
from swarm.protocol.raftwire import bitmap_has

from .raft_group import Group

PEER_DEAD_TICKS = 40  # no frame for 2 s: the peer is gone
# Leadership balance: every BALANCE_TICKS a node that leads more than its share (the
# bucket count over the validators, rounded up) plus BALANCE_SLACK hands up to
# BALANCE_MOVES_MAX of its idle buckets to replicas that lead less than their share (as
# their beats tell), by Raft leader transfer. Elections alone left one node of five
# leading about a third of the buckets, so its CPU paced every other node's.
BALANCE_TICKS = 40
BALANCE_SLACK = 1
BALANCE_MOVES_MAX = 16


class Peers:
    """Liveness and leadership of the validators 1..`nodes`, in ticks of the shell's
    clock (`tick`). `me` is this node's id (NONE for a node that is no validator)."""

    def __init__(self, me: int, nodes: int) -> None:
        self.me = me
        self.nodes = nodes
        self.now = 0  # the shell's tick count
        self.seen: dict[int, int] = {}  # node id -> tick of its last frame
        self.leads: dict[int, bytes] = {}  # node id -> bitmap of buckets it last said it leads
        self.down: set[int] = set()  # connections the transport lost

    def tick(self) -> set[int]:
        """Advance the clock one tick; the peers taken for dead from now on."""
        self.now += 1
        return {p for p, seen in self.seen.items()
                if self.now - seen > PEER_DEAD_TICKS} | self.down

    def heard(self, peer: int, leads: bytes) -> bool:
        """A frame came from `peer` (its bitmap of led buckets, when it carried one).
        True if the peer was taken for dead until now (it restarted or is back from a
        cut)."""
        back = not self.alive(peer)
        self.seen[peer] = self.now
        self.down.discard(peer)
        if leads:
            self.leads[peer] = leads
        return back

    def lost(self, peer: int) -> None:
        """The transport lost its connection to `peer` (e.g. the process died)."""
        self.down.add(peer)

    def connected(self, peer: int) -> None:
        self.down.discard(peer)

    def alive(self, peer: int) -> bool:
        seen = self.seen.get(peer)
        return peer == self.me or (seen is not None and peer not in self.down
                                   and self.now - seen <= PEER_DEAD_TICKS)

    def beats_as_leader(self, peer: int, bucket: int) -> bool:
        """`peer` has been heard from and its last beat said it leads `bucket`."""
        return peer in self.seen and bitmap_has(self.leads.get(peer, b""), bucket)

    def leader_hint(self, bucket: int) -> int:
        """The live peer whose beats say it leads `bucket`, or NONE."""
        for peer, leads in self.leads.items():
            if bitmap_has(leads, bucket) and self.alive(peer):
                return peer
        return NONE

    def validators(self) -> range:
        return range(1, self.nodes + 1)

    def announcer(self) -> int:
        """The validator that announces certified decisions for the swarm, as this node
        sees it: the lowest-numbered one it takes to be alive (itself included). Nodes
        that disagree for a moment (one just died) both announce; a DECIDE stating a
        decision already known is harmless."""
        return min((p for p in self.validators() if self.alive(p)), default=self.me)

    def take_over(self, g: Group, dead: set[int]) -> bool:
        """`g`'s leader is dead: forget it, and campaign at once if this node is the
        lowest-id live replica (which makes failover a fraction of a second rather than
        an election timeout). True if it campaigned."""
        g.raw.forget_leader()
        live = [n for n in g.raw.raft.voters if n not in dead]
        if live and min(live) == self.me:
            g.raw.campaign()
            return True
        return False

    def balance(self, groups: Iterable[Group], bucket_count: int,
                dead: set[int]) -> list[Group]:
        """Hand idle buckets this node leads beyond its share to live replicas that lead
        less than theirs (Raft leader transfer); the groups it moved."""
        mine = [g for g in groups if g.raw.raft.role == Role.LEADER]
        fair = -(-bucket_count // self.nodes)
        excess = len(mine) - fair - BALANCE_SLACK
        if excess <= 0:
            return []
        leads = {p: int.from_bytes(bits, "little").bit_count()
                 for p, bits in self.leads.items() if p not in dead and self.alive(p)}
        moved: list[Group] = []
        for g in mine:
            r = g.raw.raft
            if len(moved) >= min(excess, BALANCE_MOVES_MAX):
                break
            if not g.quiet or r.lead_transferee != NONE:
                continue  # busy, or already moving
            takers = [p for p in r.voters if p in leads and leads[p] < fair]
            if not takers:
                continue
            target = min(takers, key=lambda p: (leads[p], p))
            g.raw.transfer_leader(target)
            g.idle_ticks = 0  # tick again until the transfer is done or given up
            leads[target] += 1
            moved.append(g)
        return moved
