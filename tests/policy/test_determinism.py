"""The same inputs give the same verdict, reason and fuel, every run and on every host.

Method: a plain Python model of the documented rules (docs/POLICY.md) next to the
module, as a Hypothesis property over arbitrary views and genesis parameters: the module
must agree with the model, and give identical answers and fuel when asked twice, on a
fresh host, and after a trap has forced a fresh instance.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st
from policy_kit import kit_for

from swarm.policy_wasm import abi
from swarm.policy_wasm.host import Evaluation, PolicyHost, committed_module
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.testnet.workload import example_payloads

HOST = PolicyHost(committed_module(), DEFAULT_PARAMS,
                  fuel_budget=DEFAULT_PARAMS["verify_fuel_max"])
RULES = HOST.rules()


def model(view: Mapping[str, int], params: Mapping[str, int]) -> tuple[str, str]:
    """The rules in the order the module checks them."""
    kind = abi.KIND_NAMES.get(view["kind"])
    if kind is None or not RULES[kind].allowed:
        return "reject", "unknown_kind"
    rule = RULES[kind]
    if view["payload_bytes"] > rule.payload_bytes_max:
        return "reject", "payload_too_large"
    if view["items"] > rule.items_max:
        return "reject", "too_many_items"
    if view["fields"] & rule.required_mask != rule.required_mask:
        return "reject", "missing_field"
    if rule.flags & abi.FLAG_BOUNTY:
        classes = {1: "simple", 2: "complex", 3: "critical"}
        if view["task_class"] not in classes:
            return "reject", "bad_task_class"
        if view["bounty"] > params[f"bounty_cap_{classes[view['task_class']]}"]:
            return "reject", "bounty_over_cap"
    if rule.flags & abi.FLAG_PROOF and view["proof_bytes"] > params["proof_bytes_max"]:
        return "reject", "proof_too_large"
    if rule.flags & abi.FLAG_STAKE and view["sender_stake"] < params["min_verifier_stake"]:
        return "reject", "stake_required"
    if view["sender_rate"] > params["sender_rate_per_s"]:
        return "ignore", "rate_limited"
    return "accept", "ok"


small = st.integers(min_value=0, max_value=40_000)
slot = st.one_of(small, st.integers(min_value=0, max_value=abi.SLOT_MAX))
views = st.fixed_dictionaries({
    "kind": st.one_of(st.integers(min_value=0, max_value=22), slot),
    "wire_bytes": slot,
    "payload_bytes": st.one_of(st.integers(min_value=0, max_value=17_000), slot),
    "fields": st.one_of(st.integers(min_value=0, max_value=127), slot),
    "items": st.one_of(st.integers(min_value=0, max_value=200), slot),
    "task_class": st.integers(min_value=0, max_value=5),
    "bounty": slot,
    "proof_bytes": slot,
    "sender_stake": slot,
    "sender_rate": st.one_of(st.integers(min_value=0, max_value=300), slot),
})
params = st.fixed_dictionaries({name: slot for name in abi.PARAM_SLOTS})


@given(views, params)
def test_module_agrees_with_the_model_and_with_itself(view: dict[str, int],
                                                      chosen: dict[str, int]) -> None:
    merged = {**DEFAULT_PARAMS, **chosen}
    host = PolicyHost(committed_module(), merged, fuel_budget=merged["verify_fuel_max"])
    raw = abi.raw_view(**view)
    first = host.evaluate_view(raw)
    assert (first.verdict, first.reason) == model(view, merged)
    assert host.evaluate_view(raw) == first
    again = PolicyHost(committed_module(), merged, fuel_budget=merged["verify_fuel_max"])
    assert again.evaluate_view(raw) == first
    assert 0 < first.fuel < 200


def test_every_verb_costs_the_same_fuel_on_every_run_and_every_host() -> None:
    runs: list[dict[str, Evaluation]] = []
    for _ in range(3):
        kit = kit_for()
        runs.append({kind: kit.policy.run(kit.envelope(kind, payload))
                     for kind, payload in example_payloads().items()})
    assert runs[0] == runs[1] == runs[2]
    assert all(e.allowed and e.fuel > 0 for e in runs[0].values())

