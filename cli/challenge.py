"""`swarm-node challenge ...` and `swarm-node slashes ...`: challenges of attested
results through a running node, and the slashes the buckets it holds carried out.

A challenge locks a bond from this node's account (by proof type, times the
complexity's multiplier); `challenge open` shows it and asks before it locks it,
unless `--yes`. The proof is a file of at most the swarm's `proof_bytes_max` (10 KiB
by default), added to the node's evidence store first, or the CID of one already
there. Amounts are printed in credits; `--json` prints the node's answer (amounts in
the smallest unit, with `unit_per_credit`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from swarm.node.client import OUTCOME_WAIT_S_DEFAULT
from swarm.protocol.amounts import format_credits, format_duration
from swarm.protocol.cid import Cid
from swarm.protocol.errors import DecodeError

from .common import (
    HomeOpt,
    JsonOpt,
    add_row,
    call,
    client,
    emit_json,
    fail,
    new_table,
    out,
    say,
)
from .market import TimeoutOpt, _post

challenge_app = typer.Typer(help="Challenge an attested result with a proof and a bond; "
                                 "follow, list and withdraw challenges.",
                            no_args_is_help=True)
slashes_app = typer.Typer(help="Slashes the buckets this node holds carried out.",
                          no_args_is_help=True)

JUDGE_TIMEOUT_S = 330.0  # an output_mismatch re-runs the job (the SDK allows it 300 s)
PROOF_TYPES = ("schema-violation", "missing-citation", "semantic-contradiction",
               "output-mismatch", "policy-breach")
ChallengeArg = Annotated[str, typer.Argument(help="The challenge's id (its CHALLENGE "
                                                  "envelope's CID).", show_default=False)]


def _c(units: int, doc: dict[str, Any]) -> str:
    return format_credits(units, int(doc.get("unit_per_credit", 1_000_000)))


def _proof(evidence: str, home: Any, as_json: bool, limit: int) -> tuple[str, int | None]:
    """The proof's CID and size: a file is added to the node's evidence store; a CID
    names one stored already (the node reads its size)."""
    path = Path(evidence)
    if not path.exists():
        try:
            Cid.parse(evidence, "evidence")
        except DecodeError:
            fail(f"--evidence {evidence!r} is neither a file nor a CID", as_json=as_json)
        return evidence, None
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", as_json=as_json)
    if len(data) > limit:
        fail(f"{path} is {len(data)} bytes; a proof is at most {limit}", as_json=as_json)
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.post_bytes("/evidence", data,
                                                    params={"cid_version": 1}), as_json)
    return str(doc["cid"]), len(data)


@challenge_app.command("open")
def open_challenge(
    task: Annotated[str, typer.Argument(help="The task's id (its NEED's CID).",
                                        show_default=False)],
    proof_type: Annotated[str, typer.Option(
        "--type", help="What is wrong with the result: " + " | ".join(PROOF_TYPES))],
    evidence: Annotated[str, typer.Option("--evidence", help="The proof: a file (added to "
                                                             "the node) or a stored "
                                                             "CID.")],
    complexity: Annotated[str, typer.Option(
        "--complexity", help="low | medium | high: multiplies the bond.")] = "low",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Lock the bond without "
                                                          "asking.")] = False,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Challenge a task's attested result while its challenge window is open. The bond
    comes back if the challenge is upheld (with half of the attesters' slash), goes to
    the panel and the burn if it is rejected, and comes back less a fee if withdrawn."""
    if proof_type not in PROOF_TYPES:
        fail(f"--type is one of {', '.join(PROOF_TYPES)}", as_json=as_json)
    if complexity not in ("low", "medium", "high"):
        fail("--complexity is low, medium or high", as_json=as_json)
    kind = proof_type.replace("-", "_")
    c = client(home, as_json)
    quote: dict[str, Any] = call(lambda: c.get(
        f"/challenges/bond?proof_type={kind}&complexity={complexity}"), as_json)
    bond = _c(quote["bond"], quote)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"this challenge locks a bond of {bond} credits; confirm with --yes",
                 as_json=as_json)
        typer.confirm(f"Lock a bond of {bond} credits from this node's account to "
                      f"challenge {task} ({proof_type})?", abort=True)
    cid, size = _proof(evidence, home, as_json, int(quote["proof_bytes_max"]))
    body: dict[str, Any] = {"task_id": task, "proof_type": kind, "evidence": cid,
                            "complexity": complexity}
    if size is not None:
        body["size_bytes"] = size
    doc = _post("/challenges", body, home, as_json, timeout_s)
    if as_json:
        emit_json(doc)
        return
    say(f"challenge {doc['challenge_id']} of {task}: bond {bond} credits locked "
        f"(bucket {doc['bucket']}, index {doc['index']}); proof {cid}")
    say(f"follow it: swarm-node challenge status {doc['challenge_id']}")


@challenge_app.command("status")
def status(challenge_id: ChallengeArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """One challenge: queued, awaiting its panel, voting, or how it ended."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get(f"/challenges/{challenge_id}"), as_json)
    if as_json:
        emit_json(doc)
        return
    now = time.time_ns() // 1_000_000
    say(f"challenge {doc['challenge_id']} of task {doc['task_id']} ({doc['task_state']})")
    say(f"  state      {doc['state']}")
    say(f"  type       {doc['proof_type']}, bond {_c(doc['bond'], doc)} credits")
    say(f"  challenger {doc['challenger']}")
    if "panel" in doc:
        say(f"  round      {doc['round']}")
        votes = {v["member"]: v["uphold"] for v in doc["votes"] if v["round"] == doc["round"]}
        for m in doc["panel"]:
            said = votes.get(m["member"])
            say(f"  panel      {m['member'][:16]}: "
                f"{'not yet' if said is None else 'uphold' if said else 'reject'}")
        if doc.get("vote_by_ms") and doc["vote_by_ms"] > now:
            say(f"  vote ends  in {format_duration(doc['vote_by_ms'] - now)}")
        if doc.get("window_ends_ms") and doc["window_ends_ms"] > now:
            say(f"  window     ends in {format_duration(doc['window_ends_ms'] - now)}")
    else:
        weighted = " (stake-weighted)" if doc.get("weighted") else ""
        say(f"  votes      {doc['uphold']} uphold, {doc['reject']} reject in "
            f"{doc['rounds']} round(s){weighted}")


@challenge_app.command("check")
def check(
    target: Annotated[str, typer.Argument(help="An open challenge's id; or, with --type "
                                               "and --evidence, a task's id.",
                                          show_default=False)],
    proof_type: Annotated[str | None, typer.Option(
        "--type", help="With --evidence: judge this proof before opening a challenge: "
                       + " | ".join(PROOF_TYPES))] = None,
    evidence: Annotated[str | None, typer.Option("--evidence", help="The proof: a file "
                                                                    "(added to the node) "
                                                                    "or a stored CID.")]
    = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What this node's proof verifier says: whether the claim holds (the panel's
    verifiers run the same WebAssembly module on the same bytes), why, and the fuel it
    burnt. Exits 1 when the claim does not hold."""
    c = client(home, as_json, timeout_s=JUDGE_TIMEOUT_S)
    if (proof_type is None) != (evidence is None):
        fail("--type and --evidence go together", as_json=as_json)
    if proof_type is None:
        doc: dict[str, Any] = call(lambda: c.get(f"/challenges/{target}/verdict"), as_json)
    else:
        if proof_type not in PROOF_TYPES:
            fail(f"--type is one of {', '.join(PROOF_TYPES)}", as_json=as_json)
        kind = proof_type.replace("-", "_")
        quote: dict[str, Any] = call(lambda: c.get(
            f"/challenges/bond?proof_type={kind}"), as_json)
        assert evidence is not None
        cid, _ = _proof(evidence, home, as_json, int(quote["proof_bytes_max"]))
        doc = call(lambda: c.post("/challenges/check", {
            "task_id": target, "proof_type": kind, "evidence": cid}), as_json)
    if as_json:
        emit_json(doc)
    else:
        say(f"{doc['proof_type']} against {doc['result']} (task {doc['task_id']}): "
            f"{'HOLDS' if doc['holds'] else 'does not hold'}")
        say(f"  why        {doc['reason']}")
        say(f"  verifier   {doc['verifier'] or '-'}, fuel {doc['fuel']} of "
            f"{doc['fuel_max']}, {doc['ms']} ms")
    if not doc["holds"]:
        raise typer.Exit(1)


@challenge_app.command("list")
def list_challenges(
    state: Annotated[str | None, typer.Option(
        "--state", help="open | queued | awaiting_panel | voting | UPHELD | REJECTED | "
                        "WITHDRAWN | LAPSED | MOOT")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task's.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The challenges this node knows of, newest first."""
    c = client(home, as_json)
    params = "&".join(f"{k}={v}" for k, v in (("state", state), ("task", task)) if v)
    doc: dict[str, Any] = call(lambda: c.get("/challenges" + (f"?{params}" if params
                                                               else "")), as_json)
    if as_json:
        emit_json(doc)
        return
    if not doc["challenges"]:
        say("no challenges known here")
        return
    table = new_table(title="challenges")
    for name in ("challenge", "task", "type", "bond", "state", "challenger"):
        table.add_column(name)
    for ch in doc["challenges"]:
        add_row(table, ch["challenge_id"], ch["task_id"][:20] + "...", ch["proof_type"],
                _c(ch["bond"], doc), ch["state"], ch["challenger"][:16])
    out.print(table)


@challenge_app.command("withdraw")
def withdraw(challenge_id: ChallengeArg, timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
             home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Take back this node's open challenge: the bond comes back less the fee."""
    doc = _post(f"/challenges/{challenge_id}/withdraw", {}, home, as_json, timeout_s)
    if as_json:
        emit_json(doc)
        return
    say(f"withdrew {challenge_id} (bucket {doc['bucket']}, index {doc['index']})")


@challenge_app.command("vote")
def vote(
    challenge_id: ChallengeArg,
    verdict: Annotated[str, typer.Argument(help="uphold | reject")],
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote on a challenge as a member of its panel."""
    if verdict not in ("uphold", "reject"):
        fail("the verdict is uphold or reject", as_json=as_json)
    doc = _post(f"/challenges/{challenge_id}/vote", {"verdict": verdict}, home, as_json,
                timeout_s)
    if as_json:
        emit_json(doc)
        return
    say(f"voted {verdict} on {challenge_id} (bucket {doc['bucket']}, index {doc['index']})")


@slashes_app.command("list")
def slashes(
    account: Annotated[str | None, typer.Option("--account", help="Only this account's "
                                                                  "(64 hex digits).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Slashes carried out in the buckets this node holds, newest first: how much
    stake, whose, why, and who shared in it."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get("/slashes" + (f"?account={account}"
                                                           if account else "")), as_json)
    if as_json:
        emit_json(doc)
        return
    if not doc["slashes"]:
        say("no slashes here")
        return
    table = new_table(title="slashes")
    for name in ("account", "amount", "reason", "evidence", "challenger", "bucket/index"):
        table.add_column(name, no_wrap=name in ("reason", "amount"))
    for s in doc["slashes"]:
        add_row(table, s["account"][:12], _c(s["amount"], doc), s["reason"],
                "..." + s["evidence"][-10:], (s["challenger"] or "")[:12],
                f"{s['bucket']}/{s['index']}")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(challenge_app, name="challenge")
    app.add_typer(slashes_app, name="slashes")
