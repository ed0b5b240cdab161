"""Every verb of the protocol and the schema of its payload.

Owns: the list of envelope kinds and what each payload must contain. It does not know
who may send a verb or when (that is the policy and the lifecycle), only what a
well-formed payload is. Names follow the roadmap; durations carry their unit in the
name (`lease_ttl_ms`), amounts are integers in the smallest credit unit, and nothing
here is a float.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import output_schema
from .errors import SchemaError
from .schema import (
    INT_MAX,
    Bytes,
    Enum,
    FieldType,
    Int,
    Link,
    List,
    Obj,
    OneOf,
    Pattern,
    Text,
    obj,
)

# --- shared field types -------------------------------------------------------------

TASK_ID = Text(max_bytes=128, min_bytes=1)
PROPOSAL_ID = Text(max_bytes=128, min_bytes=1)
ACCOUNT = Bytes(32)  # an Ed25519 public key
AMOUNT = Int(min=1)
AMOUNT_OR_ZERO = Int(min=0)
DURATION_MS = Int(min=1)
REASON = Text(max_bytes=256)
# A verifier's org and region: never empty, as the verifier pool stores them
# (committee.POOL_OP_SCHEMA), so every registration the envelope allows can be applied.
SHORT_TEXT = Text(max_bytes=64, min_bytes=1)
CAPABILITIES = List(Text(max_bytes=64, min_bytes=1), max_items=32, sorted_unique=True)
# A host job's or check's registered name (docs/JOBS.md).
JOB_NAME = Pattern(r"[a-z0-9][a-z0-9._-]{0,63}", "a job name: a-z 0-9 . _ -, 1..64")
OUTPUT_SCHEMA = Pattern(output_schema.SPEC, "an output schema: FORMAT or FORMAT<=MAX_BYTES, "
                        "FORMAT one of " + "|".join(output_schema.FORMATS))
# Every ledger verb carries a client-chosen operation id and a validity limit. The
# operation is (sender, op_id, valid_until_ms): a retry that reuses both is the same
# operation, applied at most once; after `valid_until_ms` (bucket time) the bucket refuses
# it, so an old signed envelope cannot be applied weeks later (docs/LEDGER.md).
OP_ID_BYTES = 16
OP_ID = Bytes(OP_ID_BYTES)
LEDGER_OP = {"op_id": OP_ID, "valid_until_ms": Int(min=1)}
LEDGER_KINDS = ("TRANSFER", "STAKE", "UNSTAKE", "COMPLETE_UNBONDING", "POOL_REGISTER",
                "POOL_LEAVE")
TASK_CLASSES = ("simple", "complex", "critical")
# What a CHALLENGE claims is wrong with a result (docs/MARKET.md "Challenges").
PROOF_TYPES = ("schema_violation", "missing_citation", "semantic_contradiction",
               "output_mismatch", "policy_breach")
TASK_CLASS = Enum(TASK_CLASSES)

# --- plan operations (UPDATE_PLAN.ops, PROPOSE.patch.ops) ---------------------------

PLAN_OP = OneOf(
    "op",
    {
        "ADD_TASK": obj(
            {"op": Enum(("ADD_TASK",)), "task_id": TASK_ID},
            {"title": Text(max_bytes=200), "class": TASK_CLASS, "parent": TASK_ID},
        ),
        # LINK from -> to: task `from` depends on task `to`.
        "LINK": obj({"op": Enum(("LINK",)), "from": TASK_ID, "to": TASK_ID}),
    },
)
PLAN_OPS_MAX = 256
PATCH = obj(
    {
        "ops": List(PLAN_OP, max_items=PLAN_OPS_MAX, min_items=1),
        "base_lamport": Int(min=0),
    }
)

CERT = obj(
    {
        "bucket": Int(min=0, max=255),
        "index": Int(min=1),
        "term": Int(min=1),
        "ts_ms": Int(min=0),  # the leader's timestamp in the committed entry
        "entry_hash": Bytes(32),
        "sigs": List(
            obj({"signer": ACCOUNT, "sig": Bytes(64)}), max_items=64, min_items=1
        ),
    }
)

# A certified decision as a DECIDE states it. The deciding node batches its announcements:
# one envelope states a decision in its own fields and up to DECIDE_ALSO_MAX more in
# `also` (gossip costs about 2.5 ms of CPU per envelope per receiver here, whatever it
# carries, so one envelope per decision more than doubled DECIDE latency under load).
DECISION = obj(
    {
        "need_id": Link(),
        "proposal_id": PROPOSAL_ID,
        "k_plan": Int(min=0, max=64),
        "epoch": Int(min=0),
        "cert": CERT,
    }
)
DECIDE_ALSO_MAX = 63

# --- the verbs ----------------------------------------------------------------------

PAYLOADS: Mapping[str, Obj] = {
    # Task lifecycle.
    "NEED": obj(
        {"class": TASK_CLASS, "budget": AMOUNT},
        {
            "title": Text(max_bytes=200),
            "input": Link(),
            "bid_window_ms": DURATION_MS,
            "k_result": Int(min=1, max=64),
            # Approving ATTEST_PLANs a winning bid's patch needs before the plan takes
            # it; the genesis `k_plan` when absent.
            "k_plan": Int(min=0, max=64),
            "capabilities": CAPABILITIES,
            # Part of the budget, shared by the committee that accepts the result;
            # within the class's bounty cap.
            "verify_bounty": AMOUNT_OR_ZERO,
            # The WebAssembly job to run on `input`: its module's CID (docs/JOBS.md).
            "job": Link(),
            # Or a host job: a Python callable registered under this name, and the
            # check that verifies its result (the job's own check when absent).
            "host": JOB_NAME,
            "check": JOB_NAME,
            # What the result's bytes must look like (protocol/output_schema.py).
            "output": OUTPUT_SCHEMA,
            # CIDs the result must cite (their text in its bytes); the output schema
            # must then bound the result (output_schema.cites_problem).
            "cites": List(Link(), max_items=output_schema.CITES_MAX, min_items=1),
            # Byte strings (UTF-8) the result must not contain: the task's content
            # policy, which a POLICY_BREACH challenge shows broken.
            "deny": List(Text(max_bytes=output_schema.DENY_TEXT_MAX, min_bytes=1),
                         max_items=output_schema.DENY_MAX, min_items=1, sorted_unique=True),
        },
    ),
    "PROPOSE": obj(
        {
            "need_id": Link(),
            "proposal_id": PROPOSAL_ID,
            "cost": AMOUNT_OR_ZERO,
            "eta_ms": Int(min=0),
            "ballot": Text(max_bytes=128, min_bytes=1),
        },
        {"patch": PATCH, "capabilities": CAPABILITIES},
    ),
    "DECIDE": obj(
        {
            "need_id": Link(),
            "proposal_id": PROPOSAL_ID,
            "k_plan": Int(min=0, max=64),
            "epoch": Int(min=0),
        },
        {"cert": CERT, "also": List(DECISION, max_items=DECIDE_ALSO_MAX, min_items=1)},
    ),
    "CLAIM": obj(
        {"task_id": TASK_ID, "lease_ttl_ms": DURATION_MS, "heartbeat_interval_ms": DURATION_MS},
        {
            "need_id": Link(),
            "proposal_id": PROPOSAL_ID,
            "cost": AMOUNT_OR_ZERO,
            "eta_ms": Int(min=0),
        },
    ),
    "HEARTBEAT": obj(
        {"task_id": TASK_ID, "lease_id": Link(), "progress": Int(min=0, max=100)},
    ),
    "COMMIT": obj(
        {"task_id": TASK_ID, "lease_id": Link(), "result": Link()},
        {
            "evidence": List(Link(), max_items=64, sorted_unique=True),
            "verify_bounty": AMOUNT_OR_ZERO,
        },
    ),
    "ATTEST": obj(
        {"task_id": TASK_ID, "commit_id": Link(), "verdict": Enum(("valid", "invalid"))},
        {"evidence": Link()},
    ),
    "FINALIZE": obj({"task_id": TASK_ID, "commit_id": Link()}),
    "YIELD": obj({"task_id": TASK_ID, "reason": REASON}, {"lease_id": Link()}),
    "RELEASE": obj(
        {
            "task_id": TASK_ID,
            "lease_id": Link(),
            "reason": Enum(("timeout", "heartbeat_miss", "operator")),
        }
    ),
    # Planning.
    "UPDATE_PLAN": PATCH,
    "ATTEST_PLAN": obj(
        {
            "need_id": Link(),
            "proposal_id": PROPOSAL_ID,
            "verdict": Enum(("approve", "reject")),
        }
    ),
    # Challenges.
    "CHALLENGE": obj(
        {
            "task_id": TASK_ID,
            "commit_id": Link(),
            "proof_type": Enum(PROOF_TYPES),
            "evidence": Link(),
            "bond_amount": AMOUNT,
        },
        # Declared size of the proof object; the policy caps it (10 KB by default).
        {"size_bytes": Int(min=0, max=INT_MAX)},
    ),
    "INVALIDATE": obj(
        {
            "task_id": TASK_ID,
            "challenge_id": Link(),
            "slashed_verifiers": List(ACCOUNT, max_items=64, sorted_unique=True),
            "new_k_result": Int(min=1, max=64),
        }
    ),
    # Ledger and staking.
    "TRANSFER": obj({"to": ACCOUNT, "amount": AMOUNT, **LEDGER_OP}, {"memo": REASON}),
    "STAKE": obj({"amount": AMOUNT, **LEDGER_OP}),
    "UNSTAKE": obj({"amount": AMOUNT, **LEDGER_OP}),
    "COMPLETE_UNBONDING": obj({**LEDGER_OP}),
    "POOL_REGISTER": obj(
        {
            "capabilities": CAPABILITIES,
            "org": SHORT_TEXT,
            "asn": Int(min=0, max=2**32 - 1),
            "region": SHORT_TEXT,
            **LEDGER_OP,
        }
    ),
    "POOL_LEAVE": obj({**LEDGER_OP}),
    # A challenger takes back its open challenge (the bond less a fee).
    "WITHDRAW": obj({"task_id": TASK_ID, "challenge_id": Link()}),
}

KINDS: tuple[str, ...] = tuple(PAYLOADS)
assert set(LEDGER_KINDS) <= set(KINDS)
KIND_FIELD = Enum(KINDS)


def _check_ops(ops: list[dict[str, Any]], path: str) -> None:
    for i, op in enumerate(ops):
        if op["op"] == "LINK" and op["from"] == op["to"]:
            raise SchemaError(f"{path}[{i}].to", "a task cannot depend on itself")


def validate_payload(kind: str, payload: Any, path: str = "payload") -> None:
    """Raise SchemaError unless `payload` is a well-formed payload for `kind`."""
    schema = PAYLOADS.get(kind)
    if schema is None:
        raise SchemaError("kind", f"unknown verb {kind!r}", code="unknown_kind")
    schema.check(payload, path)
    # Rules a field type cannot express on its own.
    if kind == "UPDATE_PLAN":
        _check_ops(payload["ops"], f"{path}.ops")
    elif kind == "PROPOSE" and "patch" in payload:
        _check_ops(payload["patch"]["ops"], f"{path}.patch.ops")


def payload_from_json(kind: str, value: Any) -> Any:
    """Turn a JSON payload into protocol values (hex -> bytes, CID strings -> links)."""
    schema = PAYLOADS.get(kind)
    if schema is None:
        raise SchemaError("kind", f"unknown verb {kind!r}; known: {', '.join(KINDS)}")
    return schema.from_json(value, "payload")


def describe(kind: str) -> dict[str, str]:
    """Field name -> description, for docs and the CLI's help."""
    schema = PAYLOADS[kind]
    out: dict[str, str] = {}
    for name, ftype in schema.fields.items():
        req = "required" if name in schema.required else "optional"
        out[name] = f"{ftype.describe()} ({req})"
    return out


def field_types(kind: str) -> Mapping[str, FieldType]:
    return PAYLOADS[kind].fields
