"""`swarm-node raft status` and `swarm-node decide`: the Raft buckets of a running node
and DECIDE through them (useful before auctions exist, and for operators)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarm.node.client import OUTCOME_MARGIN_S, OUTCOME_WAIT_S_DEFAULT

from .common import HomeOpt, JsonOpt, add_row, call, client, emit_json, new_table, out, say

raft_app = typer.Typer(help="The Raft buckets of a running node.", no_args_is_help=True)


@raft_app.command("status")
def raft_status(
    bucket: Annotated[int | None, typer.Option("--bucket", help="One bucket only.", min=0)]
    = None,
    all_buckets: Annotated[bool, typer.Option("--all", help="List buckets this node does "
                                              "not replicate too.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Leader, term, commit index, replicas and lag of each bucket."""
    c = client(home, as_json)
    path = "/raft/status" + (f"?bucket={bucket}" if bucket is not None else "")
    doc: dict[str, Any] = call(lambda: c.get(path), as_json)
    if as_json:
        emit_json(doc)
        return
    say(f"node {doc['node_id']}: replicates {doc['replicated']} of "
        f"{doc['bucket_count']} buckets ({doc['replicas_per_bucket']} replicas each), "
        f"leads {doc['leading']}, {doc['quiet']} quiet; "
        f"{doc['certified_decisions']} certified decisions known")
    rows = [r for r in doc["buckets"] if r.get("replica") or all_buckets or bucket is not None]
    table = new_table()
    for col in ("bucket", "role", "leader", "term", "commit", "applied", "lag", "replicas",
                "decisions", "quiet"):
        table.add_column(col, justify="right" if col not in ("role", "replicas") else "left")
    for r in rows:
        if not r.get("replica"):
            add_row(table, str(r["bucket"]), "-", str(r.get("leader") or "?"), "", "", "", "",
                    ",".join(map(str, r["replicas"])), "", "")
            continue
        add_row(table, str(r["bucket"]), r["role"], str(r["leader"] or "-"), str(r["term"]),
                str(r["commit"]), str(r["applied"]), str(r["lag"]),
                ",".join(map(str, r["voters"])), str(r["decisions"]),
                "yes" if r["quiet"] else "")
    out.print(table)


def decide(
    need_id: Annotated[str, typer.Argument(help="The NEED's id (CID).")],
    proposal_id: Annotated[str, typer.Argument(help="The proposal to decide for it.")],
    k_plan: Annotated[int, typer.Option("--k-plan", min=0, max=64)] = 0,
    epoch: Annotated[int, typer.Option("--epoch", min=0)] = 0,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")
                         ] = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a decision for a NEED and print the committed one: the first decision
    committed for a NEED is final, so this may name another proposal. Safe to retry."""
    c = client(home, as_json, timeout_s=timeout_s + OUTCOME_MARGIN_S)
    body = {"need_id": need_id, "proposal_id": proposal_id, "k_plan": k_plan,
            "epoch": epoch, "timeout_s": timeout_s}
    doc: dict[str, Any] = call(lambda: c.post("/decide", body), as_json)
    if as_json:
        emit_json(doc)
        return
    won = doc["proposal_id"] == proposal_id
    say(f"{'decided' if won else 'already decided'}: {doc['need_id']} -> "
        f"{doc['proposal_id']} (bucket {doc['bucket']}, index {doc['index']}, "
        f"term {doc['term']})")


def decision(
    need_id: Annotated[str, typer.Argument(help="The NEED's id (CID).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The decision this node knows for a NEED (certified, or committed locally)."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get(f"/decisions/{need_id}"), as_json)
    if as_json:
        emit_json(doc)
        return
    say(f"{doc['need_id']} -> {doc['proposal_id']} (bucket {doc['bucket']}, index "
        f"{doc['index']}, {'certified' if doc['certified'] else 'local, not yet certified'})")
