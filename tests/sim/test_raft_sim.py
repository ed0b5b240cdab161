"""The deterministic Raft/DECIDE simulation (testnet/raftsim.py) as a test: hundreds of
seeded fault schedules, each checked after every step; a failing seed is named in the
failure and replays exactly with `swarm-testnet sim --start SEED --seeds 1`."""

from __future__ import annotations

import os

import pytest
from sim_harness import caught, passing, totals

from swarm.protocol import raftlog
from swarm.testnet.raftsim import run_seed
from swarm.testnet.simkit import regression_seeds

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "250"))


def test_schedules_keep_every_safety_property_and_decide_every_need() -> None:
    """Seeds 0..SEEDS-1, less the regression seeds (test_regression_seeds.py runs them)."""
    seeds = [s for s in range(SEEDS) if s not in regression_seeds("raft")]
    results = passing(run_seed, seeds)
    for r in results:
        assert r.decided == r.needs > 0
    assert sum(r.decided for r in results) > len(seeds) * 10


def test_a_seed_replays_exactly() -> None:
    assert run_seed(17) == run_seed(17)


def test_faults_really_happen() -> None:
    """The schedules are not calm by accident: across seeds there are crashes,
    partitions, membership changes, transfers and snapshots."""
    counts = totals(map(run_seed, range(10)), ("crashes", "partitions", "conf_changes",
                                               "transfers", "snapshots_sent", "dropped"))
    assert all(v > 0 for v in counts.values()), counts


def test_the_checkers_catch_a_broken_vote_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: a replica that grants votes to any log breaks leader
    completeness, and the simulation must say so within a few seeds."""
    monkeypatch.setattr(raftlog.RaftLog, "is_up_to_date", lambda self, i, t: True)
    assert caught(run_seed, range(15)) > 0
