"""Generate testdata/envelope_vectors.json: fixed envelope test vectors.

Run from the repository root::

    python tests/vectors_gen.py                        # write the JSON file
    python tests/vectors_gen.py --markdown [NAME ...]  # print docs/PROTOCOL.md section 11.x

Everything is derived from fixed Ed25519 seeds, a fixed swarm id and fixed Lamport
times/timestamps, so the output is byte-for-byte the same on every run. Valid vectors are
built with `make_envelope`. Invalid vectors are built by editing bytes by hand or by
encoding with cbor2 directly (bypassing the canonical encoder); the expected error code
and field of each are recorded by actually calling `decode_envelope`, and the script
fails if the error is not the one the vector was written to provoke.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2

from swarm.protocol import cbor
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import (
    ENVELOPE_LIMITS,
    Envelope,
    Identity,
    decode_envelope,
    make_envelope,
    signing_message,
)
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.plan import leaf_hash
from swarm.protocol.replay import replay
from swarm.protocol.schema import to_json

OUT = Path(__file__).resolve().parent.parent / "testdata" / "envelope_vectors.json"

SEED_A = bytes(range(32))
SEED_B = bytes([0x01]) * 32
SWARM = hashlib.sha256(b"can-swarm test vector swarm").digest()
OTHER_SWARM = hashlib.sha256(b"can-swarm another swarm").digest()
TS0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in Unix milliseconds
# Order of the Ed25519 base point (RFC 8032), and the encoding of the identity point
# (x = 0, y = 1), which has small order: for the signature-strictness vectors.
ED25519_L = 2**252 + 27742317777372353535851937790883648493
IDENTITY_POINT = bytes([1]) + bytes(31)

# The heading each valid vector gets in docs/PROTOCOL.md, section 11 (`--markdown`).
TITLES = {
    "need": "NEED",
    "propose_with_patch": "PROPOSE with a plan patch",
    "update_plan": "UPDATE_PLAN",
    "decide": "DECIDE with a certificate",
    "transfer": "TRANSFER (byte-string fields)",
    "claim_with_refs": "CLAIM with `refs` and a thread",
    "pool_leave": "POOL_LEAVE (only `op_id` and `valid_until_ms`)",
}


def _valid_vector(name: str, seed: bytes, env: Envelope) -> dict[str, Any]:
    return {
        "name": name,
        "seed_hex": seed.hex(),
        "public_key_hex": env.sender.hex(),
        "swarm_hex": env.swarm.hex(),
        "kind": env.kind,
        "lamport": env.lamport,
        "ts": env.ts,
        "thread": env.thread,
        "refs": [str(r) for r in env.refs],
        "payload_json": to_json(env.payload),
        "body_hex": env.body_bytes.hex(),
        "wire_hex": env.wire.hex(),
        "id": str(env.id),
        "id_hex": env.id.raw.hex(),
        "signing_message_hex": signing_message(env.id).hex(),
        "sig_hex": env.sig.hex(),
    }


def build_valid() -> tuple[list[dict[str, Any]], dict[str, Envelope]]:
    a, b = Identity(SEED_A), Identity(SEED_B)
    envs: dict[str, Envelope] = {}
    seeds: dict[str, bytes] = {}

    def add(name: str, ident: Identity, seed: bytes, **kw: Any) -> Envelope:
        env = make_envelope(ident, swarm=SWARM, **kw)
        envs[name] = env
        seeds[name] = seed
        return env

    need = add(
        "need",
        a,
        SEED_A,
        kind="NEED",
        lamport=1,
        ts=TS0,
        payload={
            "class": "simple",
            "budget": 100,
            "title": "Summarise the quarterly report",
            "bid_window_ms": 30_000,
            "k_result": 2,
            "capabilities": ["llm", "summarise"],
        },
    )
    add(
        "propose_with_patch",
        b,
        SEED_B,
        kind="PROPOSE",
        lamport=2,
        ts=TS0 + 1_000,
        thread="need-1",
        payload={
            "need_id": need.id,
            "proposal_id": "p-1",
            "cost": 80,
            "eta_ms": 60_000,
            "ballot": "b-1",
            "patch": {
                "ops": [
                    {"op": "ADD_TASK", "task_id": "t1", "title": "Read", "class": "simple"},
                    {"op": "ADD_TASK", "task_id": "t2", "title": "Write", "parent": "t1"},
                    {"op": "LINK", "from": "t2", "to": "t1"},
                ],
                "base_lamport": 1,
            },
        },
    )
    add(
        "update_plan",
        a,
        SEED_A,
        kind="UPDATE_PLAN",
        lamport=3,
        ts=TS0 + 2_000,
        payload={
            "ops": [
                {
                    "op": "ADD_TASK",
                    "task_id": "t1",
                    "title": "Read",
                    "class": "simple",
                },
                {
                    "op": "ADD_TASK",
                    "task_id": "t2",
                    "title": "Write",
                    "class": "complex",
                    "parent": "t1",
                },
                {"op": "LINK", "from": "t2", "to": "t1"},
            ],
            "base_lamport": 2,
        },
    )
    entry_hash = hashlib.sha256(b"can-swarm test vector raft entry").digest()
    decide = add(
        "decide",
        a,
        SEED_A,
        kind="DECIDE",
        lamport=4,
        ts=TS0 + 3_000,
        payload={
            "need_id": need.id,
            "proposal_id": "p-1",
            "k_plan": 1,
            "epoch": 0,
            "cert": {
                "bucket": 7,
                "index": 1,
                "term": 1,
                "ts_ms": TS0 + 2_500,
                "entry_hash": entry_hash,
                "sigs": [{"signer": b.public_key, "sig": b.sign(entry_hash)}],
            },
        },
    )
    add(
        "transfer",
        b,
        SEED_B,
        kind="TRANSFER",
        lamport=5,
        ts=TS0 + 4_000,
        payload={"to": a.public_key, "amount": 250, "memo": "thanks",
                 "op_id": bytes.fromhex("00112233445566778899aabbccddeeff"),
                 "valid_until_ms": TS0 + 4_000 + 600_000},
    )
    add(
        "claim_with_refs",
        b,
        SEED_B,
        kind="CLAIM",
        lamport=6,
        ts=TS0 + 5_000,
        thread="need-1",
        refs=[decide.id, need.id],  # make_envelope sorts them
        payload={
            "task_id": "t1",
            "lease_ttl_ms": 60_000,
            "heartbeat_interval_ms": 10_000,
            "need_id": need.id,
            "proposal_id": "p-1",
        },
    )
    add(
        "pool_leave",
        a,
        SEED_A,
        kind="POOL_LEAVE",
        lamport=7,
        ts=TS0 + 6_000,
        payload={"op_id": bytes(16), "valid_until_ms": TS0 + 6_000 + 60_000},
    )
    vectors = [_valid_vector(name, seeds[name], env) for name, env in envs.items()]
    return vectors, envs


# --- invalid vectors ----------------------------------------------------------------


def _signed_wire(ident: Identity, body: dict[str, Any]) -> bytes:
    """Canonical wire for an arbitrary body, correctly signed (so only the body is wrong)."""
    body_bytes = cbor.encode(body)
    sig = ident.sign(signing_message(dag_cbor_cid(body_bytes)))
    return cbor.encode({"sig": sig, "body": body})


def _raw_wire(ident: Identity, body: dict[str, Any]) -> bytes:
    """Like _signed_wire but through cbor2 directly, so floats etc. get through."""
    body_bytes = cbor2.dumps(_tag(body), canonical=True)
    sig = ident.sign(signing_message(dag_cbor_cid(body_bytes)))
    return cbor2.dumps({"sig": sig, "body": _tag(body)}, canonical=True)


def _tag(value: Any) -> Any:
    if isinstance(value, Cid):
        return cbor2.CBORTag(42, b"\x00" + value.raw)
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    return value


def build_invalid(envs: dict[str, Envelope]) -> list[dict[str, Any]]:
    a = Identity(SEED_A)
    need = envs["need"]
    claim = envs["claim_with_refs"]
    # (name, wire, expect_swarm, acceptable error codes, what the vector shows). Where
    # more than one code is acceptable, the defect can be caught by more than one layer
    # (canonical check or schema) and which one does is an implementation detail; the
    # code actually reported is what gets recorded.
    cases: list[tuple[str, bytes, bytes | None, tuple[str, ...], str]] = []

    def case(
        name: str,
        wire: bytes,
        code: str | tuple[str, ...],
        note: str,
        swarm: bytes | None = None,
    ) -> None:
        codes = (code,) if isinstance(code, str) else code
        cases.append((name, wire, swarm, codes, note))

    w = bytearray(need.wire)
    w[7] ^= 0x01  # first byte of the signature (after a2 63 "sig" 58 40)
    case("flipped_signature_byte", bytes(w), "bad_signature",
         "bit 0 of the first signature byte flipped")

    w = bytearray(need.wire)
    w[-1] ^= 0x01  # last byte of the body: changes the id, so the signature no longer fits
    # The NEED body ends with payload.bid_window_ms = 30000 (19 75 30); 30001 is still valid.
    case("body_byte_changed", bytes(w), "bad_signature",
         "last body byte changed after signing (payload.bid_window_ms 30000 -> 30001)")

    # Signature strictness (docs/PROTOCOL.md, section 4.4): each of these satisfies a
    # weaker rule than the one libsodium's crypto_sign_open applies.
    s_value = int.from_bytes(need.sig[32:], "little")
    case("signature_s_not_reduced",
         need.wire[:39] + (s_value + ED25519_L).to_bytes(32, "little") + need.wire[71:],
         "bad_signature",
         "S replaced by S + L (the same value modulo L); S must be below L")

    # R = identity and S = k*a mod L satisfy [S]B = R + [k]A (k = SHA-512(R || A || M) mod
    # L, a the secret scalar), the cofactorless equation; R has small order.
    expanded = hashlib.sha512(SEED_A).digest()
    a_scalar = int.from_bytes(expanded[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    message = signing_message(need.id)
    k = int.from_bytes(hashlib.sha512(IDENTITY_POINT + a.public_key + message).digest(),
                       "little") % ED25519_L
    sig = IDENTITY_POINT + (k * a_scalar % ED25519_L).to_bytes(32, "little")
    case("signature_r_small_order", need.wire[:7] + sig + need.wire[71:], "bad_signature",
         "R = identity point, S = k*a: meets [S]B = R + [k]A (valid under ZIP-215), but R "
         "has small order")

    # sender = identity point, R = identity, S = 0: [S]B = R + [k]A holds for every
    # message, so ZIP-215 (and any check without the small-order rule) accepts it.
    body = need.body()
    body["sender"] = IDENTITY_POINT
    case("sender_small_order",
         cbor.encode({"sig": IDENTITY_POINT + bytes(32), "body": body}), "bad_signature",
         "sender = identity point, R = identity, S = 0: valid under ZIP-215, the sender "
         "key has small order")

    # a2 | "body" <canonical body> | "sig" 58 40 <sig>: only the top-level order is wrong.
    unsorted = (
        bytes.fromhex("a264626f6479") + need.body_bytes + bytes.fromhex("637369675840") + need.sig
    )
    case("unsorted_top_level_keys", unsorted, "non_canonical",
         "top-level map written as body, sig (canonical order is sig, body); body canonical")

    # Non-minimal integer: lamport 1 written as 18 01 instead of 01.
    key = bytes([0x67]) + b"lamport"
    body_bytes = need.body_bytes
    at = body_bytes.index(key + b"\x01")
    bad_body = body_bytes[: at + len(key)] + b"\x18\x01" + body_bytes[at + len(key) + 1 :]
    case("non_minimal_integer", need.wire[:76] + bad_body, "non_canonical",
         "body.lamport = 1 encoded as 0x18 0x01")

    body = need.body()
    body["extra"] = 1
    case("unknown_body_field", _signed_wire(a, body), "unknown_field",
         "body has an extra field `extra`; correctly signed")

    body = need.body()
    del body["refs"]
    case("missing_body_field", _signed_wire(a, body), "missing_field",
         "body lacks `refs`; correctly signed")

    case("wrong_swarm", need.wire, "wrong_swarm",
         "valid envelope, decoded by a node of another swarm", swarm=OTHER_SWARM)

    case("truncated", need.wire[:-1], "truncated", "last byte removed")

    case("trailing_byte", need.wire + b"\x00", "trailing",
         "one 0x00 byte after the document")

    body = need.body()
    body["payload"] = {**body["payload"], "budget": 100.0}
    float_codes = ("forbidden_type", "non_canonical", "schema")
    case("float_in_payload", _raw_wire(a, body), float_codes,
         "payload.budget = 100.0 as the half float f9 5640; correctly signed")

    w = bytearray(_raw_wire(a, body))
    at = w.index(bytes.fromhex("f95640"))
    w[at : at + 3] = bytes.fromhex("fb4059000000000000")  # the same 100.0 as a float64
    case("float64_in_payload", bytes(w), float_codes,
         "payload.budget = 100.0 as the float64 fb 4059000000000000 (not its shortest form)")

    body = need.body()
    nested: Any = "deep"
    for _ in range(ENVELOPE_LIMITS.depth_max):
        nested = [nested]
    body["payload"] = {**body["payload"], "title": nested}
    case("nesting_too_deep", _signed_wire(a, body), "too_deep",
         f"payload.title is {ENVELOPE_LIMITS.depth_max} nested arrays; with the envelope, "
         "body and payload maps that is deeper than the envelope depth limit")

    body = need.body()
    body["lamport"] = 0
    case("lamport_zero", _signed_wire(a, body), "schema",
         "body.lamport = 0 (minimum is 1); correctly signed")

    body = claim.body()
    body["refs"] = list(reversed(body["refs"]))
    case("refs_unsorted", _signed_wire(Identity(SEED_B), body), "schema",
         "body.refs in descending order; correctly signed")

    body = need.body()
    body["kind"] = "NOPE"
    case("unknown_kind", _signed_wire(a, body), "schema",
         "body.kind = NOPE; the body schema rejects it before payload validation")

    body = need.body()
    body["payload"] = {**body["payload"], "budget": 0}
    case("payload_out_of_range", _signed_wire(a, body), "schema",
         "payload.budget = 0 (minimum is 1); correctly signed")

    body = claim.body()
    tagged = _tag(body)
    tagged["refs"][0] = cbor2.CBORTag(42, claim.refs[0].raw)  # no 0x00 multibase prefix
    case("cid_without_zero_prefix",
         cbor2.dumps({"sig": claim.sig, "body": tagged}, canonical=True),
         "decode", "tag 42 content lacks the leading 0x00 byte")

    body = need.body()
    tagged = _tag(body)
    tagged["payload"]["title"] = cbor2.CBORTag(99, 0)  # an unassigned tag: not allowed
    case("forbidden_tag", cbor2.dumps({"sig": need.sig, "body": tagged}, canonical=True),
         "forbidden_type", "payload.title is tag 99 wrapping 0; only tag 42 is allowed")

    out = []
    for name, wire, swarm, intended, note in cases:
        try:
            decode_envelope(wire, swarm=swarm)
        except RemoteProtocolError as exc:
            got = (exc.code, exc.field)
            reason = exc.reason
        else:
            raise SystemExit(f"invalid vector {name} decoded without error")
        if got[0] not in intended:
            raise SystemExit(f"invalid vector {name}: meant {intended}, decoder says {got}")
        print(f"  {name:26} {got[0]:15} {got[1]:15} {reason[:60]}")
        vec: dict[str, Any] = {"name": name, "note": note, "wire_hex": wire.hex()}
        if swarm is not None:
            vec["expect_swarm_hex"] = swarm.hex()
        vec["code"], vec["field"] = got
        out.append(vec)
    return out


def build_plan_examples(envs: dict[str, Envelope]) -> list[dict[str, Any]]:
    """Plan Merkle roots after replaying some of the valid vectors, with every leaf."""
    examples = []
    for names in (["update_plan"], list(envs)):
        replica = replay([envs[n].wire for n in names], swarm=SWARM)
        plan = replica.plan
        assert len(replica.applied) == len(names), replica.summary()
        views = [plan.task(t) for t in plan.task_ids()]
        entries: list[list[Any]] = [v.as_leaf() for v in views if v is not None]
        entries.extend(["link", s, d] for s, d in plan.links())
        examples.append(
            {
                "envelopes": names,
                "entries": entries,
                "entry_cbor_hex": [cbor.encode(e).hex() for e in entries],
                "leaf_hex": [leaf_hash(e).hex() for e in entries],
                "root_hex": plan.root().hex(),
            }
        )
    return examples


def _hex_lines(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width))


def markdown(vec: dict[str, Any], number: int) -> str:
    """The docs/PROTOCOL.md section 11.`number` for a valid vector (as `_valid_vector`)."""
    refs = ", ".join(f"`{r}`" for r in vec["refs"]) or "(none)"
    wire = bytes.fromhex(vec["wire_hex"])
    rows = [
        ("seed", f"`{vec['seed_hex']}`"),
        ("public key (`sender`)", f"`{vec['public_key_hex']}`"),
        ("swarm", f"`{vec['swarm_hex']}`"),
        ("kind", f"`{vec['kind']}`"),
        ("lamport", str(vec["lamport"])),
        ("ts", str(vec["ts"])),
        ("thread", f"`{json.dumps(vec['thread'], ensure_ascii=False)}`"),
        ("refs", refs),
        ("id", f"`{vec['id']}`"),
    ]
    payload = json.dumps(vec["payload_json"], indent=2, ensure_ascii=False)
    return "\n".join([
        f"### 11.{number} `{vec['name']}`: {TITLES[vec['name']]}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in rows),
        "",
        "Payload (JSON form):",
        "",
        "```json",
        payload,
        "```",
        "",
        f"Wire ({len(wire)} bytes; the body is bytes 76 to the end):",
        "",
        "```",
        _hex_lines(wire),
        "```",
        "",
        f"id (binary): `{vec['id_hex']}`",
        "",
        f"Signing message: `{vec['signing_message_hex']}`",
        "",
        f"Signature (wire bytes 7 to 70): `{vec['sig_hex']}`",
        "",
    ])


def print_markdown(names: list[str]) -> None:
    valid, _envs = build_valid()
    known = [v["name"] for v in valid]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"no valid vector named {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [(i, v) for i, v in enumerate(valid, 1) if not names or v["name"] in names]
    print("\n".join(markdown(v, i) for i, v in chosen), end="")


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate or print the envelope test vectors.")
    parser.add_argument("--markdown", nargs="*", metavar="NAME",
                        help="print the docs/PROTOCOL.md section 11 text of these valid "
                             "vectors (all if none are named) instead of writing the file")
    args = parser.parse_args()
    if args.markdown is not None:
        print_markdown(args.markdown)
        return
    valid, envs = build_valid()
    doc = {
        "description": (
            "CAN Swarm envelope test vectors (see docs/PROTOCOL.md). Generated by "
            "tests/vectors_gen.py; do not edit by hand."
        ),
        "valid": valid,
        "invalid": build_invalid(envs),
        "plan_examples": build_plan_examples(envs),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(valid)} valid and {len(doc['invalid'])} invalid vectors to {OUT}")


if __name__ == "__main__":
    main()
