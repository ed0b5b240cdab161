"""The policy benchmark runs and reports every verb (figures are not asserted: timings on a
shared machine are not a test)."""

from __future__ import annotations

from swarm.protocol import verbs
from swarm.testnet import policybench


def test_policybench_reports_every_verb_with_its_fuel() -> None:
    doc = policybench.run(per_verb=10)
    assert set(doc["per_verb"]) == set(verbs.KINDS)
    assert doc["envelopes"] == 10 * len(verbs.KINDS) == doc["stage"]["samples"]
    assert all(0 < r["fuel"] < 200 for r in doc["per_verb"].values())
    assert set(doc["parts"]) == {"view_build", "module_call_unchecked",
                                 "module_call_func_call"}
