"""What the soak's report reads from a run: latency during faults or calm, and the
measurements taken after the heal (GC pauses from /metrics, tracebacks in node logs).

Goal: each parser and the fault-overlap rule give what the report claims. Method:
made-up operations, faults, /metrics text and logs.
"""

from __future__ import annotations

from pathlib import Path

from swarm.testnet.soak_capture import gc_pauses, tracebacks
from swarm.testnet.soak_history import Fault, Op
from swarm.testnet.soak_report import overlaps_fault


def test_an_op_overlapping_a_fault_or_its_recovery_counts_as_during_faults() -> None:
    fault = Fault("stop", 1, start_s=10.0, end_s=14.0)
    assert overlaps_fault(Op("decide", 0, start_s=9.0, end_s=10.5), [fault])
    assert overlaps_fault(Op("decide", 0, start_s=15.0, end_s=15.1), [fault])
    assert not overlaps_fault(Op("decide", 0, start_s=17.0, end_s=17.1), [fault])
    assert not overlaps_fault(Op("decide", 0, start_s=1.0, end_s=9.9), [fault])
    never_ended = Fault("kill", 2, start_s=20.0)  # lasts to the end of each op
    assert overlaps_fault(Op("decide", 0, start_s=50.0, end_s=50.1), [never_ended])


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
    got = gc_pauses(text)
    assert got == {"gen2": {"count": 3.0, "sum": 0.05}, "gen0": {"count": 40.0, "sum": 0.01},
                   "gen2_max_le_s": 0.025}
    assert gc_pauses("swarm_peers 4.0\n") is None


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
    assert tracebacks(tmp_path) == [
        "node.log:2: ValueError: boom",
        "stdio.log:1: google.protobuf.message.DecodeError: Error parsing message"]
