"""Percentiles: one definition for the soak's report and every benchmark.

A percentile here is the sample of rank floor(p * n) among the n sorted samples (the
last one if that rank is past the end), not an interpolation: on few samples it is a
value that was seen, and p99 of fewer than 100 samples is the largest. `percentiles`
scales the samples into the unit it names (seconds to milliseconds: 1000; nanoseconds to
microseconds: 0.001) and rounds to `ndigits`.
"""

from __future__ import annotations

from collections.abc import Sequence

P50_P95_P99 = (0.50, 0.95, 0.99)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The sample of rank floor(p * n) of `ordered` (sorted, not empty), clamped to the last."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def percentiles(samples: Sequence[float], *, scale: float, unit: str,
                quantiles: Sequence[float] = P50_P95_P99, ndigits: int = 2
                ) -> dict[str, float]:
    """`{"n": 0}` for no samples, else n and, for each quantile p, `p{100 p}_{unit}`."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    out: dict[str, float] = {"n": len(ordered)}
    for p in quantiles:
        out[f"p{p * 100:g}_{unit}"] = round(percentile(ordered, p) * scale, ndigits)
    return out


def percentiles_ms(samples_s: Sequence[float], ndigits: int = 2) -> dict[str, float]:
    """`{"n": 0}` for no samples, else n and p50 / p95 / p99 in milliseconds."""
    return percentiles(samples_s, scale=1000, unit="ms", ndigits=ndigits)


def percentiles_us(samples_ns: Sequence[float], ndigits: int = 1) -> dict[str, float]:
    """The same from nanoseconds to microseconds."""
    return percentiles(samples_ns, scale=0.001, unit="us", ndigits=ndigits)
