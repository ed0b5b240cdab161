"""The transcript format shared by the interaction harnesses (raft_interaction.py,
ledger_interaction.py), after etcd-io/raft's datadriven tests: blocks of

    command arg arg key=value
    ----
    expected output

separated by blank lines; `#` lines at the top describe the script. Setting the
harness's rewrite variable (e.g. RAFT_REWRITE=1) rewrites the expected output from the
actual one -- then read the diff."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class Harness(Protocol):
    def run(self, cmd: str, args: list[str], kw: dict[str, str]) -> list[str]: ...


def parse(text: str) -> list[tuple[str, list[str]]]:
    """Blocks of (command line, expected output lines)."""
    blocks: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {i + 1}: expected ---- after {line!r}")
        i += 2
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append((line.strip(), expected))
    return blocks


def run_script(path: Path, make_env: Callable[[], Harness], rewrite_var: str
               ) -> tuple[str, str]:
    """Run a script; return (expected text, actual text) in the file's format."""
    text = path.read_text()
    env = make_env()
    parts = []
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    for cmd, _ in parse(text):
        words = cmd.split()
        args = [w for w in words[1:] if "=" not in w]
        kw = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        out = env.run(words[0], args, kw) or ["ok"]
        parts.append(cmd + "\n----\n" + "\n".join(out) + "\n")
    actual = ("\n".join(comments) + "\n\n" if comments else "") + "\n".join(parts)
    if os.environ.get(rewrite_var) == "1":
        path.write_text(actual)
    return text, actual
