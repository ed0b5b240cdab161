"""Envelopes: ids, signatures, and a typed error for every way one can be wrong.

Method: make real signed envelopes, then break one thing at a time (re-encoding with
cbor2 directly where the break must survive encoding) and check the error's code and
field.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from swarm.protocol import cbor
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.envelope import (
    ENVELOPE_BYTES_MAX,
    SIG_DOMAIN,
    Identity,
    decode_envelope,
    make_envelope,
    signing_message,
    verify_signature,
)
from swarm.protocol.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SchemaError,
    SignatureError,
    SwarmMismatch,
)
from swarm.testnet.workload import example_payloads

NEED = {"class": "simple", "budget": 10, "title": "hello"}


def make(identity: Identity, swarm: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {"kind": "NEED", "swarm": swarm, "lamport": 1, "ts": 5,
                            "payload": NEED}
    args.update(kw)
    return make_envelope(identity, **args)


def resign(identity: Identity, body: dict[str, Any]) -> bytes:
    """Encode a (possibly invalid) body and sign it properly, bypassing our checks."""
    body_bytes = cbor2.dumps(body, canonical=True)
    sig = identity.sign(signing_message(dag_cbor_cid(body_bytes)))
    return cbor2.dumps({"sig": sig, "body": cbor2.loads(body_bytes)}, canonical=True)


def body_of(env: Any) -> dict[str, Any]:
    return dict(cbor2.loads(env.body_bytes))


def test_round_trip(identity: Identity, swarm_id: bytes) -> None:
    env = make(identity, swarm_id, thread="t1", refs=[dag_cbor_cid(b"b"), dag_cbor_cid(b"a")])
    got = decode_envelope(env.wire, swarm=swarm_id)
    assert got.id == env.id
    assert got.payload == NEED
    assert got.refs == tuple(sorted([dag_cbor_cid(b"a"), dag_cbor_cid(b"b")]))
    assert got.sender == identity.public_key
    assert str(got.id).startswith("bafyrei")  # CIDv1, dag-cbor, sha2-256, base32


def test_id_is_cid_of_body_and_signature_is_domain_separated(identity: Identity,
                                                             swarm_id: bytes) -> None:
    env = make(identity, swarm_id)
    assert env.id == dag_cbor_cid(env.body_bytes)
    assert env.body_bytes == cbor.encode(env.body())
    assert verify_signature(identity.public_key, SIG_DOMAIN + env.id.raw, env.sig)
    assert not verify_signature(identity.public_key, env.id.raw, env.sig)


def test_every_verb_example_round_trips(identity: Identity, swarm_id: bytes) -> None:
    for kind, payload in example_payloads().items():
        env = make(identity, swarm_id, kind=kind, payload=payload)
        assert decode_envelope(env.wire, swarm=swarm_id).payload == payload, kind


def test_deterministic(identity: Identity, swarm_id: bytes) -> None:
    assert make(identity, swarm_id).wire == make(identity, swarm_id).wire


def test_bad_signature(identity: Identity, swarm_id: bytes) -> None:
    env = make(identity, swarm_id)
    wire = bytearray(env.wire)
    wire[10] ^= 1  # inside the signature
    with pytest.raises(SignatureError) as info:
        decode_envelope(bytes(wire))
    assert (info.value.code, info.value.field) == ("bad_signature", "sig")


def test_signature_by_someone_else(identity: Identity, swarm_id: bytes) -> None:
    body = body_of(make(identity, swarm_id))
    other = Identity(b"\x09" * 32)
    body_bytes = cbor2.dumps(body, canonical=True)
    sig = other.sign(signing_message(dag_cbor_cid(body_bytes)))
    wire = cbor2.dumps({"sig": sig, "body": body}, canonical=True)
    with pytest.raises(SignatureError):
        decode_envelope(wire)


def test_tampered_body_breaks_signature(identity: Identity, swarm_id: bytes) -> None:
    env = make(identity, swarm_id)
    wire = env.wire.replace(b"hello", b"jello")
    with pytest.raises(SignatureError):
        decode_envelope(wire)
    assert decode_envelope(wire, verify=False).payload["title"] == "jello"


def test_wrong_swarm(identity: Identity, swarm_id: bytes) -> None:
    env = make(identity, swarm_id)
    with pytest.raises(SwarmMismatch) as info:
        decode_envelope(env.wire, swarm=b"\x00" * 32)
    assert (info.value.code, info.value.field) == ("wrong_swarm", "swarm")


@pytest.mark.parametrize(
    ("mutate", "code", "field"),
    [
        (lambda b: b.update(extra=1), "unknown_field", "extra"),
        (lambda b: b.pop("ts"), "missing_field", "ts"),
        (lambda b: b.update(v=2), "schema", "v"),
        (lambda b: b.update(kind="TELEPORT"), "schema", "kind"),
        (lambda b: b.update(lamport=0), "schema", "lamport"),
        (lambda b: b.update(lamport=2**63), "schema", "lamport"),
        (lambda b: b.update(swarm=b"short"), "schema", "swarm"),
        (lambda b: b.update(thread="x" * 129), "schema", "thread"),
        (lambda b: b["payload"].update(budget=0), "schema", "payload.budget"),
        (lambda b: b["payload"].update(budget="10"), "schema", "payload.budget"),
        (lambda b: b["payload"].update(colour="red"), "unknown_field", "payload.colour"),
        (lambda b: b["payload"].pop("class"), "missing_field", "payload.class"),
        (lambda b: b["payload"].update({"class": "huge"}), "schema", "payload.class"),
        (lambda b: b.update(refs=[b"\x01" * 36]), "schema", "refs[0]"),
        (lambda b: b.update(refs=[cbor2.CBORTag(42, b"\x00" + dag_cbor_cid(b"x").raw)] * 2),
         "schema", "refs[1]"),
    ],
)
def test_body_defects(identity: Identity, swarm_id: bytes, mutate: Any, code: str,
                      field: str) -> None:
    body = body_of(make(identity, swarm_id))
    body["payload"] = dict(body["payload"])
    mutate(body)
    with pytest.raises(RemoteProtocolError) as info:
        decode_envelope(resign(identity, body))
    assert (info.value.code, info.value.field) == (code, field), info.value


def test_non_canonical_wire_rejected(identity: Identity, swarm_id: bytes) -> None:
    env = make(identity, swarm_id)
    # Same map, body key first: valid CBOR, not canonical.
    raw = cbor2.loads(env.wire)
    wire = b"\xa2" + cbor2.dumps("body") + cbor2.dumps(raw["body"], canonical=True) + \
        cbor2.dumps("sig") + cbor2.dumps(raw["sig"])
    with pytest.raises(RemoteProtocolError) as info:
        decode_envelope(wire)
    assert info.value.code == "non_canonical"


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x00", cbor2.dumps([1, 2]), cbor2.dumps({"sig": b"x" * 64}),
     cbor2.dumps({"sig": b"x" * 63, "body": {}}, canonical=True),
     cbor2.dumps({"sig": b"x" * 64, "body": {}, "x": 1}, canonical=True),
     b"\xa2" * 70_000],
)
def test_malformed_shapes(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_envelope(wire)


def test_make_refuses_bad_payload(identity: Identity, swarm_id: bytes) -> None:
    with pytest.raises(LocalProtocolError) as info:
        make(identity, swarm_id, payload={"class": "simple", "budget": -5})
    assert info.value.field == "payload.budget"
    assert not isinstance(info.value, RemoteProtocolError)
    with pytest.raises(LocalProtocolError):
        make(identity, swarm_id, payload={**NEED, "title": "x" * 201})
    with pytest.raises(LocalProtocolError):
        make(identity, swarm_id, payload={**NEED, "budget": 1.5})


def test_amplifying_input_is_refused_cheaply() -> None:
    x: list[object] = [b"\0" * 1000]
    for _ in range(2):
        x = [x] * 300
    with pytest.raises(RemoteProtocolError) as info:
        decode_envelope(cbor2.dumps(x, value_sharing=True))
    assert info.value.code == "forbidden_type"


def test_lone_surrogate_is_a_local_error(identity: Identity, swarm_id: bytes) -> None:
    with pytest.raises(LocalProtocolError) as info:
        make(identity, swarm_id, thread="\ud800")
    assert info.value.field == "thread"


def test_body_not_a_map(identity: Identity) -> None:
    wire = cbor2.dumps({"sig": b"x" * 64, "body": [1]}, canonical=True)
    with pytest.raises(SchemaError) as info:
        decode_envelope(wire)
    assert info.value.field == "body"


def test_size_limit(identity: Identity, swarm_id: bytes) -> None:
    ops = [{"op": "ADD_TASK", "task_id": f"{i:0>120}", "title": "t" * 200} for i in range(256)]
    with pytest.raises(LocalProtocolError) as info:
        make(identity, swarm_id, kind="UPDATE_PLAN",
             payload={"ops": ops, "base_lamport": 0})
    assert str(ENVELOPE_BYTES_MAX) in info.value.reason


def test_errors_are_typed_and_serialisable(identity: Identity, swarm_id: bytes) -> None:
    with pytest.raises(SchemaError) as info:
        decode_envelope(resign(identity, {**body_of(make(identity, swarm_id)), "v": 9}))
    assert info.value.to_dict() == {"code": "schema", "field": "v",
                                    "reason": "must be <= 1 (got 9)"}


def test_identity_rejects_bad_seed() -> None:
    with pytest.raises(LocalProtocolError):
        Identity(b"short")
