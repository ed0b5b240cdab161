"""The roles' configuration and their job measurements (no node needed)."""

from __future__ import annotations

import pytest

from swarm.agent.roles import JOBS_MEASURED_MAX, JobCosts, RoleConfig, parse_roles


def test_roles_parse_from_text_or_a_list_and_name_an_unknown_one() -> None:
    assert parse_roles("planner, worker") == {"planner", "worker"}
    assert parse_roles(["verifier"]) == {"verifier"} and parse_roles("") == frozenset()
    with pytest.raises(ValueError, match="unknown role 'miner'"):
        parse_roles("planner,miner")


@pytest.mark.parametrize(("options", "problem"), [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"fee": "lots"}, "fee"),
    ({"verifier_stake": "-1"}, "verifier_stake"),
    ({"capacity": 0}, "capacity"),
    ({"slots": True}, "slots"),
    ({"prior_s": 0}, "prior_s"),
    ({"heartbeat_ms": 5_000, "lease_ms": 5_000}, "heartbeat_ms must be under lease_ms"),
    ({"fault_bp": 10_001}, "fault_bp"),
    ({"fault_bp": -1}, "fault_bp"),
    ({"collude_with": "ab" * 32}, "collude_with"),
    ({"collude_with": ["not hex"]}, "collude_with"),
    ({"audit": "yes"}, "audit"),
])
def test_bad_options_are_refused_naming_the_key(options: dict[str, object],
                                                problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RoleConfig.from_config(["worker"], options)


def test_a_good_config_keeps_its_options() -> None:
    config = RoleConfig.from_config("planner,worker,verifier", {
        "fee": "0.1", "verifier_stake": "10", "capacity": 2, "lease_ms": 30_000,
        "heartbeat_ms": 2_000})
    assert config.roles == {"planner", "worker", "verifier"}
    assert (config.fee, config.capacity, config.verifier_stake) == ("0.1", 2, "10")
    with pytest.raises(ValueError, match="roles"):
        RoleConfig.from_config(7, None)


def test_fault_injection_and_audit_options_are_kept() -> None:
    worker = "ab" * 32
    config = RoleConfig.from_config("verifier", {"audit": True, "fault_bp": 2_500,
                                                 "collude_with": [worker]})
    assert config.audit and config.fault_bp == 2_500 and config.collude_with == (worker,)
    assert not RoleConfig().audit and RoleConfig().collude_with == ()


def test_job_costs_weigh_the_newest_runs_and_forget_the_oldest_jobs() -> None:
    costs = JobCosts(prior_s=0.25)
    assert costs.estimate_s("wasm:a") == 0.25
    costs.measured("wasm:a", 1.0)
    assert costs.estimate_s("wasm:a") == 1.0
    costs.measured("wasm:a", 0.0)
    assert costs.estimate_s("wasm:a") == pytest.approx(0.7)
    for k in range(JOBS_MEASURED_MAX + 5):
        costs.measured(f"job{k}", 0.1)
    assert len(costs.seconds) == JOBS_MEASURED_MAX and "wasm:a" not in costs.seconds
