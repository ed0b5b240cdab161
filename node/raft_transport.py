"""The Raft transport: one long-lived libp2p stream per peer pair, frames batched.

Owns how multi-raft frames cross the network: protocol `/can-swarm/<swarm>/raft/1.0.0`;
each node opens one outbound stream to every other validator and writes to it only
(replies come back on the stream the other side opened, so neither side ever waits for
a read on a stream it writes). Frames are uvarint-length-prefixed; every frame queued
for a peer since the last write goes out in one `write()` (measured here: opening a
stream per request costs ~1.7 ms and each write is CPU-bound at ~8k/s, so batching and
long-lived streams matter). Reads are buffered: py-libp2p's `read(n)` may return fewer
bytes, and its varint helper reads the prefix one byte per call.

Bounds: at most `QUEUE_FRAMES_MAX` frames and `QUEUE_BYTES_MAX` bytes wait per peer
(yamux would otherwise buffer up to 16 MiB unasked); a frame past them is dropped and
the stream reset, so the loss shows as a lost peer at both ends, as the shell expects;
an incoming frame over `FRAME_BYTES_MAX` ends the stream. An inbound stream is accepted
only from a validator's peer id, and each frame it carries is attributed to that
validator: a peer cannot speak for another.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from swarm.protocol.logformat import ItemTooLarge, take_prefixed, uvarint
from swarm.protocol.placement import Placement
from swarm.protocol.raftwire import FRAME_BYTES_MAX

from .p2p import peer_id_of_account

log = logging.getLogger("swarm.raft.transport")

QUEUE_FRAMES_MAX = 4096
QUEUE_BYTES_MAX = 64 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024
DIAL_TIMEOUT_S = 5.0
BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Every validator beats to every other every 0.5 s, so nothing from a peer for STALL_S
# while our stream to it is open means the connection stalled: a cut link leaves TCP
# connections open, and once the link is back the kernel's retransmission backoff held
# them silent for up to 41 s after a 70 s cut (tests/integration/test_partition_netns.py).
# The connection is then closed and dialled afresh, which succeeds as soon as the link is.
STALL_S = 10.0
STALL_CHECK_S = 1.0  # how often a quiet stream looks at the time since the peer's last frame


def raft_protocol(short_id: str) -> TProtocol:
    return TProtocol(f"/can-swarm/{short_id}/raft/1.0.0")


class FrameReader:
    """Splits a byte stream into length-prefixed frames, reading in large chunks."""

    def __init__(self, stream: INetStream, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.max = frame_bytes_max

    def _parse(self) -> bytes | None:
        """The next whole frame off the buffer, or None; ValueError for a bad prefix
        or a frame over the limit."""
        try:
            return take_prefixed(self.buf, self.max)
        except ItemTooLarge as exc:
            raise ValueError(f"frame of {exc.size} bytes is over {self.max}") from None

    async def next(self) -> bytes | None:
        """The next frame, or None at the end of the stream."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            chunk = await self.stream.read(READ_CHUNK_BYTES)
            if not chunk:
                return None
            self.buf += chunk


class _Stalled(Exception):
    """Nothing came from the peer for STALL_S while our stream to it was open."""


class _Overflowed(Exception):
    """A frame for the peer was dropped because its queue was full."""


class _Peer:
    def __init__(self, node_id: int, peer_id: ID) -> None:
        self.node_id = node_id
        self.peer_id = peer_id
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.ready = trio.Event()
        self.connected = False
        self.last_inbound = 0.0  # trio time of its last frame to us
        self.overflowed = False  # a frame was dropped since the stream was opened


class RaftTransport:
    def __init__(self, host: IHost, protocol: TProtocol, placement: Placement, my_id: int,
                 addrs_of: Callable[[int], list[str]], on_frame: Callable[[int, bytes], None],
                 on_peer_lost: Callable[[int], None],
                 on_peer_up: Callable[[int], None]) -> None:
        self.host = host
        self.protocol = protocol
        self.my_id = my_id
        self.addrs_of = addrs_of
        self.on_frame = on_frame
        self.on_peer_lost = on_peer_lost
        self.on_peer_up = on_peer_up
        self.peers: dict[int, _Peer] = {}
        self.by_peer_id: dict[ID, int] = {}
        for node_id in range(1, len(placement.accounts) + 1):
            pid = peer_id_of_account(placement.account(node_id))
            self.by_peer_id[pid] = node_id
            if node_id != my_id:
                self.peers[node_id] = _Peer(node_id, pid)
        self.stats: dict[str, int] = {"frames_dropped": 0, "writes": 0, "frames_sent": 0,
                                      "streams_refused": 0, "dial_failures": 0,
                                      "stalls": 0, "overflows": 0, "superseded": 0}
        self.inbound: dict[int, INetStream] = {}  # each peer's current stream to us

    def send(self, node_id: int, frame: bytes) -> None:
        peer = self.peers.get(node_id)
        if peer is None:
            return
        if (len(peer.queue) >= QUEUE_FRAMES_MAX
                or peer.queued_bytes + len(frame) > QUEUE_BYTES_MAX):
            # Not silently: a quiet bucket sends nothing more, so a dropped frame that
            # carried its last commit index would leave the peer behind until the next
            # entry. The stream is broken instead, which both ends see: the peer is
            # taken for lost and, back, gets a heartbeat in every quiet bucket.
            self.stats["frames_dropped"] += 1
            peer.overflowed = True
            peer.ready.set()
            return
        peer.queue.append(frame)
        peer.queued_bytes += len(frame)
        peer.ready.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(self.protocol, self._inbound)
        async with trio.open_nursery() as nursery:
            for peer in self.peers.values():
                nursery.start_soon(self._outbound, peer)
            task_status.started()

    async def _outbound(self, peer: _Peer) -> None:
        failures = 0
        while True:
            try:
                stream = await self._open(peer)
            except Exception as exc:  # noqa: BLE001 - any dial failure: back off and retry
                self.stats["dial_failures"] += 1
                self._drop_queue(peer)
                if failures == len(BACKOFF_S):
                    log.warning("raft: validator %d unreachable for a while (%r); still "
                                "retrying every %g s", peer.node_id, exc, BACKOFF_S[-1])
                else:
                    log.debug("raft dial to %d failed: %r", peer.node_id, exc)
                if peer.connected:
                    peer.connected = False
                    self.on_peer_lost(peer.node_id)
                await trio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            # What overflowed while we were dialling was for no stream the peer had:
            # it takes this one as a new connection (and so a lost, returning peer).
            peer.overflowed = False
            peer.connected = True
            self.on_peer_up(peer.node_id)
            stalled = False
            try:
                await self._pump(peer, stream)
            except _Stalled:
                stalled = True
            except _Overflowed:
                self.stats["overflows"] += 1
                log.info("raft: queue to validator %d overflowed; its stream is reset",
                         peer.node_id)
            except Exception as exc:  # noqa: BLE001 - a broken stream: reconnect
                log.debug("raft stream to %d broke: %r", peer.node_id, exc)
            peer.connected = False
            self.on_peer_lost(peer.node_id)
            self._drop_queue(peer)
            with contextlib.suppress(Exception):  # already broken
                await stream.reset()
            if stalled:
                self.stats["stalls"] += 1
                log.info("raft: nothing from validator %d for %g s; dialling it afresh",
                         peer.node_id, STALL_S)
                with contextlib.suppress(Exception), trio.move_on_after(DIAL_TIMEOUT_S):
                    await self.host.get_network().close_peer(peer.peer_id)

    async def _open(self, peer: _Peer) -> INetStream:
        with trio.fail_after(DIAL_TIMEOUT_S):
            if not self.host.get_network().get_connections(peer.peer_id):
                addrs = [multiaddr.Multiaddr(a) for a in self.addrs_of(peer.node_id)]
                known = self.host.get_peerstore().addrs(peer.peer_id) \
                    if peer.peer_id in self.host.get_peerstore().peer_ids() else []
                if not addrs and not known:
                    raise ConnectionError(f"no address known for validator {peer.node_id}")
                await self.host.connect(PeerInfo(peer.peer_id, addrs or known))
            return await self.host.new_stream(peer.peer_id, [self.protocol])

    async def _pump(self, peer: _Peer, stream: INetStream) -> None:
        opened = trio.current_time()
        while True:
            with trio.move_on_after(STALL_CHECK_S):
                await peer.ready.wait()
            if trio.current_time() - max(peer.last_inbound, opened) > STALL_S:
                raise _Stalled
            if peer.overflowed:
                raise _Overflowed
            if not peer.ready.is_set():
                continue
            peer.ready = trio.Event()
            if not peer.queue:
                continue
            parts = []
            while peer.queue:
                frame = peer.queue.popleft()
                parts.append(uvarint(len(frame)))
                parts.append(frame)
                self.stats["frames_sent"] += 1
            peer.queued_bytes = 0
            await stream.write(b"".join(parts))
            self.stats["writes"] += 1

    def _drop_queue(self, peer: _Peer) -> None:
        self.stats["frames_dropped"] += len(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0
        peer.overflowed = False

    async def _inbound(self, stream: INetStream) -> None:
        node_id = self.by_peer_id.get(stream.muxed_conn.peer_id)
        if node_id is None or node_id == self.my_id:
            self.stats["streams_refused"] += 1
            await stream.reset()
            return
        previous = self.inbound.get(node_id)
        self.inbound[node_id] = stream
        if previous is not None and previous.muxed_conn is not stream.muxed_conn:
            await self._superseded(node_id, stream)
        reader = FrameReader(stream)
        try:
            while True:
                frame = await reader.next()
                if frame is None:
                    break
                peer = self.peers.get(node_id)
                if peer is not None:
                    peer.last_inbound = trio.current_time()
                self.on_frame(node_id, frame)
        except Exception as exc:  # noqa: BLE001 - a peer's broken stream ends only that stream
            log.debug("raft stream from %d ended: %r", node_id, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
        # The peer's only stream to us ended: it is gone or restarting. Its next frame,
        # on a new stream, marks it up again. (A stream a newer one replaced says
        # nothing about the peer.)
        if self.inbound.get(node_id) is stream:
            del self.inbound[node_id]
            self.on_peer_lost(node_id)

    async def _superseded(self, node_id: int, stream: INetStream) -> None:
        """A peer opens one stream to us at a time, so a second one, on another
        connection, means the first one's connection is dead at the peer's end: it
        restarted, or dialled again after a cut we have not noticed (a cut leaves TCP
        connections open). Our own stream to it may ride that dead connection, and its
        frames then go nowhere while the new stream keeps the peer looking alive, so
        STALL_S never fires (until the kernel gave up on the connection, up to minutes
        later, the peer heard nothing from us). Close every other connection to the
        peer: our stream breaks, and is opened again on the live one."""
        self.stats["superseded"] += 1
        peer_id = stream.muxed_conn.peer_id
        log.info("raft: validator %d opened a new stream on a new connection; closing "
                 "its old connections", node_id)
        with trio.move_on_after(DIAL_TIMEOUT_S):
            for conn in list(self.host.get_network().get_connections(peer_id)):
                if conn.muxed_conn is not stream.muxed_conn:
                    with contextlib.suppress(Exception):
                        await conn.close()
