"""Canonical, bounded DAG-CBOR: the only way bytes become values in the protocol.

This module owns the byte-level rules and nothing about envelopes or verbs:

* **Bounded.** The document's size is checked before parsing; the decoder (cbor2's C
  implementation) is run with a nesting limit and without indefinite lengths, and it
  never pre-allocates from a claimed length (measured: an array header claiming 2^60
  items in a 9-byte input fails at once with 12 MB resident). The walk over the result
  then bounds depth and the number of items again. Every tag but 42 is refused as it
  is met, before cbor2 interprets it: shared values and string references (tags 25,
  28, 29, 256) would otherwise let a few kilobytes expand into gigabytes.
* **Strict data model.** Only the DAG-CBOR kinds we use: integers within 64 bits, byte
  strings, UTF-8 text strings, arrays, maps with text keys, true/false/null, and tag 42
  (a CID link, byte string with a leading 0x00). No floats (consensus state holds
  integers only), no other tags or simple values.
* **Canonical or rejected.** Map keys must arrive sorted length-first then bytewise
  (RFC 7049 section 3.9, as the DAG-CBOR spec requires), checked as each map is
  decoded; then the value is re-encoded (shortest integer and length forms) and the
  bytes must be identical. Together these reject non-minimal integers, unsorted or
  duplicate map keys, semantic tags that decode to plain values, and every other
  alternative spelling of the same value, so one value has exactly one encoding and
  therefore one CID.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from .cid import Cid
from .errors import DecodeError, LocalProtocolError

CID_TAG = 42
_INT_MIN = -(2**64)
_INT_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on a document; units last in names (TigerBeetle style)."""

    size_bytes_max: int = 256 * 1024
    depth_max: int = 16
    items_max: int = 8192


DEFAULT_LIMITS = Limits()


def _encode_cid(encoder: Any, value: Any) -> None:
    if type(value) is not Cid:
        raise cbor2.CBOREncodeTypeError(f"{type(value).__name__} is not part of the data model")
    encoder.encode(cbor2.CBORTag(CID_TAG, b"\x00" + value.raw))


def _check_encodable(value: Any, path: str, depth: int) -> None:
    if depth > DEFAULT_LIMITS.depth_max:
        raise LocalProtocolError(path or "value", "nesting too deep to encode")
    t = type(value)
    if t is str or t is bytes or t is bool or t is Cid or value is None:
        return
    if t is int:
        if not _INT_MIN <= value < _INT_LIMIT:
            raise LocalProtocolError(path or "value", "integer outside the 64-bit range")
        return
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise LocalProtocolError(path or "value", f"map key {k!r} is not a string")
            _check_encodable(v, f"{path}.{k}" if path else k, depth + 1)
        return
    if t is list or t is tuple:
        for i, v in enumerate(value):
            _check_encodable(v, f"{path}[{i}]", depth + 1)
        return
    raise LocalProtocolError(
        path or "value", f"{t.__name__} is not part of the data model (no floats)"
    )


def encode(value: Any) -> bytes:
    """Encode a protocol value as canonical DAG-CBOR. Raises LocalProtocolError."""
    _check_encodable(value, "", 0)
    try:
        return cbor2.dumps(value, canonical=True, default=_encode_cid)
    except (UnicodeEncodeError, cbor2.CBOREncodeError) as exc:
        raise LocalProtocolError("value", f"cannot encode: {exc}") from None


class _Walk:
    """Validate a decoded value and turn tag-42 links into `Cid`s, in place."""

    __slots__ = ("depth_max", "items", "items_max", "path")

    def __init__(self, limits: Limits) -> None:
        self.depth_max = limits.depth_max
        self.items_max = limits.items_max
        self.items = 0
        self.path: list[str] = []

    def fail(self, reason: str, code: str = "decode") -> DecodeError:
        field = "".join(self.path).lstrip(".") or "bytes"
        return DecodeError(field, reason, code=code)

    def value(self, v: Any, depth: int) -> Any:
        self.items += 1
        if self.items > self.items_max:
            raise self.fail(f"more than {self.items_max} items", "too_many_items")
        t = type(v)
        if t is str or t is bytes or t is bool or t is Cid or v is None:
            return v
        if t is int:
            if not _INT_MIN <= v < _INT_LIMIT:
                raise self.fail("integer outside the 64-bit range", "forbidden_type")
            return v
        if t is dict or t is list:
            if depth >= self.depth_max:
                raise self.fail(f"nesting deeper than {self.depth_max}", "too_deep")
            path = self.path
            if t is dict:
                for k, item in v.items():
                    if type(k) is not str:
                        raise self.fail(f"map key {k!r} is not a text string")
                    path.append("." + k)
                    new = self.value(item, depth + 1)
                    if new is not item:
                        v[k] = new
                    path.pop()
            else:
                for i, item in enumerate(v):
                    path.append(f"[{i}]")
                    new = self.value(item, depth + 1)
                    if new is not item:
                        v[i] = new
                    path.pop()
            return v
        if t is cbor2.CBORTag:
            if v.tag != CID_TAG:
                raise self.fail(f"tag {v.tag} is not allowed (only 42)", "forbidden_type")
            raw = v.value
            if type(raw) is not bytes or not raw or raw[0] != 0:
                raise self.fail("CID link must be a byte string starting with 0x00")
            return Cid.from_bytes(raw[1:], field="".join(self.path).lstrip(".") or "bytes")
        what = "float" if t is float else t.__name__
        raise self.fail(f"{what} is not allowed in DAG-CBOR here", "forbidden_type")


def _tag_hook(tag: Any, immutable: bool) -> Any:
    if tag.tag != CID_TAG:
        raise DecodeError("bytes", f"tag {tag.tag} is not allowed (only 42)", code="forbidden_type")
    raw = tag.value
    if type(raw) is not bytes or not raw or raw[0] != 0:
        raise DecodeError("bytes", "CID link must be a byte string starting with 0x00")
    return Cid.from_bytes(raw[1:], field="bytes")


# Tags cbor2 6.3 decodes natively (found by probing tags 0..70000). Each is refused
# before cbor2 acts on it: string references (25, 256) and shared values (28, 29)
# would otherwise let a few kilobytes expand into gigabytes when re-encoded.
_CBOR2_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258,
                        260, 261, 1004, 43000, 55799)


def _refuse(tag: int) -> Any:
    def refuse(*_args: Any) -> Any:
        raise DecodeError("bytes", f"tag {tag} is not allowed (only 42)", code="forbidden_type")

    return refuse


_SEMANTIC_DECODERS = {tag: _refuse(tag) for tag in _CBOR2_SEMANTIC_TAGS}


def _object_hook(value: Mapping[Any, Any], immutable: bool) -> Any:
    """Map keys must be text in canonical order: shorter first, then bytewise.

    Checked here, as each map is built, so the re-encoding below need not sort; for
    ASCII keys (all of ours) length and order in characters equal those in bytes.
    """
    prev: str | None = None
    for key in value:
        if type(key) is not str:
            raise DecodeError("bytes", f"map key {key!r} is not a text string")
        if prev is not None:
            if key.isascii() and prev.isascii():
                ordered = (len(prev), prev) < (len(key), key)
            else:
                a, b = prev.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass")
                ordered = (len(a), a) < (len(b), b)
            if not ordered:
                raise DecodeError(
                    "bytes", f"map keys {prev!r} and {key!r} are not in canonical order",
                    code="non_canonical",
                )
        prev = key
    return value


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS, *, typed: bool = False) -> Any:
    """Decode canonical DAG-CBOR within `limits`; any defect raises DecodeError.

    `typed=True` is for callers that check every field of the result against a schema
    (as envelopes do): the generic walk over the value is then skipped, because the
    schema rejects any value of a kind it does not expect, and size bounds the item
    count. It saves about a third of decoding time per envelope.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("bytes", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise DecodeError("bytes", "empty input", code="truncated")
    if n > limits.size_bytes_max:
        raise DecodeError(
            "bytes", f"document is {n} bytes, limit is {limits.size_bytes_max}", code="too_large"
        )
    try:
        raw = cbor2.loads(data, max_depth=limits.depth_max + 1, allow_indefinite=False,
                          tag_hook=_tag_hook, object_hook=_object_hook,
                          semantic_decoders=_SEMANTIC_DECODERS)
    except cbor2.CBORDecodeEOF as exc:
        raise DecodeError("bytes", f"truncated: {exc}", code="truncated") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on foreign bytes is "malformed"
        if isinstance(exc.__cause__, DecodeError):
            raise exc.__cause__ from None
        text = str(exc)
        code = "too_deep" if "depth" in text else "decode"
        if "extra data" in text or "trailing" in text:
            code = "trailing"
        raise DecodeError("bytes", f"malformed CBOR: {text}", code=code) from None
    value = raw if typed else _Walk(limits).value(raw, 0)
    try:
        # Keys were checked in order as they were decoded, so a plain re-encoding (about
        # 3 us per envelope, against 10 us with canonical=True, which sorts) catches the
        # rest: non-minimal integers and lengths, and duplicate keys (they collapse).
        again = cbor2.dumps(value, default=_encode_cid)
    except Exception as exc:  # noqa: BLE001 - a value we cannot re-encode is not canonical
        raise DecodeError("bytes", f"cannot be re-encoded: {exc}", code="non_canonical") from None
    if again != data:
        if data.startswith(again):
            raise DecodeError("bytes", f"{n - len(again)} trailing bytes after the document",
                              code="trailing")
        raise DecodeError(
            "bytes",
            "not canonical DAG-CBOR (non-minimal integer or length, unsorted or duplicate "
            "map keys, or a tag other than 42)",
            code="non_canonical",
        )
    return value
