"""The chaos soak (`swarm-testnet soak`, testnet/soak.py), briefly, and its checks' parts.

Goal: the soak runs end to end on real processes and its checks hold: three nodes for
half a minute under the nemesis (kill -9 + restart, SIGSTOP + SIGCONT) with the agents'
workload, then heal and check; zero violations, faults injected, work done. The pure
parts of the checks (the ledger's subset rule, the /metrics parsing, fault overlap) are
tested on their own below, including that the subset rule catches a lost or a doubled
transfer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.testnet import soak

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
    assert doc["check"]["final_reads"] == doc["needs"]
    assert doc["summary"] == (f"soak: {doc['ops']} ops, {doc['faults']} faults, "
                              f"0 violations")


def test_subset_rule_explains_only_what_could_have_applied() -> None:
    sums = soak.subset_sums([-300, 500, -700])
    assert sums is not None
    assert {0, -300, 500, -700, 200, -1000, -200, -500} == sums
    # an acknowledged transfer lost (gap -acked) or one applied twice is not a subset sum
    assert 600 not in sums and -600 not in sums
    assert soak.subset_sums(list(range(1, 40)), cap=100) is None


def test_gc_pauses_are_read_from_the_metrics_text() -> None:
    text = "\n".join([
        "# HELP swarm_gc_pause_seconds How long",
        'swarm_gc_pause_seconds_bucket{generation="2",le="0.01"} 1.0',
        'swarm_gc_pause_seconds_bucket{generation="2",le="0.025"} 3.0',
        'swarm_gc_pause_seconds_bucket{generation="2",le="+Inf"} 3.0',
        'swarm_gc_pause_seconds_count{generation="2"} 3.0',
        'swarm_gc_pause_seconds_sum{generation="2"} 0.05',
        'swarm_gc_pause_seconds_count{generation="0"} 40.0',
        'swarm_gc_pause_seconds_sum{generation="0"} 0.01',
        "swarm_peers 4.0",
    ])
    got = soak.gc_pauses(text)
    assert got == {"gen2": {"count": 3.0, "sum": 0.05}, "gen0": {"count": 40.0, "sum": 0.01},
                   "gen2_max_le_s": 0.025}
    assert soak.gc_pauses("swarm_peers 4.0\n") is None


def test_an_op_overlapping_a_fault_or_its_recovery_counts_as_during_faults() -> None:
    fault = soak.Fault("stop", 1, start=10.0, end=14.0)
    assert soak.overlaps_fault(soak.Op("decide", 0, start=9.0, end=10.5), [fault])
    assert soak.overlaps_fault(soak.Op("decide", 0, start=15.0, end=15.1), [fault])
    assert not soak.overlaps_fault(soak.Op("decide", 0, start=17.0, end=17.1), [fault])
    assert not soak.overlaps_fault(soak.Op("decide", 0, start=1.0, end=9.9), [fault])


def test_tracebacks_are_reported_by_their_innermost_exception(tmp_path: Path) -> None:
    (tmp_path / "node.log").write_text(
        "2026-11-25 23:50:35,826 INFO swarm.node started\n"
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in f\n'
        "    g()\n"
        "ValueError: boom\n"
        "2026-11-25 23:50:36,000 INFO swarm.node next\n")
    (tmp_path / "stdio.log").write_text(
        "  + Exception Group Traceback (most recent call last):\n"
        "  |   File \"b.py\", line 2, in run\n"
        "  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | Traceback (most recent call last):\n"
        "    | google.protobuf.message.DecodeError: Error parsing message\n"
        "    +------------------------------------\n"
        "2026-11-25 23:50:40,379 INFO swarm.ledger read replica rebuilt\n")
    assert soak.tracebacks(tmp_path) == [
        "node.log:2: ValueError: boom",
        "stdio.log:1: google.protobuf.message.DecodeError: Error parsing message"]
