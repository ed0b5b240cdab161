"""Envelope test vectors: the wire format stays byte-for-byte what docs/PROTOCOL.md says.

Goal: pin the wire format so that a change to encoding, id computation or signing shows
up as a failing test, and give other implementations fixed inputs and outputs to check
against.

Method: testdata/envelope_vectors.json (written by tests/vectors_gen.py) holds valid
vectors (seed, swarm, kind, Lamport time, timestamp, thread, refs, payload as JSON, and
the expected body, wire, id, signing message and signature) and invalid vectors (wire
bytes and the error code and field decoding must report). For each valid vector we
re-make the envelope from the seed and the JSON payload and compare bytes, decode the
wire, recompute the CID independently with the `multiformats` package, and verify the
signature with PyNaCl's high-level `VerifyKey` rather than the bindings the code uses.
For each invalid vector we check `decode_envelope` raises a `RemoteProtocolError` with
the recorded code and field. For the plan examples we replay some valid vectors and
compare the plan's Merkle root with one recomputed here from the recorded leaf entries
(encoded with cbor2, hashed and combined by an independent implementation of the rule).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from multiformats import CID, multihash

from swarm.protocol.cid import Cid
from swarm.protocol.envelope import (
    SIG_DOMAIN,
    Identity,
    decode_envelope,
    make_envelope,
    signing_message,
)
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.replay import replay
from swarm.protocol.schema import to_json
from swarm.protocol.verbs import payload_from_json

VECTORS_PATH = Path(__file__).resolve().parents[2] / "testdata" / "envelope_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VALID: list[dict[str, Any]] = VECTORS["valid"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]
PLAN_EXAMPLES: list[dict[str, Any]] = VECTORS["plan_examples"]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def test_vector_file_covers_what_it_should() -> None:
    kinds = {v["kind"] for v in VALID}
    assert {"NEED", "PROPOSE", "UPDATE_PLAN", "DECIDE", "TRANSFER"} <= kinds
    assert any(v["refs"] for v in VALID)
    codes = {v["code"] for v in INVALID}
    assert {
        "bad_signature",
        "non_canonical",
        "unknown_field",
        "wrong_swarm",
        "truncated",
        "trailing",
        "forbidden_type",
        "too_deep",
    } <= codes
    assert len(set(_ids(VALID))) == len(VALID)
    assert len(set(_ids(INVALID))) == len(INVALID)


@pytest.mark.parametrize("vec", VALID, ids=_ids(VALID))
def test_remake_gives_identical_bytes(vec: dict[str, Any]) -> None:
    identity = Identity(bytes.fromhex(vec["seed_hex"]))
    assert identity.public_key.hex() == vec["public_key_hex"]
    env = make_envelope(
        identity,
        kind=vec["kind"],
        swarm=bytes.fromhex(vec["swarm_hex"]),
        lamport=vec["lamport"],
        ts=vec["ts"],
        thread=vec["thread"],
        refs=[Cid.parse(r) for r in vec["refs"]],
        payload=payload_from_json(vec["kind"], vec["payload_json"]),
    )
    assert env.wire.hex() == vec["wire_hex"]
    assert env.body_bytes.hex() == vec["body_hex"]
    assert str(env.id) == vec["id"]
    assert env.id.raw.hex() == vec["id_hex"]
    assert env.sig.hex() == vec["sig_hex"]
    assert signing_message(env.id).hex() == vec["signing_message_hex"]


@pytest.mark.parametrize("vec", VALID, ids=_ids(VALID))
def test_decode_accepts_and_round_trips(vec: dict[str, Any]) -> None:
    wire = bytes.fromhex(vec["wire_hex"])
    env = decode_envelope(wire, swarm=bytes.fromhex(vec["swarm_hex"]))
    assert str(env.id) == vec["id"]
    assert env.kind == vec["kind"]
    assert env.sender.hex() == vec["public_key_hex"]
    assert env.lamport == vec["lamport"]
    assert env.ts == vec["ts"]
    assert env.thread == vec["thread"]
    assert [str(r) for r in env.refs] == vec["refs"]
    assert to_json(env.payload) == vec["payload_json"]
    assert env.sig.hex() == vec["sig_hex"]
    # The body is the wire from byte 76 on, after the fixed sig prefix.
    assert wire[:7] == bytes.fromhex("a2637369675840")
    assert wire[71:76] == bytes.fromhex("64626f6479")
    assert wire[76:].hex() == vec["body_hex"]


@pytest.mark.parametrize("vec", VALID, ids=_ids(VALID))
def test_id_matches_multiformats(vec: dict[str, Any]) -> None:
    body = bytes.fromhex(vec["body_hex"])
    cid = CID("base32", 1, "dag-cbor", multihash.digest(body, "sha2-256"))
    assert str(cid) == vec["id"]
    assert bytes(cid).hex() == vec["id_hex"]
    assert vec["id_hex"].startswith("01711220")


@pytest.mark.parametrize("vec", VALID, ids=_ids(VALID))
def test_signature_verifies_with_pynacl(vec: dict[str, Any]) -> None:
    message = bytes.fromhex(vec["signing_message_hex"])
    assert message == SIG_DOMAIN + bytes.fromhex(vec["id_hex"])
    key = nacl.signing.VerifyKey(bytes.fromhex(vec["public_key_hex"]))
    assert key.verify(message, bytes.fromhex(vec["sig_hex"])) == message
    seed_key = nacl.signing.SigningKey(bytes.fromhex(vec["seed_hex"]))
    assert bytes(seed_key.verify_key).hex() == vec["public_key_hex"]


@pytest.mark.parametrize("vec", INVALID, ids=_ids(INVALID))
def test_invalid_vector_is_rejected(vec: dict[str, Any]) -> None:
    wire = bytes.fromhex(vec["wire_hex"])
    swarm = bytes.fromhex(vec["expect_swarm_hex"]) if "expect_swarm_hex" in vec else None
    with pytest.raises(RemoteProtocolError) as info:
        decode_envelope(wire, swarm=swarm)
    assert (info.value.code, info.value.field) == (vec["code"], vec["field"])


def _merkle_root(leaves: list[bytes]) -> bytes:
    """Independent re-statement of the rule in docs/PROTOCOL.md."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = leaves
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [
            hashlib.sha256(b"\x01" + p[0] + p[1]).digest() if len(p) == 2 else p[0]
            for p in pairs
        ]
    return level[0]


@pytest.mark.parametrize("example", PLAN_EXAMPLES, ids=lambda e: "+".join(e["envelopes"]))
def test_plan_root_after_replay(example: dict[str, Any]) -> None:
    by_name = {v["name"]: bytes.fromhex(v["wire_hex"]) for v in VALID}
    replica = replay([by_name[n] for n in example["envelopes"]])
    assert len(replica.applied) == len(example["envelopes"])
    leaves = []
    for entry, cbor_hex, leaf_hex in zip(
        example["entries"], example["entry_cbor_hex"], example["leaf_hex"], strict=True
    ):
        encoded = cbor2.dumps(entry, canonical=True)
        assert encoded.hex() == cbor_hex
        leaf = hashlib.sha256(b"\x00" + encoded).digest()
        assert leaf.hex() == leaf_hex
        leaves.append(leaf)
    assert _merkle_root(leaves).hex() == example["root_hex"]
    assert replica.plan.root().hex() == example["root_hex"]
