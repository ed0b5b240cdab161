"""Raft snapshots streamed apart from the frames: the header, the chunks, reassembly.

Owns the wire form of one snapshot sent on a stream of its own (after etcd's rafthttp,
which streams snapshots apart from its message stream) and its strict, incremental
decoding. A leader's SNAP message does not ride in the per-peer frame
(`protocol/raftwire.py`): a large one would exceed the frame limit and, written on the
one stream a peer pair shares, hold up every other bucket's heartbeats and appends
behind it.

The stream carries

    uvarint(len(header)) header                 header: canonical CBOR, see SnapHeader
    uvarint(len(chunk)) chunk   ...             1 <= len(chunk) <= CHUNK_BYTES_MAX

until the chunks add up to exactly the header's `total`. The header states the SNAP
message's bucket, term, sender and recipient, the snapshot's index, term and voters,
the data's length and its SHA-256; the receiver checks every chunk's size against its
own limit and the running total against the header, and hands the SNAP message on only
when the total and the digest match. Anything else is a `RemoteProtocolError`.

Bounds. SNAPSHOT_BYTES_MAX (256 MiB) is the largest snapshot sent or accepted: both ends
hold a snapshot whole in memory (the core's `Snapshot.data`, `BucketMachine.restore`),
and a bucket machine of that encoded size is already on the order of a gigabyte as
Python objects, so beyond it the state machine itself, not this transport, is what must
change. About 120 bytes per decision, it holds some two million decisions per bucket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import cbor
from .errors import LocalProtocolError, RemoteProtocolError
from .logformat import take_prefixed, uvarint
from .raft import Message, MsgType
from .raftlog import Snapshot
from .raftwire import VOTERS_MAX
from .strict import decode_document, int_in

SNAPSHOT_BYTES_MAX = 256 * 1024 * 1024
CHUNK_BYTES = 256 * 1024  # what a sender cuts: small next to a frame, cheap per write
CHUNK_BYTES_MAX = 1024 * 1024  # what a receiver accepts
HEADER_BYTES_MAX = 16 * 1024
_LIMITS = cbor.Limits(size_bytes_max=HEADER_BYTES_MAX, depth_max=3, items_max=VOTERS_MAX + 16)


@dataclass(frozen=True, slots=True)
class SnapHeader:
    bucket: int
    term: int  # the SNAP message's term
    frm: int
    to: int
    index: int  # the snapshot's
    snap_term: int
    voters: tuple[int, ...]
    total: int  # bytes of snapshot data that follow, in chunks
    digest: bytes  # sha256 of the data

    def encode(self) -> bytes:
        return cbor.encode([self.bucket, self.term, self.frm, self.to, self.index,
                            self.snap_term, list(self.voters), self.total, self.digest])


def header_of(bucket: int, m: Message, digest: bytes | None = None) -> SnapHeader:
    """The header for sending `m` (a SNAP message with its snapshot) of `bucket`;
    `digest` is the data's SHA-256 if the caller computed it already (off its loop)."""
    snap = m.snapshot
    if m.type != MsgType.SNAP or snap is None:
        raise LocalProtocolError("raftsnap.message", "only a SNAP message with a snapshot")
    if len(snap.data) > SNAPSHOT_BYTES_MAX:
        raise LocalProtocolError("raftsnap.snapshot", f"{len(snap.data)} bytes is over "
                                                      f"{SNAPSHOT_BYTES_MAX}")
    if digest is None:
        digest = hashlib.sha256(snap.data).digest()
    return SnapHeader(bucket, m.term, m.frm, m.to, snap.index, snap.term, tuple(snap.voters),
                      len(snap.data), digest)


def encode_stream(bucket: int, m: Message, chunk_bytes: int = CHUNK_BYTES,
                  digest: bytes | None = None) -> Iterator[bytes]:
    """The pieces to write, in order: the prefixed header, then each prefixed chunk."""
    if not 1 <= chunk_bytes <= CHUNK_BYTES_MAX:
        raise LocalProtocolError("raftsnap.chunk_bytes", f"must be in [1, {CHUNK_BYTES_MAX}]")
    header = header_of(bucket, m, digest).encode()
    yield uvarint(len(header)) + header
    assert m.snapshot is not None  # checked by header_of
    data = memoryview(m.snapshot.data)
    for start in range(0, len(data), chunk_bytes):
        chunk = data[start:start + chunk_bytes]
        yield uvarint(len(chunk)) + chunk


def decode_header(data: bytes, *, buckets: int, nodes: int,
                  snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX) -> SnapHeader:
    f = decode_document(data, _LIMITS, "raftsnap.header")
    if not isinstance(f, list) or len(f) != 9:
        raise RemoteProtocolError("raftsnap.header", "must be an array of 9 fields")
    if not isinstance(f[6], list) or not 1 <= len(f[6]) <= VOTERS_MAX:
        raise RemoteProtocolError("raftsnap.header.voters",
                                  f"must be an array of 1 to {VOTERS_MAX}")
    if not isinstance(f[8], bytes) or len(f[8]) != 32:
        raise RemoteProtocolError("raftsnap.header.digest", "must be 32 bytes")
    return SnapHeader(
        bucket=int_in(f[0], "raftsnap.header.bucket", 0, buckets),
        term=int_in(f[1], "raftsnap.header.term", 1),
        frm=int_in(f[2], "raftsnap.header.from", 1, nodes + 1),
        to=int_in(f[3], "raftsnap.header.to", 1, nodes + 1),
        index=int_in(f[4], "raftsnap.header.index", 1),
        snap_term=int_in(f[5], "raftsnap.header.snap_term", 1),
        voters=tuple(int_in(v, "raftsnap.header.voters", 1, nodes + 1) for v in f[6]),
        total=int_in(f[7], "raftsnap.header.total", 0, snapshot_bytes_max + 1),
        digest=f[8])


class SnapshotDecoder:
    """Reassembles one snapshot stream from pieces split anywhere. `feed` raises
    RemoteProtocolError on the first thing wrong (and the decoder is then spent);
    `admit`, called with the header before any chunk is taken, may raise to refuse it
    (the receiver's per-peer bounds). Memory: the declared total, checked before it is
    admitted, plus at most one piece fed."""

    def __init__(self, *, buckets: int, nodes: int,
                 admit: Callable[[SnapHeader], None] = lambda h: None,
                 chunk_bytes_max: int = CHUNK_BYTES_MAX,
                 snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX) -> None:
        self.buckets = buckets
        self.nodes = nodes
        self.admit = admit
        self.chunk_bytes_max = chunk_bytes_max
        self.snapshot_bytes_max = snapshot_bytes_max
        self.buf = bytearray()
        self.header: SnapHeader | None = None
        self.parts: list[bytes] = []
        self.received = 0
        self.hash = hashlib.sha256()

    @property
    def complete(self) -> bool:
        return self.header is not None and self.received == self.header.total

    def _prefixed(self, limit: int, what: str) -> bytes | None:
        """The next uvarint-prefixed item in the buffer, or None if not all there."""
        try:
            return take_prefixed(self.buf, limit)
        except ValueError as exc:  # ItemTooLarge or a bad prefix, both said in `exc`
            raise RemoteProtocolError(f"raftsnap.{what}", str(exc)) from None

    def feed(self, data: bytes) -> None:
        if self.complete and data:
            raise RemoteProtocolError("raftsnap", "bytes after the last chunk")
        self.buf += data
        if self.header is None:
            raw = self._prefixed(HEADER_BYTES_MAX, "header")
            if raw is None:
                return
            header = decode_header(raw, buckets=self.buckets, nodes=self.nodes,
                                   snapshot_bytes_max=self.snapshot_bytes_max)
            self.admit(header)
            self.header = header
        total = self.header.total
        while self.buf:
            if self.received == total:
                raise RemoteProtocolError("raftsnap", "bytes after the last chunk")
            chunk = self._prefixed(self.chunk_bytes_max, "chunk")
            if chunk is None:
                return
            if not chunk:
                raise RemoteProtocolError("raftsnap.chunk", "empty chunk")
            if self.received + len(chunk) > total:
                raise RemoteProtocolError("raftsnap.chunk", f"chunks exceed the stated "
                                                            f"{total} bytes")
            self.received += len(chunk)
            self.hash.update(chunk)
            self.parts.append(chunk)

    def message(self) -> tuple[int, Message]:
        """The bucket and the SNAP message, once complete and the digest matches."""
        h = self.header
        if h is None or not self.complete:
            raise RemoteProtocolError("raftsnap", f"truncated at {self.received} of "
                                                  f"{h.total if h else '?'} bytes")
        if self.hash.digest() != h.digest:
            raise RemoteProtocolError("raftsnap.digest", "data does not match its digest")
        data = b"".join(self.parts)
        self.parts = []
        snap = Snapshot(h.index, h.snap_term, h.voters, data)
        return h.bucket, Message(MsgType.SNAP, to=h.to, frm=h.frm, term=h.term, snapshot=snap)
