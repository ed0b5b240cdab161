"""The chaos soak (`swarm-testnet soak`, testnet/soak.py), briefly, on real nodes.

Goal: the soak runs end to end on real processes and its checks hold: three nodes for
half a minute under the nemesis (kill -9 + restart, SIGSTOP + SIGCONT) with the agents'
workload, then heal and check; zero violations, faults injected, work done; and
`soak --check` on the run's folder gives the same verdict from the saved files. The
checker itself is tested on made-up runs in tests/testnet/test_soak_check.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_short_soak_on_three_nodes_finds_no_violation(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "swarm-testnet"), "soak", "--minutes", "0.5", "--nodes", "3",
         "--seed", "3", "--dir", str(tmp_path / "soak"), "--json"],
        capture_output=True, text=True, timeout=400)
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    assert doc["violations"] == [], doc["violations"]
    assert result.returncode == 0, result.stderr
    assert doc["faults"] >= 1
    assert doc["ops_by_kind"]["decide"].get("ok", 0) >= 1
    assert doc["ops_by_kind"]["transfer"].get("ok", 0) >= 1
    assert doc["check"]["converged"]
    assert doc["check"]["final_reads"] == doc["needs"] == doc["check"]["needs_looked_up"]
    assert doc["summary"] == (f"soak: {doc['ops']} ops, {doc['faults']} faults, "
                              f"0 violations")
    again = subprocess.run(
        [str(BIN / "swarm-testnet"), "soak", "--check", str(tmp_path / "soak"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)
    assert redo["same_verdict_as_run"] is True
    assert redo["check"] == doc["check"] and redo["ops_by_kind"] == doc["ops_by_kind"]
