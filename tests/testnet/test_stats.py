"""The shared percentiles (testnet/stats.py), as the soak's report (one decimal), raftbench
(two) and the other benchmarks print them.

Goal: the rank rule (sample floor(p * n), clamped to the last) and the rounding give the
figures the helpers it replaced gave (netbench's nearest rank aside: its percentiles are
now one rank higher at most). Method: a few inputs with known answers.
"""

from __future__ import annotations

from swarm.testnet.stats import percentiles, percentiles_ms, percentiles_us


def test_no_samples() -> None:
    assert percentiles_ms([]) == {"n": 0}


def test_the_sample_at_rank_floor_p_n_in_milliseconds() -> None:
    assert percentiles_ms([0.3, 0.1, 0.2], ndigits=1) == {
        "n": 3, "p50_ms": 200.0, "p95_ms": 300.0, "p99_ms": 300.0}
    hundred = [k / 1000 for k in range(100)]
    assert percentiles_ms(hundred) == {"n": 100, "p50_ms": 50.0, "p95_ms": 95.0,
                                       "p99_ms": 99.0}
    assert percentiles_ms([0.0123456]) == {"n": 1, "p50_ms": 12.35, "p95_ms": 12.35,
                                           "p99_ms": 12.35}
    assert percentiles_ms([0.0123456], ndigits=1)["p50_ms"] == 12.3


def test_key_order_is_the_report_s() -> None:
    assert list(percentiles_ms([0.001, 0.002])) == ["n", "p50_ms", "p95_ms", "p99_ms"]


def test_other_units_and_quantiles_follow_the_same_rule() -> None:
    assert percentiles_us([3000, 1000, 2000]) == {"n": 3, "p50_us": 2.0, "p95_us": 3.0,
                                                  "p99_us": 3.0}
    assert percentiles([float(v) for v in range(1, 101)], scale=1, unit="ms",
                       quantiles=(0.50, 0.90, 0.99)) == {
        "n": 100, "p50_ms": 51.0, "p90_ms": 91.0, "p99_ms": 100.0}
    assert percentiles([], scale=1, unit="ms") == {"n": 0}
