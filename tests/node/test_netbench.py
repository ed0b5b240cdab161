"""netbench's exact latency: joining the nodes' delivery logs.

Goal: a latency is counted for every (envelope published by the origin, other node that
accepted it) pair and nothing else (not the origin's own acceptance, not envelopes
outside the run, not a node that never accepted). Its percentiles are testnet/stats.py's
(tests/testnet/test_stats.py).
"""

from __future__ import annotations

from swarm.testnet.netbench import exact_latencies


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

