"""Verb payload schemas: every verb accepts its example and rejects what it must."""

from __future__ import annotations

from typing import Any

import pytest

from swarm.protocol import verbs
from swarm.protocol.cid import Cid
from swarm.protocol.errors import SchemaError
from swarm.protocol.schema import to_json
from swarm.testnet.workload import example_payloads, fake_cid

ROADMAP_VERBS = {"NEED", "PROPOSE", "CLAIM", "COMMIT", "ATTEST", "DECIDE", "FINALIZE", "YIELD",
                 "RELEASE", "UPDATE_PLAN", "ATTEST_PLAN", "HEARTBEAT", "CHALLENGE",
                 "INVALIDATE", "TRANSFER", "STAKE", "UNSTAKE"}


def test_every_roadmap_verb_exists_and_has_an_example() -> None:
    assert set(verbs.KINDS) >= ROADMAP_VERBS
    assert set(example_payloads()) == set(verbs.KINDS)


@pytest.mark.parametrize("kind", verbs.KINDS)
def test_example_is_valid(kind: str) -> None:
    verbs.validate_payload(kind, example_payloads()[kind])


@pytest.mark.parametrize("kind", verbs.KINDS)
def test_unknown_field_rejected(kind: str) -> None:
    payload = {**example_payloads()[kind], "surprise": 1}
    with pytest.raises(SchemaError) as info:
        verbs.validate_payload(kind, payload)
    assert info.value.code == "unknown_field"
    assert info.value.field == "payload.surprise"


@pytest.mark.parametrize("kind", [k for k in verbs.KINDS if verbs.PAYLOADS[k].required])
def test_each_required_field_is_required(kind: str) -> None:
    for name in verbs.PAYLOADS[kind].required:
        payload = dict(example_payloads()[kind])
        payload.pop(name)
        with pytest.raises(SchemaError) as info:
            verbs.validate_payload(kind, payload)
        assert info.value.field == f"payload.{name}"


def test_json_round_trip_for_every_example() -> None:
    for kind, payload in example_payloads().items():
        assert verbs.payload_from_json(kind, to_json(payload)) == payload, kind


def test_json_accepts_dag_json_links_and_sorts_sets() -> None:
    cid = fake_cid("x")
    got = verbs.payload_from_json(
        "COMMIT", {"task_id": "t", "lease_id": {"/": str(cid)}, "result": str(cid),
                   "evidence": [str(fake_cid("b")), str(fake_cid("a")), str(fake_cid("b"))]})
    assert isinstance(got["lease_id"], Cid)
    assert got["evidence"] == sorted({fake_cid("a"), fake_cid("b")})
    verbs.validate_payload("COMMIT", got)


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("NEED", {"budget": 0}, "payload.budget"),
        ("NEED", {"budget": 1.0}, "payload.budget"),
        ("NEED", {"budget": True}, "payload.budget"),
        ("NEED", {"class": "legendary"}, "payload.class"),
        ("NEED", {"capabilities": ["b", "a"]}, "payload.capabilities[1]"),
        ("NEED", {"capabilities": ["a", "a"]}, "payload.capabilities[1]"),
        ("HEARTBEAT", {"progress": 101}, "payload.progress"),
        ("TRANSFER", {"to": b"\x01" * 31}, "payload.to"),
        ("TRANSFER", {"amount": 2**63}, "payload.amount"),
        ("DECIDE", {"need_id": "not a link"}, "payload.need_id"),
        ("RELEASE", {"reason": "boredom"}, "payload.reason"),
        ("POOL_REGISTER", {"asn": 2**32}, "payload.asn"),
        ("POOL_REGISTER", {"org": ""}, "payload.org"),
        ("POOL_REGISTER", {"region": ""}, "payload.region"),
        ("UPDATE_PLAN", {"ops": []}, "payload.ops"),
        ("UPDATE_PLAN", {"ops": [{"op": "DELETE", "task_id": "a"}]}, "payload.ops[0].op"),
        # An unhashable tag is a SchemaError, not a TypeError.
        ("UPDATE_PLAN", {"ops": [{"op": ["LINK"], "task_id": "a"}]}, "payload.ops[0].op"),
        ("UPDATE_PLAN", {"ops": [{"op": "LINK", "from": "a", "to": "a"}]}, "payload.ops[0].to"),
        # A task's state is its bucket's: no plan op writes one.
        ("UPDATE_PLAN", {"ops": [{"op": "STATE", "task_id": "a", "state": "OPEN"}]},
         "payload.ops[0].op"),
        ("UPDATE_PLAN", {"ops": [{"op": "ADD_TASK", "task_id": ""}]}, "payload.ops[0].task_id"),
        ("PROPOSE", {"patch": {"ops": [{"op": "LINK", "from": "a", "to": "a"}],
                               "base_lamport": 0}}, "payload.patch.ops[0].to"),
        ("CHALLENGE", {"proof_type": "vibes"}, "payload.proof_type"),
        ("INVALIDATE", {"slashed_verifiers": [b"\x02" * 32, b"\x01" * 32]},
         "payload.slashed_verifiers[1]"),
    ],
)
def test_rejections(kind: str, change: dict[str, Any], field: str) -> None:
    payload = {**example_payloads()[kind], **change}
    with pytest.raises(SchemaError) as info:
        verbs.validate_payload(kind, payload)
    assert info.value.field == field, info.value


def test_unknown_kind() -> None:
    with pytest.raises(SchemaError) as info:
        verbs.validate_payload("TELEPORT", {})
    assert info.value.field == "kind"


def test_no_float_anywhere_in_schemas() -> None:
    # Amounts and durations are integers in the smallest unit.
    for kind in verbs.KINDS:
        for desc in verbs.describe(kind).values():
            assert "float" not in desc
