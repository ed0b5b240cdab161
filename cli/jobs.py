"""`swarm-node job`: WebAssembly jobs through the running node (docs/JOBS.md).

`run MODULE INPUT` has the node run a job's module (an evidence CID) on an input (an
evidence CID), both fetched from peers if the node lacks them, and prints the output's
CID; `builtins` lists the built-in jobs' module CIDs and `builtins --publish` stores
those modules on the node as evidence, so that peers can fetch them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import HomeOpt, JsonOpt, add_row, call, client, emit_json, new_table, out, say

job_app = typer.Typer(help="WebAssembly jobs: run one, list and publish the built-in ones.",
                      no_args_is_help=True)
JOB_TIMEOUT_S = 300.0


@job_app.command("run")
def run(
    module: Annotated[str, typer.Argument(help="The job's module, as an evidence CID.")],
    data: Annotated[str, typer.Argument(metavar="INPUT", help="The input's evidence CID.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a job on the node; store its output as evidence; print the output's CID."""
    c = client(home, as_json, timeout_s=JOB_TIMEOUT_S)
    doc: dict[str, Any] = call(lambda: c.post("/jobs/run", {"module": module, "input": data}),
                               as_json)
    if as_json:
        emit_json(doc)
    else:
        say(f"{doc['output']}  ({doc['size']} bytes, {doc['fuel']} fuel)")


@job_app.command("builtins")
def builtins(
    publish: Annotated[bool, typer.Option("--publish", help="Store the modules on the node "
                                                            "as evidence first.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The built-in jobs and their module CIDs."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.post("/jobs/builtins", {}) if publish
                               else c.get("/jobs/builtins"), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table("built-in jobs" + (" (stored on this node)" if publish else ""))
    for col in ("job", "module"):
        table.add_column(col, overflow="fold")
    for name, cid in doc["jobs"].items():
        add_row(table, name, cid)
    out.print(table)
