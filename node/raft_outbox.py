"""What waits to go to each peer in a Raft frame, and when a frame must go.

Owns one queue per peer of everything a frame carries (Raft messages, signature notes,
DECIDE and ledger requests and answers, certified chain entries, fetch requests,
announcements), the rule for which of them are urgent (a frame goes to that peer at
once) and which ride the next frame to it or the next tick's, and turning a queue into
a `Frame`. When frames go, and the beat they carry, is `MultiRaft.flush`'s.

Someone waits on an append carrying entries and on its acknowledgement (the commit
needs it), on elections and transfers, and on every request, answer and fetch. Nobody
waits on an append that only moves the commit index (the leader has answered; a
follower applies a little later), on an acknowledgement repeating the last one, on
heartbeats, on signature notes (certificates are announced in batches anyway), on
certified chain entries or on relayed announcements: those ride the next frame to that
peer, or go on the next tick (a frame of its own for each would be four of the ten
frames one DECIDE takes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from swarm.protocol.raft import Message, MsgType
from swarm.protocol.raftwire import (
    Announcement,
    CertifiedEntry,
    DecideRequest,
    DecideResponse,
    Frame,
    SigNote,
    SubmitRequest,
    SubmitResponse,
)

_NOT_URGENT = (MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP)


@dataclass
class PeerQueue:
    """Everything queued for one peer's next frame."""

    msgs: list[tuple[int, Message]] = field(default_factory=list)  # (bucket, message)
    sigs: list[SigNote] = field(default_factory=list)
    requests: list[DecideRequest] = field(default_factory=list)
    responses: list[DecideResponse] = field(default_factory=list)
    submits: list[SubmitRequest] = field(default_factory=list)
    results: list[SubmitResponse] = field(default_factory=list)
    chain: list[CertifiedEntry] = field(default_factory=list)
    fetch: list[tuple[int, int]] = field(default_factory=list)
    announce: list[Announcement] = field(default_factory=list)
    urgent_msg: bool = False  # an urgent Raft message is queued

    @property
    def empty(self) -> bool:
        return not (self.msgs or self.sigs or self.requests or self.responses or self.submits
                    or self.results or self.chain or self.fetch or self.announce)

    @property
    def urgent(self) -> bool:
        """Whether a frame should go now: an urgent Raft message was queued since the
        last frame (and something is queued still: a snapshot may have left for its own
        stream), or a request or answer (DECIDE or ledger), or a fetch is queued."""
        return (self.urgent_msg and not self.empty) or bool(
            self.requests or self.responses or self.submits or self.results or self.fetch)

    def frame(self, sender: int, leads: bytes) -> Frame:
        return Frame(sender, tuple(self.msgs), leads, tuple(self.sigs), tuple(self.requests),
                     tuple(self.responses), tuple(self.submits), tuple(self.results),
                     tuple(self.chain), tuple(self.fetch), tuple(self.announce))


class Outbox:
    """The queues of one node, by peer id."""

    def __init__(self) -> None:
        self._peers: dict[int, PeerQueue] = {}
        # bucket -> the last acknowledgement (to, term, index) queued: a repeat is not
        # urgent.
        self._acked: dict[int, tuple[int, int, int]] = {}

    def to(self, peer: int) -> PeerQueue:
        """The queue of `peer` (made when first used)."""
        q = self._peers.get(peer)
        if q is None:
            q = self._peers[peer] = PeerQueue()
        return q

    def raft(self, bucket: int, m: Message) -> None:
        """Queue a Raft message for its peer, noting whether it is urgent (see the
        module docstring)."""
        q = self.to(m.to)
        q.msgs.append((bucket, m))
        if m.type == MsgType.APP:
            urgent = bool(m.entries)
        elif m.type == MsgType.APP_RESP:
            ack = (m.to, m.term, m.index)
            urgent = m.reject or self._acked.get(bucket) != ack
            if not m.reject:
                self._acked[bucket] = ack
        else:
            urgent = m.type not in _NOT_URGENT
        q.urgent_msg |= urgent

    def peers(self) -> set[int]:
        """The peers with something queued."""
        return {p for p, q in self._peers.items() if not q.empty}

    def drop(self, peer: int) -> None:
        """Forget what is queued for `peer` (ourselves, or nobody)."""
        self._peers.pop(peer, None)

    def divert_snapshots(self, send: Callable[[int, int, Message], None]) -> int:
        """Hand SNAP messages to `send(peer, bucket, message)` instead of the frames
        (they go on streams of their own); returns how many."""
        sent = 0
        for peer, q in self._peers.items():
            if any(m.type == MsgType.SNAP for _, m in q.msgs):
                for bucket, m in q.msgs:
                    if m.type == MsgType.SNAP:
                        sent += 1
                        send(peer, bucket, m)
                q.msgs = [(b, m) for b, m in q.msgs if m.type != MsgType.SNAP]
        return sent

    def take(self, peers: set[int], sender: int, leads: bytes) -> Iterator[tuple[int, Frame]]:
        """A frame for each of `peers` (in order) with all that is queued for it,
        carrying `leads`; their queues empty."""
        for peer in sorted(peers):
            q = self._peers.pop(peer, None) or PeerQueue()
            yield peer, q.frame(sender, leads)

    def urgent(self) -> set[int]:
        """The peers a frame must go to now."""
        return {p for p, q in self._peers.items() if q.urgent}

