"""The chaos soak (`swarm-testnet soak`): a run, and the check of a saved run.

Owns the run's order and the command's display. A run starts N `swarm-node` processes
(`cluster.up`), runs the agents' workload (testnet/soak_workload.py) for M minutes
while the nemesis (testnet/soak_nemesis.py) kills and freezes a minority of the nodes,
heals everything, reads every NEED's decision and one new NEED per bucket and captures
each node's final state (testnet/soak_capture.py); every step writes its record into
`RUN_DIR/soak/` (testnet/soak_history.py). Then, as `soak --check RUN_DIR` does on a
saved run, it loads those files and judges them (testnet/soak_check.py, pure), and
builds the report (testnet/soak_report.py). The verdict of a run and of `--check` on
its folder are one computation on the same files.

The nemesis' choices (which node, which fault, how long) come from the seed; the
timing of the workload against them does not (real processes, a shared machine), so a
seed reproduces the schedule, not the exact interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cluster
from .soak_capture import capture, final_reads, probe_needs, rss_mb
from .soak_check import check
from .soak_history import (
    FinalState,
    HistoryError,
    Recorder,
    RunFiles,
    RunInfo,
    load,
    read_report,
    write_final,
    write_report,
    write_run,
)
from .soak_nemesis import Nemesis, monitor
from .soak_nodes import HTTP_TIMEOUT_S, Nodes
from .soak_workload import Workload

JOIN_SLACK_S = 30.0  # a client thread's last request may take HTTP_TIMEOUT_S and more
PROGRESS_STEP_S = 0.5

Progress = Callable[[str, dict[str, Any]], None]


class SoakError(Exception):
    """The soak could not run (the testnet did not start), or a saved run cannot be
    read; the message says why."""


@dataclass
class SoakConfig:
    minutes: float = 5.0
    nodes: int = 5
    seed: int = 1
    directory: Path | None = None
    converge_s: float = 180.0
    market: bool = False  # agents also trade tasks (testnet/soak_workload.py)


def run(config: SoakConfig, progress: Progress = lambda _m, _s: None) -> dict[str, Any]:
    """Run the soak; returns its report (also in `RUN_DIR/soak/report.json`)."""
    keep = config.directory is not None
    directory = config.directory or Path(tempfile.mkdtemp(prefix="soak-"))
    if keep and directory.exists() and any(directory.iterdir()):
        # A soak starts from genesis; never take over (or wipe) someone's testnet.
        raise SoakError(f"{directory} exists and is not empty; give --dir a new folder "
                        f"(or remove that one)")
    progress(f"starting {config.nodes} nodes in {directory}", {})
    try:
        # Probes decide made-up ids, one per bucket (`probe_needs`).
        members = cluster.up(directory, config.nodes, timeout_s=120, decide_unknown_needs=True)
    except cluster.TestnetError as exc:
        with contextlib.suppress(cluster.TestnetError):
            cluster.down(directory)
        raise SoakError(str(exc)) from None
    net = Nodes(directory, members)
    try:
        _drive(config, net, directory, progress)
        return check_run(directory, write=True)
    finally:
        for m in net.members:  # a node left frozen would ignore the SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGCONT)
        with contextlib.suppress(cluster.TestnetError):
            cluster.down(directory)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _drive(config: SoakConfig, net: Nodes, directory: Path, progress: Progress) -> None:
    """Everything with processes, HTTP and a clock: writes the run's files."""
    n = config.nodes
    files = RunFiles(directory / "soak")
    t_start = time.monotonic()
    statuses = [net.call(i, "GET", "/status") for i in range(n)]
    accounts = [str(s["account"]) for s in statuses]
    genesis_totals = {}
    for a in accounts:
        b = net.call(0, "GET", f"/ledger/balance?account={a}")
        genesis_totals[a] = int(b["balance"] + b["locked"] + b["unbonding"] + b["escrowed"])
    bucket_count = int(net.call(0, "GET", "/raft/status")["bucket_count"])
    write_run(files, RunInfo(seed=config.seed, nodes=n, minutes=config.minutes,
                             t0_unix=round(time.time() - (time.monotonic() - t_start), 3),
                             bucket_count=bucket_count, accounts=accounts,
                             genesis_totals=genesis_totals))
    rss_start = [rss_mb(m.pid) for m in net.members]
    rec = Recorder(t_start, files.history)
    try:
        stop = threading.Event()
        work = Workload(net, rec, accounts, config.seed, stop, market=config.market)
        nemesis = Nemesis(net, rec, n, config.seed, stop)
        threads = [*work.threads(),
                   threading.Thread(target=nemesis.run, name="nemesis", daemon=True),
                   threading.Thread(target=monitor, args=(net, nemesis, rec, stop),
                                    name="monitor", daemon=True)]
        for t in threads:
            t.start()
        duration = config.minutes * 60
        while (elapsed := rec.now()) < duration:
            with rec.lock:
                ops, faults, bad = len(rec.ops), len(rec.faults), len(rec.incidents)
                failed = sum(1 for o in rec.ops if o.outcome in ("failed", "indeterminate"))
            progress("running", {"elapsed": elapsed, "duration": duration, "ops": ops,
                                 "failed": failed, "faults": faults, "violations": bad,
                                 "down": nemesis.down_now(), "needs": work.needs_created})
            time.sleep(PROGRESS_STEP_S)
        progress("stopping the workload", {})
        stop.set()
        for t in threads:
            t.join(timeout=HTTP_TIMEOUT_S + JOIN_SLACK_S)
        rec.give_up_in_flight("still in flight when the workload stopped")
        progress("healing", {})
        nemesis.heal()
        with rec.lock:
            acked_needs = [str(op.info["need"]) for op in rec.ops
                           if op.kind == "need" and op.acknowledged]
        ops_after = final_reads(net, rec, acked_needs, probe_needs(config.seed, bucket_count),
                                lambda m: progress(m, {}))
        nodes, converge_s = capture(net, ops_after, accounts, acked_needs, config.converge_s,
                                    rss_start, lambda m: progress(m, {}))
    finally:
        rec.close()
    write_final(files, FinalState(nodes, config.converge_s, converge_s,
                                  round(time.monotonic() - t_start, 1)))


def check_run(directory: Path, write: bool = False) -> dict[str, Any]:
    """Judge a saved run from its files alone; its report (written to `report.json`
    if `write`)."""
    from .soak_report import report

    try:
        saved = load(directory)
    except HistoryError as exc:
        raise SoakError(str(exc)) from None
    doc = report(saved, check(saved), str(directory))
    if write:
        write_report(RunFiles.of(directory), doc)
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)


# -- the command's display ------------------------------------------------------------

def command(config: SoakConfig, as_json: bool, out: Any, err: Any) -> int:
    """Run the soak with a live progress line on `err`; print the report (rich tables,
    or one JSON document) on `out`. Returns the exit code: 1 on any violation."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from swarm.cli.common import safe

    from .soak_report import render

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("starting", total=config.minutes * 60)

        def progress(message: str, s: dict[str, Any]) -> None:
            if not s:
                bar.update(task, description=escape(message))
                return
            down = ", ".join(f"node{i} {k}" for i, k in sorted(s["down"].items())) or "none"
            bar.update(task, completed=s["elapsed"], description=escape(
                f"{s['elapsed']:.0f}/{s['duration']:.0f} s | {s['ops']} ops "
                f"({s['failed']} failed/unknown) | {s['needs']} NEEDs | {s['faults']} "
                f"faults | down: {down} | {s['violations']} violations"))

        try:
            doc = run(config, progress)
        except SoakError as exc:
            err.print(f"[bold red]error:[/] {escape(safe(str(exc), newlines=True))}")
            return 2
    if as_json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        render(doc, out)
    return 1 if doc["violations"] else 0


def check_command(directory: Path, as_json: bool, out: Any, err: Any) -> int:
    """`soak --check RUN_DIR`: judge a saved run again and print its report; say whether
    the verdict equals the one the run wrote. Exit code 1 on any violation, 2 if the run
    cannot be read."""
    from rich.markup import escape

    from swarm.cli.common import safe

    from .soak_report import render

    try:
        doc = check_run(directory)
        saved = read_report(RunFiles.of(directory))
    except (SoakError, HistoryError) as exc:
        err.print(f"[bold red]error:[/] {escape(safe(str(exc), newlines=True))}")
        return 2
    if saved is None:
        doc["same_verdict_as_run"] = None
        note = "the run wrote no report.json to compare with"
    else:
        same = saved.get("check", {}).get("violations") == doc["check"]["violations"]
        doc["same_verdict_as_run"] = same
        note = "same verdict as the run" if same else \
            "verdict DIFFERS from the run's report.json"
    if as_json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        render(doc, out)
        err.print(escape(note), highlight=False)
    return 1 if doc["violations"] else 0
