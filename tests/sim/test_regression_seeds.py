"""Regression seeds: schedules that catch a bug the simulations once found, replayed on
every test run (testnet/simkit.py `REGRESSION_SEEDS`, each with its reason).

Method: run each listed seed of its simulation and expect what every seed must give
(no violation; every NEED decided, and certified in the shell). The range tests of
tests/sim leave these seeds out, so none runs twice. A seed qualifies when the fixed
code passes it and the code with the fix taken out fails it; a change to a
simulation reshuffles its schedules, so recheck the list then (see `REGRESSION_SEEDS`).
"""

from __future__ import annotations

import pytest

from swarm.testnet import market_sim, multiraft_sim, raftsim
from swarm.testnet.simkit import PROFILES, REGRESSION_SEEDS, RegressionSeed, Violation

RUN = {"raft": raftsim.run_seed, "shell": multiraft_sim.run_seed,
       "market": market_sim.run_market_seed}


def test_the_list_is_well_formed() -> None:
    keys = [(r.sim, r.seed) for r in REGRESSION_SEEDS]
    assert len(keys) == len(set(keys)), "a seed listed twice"
    assert all(r.sim in RUN and r.seed >= 0 and r.reason for r in REGRESSION_SEEDS)


@pytest.mark.parametrize("case", REGRESSION_SEEDS, ids=lambda r: f"{r.sim}-{r.seed}")
def test_regression_seed(case: RegressionSeed) -> None:
    try:
        result = RUN[case.sim](case.seed)
    except Violation as exc:
        pytest.fail(f"{exc}\n(regression seed, profile {case.seed % PROFILES}: "
                    f"{case.reason})")
    if case.sim == "market":
        assert result.posted == result.finalized + result.cancelled > 0
        return
    assert result.decided == result.needs > 0
    if case.sim == "shell":
        assert result.certified == result.decided
