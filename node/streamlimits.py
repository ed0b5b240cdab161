"""How many streams of one protocol a node serves at once: per peer, and in all.

A libp2p peer may open as many streams as it likes (py-libp2p's yamux sets no limit),
and every request a node is serving holds some of its memory until answered: a
catch-up reply up to 8 MiB, a relayed submission a task waiting on Raft. Unbounded, one
peer opening a thousand catch-up streams at once would hold gigabytes of the node's
memory. `Slots` refuses (resets) a stream past either bound; an honest peer asks one
request at a time per protocol, or a few, and never meets it.
"""

from __future__ import annotations

from collections.abc import Hashable


class Slots:
    """Counts the streams being served, per peer and in all."""

    def __init__(self, per_peer: int, total: int) -> None:
        if per_peer < 1 or total < per_peer:
            raise ValueError("need 1 <= per_peer <= total")
        self.per_peer = per_peer
        self.total = total
        self.serving: dict[Hashable, int] = {}
        self.in_use = 0
        self.refused = 0

    def take(self, peer: Hashable) -> bool:
        """Claim a slot for `peer`'s stream; False (and counted) when it must be refused."""
        if self.in_use >= self.total or self.serving.get(peer, 0) >= self.per_peer:
            self.refused += 1
            return False
        self.serving[peer] = self.serving.get(peer, 0) + 1
        self.in_use += 1
        return True

    def give(self, peer: Hashable) -> None:
        """Return the slot `take` granted."""
        left = self.serving[peer] - 1
        if left:
            self.serving[peer] = left
        else:
            del self.serving[peer]
        self.in_use -= 1
