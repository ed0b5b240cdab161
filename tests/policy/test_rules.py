"""Every rule of the policy, both sides.

Method: real signed envelopes through `WasmPolicy` (stake from the genesis validator
set, rate from a clock the test moves) where an envelope can express the case, and views
written straight at the ABI where it cannot (a verb code no envelope can carry, a
required field the payload schema already forces). Limits are read back from the
module's own rule table and from genesis, so each test pins the boundary exactly:
the limit passes, one past it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from policy_kit import OUTSIDER, POOR, STAKED, PolicyKit

from swarm.node.pipeline import Verdict
from swarm.policy_wasm import abi
from swarm.protocol import verbs
from swarm.testnet.workload import example_payloads, fake_cid, ledger_fields

EXAMPLES = example_payloads()
STAKE_VERBS = {"ATTEST", "ATTEST_PLAN", "INVALIDATE"}

LEDGER = ledger_fields(bytes(16))  # a ledger verb's op id and validity limit


def good_view(kit: PolicyKit, verb: str, **overrides: int) -> bytes:
    """A view every rule accepts: at-limit where limits apply."""
    rule = kit.host.rules()[verb]
    slots = {"kind": abi.KIND_CODES[verb], "wire_bytes": 200, "payload_bytes": 1,
             "fields": rule.required_mask, "items": 0, "task_class": 0, "bounty": 0,
             "proof_bytes": 0, "sender_stake": kit.genesis.params["min_verifier_stake"],
             "sender_rate": 1}
    if verb == "NEED":
        slots.update(task_class=1, bounty=1)
    slots.update(overrides)
    return abi.raw_view(**slots)


# --- 1. allowed verbs -----------------------------------------------------------------

@pytest.mark.parametrize("kind", verbs.KINDS)
def test_every_verb_of_the_protocol_is_allowed(kit: PolicyKit, kind: str) -> None:
    result = kit.policy.run(kit.envelope(kind, EXAMPLES[kind]))
    assert (result.verdict, result.reason) == ("accept", "ok")
    assert kit.policy.evaluate(kit.envelope(kind, EXAMPLES[kind])).verdict is Verdict.ACCEPT


@pytest.mark.parametrize("code", [0, 22, 31, 32, 2**40, abi.SLOT_MAX])
def test_a_verb_code_outside_the_table_is_rejected(kit: PolicyKit, code: int) -> None:
    result = kit.host.evaluate_view(good_view(kit, "STAKE", kind=code))
    assert (result.verdict, result.reason) == ("reject", "unknown_kind")


def test_abi_verb_codes_and_fields_cover_the_protocol_exactly() -> None:
    assert tuple(abi.KIND_CODES) == verbs.KINDS
    for kind in verbs.KINDS:
        assert set(abi.FIELDS[kind]) == set(verbs.field_types(kind)), kind


# --- 2. and 3. per-verb payload size and list items -------------------------------------

@pytest.mark.parametrize("kind", verbs.KINDS)
def test_payload_size_limit_per_verb(kit: PolicyKit, kind: str) -> None:
    limit = kit.host.rules()[kind].payload_bytes_max
    assert kit.host.evaluate_view(good_view(kit, kind, payload_bytes=limit)).allowed
    result = kit.host.evaluate_view(good_view(kit, kind, payload_bytes=limit + 1))
    assert (result.verdict, result.reason) == ("reject", "payload_too_large")


@pytest.mark.parametrize("kind", verbs.KINDS)
def test_list_items_limit_per_verb(kit: PolicyKit, kind: str) -> None:
    limit = kit.host.rules()[kind].items_max
    assert kit.host.evaluate_view(good_view(kit, kind, items=limit)).allowed
    result = kit.host.evaluate_view(good_view(kit, kind, items=limit + 1))
    assert (result.verdict, result.reason) == ("reject", "too_many_items")


def _ops(n: int, title: str = "") -> list[dict[str, Any]]:
    return [{"op": "ADD_TASK", "task_id": f"t{i}", "title": title} for i in range(n)]


def test_update_plan_with_more_ops_than_the_policy_allows_is_rejected(kit: PolicyKit) -> None:
    limit = kit.host.rules()["UPDATE_PLAN"].items_max
    ok = kit.envelope("UPDATE_PLAN", {"base_lamport": 0, "ops": _ops(limit)})
    assert kit.policy.run(ok).allowed
    over = kit.envelope("UPDATE_PLAN", {"base_lamport": 0, "ops": _ops(limit + 1)})
    assert kit.policy.run(over).reason == "too_many_items"


def test_update_plan_over_the_size_limit_is_rejected(kit: PolicyKit) -> None:
    limit = kit.host.rules()["UPDATE_PLAN"].payload_bytes_max
    env = kit.envelope("UPDATE_PLAN", {"base_lamport": 0, "ops": _ops(100, "x" * 200)})
    assert abi.payload_bytes(env) > limit
    decision = kit.policy.evaluate(env)
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, "payload_too_large")


# --- 4. required fields ------------------------------------------------------------------

@pytest.mark.parametrize("kind", verbs.KINDS)
def test_every_field_the_schema_requires_is_required_by_the_policy(
        kit: PolicyKit, kind: str) -> None:
    rule = kit.host.rules()[kind]
    schema_required = set(verbs.PAYLOADS[kind].required)
    assert schema_required <= set(rule.required_fields)
    for bit, name in enumerate(abi.FIELDS[kind]):
        if rule.required_mask >> bit & 1:
            view = good_view(kit, kind, fields=rule.required_mask & ~(1 << bit))
            result = kit.host.evaluate_view(view)
            assert (result.verdict, result.reason) == ("reject", "missing_field"), name


def test_a_challenge_must_declare_its_proof_size(kit: PolicyKit) -> None:
    payload = {k: v for k, v in EXAMPLES["CHALLENGE"].items() if k != "size_bytes"}
    result = kit.policy.run(kit.envelope("CHALLENGE", payload))
    assert (result.verdict, result.reason) == ("reject", "missing_field")


# --- 5. bounty caps by task class -------------------------------------------------------

@pytest.mark.parametrize("task_class", ["simple", "complex", "critical"])
def test_bounty_cap_by_class_from_genesis(make_kit: Callable[..., PolicyKit],
                                          task_class: str) -> None:
    kit = make_kit(bounty_cap_simple=7, bounty_cap_complex=70, bounty_cap_critical=700)
    cap = kit.genesis.params[f"bounty_cap_{task_class}"]
    budget = 10 * cap  # the budget is escrowed by the ledger, not capped
    at = kit.policy.run(kit.envelope("NEED", {"class": task_class, "budget": budget,
                                              "verify_bounty": cap}))
    assert at.allowed
    over = kit.policy.run(kit.envelope("NEED", {"class": task_class, "budget": budget,
                                                "verify_bounty": cap + 1}))
    assert (over.verdict, over.reason) == ("reject", "bounty_over_cap")


def test_default_bounty_caps_are_10_100_1000_credits(kit: PolicyKit) -> None:
    unit = kit.genesis.params["unit_per_credit"]
    for task_class, credits in (("simple", 10), ("complex", 100), ("critical", 1000)):
        big = {"class": task_class, "budget": 10**15}
        assert kit.policy.run(kit.envelope("NEED", {**big, "verify_bounty": credits * unit})
                              ).allowed
        assert not kit.policy.run(kit.envelope("NEED", {**big, "verify_bounty":
                                                        credits * unit + 1})).allowed


@pytest.mark.parametrize("code", [0, 4, 2**62])
def test_a_need_without_a_known_class_is_rejected(kit: PolicyKit, code: int) -> None:
    result = kit.host.evaluate_view(good_view(kit, "NEED", task_class=code))
    assert (result.verdict, result.reason) == ("reject", "bad_task_class")


# --- 6. proof size ------------------------------------------------------------------------

def test_proof_size_at_most_proof_bytes_max(make_kit: Callable[..., PolicyKit]) -> None:
    for limit in (10 * 1024, 333):
        kit = make_kit(proof_bytes_max=limit)
        at = kit.policy.run(kit.envelope("CHALLENGE", {**EXAMPLES["CHALLENGE"],
                                                       "size_bytes": limit}))
        assert at.allowed
        over = kit.policy.run(kit.envelope("CHALLENGE", {**EXAMPLES["CHALLENGE"],
                                                         "size_bytes": limit + 1}))
        assert (over.verdict, over.reason) == ("reject", "proof_too_large")


# --- 7. stake -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(STAKE_VERBS))
def test_stake_required_to_attest_and_verify_challenges(kit: PolicyKit, kind: str) -> None:
    assert kit.policy.run(kit.envelope(kind, EXAMPLES[kind], sender=STAKED)).allowed
    for short in (POOR, OUTSIDER):
        result = kit.policy.run(kit.envelope(kind, EXAMPLES[kind], sender=short))
        assert (result.verdict, result.reason) == ("reject", "stake_required")


@pytest.mark.parametrize("kind", sorted(set(verbs.KINDS) - STAKE_VERBS))
def test_other_verbs_need_no_stake(kit: PolicyKit, kind: str) -> None:
    assert kit.policy.run(kit.envelope(kind, EXAMPLES[kind], sender=OUTSIDER)).allowed


# --- 8. sender rate -----------------------------------------------------------------------

def test_rate_limit_per_sender_over_a_sliding_second(
        make_kit: Callable[..., PolicyKit]) -> None:
    kit = make_kit(sender_rate_per_s=3)
    transfers = [kit.envelope("TRANSFER", {"to": bytes(32), "amount": k + 1, **LEDGER})
                 for k in range(5)]
    decisions = [kit.policy.evaluate(e) for e in transfers[:4]]
    assert [d.verdict for d in decisions] == [Verdict.ACCEPT] * 3 + [Verdict.IGNORE]
    assert decisions[3].reason == "rate_limited"
    # Another sender has its own budget.
    assert kit.policy.run(kit.envelope("STAKE", {"amount": 1, **LEDGER}, sender=OUTSIDER)).allowed
    # Once the first arrivals are a second old, the sender may speak again.
    kit.clock.now += 1000
    assert kit.policy.evaluate(transfers[4]).verdict is Verdict.ACCEPT


def test_catch_up_is_exempt_from_the_rate(make_kit: Callable[..., PolicyKit]) -> None:
    kit = make_kit(sender_rate_per_s=1)
    first, second, third = (kit.envelope("STAKE", {"amount": k + 1, **LEDGER}) for k in range(3))
    assert kit.policy.run(first).allowed
    with kit.policy.rate_exempt():
        assert kit.policy.run(second).allowed
    assert kit.policy.run(third).reason == "rate_limited"


def test_rate_is_checked_after_every_other_rule(make_kit: Callable[..., PolicyKit]) -> None:
    """An invalid envelope from a flooding sender is rejected (the peer is penalised),
    not merely ignored."""
    kit = make_kit(sender_rate_per_s=0)
    result = kit.policy.run(kit.envelope("NEED", {"class": "simple", "budget": 10**12,
                                                  "verify_bounty": 10**12}))
    assert (result.verdict, result.reason) == ("reject", "bounty_over_cap")
    assert kit.policy.run(kit.envelope("STAKE", {"amount": 1, **LEDGER})).reason == "rate_limited"


# --- the view the host writes ----------------------------------------------------------

@pytest.mark.parametrize("kind", verbs.KINDS)
@pytest.mark.parametrize("thread", ["", "t", "gpayload", "ü" * 40])
def test_payload_size_read_off_the_wire_equals_its_encoding(
        kit: PolicyKit, kind: str, thread: str) -> None:
    from swarm.protocol import cbor

    env = kit.envelope(kind, EXAMPLES[kind], thread=thread)
    assert abi.payload_bytes(env) == len(cbor.encode(dict(env.payload)))


def test_view_fields_for_a_need(kit: PolicyKit) -> None:
    env = kit.envelope("NEED", {**EXAMPLES["NEED"], "input": fake_cid("x")})
    slots = dict(zip(abi.VIEW_SLOTS, abi.VIEW.unpack(
        abi.envelope_view(env, sender_stake=5, sender_rate=2)), strict=True))
    assert slots["kind"] == 1 and slots["task_class"] == 2 and slots["bounty"] == 0
    assert slots["fields"] == 0b1111111 and slots["items"] == 2
    assert slots["wire_bytes"] == len(env.wire)
    assert (slots["sender_stake"], slots["sender_rate"]) == (5, 2)
    # The bounty slot is the verify bounty: the budget is escrowed, not capped.
    env = kit.envelope("NEED", {**EXAMPLES["NEED"], "verify_bounty": 7})
    slots = dict(zip(abi.VIEW_SLOTS, abi.VIEW.unpack(
        abi.envelope_view(env, sender_stake=5, sender_rate=2)), strict=True))
    assert slots["bounty"] == 7 and slots["fields"] == 0b11111111


def test_payload_size_of_a_non_canonical_wire_is_measured_by_encoding(kit: PolicyKit) -> None:
    import dataclasses

    from swarm.protocol import cbor

    env = kit.envelope("NEED", EXAMPLES["NEED"])
    odd = dataclasses.replace(env, wire=b"\x00" * 300)
    assert abi.payload_bytes(odd) == len(cbor.encode(dict(env.payload)))
