"""The envelope log format: how a node's accepted envelopes are written one after another.

Owns framing only. A log is the 13-byte magic ``b"swarm-log/v1\\n"`` followed by
records, each an unsigned LEB128 varint length then that many bytes of one envelope in
wire form. The decoder is incremental and pure (feed bytes, take records), as h11's
connection is: the caller does the reading.

The same length prefix frames the node's streams (Raft frames, snapshot chunks,
bitswap messages): `uvarint_prefix` and `take_prefixed` read it off a buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import LogFormatError

MAGIC = b"swarm-log/v1\n"
RECORD_BYTES_MAX = 1 << 20
UVARINT_BYTES_MAX = 10  # a 64-bit value takes at most 10 bytes of 7 bits


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class ItemTooLarge(ValueError):
    """A length prefix states more bytes than the reader's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes is over {limit}")
        self.size = size


def uvarint_prefix(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(value, bytes it takes) of the uvarint at the start of `buf`, or None while it
    is incomplete; ValueError if it runs past UVARINT_BYTES_MAX bytes."""
    value = 0
    for i, b in enumerate(buf[:UVARINT_BYTES_MAX]):
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, i + 1
    if len(buf) >= UVARINT_BYTES_MAX:
        raise ValueError("bad length prefix")
    return None


def take_prefixed(buf: bytearray, limit: int) -> bytes | None:
    """Take the next uvarint-length-prefixed item off the front of `buf`, or None
    while it is not all there. ItemTooLarge as soon as the prefix states more than
    `limit` bytes; ValueError for a malformed prefix."""
    head = uvarint_prefix(buf)
    if head is None:
        return None
    size, start = head
    if size > limit:
        raise ItemTooLarge(size, limit)
    end = start + size
    if len(buf) < end:
        return None
    item = bytes(buf[start:end])
    del buf[:end]
    return item


def encode_record(wire: bytes) -> bytes:
    return uvarint(len(wire)) + wire


def encode_log(wires: Iterable[bytes]) -> bytes:
    return MAGIC + b"".join(encode_record(w) for w in wires)


class LogDecoder:
    """Feed bytes with `feed()`, take whole records with `records()`; `close()` at EOF."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._offset = 0  # absolute offset of _buf[0] in the stream
        self._magic_ok = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def records(self) -> Iterator[bytes]:
        buf = self._buf
        if not self._magic_ok:
            if len(buf) < len(MAGIC):
                if not MAGIC.startswith(bytes(buf)):
                    raise LogFormatError("log", "not an envelope log (bad magic)")
                return
            if bytes(buf[: len(MAGIC)]) != MAGIC:
                raise LogFormatError("log", "not an envelope log (bad magic)")
            self._pos = len(MAGIC)
            self._magic_ok = True
        while True:
            start = self._pos
            n = 0
            shift = 0
            pos = start
            while True:
                if pos >= len(buf):
                    self._compact()
                    return
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 28:
                    raise LogFormatError("log", f"record length varint too long at offset "
                                                f"{self._offset + start}")
            if n > RECORD_BYTES_MAX:
                raise LogFormatError("log", f"record of {n} bytes at offset "
                                            f"{self._offset + start} exceeds {RECORD_BYTES_MAX}")
            if pos + n > len(buf):
                self._compact()
                return
            self._pos = pos + n
            yield bytes(buf[pos : pos + n])

    def _compact(self) -> None:
        if self._pos > 65536:
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0

    def close(self) -> None:
        """Raise LogFormatError if the stream ended inside a record or before the magic."""
        if not self._magic_ok:
            raise LogFormatError("log", "not an envelope log (too short for the magic)")
        if self._pos != len(self._buf):
            raise LogFormatError(
                "log",
                f"truncated: {len(self._buf) - self._pos} bytes of an incomplete record "
                f"at offset {self._offset + self._pos}",
            )


def iter_log(data: bytes) -> Iterator[bytes]:
    dec = LogDecoder()
    dec.feed(data)
    yield from dec.records()
    dec.close()
