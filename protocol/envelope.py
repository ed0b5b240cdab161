"""Signed envelopes: the one message format every peer speaks.

Owns the wire format and its checks: body fields, the envelope id, the signature, and
strict bounded decoding. It knows payload schemas only through `verbs`, and nothing of
what an envelope means to the plan or ledger.

Wire form (canonical DAG-CBOR)::

    {"sig": bytes[64], "body": {"v", "kind", "swarm", "sender", "lamport", "ts",
                                "thread", "payload", "refs"}}

* id = CIDv1(dag-cbor, sha2-256) of the canonical encoding of ``body``;
* sig = Ed25519(sender, SIG_DOMAIN || id bytes).

Canonical key order is length-first, so "sig" precedes "body" and the body's bytes are
always ``wire[76:]``: hashing needs no re-encoding. Decoding goes bytes -> bounded
canonical CBOR -> envelope shape -> body fields -> payload schema -> swarm -> signature,
and the first failure raises a `RemoteProtocolError` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions

from . import cbor
from .cid import Cid, dag_cbor_cid
from .errors import (
    DecodeError,
    LocalProtocolError,
    SchemaError,
    SignatureError,
    SwarmMismatch,
)
from .schema import Bytes, FieldType, Int, Link, List, Obj, Text
from .verbs import KIND_FIELD, validate_payload

VERSION = 1
SIG_DOMAIN = b"can-swarm/envelope/v1\x00"
SWARM_ID_BYTES = 32
REFS_MAX = 32
THREAD_BYTES_MAX = 128
ENVELOPE_BYTES_MAX = 64 * 1024
ENVELOPE_LIMITS = cbor.Limits(size_bytes_max=ENVELOPE_BYTES_MAX, depth_max=12, items_max=4096)
# Lamport times and timestamps stay within signed 64 bits so every language can hold them.
LAMPORT_MAX = 2**63 - 1

# a2 | 63 "sig" | 58 40 <64 bytes> | 64 "body"  -> the body starts at byte 76.
_WIRE_PREFIX = bytes.fromhex("a2637369675840")
_BODY_KEY = bytes.fromhex("64626f6479")
BODY_OFFSET = len(_WIRE_PREFIX) + 64 + len(_BODY_KEY)  # an envelope's body: wire[76:]

class _AnyMap(FieldType):
    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError(path, "must be a map")

    def describe(self) -> str:
        return "map (checked by the verb's schema)"


BODY = Obj(
    {
        "v": Int(min=VERSION, max=VERSION),
        "kind": KIND_FIELD,
        "swarm": Bytes(SWARM_ID_BYTES),
        "sender": Bytes(32),
        "lamport": Int(min=1, max=LAMPORT_MAX),
        "ts": Int(min=0, max=LAMPORT_MAX),
        "thread": Text(max_bytes=THREAD_BYTES_MAX),
        "payload": _AnyMap(),
        "refs": List(Link(), max_items=REFS_MAX, sorted_unique=True),
    },
    frozenset({"v", "kind", "swarm", "sender", "lamport", "ts", "thread", "payload", "refs"}),
)
# The header schema; the payload's own schema depends on the kind.
BODY_WITHOUT_PAYLOAD = Obj(
    {k: v for k, v in BODY.fields.items() if k != "payload"} | {"payload": _AnyMap()},
    BODY.required,
)


class Identity:
    """An Ed25519 key pair. The public key is the sender field and the account id."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise LocalProtocolError("seed", f"an Ed25519 seed is 32 bytes (got {len(seed)})")
        self.public_key, self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._secret[:32])

    def sign(self, message: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(message, self._secret)[:64])

    def __repr__(self) -> str:
        return f"Identity(public_key={self.public_key.hex()})"


def verify_signature(public_key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(sig + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True, eq=False)
class Envelope:
    """A decoded, verified envelope. Equality and hashing are by id."""

    id: Cid
    kind: str
    swarm: bytes
    sender: bytes
    lamport: int
    ts: int
    thread: str
    payload: Mapping[str, Any]
    refs: tuple[Cid, ...]
    sig: bytes
    wire: bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Envelope) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id.raw)

    @property
    def body_bytes(self) -> bytes:
        return self.wire[BODY_OFFSET:]

    def body(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "kind": self.kind,
            "swarm": self.swarm,
            "sender": self.sender,
            "lamport": self.lamport,
            "ts": self.ts,
            "thread": self.thread,
            "payload": dict(self.payload),
            "refs": list(self.refs),
        }


def signing_message(envelope_id: Cid) -> bytes:
    return SIG_DOMAIN + envelope_id.raw


def make_envelope(
    identity: Identity,
    *,
    kind: str,
    swarm: bytes,
    lamport: int,
    ts: int,
    payload: Mapping[str, Any],
    thread: str = "",
    refs: Iterable[Cid] = (),
) -> Envelope:
    """Build, check and sign an envelope. Raises LocalProtocolError if any field is bad."""
    body: dict[str, Any] = {
        "v": VERSION,
        "kind": kind,
        "swarm": swarm,
        "sender": identity.public_key,
        "lamport": lamport,
        "ts": ts,
        "thread": thread,
        "payload": dict(payload),
        "refs": sorted(set(refs)),
    }
    try:
        # The full schema, not the inline fast path: local input deserves the exact
        # field and reason, and speed matters on the receiving side.
        BODY_WITHOUT_PAYLOAD.check(body, "")
        validate_payload(kind, body["payload"])
    except SchemaError as exc:
        raise LocalProtocolError(exc.field, exc.reason, code=exc.code) from None
    body_bytes = cbor.encode(body)
    envelope_id = dag_cbor_cid(body_bytes)
    sig = identity.sign(signing_message(envelope_id))
    wire = _WIRE_PREFIX + sig + _BODY_KEY + body_bytes
    if len(wire) > ENVELOPE_BYTES_MAX:
        raise LocalProtocolError(
            "payload", f"envelope is {len(wire)} bytes, limit is {ENVELOPE_BYTES_MAX}"
        )
    assert wire == cbor.encode({"sig": sig, "body": body}), "wire layout drifted from canonical"
    return Envelope(
        id=envelope_id,
        kind=kind,
        swarm=swarm,
        sender=identity.public_key,
        lamport=lamport,
        ts=ts,
        thread=thread,
        payload=body["payload"],
        refs=tuple(body["refs"]),
        sig=sig,
        wire=wire,
    )


_KIND_SET = frozenset(KIND_FIELD.values)


def _body_looks_valid(body: Any) -> bool:
    """The envelope header fields, checked inline: the common case on the hot path.

    Same rules as `BODY`; when this says no, `_check_body` finds and names the defect.
    """
    if type(body) is not dict or len(body) != 9:
        return False
    try:
        swarm, sender, lamport, ts, thread, refs, kind = (
            body["swarm"], body["sender"], body["lamport"], body["ts"], body["thread"],
            body["refs"], body["kind"])
        version, payload = body["v"], body["payload"]
    except KeyError:
        return False
    return (
        version == VERSION and type(version) is int
        and type(kind) is str and kind in _KIND_SET
        and type(swarm) is bytes and len(swarm) == SWARM_ID_BYTES
        and type(sender) is bytes and len(sender) == 32
        and type(lamport) is int and 1 <= lamport <= LAMPORT_MAX
        and type(ts) is int and 0 <= ts <= LAMPORT_MAX
        and type(thread) is str and len(thread) <= THREAD_BYTES_MAX // 4
        and type(refs) is list and len(refs) <= REFS_MAX
        and all(type(r) is Cid for r in refs)
        and all(refs[i - 1] < refs[i] for i in range(1, len(refs)))
        and type(payload) is dict
    )


def _check_body(body: Any) -> None:
    if not _body_looks_valid(body):
        if type(body) is not dict:
            raise SchemaError("body", "must be a map")
        BODY_WITHOUT_PAYLOAD.check(body, "")
        if not isinstance(body.get("payload"), dict):
            raise SchemaError("payload", "must be a map")
    validate_payload(body["kind"], body["payload"])


def decode_envelope(
    data: bytes, *, swarm: bytes | None = None, verify: bool = True
) -> Envelope:
    """Decode and check an envelope from the wire.

    `swarm`, when given, must match the body's swarm id. `verify=False` skips only the
    signature check (for replaying a log this node already verified); every other check
    still runs. Raises a `RemoteProtocolError` subclass on any defect, and nothing else.
    """
    value = cbor.decode(data, ENVELOPE_LIMITS, typed=True)
    if not isinstance(value, dict):
        raise DecodeError("envelope", "must be a map with `sig` and `body`")
    for key in value:
        if key not in ("sig", "body"):
            raise SchemaError(key, "unknown field", code="unknown_field")
    if "sig" not in value or "body" not in value:
        missing = "sig" if "sig" not in value else "body"
        raise SchemaError(missing, "required field is missing", code="missing_field")
    sig = value["sig"]
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise SchemaError("sig", "must be 64 bytes")
    body = value["body"]
    _check_body(body)
    if swarm is not None and body["swarm"] != swarm:
        raise SwarmMismatch(
            "swarm", f"envelope is for swarm {body['swarm'].hex()}, this is {swarm.hex()}"
        )
    raw = bytes(data)
    body_bytes = raw[BODY_OFFSET:]
    envelope_id = dag_cbor_cid(body_bytes)
    if verify and not verify_signature(body["sender"], signing_message(envelope_id), sig):
        raise SignatureError("sig", f"signature does not verify for sender {body['sender'].hex()}")
    return Envelope(
        id=envelope_id,
        kind=body["kind"],
        swarm=body["swarm"],
        sender=body["sender"],
        lamport=body["lamport"],
        ts=body["ts"],
        thread=body["thread"],
        payload=body["payload"],
        refs=tuple(body["refs"]),
        sig=sig,
        wire=raw,
    )
