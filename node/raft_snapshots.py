"""Raft snapshots on streams of their own, apart from the per-peer frames.

Owns how a leader's SNAP message travels (the wire form is `protocol/raftsnap.py`): one
libp2p stream per snapshot, protocol `/can-swarm/<swarm>/raft-snap/1.0.0`, opened by
the leader's node, carrying the header and the chunks; the receiver answers one status
byte and the stream closes. Frames keep flowing on their own stream meanwhile, so a
large snapshot delays no other bucket's heartbeats or appends (yamux interleaves the
two streams on the connection), and no frame is ever large.

`SnapshotReceiver` is the transport-agnostic half: it reads pieces from any source,
enforces the bounds, checks sizes, total and digest, counts what it drops, and only
then hands the SNAP message to `MultiRaft.receive_snapshot`, attributed to the validator
the transport authenticated. `SnapshotStreams` carries it over libp2p; tests carry it
over memory with the same receiver.

Bounds: at most one snapshot in flight per (peer, bucket) each way (a leader's repeat
while one is under way is dropped: the running transfer's outcome answers for it), and
at most PEER_BYTES_MAX declared bytes being reassembled per peer and TOTAL_BYTES_MAX in
all; a stream that exceeds them is refused with BUSY before any chunk is read. At most
STREAMS_PER_PEER_MAX inbound streams per peer (STREAMS_TOTAL_MAX in all) are read at
once, and only from validators; a stream that makes no progress for STALL_S, or that
averages under RATE_BYTES_S_MIN, is cut.
Every outcome goes back to the leader's core (`MultiRaft.snapshot_status` ->
`RawNode.report_snapshot`), after FAILURE_BACKOFF_S when it failed, so a refused or
broken transfer is retried at a measured pace, and one that takes longer than an
election timeout is never restarted while under way.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.placement import Placement
from swarm.protocol.raft import Message
from swarm.protocol.raftsnap import (
    CHUNK_BYTES,
    SNAPSHOT_BYTES_MAX,
    SnapHeader,
    SnapshotDecoder,
    encode_stream,
)

from .p2p import peer_id_of_account
from .streamlimits import Slots

log = logging.getLogger("swarm.raft.snapshots")

# One largest snapshot per peer at a time; two in all (a node catching up several
# buckets from two leaders at once), which bounds reassembly memory at 512 MiB.
PEER_BYTES_MAX = SNAPSHOT_BYTES_MAX
TOTAL_BYTES_MAX = 2 * SNAPSHOT_BYTES_MAX
READ_CHUNK_BYTES = 256 * 1024
# Inbound snapshot streams served at once. A leader sends one per bucket whose follower
# is behind, so a node back from a long outage may be owed dozens by one peer; the
# ones past the bound are reset and retried (each costs a task and up to a read's
# buffer until its header is admitted or it stalls out).
STREAMS_PER_PEER_MAX = 16
STREAMS_TOTAL_MAX = 64
STALL_S = 10.0  # no byte moved either way for this long: the transfer is cut
# And a transfer must average at least this rate (plus STALL_S of grace), or a validator
# dripping a byte every few seconds would hold its admitted bytes (and the slot of its
# bucket) for as long as it liked: 256 MiB gets 266 s.
RATE_BYTES_S_MIN = 1024 * 1024
FAILURE_BACKOFF_S = 1.0
DIAL_TIMEOUT_S = 5.0

OK, BUSY, REJECTED = 0, 1, 2
STATUS_NAMES = {OK: "ok", BUSY: "busy", REJECTED: "rejected"}


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def snapshot_protocol(short_id: str) -> TProtocol:
    return TProtocol(f"/can-swarm/{short_id}/raft-snap/1.0.0")


class Busy(LocalProtocolError):
    code = "raft_snapshot_busy"


class SnapshotReceiver:
    """Reassembles snapshots from authenticated peers and delivers them."""

    def __init__(self, buckets: int, nodes: int,
                 deliver: Callable[[int, int, Message], bool], *,
                 peer_bytes_max: int = PEER_BYTES_MAX,
                 total_bytes_max: int = TOTAL_BYTES_MAX) -> None:
        self.buckets = buckets
        self.nodes = nodes
        self.deliver = deliver
        self.peer_bytes_max = peer_bytes_max
        self.total_bytes_max = total_bytes_max
        self.inflight: set[tuple[int, int]] = set()  # (peer, bucket)
        self.reserved: dict[int, int] = {}  # peer -> declared bytes being reassembled
        self.stats: dict[str, int] = defaultdict(int)

    def _admit(self, peer: int, h: SnapHeader) -> None:
        if h.frm != peer:
            raise RemoteProtocolError("raftsnap.header.from",
                                      f"validator {peer} sent a snapshot as {h.frm}")
        if (peer, h.bucket) in self.inflight:
            raise Busy("raftsnap", f"a snapshot of bucket {h.bucket} from {peer} is "
                                   "already being received")
        mine = self.reserved.get(peer, 0)
        if mine + h.total > self.peer_bytes_max:
            raise Busy("raftsnap", f"{peer} has {mine} bytes in flight")
        if sum(self.reserved.values()) + h.total > self.total_bytes_max:
            raise Busy("raftsnap", "too many snapshot bytes in flight")
        self.inflight.add((peer, h.bucket))
        self.reserved[peer] = mine + h.total

    async def receive(self, peer: int, read: Callable[[], Awaitable[bytes]]) -> int:
        """Read one snapshot stream from `peer` (b"" from `read` is its end); deliver
        it if whole and sound. Returns the status to answer. Never raises on bad input."""
        dec = SnapshotDecoder(buckets=self.buckets, nodes=self.nodes,
                              admit=lambda h: self._admit(peer, h))
        started = trio.current_time()
        try:
            while not dec.complete:
                piece = await read()
                if not piece:
                    raise RemoteProtocolError("raftsnap", f"truncated at {dec.received} "
                                                          "bytes")
                dec.feed(piece)
                if dec.header is not None and trio.current_time() - started > \
                        STALL_S + dec.header.total / RATE_BYTES_S_MIN:
                    raise RemoteProtocolError("raftsnap", f"slower than {RATE_BYTES_S_MIN} "
                                                          "bytes/s")
            bucket, m = dec.message()
        except Busy as exc:
            self.stats["snapshots_busy"] += 1
            log.info("raft snapshot from %d refused: %s", peer, exc.reason)
            return BUSY
        except RemoteProtocolError as exc:
            self.stats["snapshots_rejected"] += 1
            log.info("raft snapshot from %d dropped: %s: %s", peer, exc.field, exc.reason)
            return REJECTED
        finally:
            h = dec.header
            if h is not None:  # it was admitted
                self.inflight.discard((peer, h.bucket))
                self.reserved[peer] -= h.total
                if not self.reserved[peer]:
                    del self.reserved[peer]
        if not self.deliver(peer, bucket, m):
            self.stats["snapshots_refused"] += 1
            return REJECTED
        self.stats["snapshots_received"] += 1
        self.stats["snapshot_bytes_received"] += dec.received
        return OK


class SnapshotStreams:
    """Sends and receives snapshots over libp2p, one stream each."""

    def __init__(self, host: IHost, protocol: TProtocol, placement: Placement, my_id: int,
                 receiver: SnapshotReceiver, report: Callable[[int, int, bool], None], *,
                 chunk_bytes: int | None = None) -> None:
        self.host = host
        self.protocol = protocol
        self.my_id = my_id
        self.receiver = receiver
        self.report = report
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.peer_ids: dict[int, ID] = {}
        self.by_peer_id: dict[ID, int] = {}
        for node_id in range(1, len(placement.accounts) + 1):
            pid = peer_id_of_account(placement.account(node_id))
            self.peer_ids[node_id] = pid
            self.by_peer_id[pid] = node_id
        self.sending: set[tuple[int, int]] = set()  # (peer, bucket)
        self.slots = Slots(STREAMS_PER_PEER_MAX, STREAMS_TOTAL_MAX)  # streams being read
        self.nursery: trio.Nursery | None = None
        self.stats: dict[str, int] = defaultdict(int)

    def send(self, peer: int, bucket: int, m: Message) -> None:
        """MultiRaft's `send_snapshot`: start a transfer, never block, never call back
        before returning (the outcome comes later through `report`)."""
        if peer not in self.peer_ids or peer == self.my_id:
            return
        if (peer, bucket) in self.sending:
            # The leader asked again (its backstop timeout) while one is under way: that
            # one's outcome will answer for both.
            self.stats["snapshots_coalesced"] += 1
            return
        if self.nursery is None:
            self.stats["snapshots_failed"] += 1
            return  # not running: the core's backstop timeout retries
        self.sending.add((peer, bucket))
        self.nursery.start_soon(self._send, peer, bucket, m)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(self.protocol, self._inbound)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _send(self, peer: int, bucket: int, m: Message) -> None:
        status = REJECTED
        sent = 0
        data = m.snapshot.data if m.snapshot is not None else b""
        if len(data) > SNAPSHOT_BYTES_MAX:
            # It cannot be sent; the follower stays behind until the state machine's
            # snapshot shrinks (or the replica is re-homed).
            self.stats["snapshots_oversize"] += 1
            (log.warning if self.stats["snapshots_oversize"] == 1 else log.debug)(
                "raft snapshot of bucket %d to %d not sent: %d bytes is over %d", bucket,
                peer, len(data), SNAPSHOT_BYTES_MAX)
            self.sending.discard((peer, bucket))
            await trio.sleep(FAILURE_BACKOFF_S)
            self.report(peer, bucket, False)
            return
        try:
            # hashlib releases the GIL on large data: 256 MiB took 0.24 s here, which
            # would otherwise stall the node's loop (Raft ticks, frames) for as long.
            digest = await trio.to_thread.run_sync(_sha256, data)
            with trio.fail_after(DIAL_TIMEOUT_S):
                stream = await self.host.new_stream(self.peer_ids[peer], [self.protocol])
            deadline = trio.current_time() + STALL_S + len(data) / RATE_BYTES_S_MIN
            try:
                for piece in encode_stream(bucket, m, self.chunk_bytes, digest):
                    with trio.fail_at(min(deadline, trio.current_time() + STALL_S)):
                        await stream.write(piece)
                    sent += len(piece)
                with trio.fail_after(STALL_S):
                    answer = await stream.read(1)
                status = answer[0] if answer else REJECTED
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
        except Exception as exc:  # noqa: BLE001 - any failure: reported, retried later
            log.info("raft snapshot of bucket %d to %d failed after %d bytes: %r",
                     bucket, peer, sent, exc)
        finally:
            self.sending.discard((peer, bucket))
        ok = status == OK
        self.stats["snapshots_sent" if ok else "snapshots_failed"] += 1
        if ok:
            self.stats["snapshot_bytes_sent"] += sent
        else:
            log.info("raft snapshot of bucket %d to %d: %s", bucket, peer,
                     STATUS_NAMES.get(status, str(status)))
            await trio.sleep(FAILURE_BACKOFF_S)
        self.report(peer, bucket, ok)

    async def _inbound(self, stream: INetStream) -> None:
        peer = self.by_peer_id.get(stream.muxed_conn.peer_id)
        if peer is None or peer == self.my_id or not self.slots.take(peer):
            self.stats["streams_refused"] += 1
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        try:
            await self._serve(peer, stream)
        finally:
            self.slots.give(peer)

    async def _serve(self, peer: int, stream: INetStream) -> None:
        async def read() -> bytes:
            with trio.fail_after(STALL_S):
                try:
                    return bytes(await stream.read(READ_CHUNK_BYTES))
                except Exception:  # noqa: BLE001 - a reset or closed stream: its end
                    return b""

        try:
            status = await self.receiver.receive(peer, read)
        except trio.TooSlowError:
            self.receiver.stats["snapshots_stalled"] += 1
            status = REJECTED
        try:
            with trio.fail_after(STALL_S):
                await stream.write(bytes([status]))
                await stream.close()
        except Exception:  # noqa: BLE001 - the sender gave up already
            with contextlib.suppress(Exception):
                await stream.reset()
