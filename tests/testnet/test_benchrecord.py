"""The record of a benchmark run (testnet/benchrecord.py) and the rows it renders.

Goal: `--markdown` prints rows in exactly the shapes docs/BENCHMARKS.md uses, a run's
commit says when the tree is not the commit ("+dirty") or not known, and the machine
line comes from /proc texts. Method: fixed runs and figures, a temporary git repository,
sample /proc texts, and small hand-made benchmark documents (no benchmark runs here and
no timing is asserted).
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm.testnet import (
    bench,
    benchrecord,
    evidencebench,
    ledgerbench,
    netbench,
    policybench,
    raftbench,
)
from swarm.testnet.benchrecord import Figure, Run

DOC = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"

MACHINE = {"cpu": "AMD EPYC 7B13", "cores": 2, "memory_gib": 7.8,
           "implementation": "CPython", "python": "3.11.7", "load_avg": [1.5, 2.25, 3.0]}
RUN = Run(id="raftbench-20261125-1412", command="swarm-testnet raftbench --sequential 10",
          commit="296af70+dirty", machine=MACHINE,
          date=datetime(2026, 11, 25, 14, 12, 5, tzinfo=UTC))


# -- rows --

def test_a_run_renders_as_its_row_and_its_figures_cite_it() -> None:
    text = benchrecord.markdown(RUN, [Figure("latency, one client", "p50 8.3 ms (n = 10)"),
                                      Figure("a | b", "x\ny")])
    assert text.splitlines() == [
        "| run | command | commit | machine | date |",
        "|---|---|---|---|---|",
        "| raftbench-20261125-1412 | `swarm-testnet raftbench --sequential 10` "
        "| 296af70+dirty | AMD EPYC 7B13, 2 cores, 7.8 GiB, CPython 3.11.7, load 1.50 "
        "| 2026-11-25 14:12 UTC |",
        "",
        "| figure | value | run |",
        "|---|---|---|",
        "| latency, one client | p50 8.3 ms (n = 10) | raftbench-20261125-1412 |",
        "| a \\| b | x y | raftbench-20261125-1412 |",
    ]


def test_the_json_run_object_carries_the_same_description() -> None:
    assert RUN.as_dict() == {"id": "raftbench-20261125-1412",
                             "command": "swarm-testnet raftbench --sequential 10",
                             "commit": "296af70+dirty", "machine": MACHINE,
                             "date": "2026-11-25T14:12:05Z"}


def test_commands_are_quoted_as_typed() -> None:
    assert benchrecord.command_line(["/x/.venv/bin/swarm-testnet", "bench", "--replay",
                                     "10,20"]) == "swarm-testnet bench --replay 10,20"
    assert benchrecord.command_line(["/x/evidencebench.py", "100", "a b"],
                                    module="swarm.testnet.evidencebench") == \
        "python -m swarm.testnet.evidencebench 100 'a b'"
    assert benchrecord.code("a `b` c") == "``a `b` c``"
    assert benchrecord.code("`x`") == "`` `x` ``"


def test_values() -> None:
    assert benchrecord.num(673000) == "673,000"
    assert benchrecord.num(1590.5) == "1,590.5"
    assert benchrecord.pcts({"n": 5000, "p50_us": 52.2, "p99_us": 115.9}, "µs") == \
        "p50 52.2 µs, p99 115.9 µs (n = 5,000)"
    assert benchrecord.pcts({"p50_ms": 1.0, "max_ms": 9.0, "histogram_p50_ms": 2.0,
                             "samples": 3}, "ms") == "p50 1.0 ms (n = 3)"
    assert benchrecord.pcts({"n": 0}, "ms") == "no samples"
    assert benchrecord.ratio(8.3, 2.0) == "4.15"
    assert benchrecord.ratio(8.3, None) == benchrecord.ratio(8.3, 0) == "-"


def test_a_run_is_named_after_its_benchmark_and_minute() -> None:
    run = benchrecord.describe("bench", argv=["swarm-testnet", "bench"],
                               now=datetime(2026, 1, 2, 3, 4, 59, tzinfo=UTC))
    assert run.id == "bench-20260102-0304"
    assert run.command == "swarm-testnet bench"
    assert run.machine["cores"]


# -- the commit --

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@example.org", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_commit_outside_git_is_unknown(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    assert benchrecord.git_commit(tmp_path / "plain") == "unknown"


def test_commit_and_dirty_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    short = _git(repo, "rev-parse", "--short", "HEAD")
    assert benchrecord.git_commit(repo) == short
    (repo / "run.log").write_text("ignored\n")
    assert benchrecord.git_commit(repo) == short
    (repo / "a.py").write_text("x = 2\n")
    assert benchrecord.git_commit(repo) == short + "+dirty"
    _git(repo, "checkout", "-q", "a.py")
    (repo / "new.py").write_text("")
    assert benchrecord.git_commit(repo) == short + "+dirty"


# -- the machine --

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13  64-Core Processor
cpu cores\t: 2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13  64-Core Processor
cpu cores\t: 2
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41

processor\t: 1
BogoMIPS\t: 50.00

Hardware\t: BCM2835
"""


def test_machine_from_proc_texts() -> None:
    assert benchrecord.parse_cpuinfo(CPUINFO) == ("AMD EPYC 7B13 64-Core Processor", 2)
    assert benchrecord.parse_cpuinfo(ARM_CPUINFO) == ("BCM2835", 2)
    assert benchrecord.parse_cpuinfo("") == (None, 0)
    assert benchrecord.parse_meminfo("MemTotal:       24683784 kB\nMemFree: 1 kB\n") == \
        24683784 * 1024
    assert benchrecord.parse_meminfo("") is None
    assert benchrecord.parse_loadavg("2.00 1.78 2.04 3/131 5341\n") == [2.0, 1.78, 2.04]
    m = benchrecord.machine(cpuinfo=CPUINFO, meminfo="MemTotal: 8130000 kB\n",
                            loadavg="0.52 0.61 0.70 1/100 7\n")
    assert {k: m[k] for k in ("cpu", "cores", "memory_gib", "load_avg")} == {
        "cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 2, "memory_gib": 7.8,
        "load_avg": [0.52, 0.61, 0.7]}
    assert benchrecord.machine_text(m) == (
        f"AMD EPYC 7B13 64-Core Processor, 2 cores, 7.8 GiB, {m['implementation']} "
        f"{m['python']}, load 0.52")


# -- each benchmark's figures --

def _side(p50: float, rate: float, fails: list[float]) -> dict[str, object]:
    return {"latency": {"n": 10, "p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50},
            "throughput_per_s": rate, "throughput_errors": 0, "failover_s": fails,
            "failover_median_s": fails[0] if fails else None}


def test_raftbench_rows_keep_the_ratios_to_etcd() -> None:
    doc = {"clients": 8, "can_swarm": _side(8.0, 187.0, [0.12]),
           "etcd": _side(2.0, 600.0, [1.2])}
    rows = {f.name: f.value for f in raftbench.figures(doc)}
    assert rows["DECIDE latency, one client, can-swarm / etcd"] == \
        "p50 4.00, p95 4.00, p99 4.00"
    assert rows["DECIDE throughput, 8 clients, can-swarm / etcd"] == "0.31"
    assert rows["DECIDE throughput, 8 clients, etcd"] == "600.0 /s (0 errors)"
    assert rows["failover: kill -9 of a leader to the next commit in its bucket, "
                "can-swarm / etcd"] == "0.10"
    assert len(rows) == 9
    alone = raftbench.figures({"clients": 1, "can_swarm": _side(8.0, 30.0, []),
                               "etcd": {"skipped": "no etcd binary"}})
    assert [f.name for f in alone] == [
        "DECIDE latency, one client, can-swarm", "DECIDE throughput, 1 client, can-swarm",
        "failover: kill -9 of a leader to the next commit in its bucket, can-swarm"]
    assert alone[2].value == "not measured (--kills 0)"


def test_the_other_benchmarks_rows() -> None:
    pct = {"n": 10, "p50_us": 1.0, "p95_us": 2.0, "p99_us": 3.0}
    core = bench.figures({
        "envelope": {"encode_sign": pct, "decode_verify": pct, "mean_size_bytes": 313},
        "plan": {"envelopes": 20000, "ops": 32387, "ops_per_s": 673000, "root_ms": 94.6},
        "replay": [{"envelopes": 10000, "log_bytes": 3_970_000, "tasks": 6599,
                    "verify": {"seconds": 1.084, "envelopes_per_s": 9222},
                    "no_verify": {"seconds": 0.421, "envelopes_per_s": 23763}}]})
    assert ("replay 10,000 envelopes, without signature checks", "0.421 s (23,763 env/s)") \
        in [(f.name, f.value) for f in core]
    assert len(core) == 7
    gossip = netbench.figures([{
        "nodes": 5, "latency": {"p50_ms": 5.0, "p90_ms": 8.4, "p99_ms": 11.0,
                                "max_ms": 20.0, "samples": 800},
        "cpu": {"receiver_ms_per_env": 3.23, "all_nodes_ms_per_env": 13.4},
        "burst": {"envelopes": 1000, "accepted_per_s_per_node": 101},
        "rss_mb": {"max": 143.0, "mean": 140.0}, "converged": True}])
    assert gossip[0].value == "p50 5.0 ms, p90 8.4 ms, p99 11.0 ms (n = 800)"
    ledger = ledgerbench.figures({"latency": {"n": 10, "p50_ms": 14.8}, "clients": 20,
                                  "seconds": 20.0, "transfers_per_s": 142.0,
                                  "entries_per_s": 357.0, "failed": 0, "converge_s": 0.3,
                                  "conserved": True})
    assert ledger[1].value == "142.0 /s over 20.0 s (357.0 log entries/s), 0 failed"
    policy = policybench.figures({
        "stage": {**pct, "samples": 40},
        "per_verb": {"NEED": {"p50_us": 9.0, "fuel": 85}, "CLAIM": {"p50_us": 7.3, "fuel": 64}},
        "parts": {"view_build": pct, "module_call_unchecked": pct,
                  "module_call_func_call": pct}})
    assert policy[1].value == "7.3 µs (CLAIM) to 9.0 µs (NEED)"
    local = [{"cid_version": v, "hash_mb_s": 890.0 + v, "add_mb_s": 409.0,
              "read_mb_s": 1227.0, "read_peak_mib": 1.0} for v in (0, 1)]
    evidence = evidencebench.figures({"local": local})
    assert evidence[0].value == "CIDv0 890.0 MB/s, CIDv1 891.0 MB/s"
    assert len(evidence) == 4


def test_json_and_markdown_exclude_each_other() -> None:
    from swarm.testnet.main import app

    result = CliRunner().invoke(app, ["bench", "--json", "--markdown"])
    assert result.exit_code == 2


# -- docs/BENCHMARKS.md --

def test_benchmarks_md_tables_are_in_the_shape_the_commands_write() -> None:
    headers = {benchrecord.RUN_HEADER.splitlines()[0]: 5,
               benchrecord.FIGURE_HEADER.splitlines()[0]: 3}
    runs: set[str] = set()
    cited: set[str] = set()
    lines = DOC.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or (i and lines[i - 1].startswith("|")):
            continue
        assert line in headers, f"table of another shape: {line}"
        width = headers[line]
        assert lines[i + 1] == "|" + "---|" * width
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
            assert len(cells) == width, row
            (runs.add if width == 5 else cited.add)(cells[0 if width == 5 else 2])
    assert runs and cited <= runs, cited - runs
