"""Reading protobuf's wire format: the shapes dag-pb, UnixFS and bitswap messages use.

Owns the strict reading of a message's fields from a peer's bytes: varints of at
most 10 bytes, length-delimited fields that stay inside the message, and nothing of
another wire type (bitswap skips the fixed-width ones, as protobuf allows; dag-pb and
UnixFS have none). Each failure raises the caller's error class (`UnixfsError`,
`BitswapError`) naming the field at fault. What the fields mean is the caller's.
Encoding needs only `logformat.uvarint`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from .errors import RemoteProtocolError
from .logformat import UVARINT_BYTES_MAX

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_FIXED32 = 0, 1, 2, 5

Data = TypeVar("Data", bytes, memoryview)
ErrorClass = Callable[[str, str], RemoteProtocolError]


def read_varint(data: bytes | memoryview, pos: int, where: str,
                error: ErrorClass) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    value = 0
    for i in range(UVARINT_BYTES_MAX):
        if pos >= len(data):
            raise error(where, "truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise error(where, f"varint longer than {UVARINT_BYTES_MAX} bytes")


def fields(data: Data, where: str, error: ErrorClass, *,
           skip_fixed: bool = False) -> Iterator[tuple[int, int, int | Data]]:
    """(number, wire type, value) of each field of the message `data`: an int for a
    varint, a slice of `data` for a length-delimited field. Fixed-width fields are
    skipped unread with `skip_fixed`, else an error, as any other wire type is."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos, where, error)
        number, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = read_varint(data, pos, where, error)
            yield number, wire, value
        elif wire == WIRE_BYTES:
            length, pos = read_varint(data, pos, where, error)
            if pos + length > len(data):
                raise error(where, f"field {number} runs past the end")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif skip_fixed and wire in (WIRE_FIXED64, WIRE_FIXED32):
            pos += 8 if wire == WIRE_FIXED64 else 4
            if pos > len(data):
                raise error(where, f"field {number} runs past the end")
        else:
            raise error(where, f"field {number} has unsupported wire type {wire}")
