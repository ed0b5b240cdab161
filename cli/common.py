"""What every `swarm-node` command module shares: the --home/--json options, error
output (stderr, exit 1, JSON with --json), JSON output, the control-API client, and safe
text for the terminal.

Text from the swarm or the node (titles, memos, reasons, ids, error messages) may hold
anything its author wanted a terminal to do: ESC sequences that clear the screen or set
the window title, CR that overwrites a line, rich markup or emoji codes. Every such text
reaches the terminal through `safe` (control characters shown as escapes such as
`\x1b`), and through rich only as `Text` (`say`, `cell`, `title`), which rich prints as
it is. `--json` output needs none of this: JSON escapes control characters itself.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from swarm.node.client import TIMEOUT_S, ApiError, Client
from swarm.node.home import HomeError, resolve_home

# No emoji codes (":x:") and no highlighting of what we print; markup only in our own
# literal strings.
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)

# What a terminal acts on instead of showing: the C0 controls (ESC, CR, BEL, ...), DEL,
# the C1 controls (0x9b is a one-byte CSI), and the bidirectional overrides and isolates,
# which reorder the text around them. Newline is kept where a table cell has lines.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_CONTROLS_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI}]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, newlines: bool = False) -> str:
    """`str(text)` with every control character shown as an escape (ESC as `\x1b`),
    newlines too unless `newlines`."""
    return (_CONTROLS_BUT_NEWLINE if newlines else _CONTROLS).sub(_escaped, str(text))


def cell(value: object) -> Text:
    """A table cell (or title) of text from elsewhere: shown as it is, lines kept."""
    return Text(safe(value, newlines=True))


def say(text: object, *, console: Console = out) -> None:
    """Print a line (or lines) that may carry text from elsewhere."""
    console.print(cell(text))


def new_table(title: object = None, **options: Any) -> Table:
    """A rich Table whose title is shown as it is."""
    return Table(title=cell(title) if title is not None else None, **options)


def add_row(table: Table, *values: object) -> None:
    """A row of text from elsewhere: each cell shown as it is."""
    table.add_row(*(cell(v) for v in values))

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Node home (default $SWARM_HOME or ~/.can-swarm).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

T = TypeVar("T")


def fail(message: str, *, as_json: bool = False, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        sys.stderr.write(json.dumps({"error": message, **(extra or {})}) + "\n")
    else:
        err.print(f"[bold red]error:[/] {escape(safe(message, newlines=True))}",
                  soft_wrap=True)
    raise typer.Exit(1)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


OUTCOME_WAIT_S_MIN = 0.1  # the floor of a --timeout that the node's wait takes


def client(home: Path | None, as_json: bool, timeout_s: float = TIMEOUT_S) -> Client:
    try:
        return Client(resolve_home(home), timeout_s=timeout_s)
    except HomeError as exc:
        fail(str(exc), as_json=as_json)


def call(fn: Callable[[], T], as_json: bool) -> T:
    """Run an API call; an ApiError becomes a clean error exit."""
    try:
        return fn()
    except ApiError as exc:
        fail(str(exc), as_json=as_json,
             extra={"detail": exc.detail} if isinstance(exc.detail, dict) else None)
