"""What every `swarm-node` command module shares: the --home/--json options, error
output (stderr, exit 1, JSON with --json), JSON output, and the control-API client."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from swarm.node.client import ApiError, Client
from swarm.node.home import HomeError, resolve_home

out = Console()
err = Console(stderr=True)

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
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def client(home: Path | None, as_json: bool, timeout_s: float = 30.0) -> Client:
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
