"""The deterministic simulation of the task market on the multi-raft shell
(testnet/market_sim.py) as a test: seeded fault schedules of five validators running
`MultiRaft` and the ledger shell on real stores, with market agents posting, bidding,
working (some crashing mid-lease) and attesting (some silent); checked during the run
(everything the shell simulation checks, one decision per NEED and epoch) and after
healing (every task paid or refunded, equal ledger parts and roots everywhere, nothing
in flight, supply conserved). A failing seed is named in the failure and replays with
`swarm-testnet sim --market --start SEED --seeds 1`. MARKET_SIM_SEEDS raises the count
(`make sim` runs 100)."""

from __future__ import annotations

import os

from sim_harness import passing, totals

from swarm.testnet.market_sim import run_market_seed
from swarm.testnet.simkit import regression_seeds

SEEDS = int(os.environ.get("MARKET_SIM_SEEDS", "5"))


def test_market_schedules_end_every_task_paid_or_refunded() -> None:
    """Seeds 0..SEEDS-1, less the regression seeds (test_regression_seeds.py runs them);
    the faults and the market's own trouble really happen across them."""
    seeds = [s for s in range(SEEDS) if s not in regression_seeds("market")]
    results = passing(run_market_seed, seeds)
    for r in results:
        assert r.posted == r.finalized + r.cancelled > 0, r
    counts = totals(results, ("finalized", "reopens", "crashes", "partitions",
                              "worker_crashes", "silent"))
    assert all(v > 0 for v in counts.values()), counts


def test_a_market_seed_replays_exactly() -> None:
    assert run_market_seed(6) == run_market_seed(6)
