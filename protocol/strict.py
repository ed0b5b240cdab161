"""Strict decoding of a peer's CBOR document: the shapes the Raft wire codecs share.

Owns the checks `raftwire` (frames) and `raftsnap` (snapshot headers) apply to
untrusted input, field by field: the document itself decoded under its limits, an
integer in a range, bytes or an array no longer than a bound, an array of exactly so
many fields. Each failure is a `RemoteProtocolError` naming the field at fault
(`where`, such as `frame.m[3].term`); nothing else escapes, a codec bug included.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from . import cbor
from .errors import DecodeError, RemoteProtocolError

U63 = 2**63  # integers on the wire are below it unless a field says otherwise


def decode_document(data: bytes, limits: cbor.Limits, where: str) -> Any:
    """The CBOR document in `data`, within `limits`; DecodeError if it is not one."""
    if len(data) > limits.size_bytes_max:
        raise DecodeError(where, f"{len(data)} bytes is over {limits.size_bytes_max}")
    try:
        return cbor.decode(data, limits)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec bug must not take the node down
        raise DecodeError(where, f"undecodable: {exc!r}") from None


def int_in(v: Any, where: str, lo: int = 0, hi: int = U63) -> int:
    """`v` if it is an integer (not a boolean) in [lo, hi)."""
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise RemoteProtocolError(where, f"must be an integer in [{lo}, {hi})")
    return v


def bytes_max(v: Any, where: str, max_len: int) -> bytes:
    """`v` if it is bytes, at most `max_len` of them."""
    if not isinstance(v, bytes) or len(v) > max_len:
        raise RemoteProtocolError(where, f"must be bytes of at most {max_len}")
    return v


def array_max(v: Any, where: str, max_len: int) -> list[Any]:
    """`v` if it is an array of at most `max_len` items."""
    if not isinstance(v, list) or len(v) > max_len:
        raise RemoteProtocolError(where, f"must be an array of at most {max_len}")
    return v


def fields(v: Any, where: str, count: int, what: str) -> list[Any]:
    """`v` if it is an array of exactly `count` fields; `what` names the record in the
    error ("a message" has 13 fields)."""
    if not isinstance(v, list) or len(v) > count:  # array_max's check, inline: hot
        raise RemoteProtocolError(where, f"must be an array of at most {count}")
    if len(v) != count:
        raise RemoteProtocolError(where, f"{what} has {count} fields")
    return v
