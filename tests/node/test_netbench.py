"""netbench's exact latency: joining the nodes' delivery logs, and its quantiles.

Goal: a latency is counted for every (envelope published by the origin, other node that
accepted it) pair and nothing else (not the origin's own acceptance, not envelopes
outside the run, not a node that never accepted); quantiles are nearest-rank.
"""

from __future__ import annotations

import math

from swarm.testnet.netbench import exact_latencies, exact_quantile


def test_latencies_join_publishes_with_other_nodes_acceptances() -> None:
    origin = [{"id": "a", "t_ns": 1_000_000, "event": "published"},
              {"id": "a", "t_ns": 1_200_000, "event": "accepted"},
              {"id": "b", "t_ns": 5_000_000, "event": "published"},
              {"id": "x", "t_ns": 0, "event": "published"}]
    node1 = [{"id": "a", "t_ns": 3_500_000, "event": "accepted"},
             {"id": "b", "t_ns": 6_000_000, "event": "accepted"},
             {"id": "y", "t_ns": 9_000_000, "event": "accepted"}]
    node2 = [{"id": "b", "t_ns": 15_000_000, "event": "accepted"}]
    got = exact_latencies([origin, node1, node2], 0, {"a", "b"})
    assert sorted(got) == [1.0, 2.5, 10.0]


def test_nearest_rank_quantiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert exact_quantile(values, 0.5) == 50.0
    assert exact_quantile(values, 0.99) == 99.0
    assert exact_quantile(values, 1.0) == 100.0
    assert exact_quantile([7.0], 0.99) == 7.0
    assert math.isnan(exact_quantile([], 0.5))
