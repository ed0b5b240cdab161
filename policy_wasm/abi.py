"""The policy ABI, version 1: what the host writes into the module's memory and what the
module's answer means. docs/POLICY.md is the prose form of this file.

Owns the numbers both sides must agree on (verb codes, payload field bits, memory
offsets, reason and verdict codes) and the pure function that turns an envelope plus its
context into the fixed-layout view. It knows nothing of wasmtime (that is `host`) nor of
clocks or ledgers (the caller supplies stake and rate as plain integers).

Every slot is a little-endian u64 below 2^63, so the module needs no floats and no
bounds beyond one comparison per rule.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.protocol import cbor
from swarm.protocol.envelope import BODY_OFFSET, Envelope

ABI_VERSION = 1

# Memory map.
VIEW_OFFSET = 0
PARAMS_OFFSET = 128
RULES_OFFSET = 1024
RULE_BYTES = 16
KIND_CODE_MAX = 31  # rule records exist for codes 0..31

VIEW_SLOTS = ("kind", "wire_bytes", "payload_bytes", "fields", "items", "task_class",
              "bounty", "proof_bytes", "sender_stake", "sender_rate")
PARAM_SLOTS = ("bounty_cap_simple", "bounty_cap_complex", "bounty_cap_critical",
               "proof_bytes_max", "min_verifier_stake", "sender_rate_per_s")
VIEW = struct.Struct("<" + "Q" * len(VIEW_SLOTS))
PARAMS = struct.Struct("<" + "Q" * len(PARAM_SLOTS))
RULE = struct.Struct("<IIII")
SLOT_MAX = 2**63 - 1

# Verb codes: 1-based, in this order, fixed for ABI version 1 (new verbs are appended).
KIND_CODES: Mapping[str, int] = {k: i + 1 for i, k in enumerate((
    "NEED", "PROPOSE", "DECIDE", "CLAIM", "HEARTBEAT", "COMMIT", "ATTEST", "FINALIZE",
    "YIELD", "RELEASE", "UPDATE_PLAN", "ATTEST_PLAN", "CHALLENGE", "INVALIDATE",
    "TRANSFER", "STAKE", "UNSTAKE", "COMPLETE_UNBONDING", "POOL_REGISTER", "POOL_LEAVE",
    "WITHDRAW"))}
KIND_NAMES: Mapping[int, str] = {v: k for k, v in KIND_CODES.items()}

# Payload field bits: bit i of `fields` is set when FIELDS[kind][i] is in the payload.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "NEED": ("class", "budget", "title", "input", "bid_window_ms", "k_result",
             "capabilities", "verify_bounty", "k_plan", "job", "host", "check", "output",
             "cites", "deny"),
    "PROPOSE": ("need_id", "proposal_id", "cost", "eta_ms", "ballot", "patch",
                "capabilities"),
    "DECIDE": ("need_id", "proposal_id", "k_plan", "epoch", "cert", "also"),
    "CLAIM": ("task_id", "lease_ttl_ms", "heartbeat_interval_ms", "need_id", "proposal_id",
              "cost", "eta_ms"),
    "HEARTBEAT": ("task_id", "lease_id", "progress"),
    "COMMIT": ("task_id", "lease_id", "result", "evidence", "verify_bounty"),
    "ATTEST": ("task_id", "commit_id", "verdict", "evidence"),
    "FINALIZE": ("task_id", "commit_id"),
    "YIELD": ("task_id", "reason", "lease_id"),
    "RELEASE": ("task_id", "lease_id", "reason"),
    "UPDATE_PLAN": ("ops", "base_lamport"),
    "ATTEST_PLAN": ("need_id", "proposal_id", "verdict"),
    "CHALLENGE": ("task_id", "commit_id", "proof_type", "evidence", "bond_amount",
                  "size_bytes"),
    "INVALIDATE": ("task_id", "challenge_id", "slashed_verifiers", "new_k_result"),
    "TRANSFER": ("to", "amount", "memo", "op_id", "valid_until_ms"),
    "STAKE": ("amount", "op_id", "valid_until_ms"),
    "UNSTAKE": ("amount", "op_id", "valid_until_ms"),
    "COMPLETE_UNBONDING": ("op_id", "valid_until_ms"),
    "POOL_REGISTER": ("capabilities", "org", "asn", "region", "op_id", "valid_until_ms"),
    "POOL_LEAVE": ("op_id", "valid_until_ms"),
    "WITHDRAW": ("task_id", "challenge_id"),
}
_FIELD_BITS: Mapping[str, Mapping[str, int]] = {
    kind: {name: 1 << i for i, name in enumerate(names)} for kind, names in FIELDS.items()
}
TASK_CLASS_CODES: Mapping[str, int] = {"simple": 1, "complex": 2, "critical": 3}

# Rule flags in the module's table.
FLAG_ALLOWED = 1
FLAG_STAKE = 2
FLAG_BOUNTY = 4
FLAG_PROOF = 8

# Verdicts (result >> 8) and reasons (result & 0xff) the module may return.
VERDICT_ACCEPT = 0
VERDICT_REJECT = 1
VERDICT_IGNORE = 2
VERDICT_NAMES: Mapping[int, str] = {0: "accept", 1: "reject", 2: "ignore"}
REASONS: Mapping[int, str] = {
    0: "ok",
    1: "unknown_kind",
    2: "payload_too_large",
    3: "too_many_items",
    4: "missing_field",
    5: "bad_task_class",
    6: "bounty_over_cap",
    7: "proof_too_large",
    8: "stake_required",
    9: "rate_limited",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One verb's record in the module's rule table (read back from its memory)."""

    kind: str
    payload_bytes_max: int
    items_max: int
    required_mask: int
    flags: int

    @property
    def allowed(self) -> bool:
        return bool(self.flags & FLAG_ALLOWED)

    @property
    def required_fields(self) -> list[str]:
        names = FIELDS.get(self.kind, ())
        return [n for i, n in enumerate(names) if self.required_mask >> i & 1]

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "payload_bytes_max": self.payload_bytes_max,
            "items_max": self.items_max,
            "required_fields": self.required_fields,
            "stake_required": bool(self.flags & FLAG_STAKE),
            "bounty_capped": bool(self.flags & FLAG_BOUNTY),
            "proof_capped": bool(self.flags & FLAG_PROOF),
        }


def params_view(params: Mapping[str, int]) -> bytes:
    """The PARAMS block from genesis parameters (written once per instance)."""
    return PARAMS.pack(*(_clamp(params[name]) for name in PARAM_SLOTS))


def _clamp(value: int) -> int:
    return value if 0 <= value <= SLOT_MAX else (0 if value < 0 else SLOT_MAX)


# --- sizes read from the wire -------------------------------------------------------------

def _head_bytes(n: int) -> int:
    """Bytes of a CBOR head carrying the argument n."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x1_0000_0000:
        return 5
    return 9


def _text_bytes(text: str) -> int:
    n = len(text.encode())
    return _head_bytes(n) + n


# The body's map head and each of its keys but payload's (the body starts at BODY_OFFSET).
_FIXED_HEADER_BYTES = (
    1  # map(9)
    + 2 + 1  # "v": 1
    + 3  # "ts"
    + 5 + 5  # "kind", "refs"
    + 6 + 34  # "swarm": bytes(32)
    + 7 + 34  # "sender": bytes(32)
    + 7  # "thread"
    + 8  # "lamport"
    + 8  # "payload"
)
_PAYLOAD_KEY = b"\x67payload"


def payload_bytes(env: Envelope) -> int:
    """Size of the payload's canonical encoding, read off the wire without re-encoding.

    The canonical body puts "payload" last (keys sort by length, then bytes), so the
    payload is the wire's tail; its start is the sum of the other fields' encoded sizes.
    """
    refs = sum(2 + _head_bytes(len(r.raw) + 1) + len(r.raw) + 1 for r in env.refs)
    start = (BODY_OFFSET + _FIXED_HEADER_BYTES + _head_bytes(env.ts)
             + _text_bytes(env.kind) + _head_bytes(len(env.refs)) + refs
             + _text_bytes(env.thread) + _head_bytes(env.lamport))
    if env.wire[start - len(_PAYLOAD_KEY):start] != _PAYLOAD_KEY:
        # Not the canonical layout (a decoded or locally made envelope always is):
        # measure by encoding rather than trust the arithmetic.
        return len(cbor.encode(dict(env.payload)))
    return len(env.wire) - start


def list_items(value: Any) -> int:
    """Elements of every list in a payload, nested lists included."""
    total = 0
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, dict | list):
                total += list_items(v)
    elif isinstance(value, list):
        total += len(value)
        for v in value:
            if isinstance(v, dict | list):
                total += list_items(v)
    return total


def envelope_view(env: Envelope, *, sender_stake: int, sender_rate: int) -> bytes:
    """The VIEW block for one envelope (a decoded, verified one)."""
    kind = env.kind
    payload = env.payload
    bits = _FIELD_BITS.get(kind, {})
    fields = 0
    for name in payload:
        fields |= bits.get(name, 0)
    task_class = bounty = proof = 0
    if kind == "NEED":
        task_class = TASK_CLASS_CODES.get(payload.get("class", ""), 0)
        bounty = payload.get("verify_bounty", 0)  # the budget is escrowed, not capped
    elif kind == "CHALLENGE":
        proof = payload.get("size_bytes", 0)
    return VIEW.pack(
        KIND_CODES.get(kind, 0), len(env.wire), payload_bytes(env), fields,
        list_items(payload), task_class, _clamp(bounty), _clamp(proof),
        _clamp(sender_stake), _clamp(sender_rate))


def raw_view(**slots: int) -> bytes:
    """A VIEW block from named slots (missing ones are 0): for tests and tools that
    probe the module at the ABI level."""
    unknown = set(slots) - set(VIEW_SLOTS)
    if unknown:
        raise ValueError(f"unknown view slots: {sorted(unknown)}")
    return VIEW.pack(*(slots.get(name, 0) for name in VIEW_SLOTS))
