"""The deterministic Raft/DECIDE simulation (testnet/raftsim.py) as a test: hundreds of
seeded fault schedules, each checked after every step; a failing seed is named in the
failure and replays exactly with `swarm-testnet sim --start SEED --seeds 1`."""

from __future__ import annotations

import os

import pytest

from swarm.protocol import raftlog
from swarm.testnet.raftsim import RaftSim, SimConfig, Violation, run_seed

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "250"))


def test_schedules_keep_every_safety_property_and_decide_every_need() -> None:
    failures = []
    decided = 0
    for seed in range(SEEDS):
        try:
            result = run_seed(seed)
        except Violation as exc:
            failures.append(str(exc))
            continue
        assert result.decided == result.needs > 0
        decided += result.decided
    assert not failures, "\n".join(failures[:5])
    assert decided > SEEDS * 10


def test_a_seed_replays_exactly() -> None:
    assert run_seed(17) == run_seed(17)


def test_faults_really_happen() -> None:
    """The schedules are not calm by accident: across seeds there are crashes,
    partitions, membership changes, transfers and snapshots."""
    totals = {"crashes": 0, "partitions": 0, "conf_changes": 0, "transfers": 0,
              "snapshots_sent": 0, "dropped": 0}
    for seed in range(10):
        r = run_seed(seed)
        for k in totals:
            totals[k] += getattr(r, k)
    assert all(v > 0 for v in totals.values()), totals


def test_the_checkers_catch_a_broken_vote_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: a replica that grants votes to any log breaks leader
    completeness, and the simulation must say so within a few seeds."""
    monkeypatch.setattr(raftlog.RaftLog, "is_up_to_date", lambda self, i, t: True)
    caught = 0
    for seed in range(15):
        try:
            RaftSim(SimConfig.for_seed(seed)).run()
        except Violation:
            caught += 1
    assert caught > 0
