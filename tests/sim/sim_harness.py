"""What the simulation tests share: running seeds, counting what happened, mutations.

A seed's failure is a `Violation` whose message names the seed and the step, so a
test collects them and shows the first few rather than stopping at one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from swarm.testnet.simkit import Violation

Result = TypeVar("Result")


def passing(run_seed: Callable[[int], Result], seeds: Iterable[int]) -> list[Result]:
    """Every seed's result; fails the test with the first five violations if any."""
    results, failures = [], []
    for seed in seeds:
        try:
            results.append(run_seed(seed))
        except Violation as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures[:5])
    return results


def totals(results: Iterable[Any], keys: Iterable[str]) -> dict[str, int]:
    """The sum of each counter over the results."""
    out = dict.fromkeys(keys, 0)
    for r in results:
        for k in out:
            out[k] += getattr(r, k)
    return out


def caught(run_seed: Callable[[int], object], seeds: Iterable[int]) -> int:
    """How many of the seeds end in a Violation (a mutation check wants some)."""
    count = 0
    for seed in seeds:
        try:
            run_seed(seed)
        except Violation:
            count += 1
    return count
