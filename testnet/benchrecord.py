"""What a benchmark run was, and its figures as the Markdown rows of docs/BENCHMARKS.md.

A run is its exact command line, the commit of the tree the code was loaded from (`git
rev-parse --short HEAD`, with "+dirty" when `git status` shows any change, untracked files
included; "unknown" outside git), the machine (CPU model, cores, memory, Python, the load
average when the run started) and the UTC date. `--markdown` prints two tables, in the
shapes docs/BENCHMARKS.md uses:

    | run | command | commit | machine | date |      one row: the run
    | figure | value | run |                          one row per figure, citing the run

The parsing and rendering here are pure (tests/testnet/test_benchrecord.py); reading /proc
and running git are kept to `machine()` and `git_commit()`.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
# The tree this code is loaded from: the repository's testnet/ folder in an editable
# install, site-packages (no git, so "unknown") otherwise.
TREE = Path(__file__).resolve().parent

RUN_HEADER = ("| run | command | commit | machine | date |\n"
              "|---|---|---|---|---|")
FIGURE_HEADER = ("| figure | value | run |\n"
                 "|---|---|---|")


@dataclass(frozen=True)
class Figure:
    """One recorded figure: what was measured, and the value with its unit."""

    name: str
    value: str


@dataclass(frozen=True)
class Run:
    id: str
    command: str
    commit: str
    machine: dict[str, Any]
    date: datetime

    def as_dict(self) -> dict[str, Any]:
        """The run's description for `--json` (the `run` object)."""
        return {"id": self.id, "command": self.command, "commit": self.commit,
                "machine": self.machine, "date": self.date.strftime("%Y-%m-%dT%H:%M:%SZ")}


# -- the command --

def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command as typed: the program's name (or `python -m MODULE`), then every
    argument as given, quoted for a POSIX shell where needed."""
    argv = list(sys.argv if argv is None else argv)
    program = f"python -m {module}" if module else Path(argv[0]).name if argv else "?"
    return " ".join([program, *(shlex.quote(a) for a in argv[1:])])


# -- the commit --

def _git(path: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True,
                              text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(path: Path = TREE) -> str:
    """The short commit of the work tree holding `path`, "+dirty" if anything in it is
    changed or untracked (ignored files do not count), "unknown" outside git."""
    head = _git(path, "rev-parse", "--short", "HEAD")
    if head is None or not head.strip():
        return UNKNOWN
    status = _git(path, "status", "--porcelain")  # unreadable: not known clean
    return head.strip() + ("+dirty" if status is None or status.strip() else "")


# -- the machine --

_MODEL_KEYS = ("model name", "Hardware", "cpu model", "Model")


def parse_cpuinfo(text: str) -> tuple[str | None, int]:
    """(CPU model, logical processors) from /proc/cpuinfo text; model None if absent."""
    fields: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value)
    model = next((fields[k] for k in _MODEL_KEYS if fields.get(k)), None)
    return (re.sub(r"\s+", " ", model) if model else None), processors


def parse_meminfo(text: str) -> int | None:
    """Total memory in bytes from /proc/meminfo text ("MemTotal: N kB")."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def parse_loadavg(text: str) -> list[float] | None:
    """The 1, 5 and 15-minute load averages from /proc/loadavg text."""
    try:
        return [float(x) for x in text.split()[:3]]
    except ValueError:
        return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine(cpuinfo: str | None = None, meminfo: str | None = None,
            loadavg: str | None = None) -> dict[str, Any]:
    """This machine (or the one the given /proc texts describe): CPU model, cores, total
    memory, the Python that runs, and the load average now."""
    model, processors = parse_cpuinfo(_read("/proc/cpuinfo") if cpuinfo is None else cpuinfo)
    memory = parse_meminfo(_read("/proc/meminfo") if meminfo is None else meminfo)
    load = parse_loadavg(_read("/proc/loadavg") if loadavg is None else loadavg)
    if load is None and loadavg is None and hasattr(os, "getloadavg"):
        load = [round(x, 2) for x in os.getloadavg()]
    return {"cpu": model or platform.processor() or platform.machine() or UNKNOWN,
            "cores": processors or os.cpu_count(),
            "memory_gib": round(memory / 2**30, 1) if memory else None,
            "implementation": platform.python_implementation(),
            "python": platform.python_version(),
            "load_avg": load}


def machine_text(m: Mapping[str, Any]) -> str:
    """One line: "AMD EPYC, 2 cores, 23.5 GiB, CPython 3.11.7, load 2.00"."""
    parts = [str(m.get("cpu") or UNKNOWN), f"{m.get('cores') or '?'} cores"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']} GiB")
    parts.append(f"{m.get('implementation', '')} {m.get('python', '')}".strip())
    if m.get("load_avg"):
        parts.append(f"load {m['load_avg'][0]:.2f}")
    return ", ".join(parts)


# -- the run --

def describe(name: str, argv: Sequence[str] | None = None, module: str | None = None,
             now: datetime | None = None) -> Run:
    """Describe the run starting now; call it before measuring (the load average)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return Run(id=f"{name}-{when:%Y%m%d-%H%M}", command=command_line(argv, module),
               commit=git_commit(), machine=machine(), date=when)


# -- Markdown --

def cell(text: object) -> str:
    """Table-cell text: one line, `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: str) -> str:
    """Inline code, with a fence longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def run_row(run: Run) -> str:
    return "| " + " | ".join(cell(x) for x in (
        run.id, code(run.command), run.commit, machine_text(run.machine),
        f"{run.date:%Y-%m-%d %H:%M} UTC")) + " |"


def figure_rows(figures: Iterable[Figure], run_id: str) -> list[str]:
    return [f"| {cell(f.name)} | {cell(f.value)} | {cell(run_id)} |" for f in figures]


def markdown(run: Run, figures: Iterable[Figure]) -> str:
    """The run's row and its figures' rows, each under its table's header."""
    return "\n".join([RUN_HEADER, run_row(run), "", FIGURE_HEADER,
                      *figure_rows(figures, run.id)]) + "\n"


# -- values --

def num(value: object) -> str:
    """A figure's number as recorded, thousands separated: 673000 -> "673,000"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}"


def pcts(d: Mapping[str, Any], unit: str) -> str:
    """ "p50 8.3 ms, p95 15.0 ms, p99 21.3 ms (n = 1000)" from a `stats` dict whose keys
    end in `_ms` or `_us`; `unit` is what to print ("ms", "µs")."""
    keyed = [(k, v) for k, v in d.items() if re.fullmatch(r"p[0-9.]+_(ms|us)", k)]
    if not keyed:
        return "no samples"
    text = ", ".join(f"{k.split('_')[0]} {num(v)} {unit}" for k, v in keyed)
    n = d.get("n", d.get("samples"))
    return text + (f" (n = {num(n)})" if n is not None else "")


def ratio(ours: float | None, theirs: float | None) -> str:
    """ours / theirs to two decimals, "-" where either is missing or theirs is 0."""
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"
