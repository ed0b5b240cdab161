"""`swarm-node task ...` and the lifecycle commands (`bid`, `claim`, `heartbeat`, `yield`,
`commit`, `attest`): the task market through a running node, for an agent driven by
hand. The node signs with its own identity: its account posts and pays, bids, works and
attests.

Amounts are credits, decimals allowed ("12.5"); durations take a unit ("500ms", "5s",
"2m", "1h"). Every refusal prints the rule that refused it (`bid_window_closed`,
`not_winner`, `not_lease_holder`, `not_in_committee`, `insufficient_balance`, ...) and
exits 1. These commands are not retried on their own: each signs a new envelope, and a
second NEED would be a second task (check `task list` before posting again).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from swarm.node.client import (
    OUTCOME_MARGIN_S,
    OUTCOME_WAIT_S_DEFAULT,
    OUTCOME_WAIT_S_MAX,
    need_body,
)
from swarm.protocol.amounts import format_credits, format_duration

from .common import (
    OUTCOME_WAIT_S_MIN,
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

task_app = typer.Typer(help="The task market: post and fund a NEED, list and show tasks.",
                       no_args_is_help=True)

NeedArg = Annotated[str, typer.Argument(help="The NEED's id (its CID).", show_default=False)]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Seconds to wait for the bucket's outcome.", min=OUTCOME_WAIT_S_MIN,
    max=OUTCOME_WAIT_S_MAX)]
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)\s*$")


def duration_ms(text: str, option: str) -> int:
    """"500ms", "5s", "2m", "1h" as milliseconds; a clean error otherwise."""
    m = _DURATION.match(text)
    if m is None or int(m.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration such as 500ms, 5s, 2m or 1h",
                                 param_hint=option)
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def read_json_file(path: Path, option: str) -> Any:
    """A JSON document from a file; a clean error if it is not one."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: not a JSON document ({exc})",
                                 param_hint=option) from None


def _post(path: str, body: dict[str, Any], home: Any, as_json: bool,
          timeout_s: float) -> dict[str, Any]:
    c = client(home, as_json, timeout_s=timeout_s + OUTCOME_MARGIN_S)
    doc: dict[str, Any] = call(lambda: c.post(path, {**body, "timeout_s": timeout_s}),
                               as_json)
    return doc


def _c(units: int, doc: dict[str, Any]) -> str:
    return format_credits(units, int(doc.get("unit_per_credit", 1_000_000)))


def _where(doc: dict[str, Any]) -> str:
    return f"(bucket {doc['bucket']}, index {doc['index']})"


@task_app.command("post")
def post(
    budget: Annotated[str, typer.Option("--budget", help="Credits escrowed for the task "
                                                         "(the bid plus the bounty come "
                                                         "from it; the rest is refunded).")],
    task_class: Annotated[str, typer.Option(
        "--class", help="simple | complex | critical (caps the verify bounty).")] = "simple",
    title: Annotated[str, typer.Option("--title")] = "",
    bounty: Annotated[str, typer.Option("--bounty", help="Verify bounty in credits, part "
                                                         "of the budget.")] = "0",
    window: Annotated[str | None, typer.Option("--window", help="Bid window, e.g. 5s "
                                                                "(default: the swarm's).")] = None,
    k_result: Annotated[int | None, typer.Option("--k", min=1, max=64,
                                                 help="Committee size.")] = None,
    caps: Annotated[list[str] | None, typer.Option("--cap", help="A wanted capability "
                                                                 "(repeatable).")] = None,
    k_plan: Annotated[int | None, typer.Option(
        "--k-plan", min=0, max=64, help="Approving ATTEST_PLANs the winning bid's plan "
                                        "patch needs (default: the swarm's).")] = None,
    job: Annotated[str | None, typer.Option("--job", help="A WebAssembly job to run: its "
                                                          "module's CID.")] = None,
    data: Annotated[str | None, typer.Option("--input", help="The evidence CID the job "
                                                             "runs on.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Or a host job to run: its "
                                                            "registered name.")] = None,
    check: Annotated[str | None, typer.Option("--check", help="The host check that "
                                                              "verifies it (default: the "
                                                              "job's own).")] = None,
    output: Annotated[str | None, typer.Option("--output", help="The result's output "
                                                                "schema, e.g. uint<=20 "
                                                                "(docs/JOBS.md).")] = None,
    cites: Annotated[list[str] | None, typer.Option(
        "--cite", help="A CID the result must cite (repeatable); needs an --output with "
                       "MAX_BYTES at most 4096.")] = None,
    deny: Annotated[list[str] | None, typer.Option(
        "--deny", help="Text the result must not contain (repeatable; 1-64 bytes).")] = None,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Post a NEED and escrow its budget from this node's account."""
    body = need_body(task_class, budget, title=title, bounty=bounty, capabilities=caps or (),
                     window_ms=None if window is None else duration_ms(window, "--window"),
                     k_result=k_result, k_plan=k_plan, job=job, data=data, host=host,
                     check=check, output=output, cites=cites or (),
                     deny=deny or ())
    doc = _post("/tasks", body, home, as_json, timeout_s)
    if as_json:
        emit_json(doc)
        return
    say(f"posted NEED {doc['need_id']}: {budget} credits escrowed from this node's "
        f"account {_where(doc)}; the task lives in bucket {doc['task_bucket']}")


@task_app.command("list")
def list_tasks(
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state "
                                                              "(OPEN, DECIDED, ...).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The tasks this node knows, newest first."""
    c = client(home, as_json)
    path = "/tasks" + (f"?state={state}" if state else "")
    doc: dict[str, Any] = call(lambda: c.get(path), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table(title="tasks")
    for name in ("NEED", "state", "epoch", "budget", "winner", "paid"):
        table.add_column(name)
    for t in doc["tasks"]:
        add_row(table, t["need_id"], t["state"], t["epoch"], _c(t["budget"], doc),
                (t["winner"] or "")[:16], "yes" if t["paid"] else "")
    if doc["tasks"]:
        out.print(table)
    else:
        say("no tasks known here")


@task_app.command("show")
def show(need: NeedArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """A task: its state, bids, decision, lease, commit and deadlines."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get(f"/tasks/{need}"), as_json)
    if as_json:
        emit_json(doc)
        return
    now = time.time_ns() // 1_000_000
    say(f"task {doc['need_id']} (bucket {doc['bucket']}, {doc['source']})")
    say(f"  state      {doc['state']} (epoch {doc['epoch']}, round {doc['round']})")
    say(f"  budget     {_c(doc['budget'], doc)} credits ({doc['task_class']}, verify "
        f"bounty {_c(doc['verify_bounty'], doc)}, k {doc['k_result']})")
    say(f"  poster     {doc['poster']}")
    job = doc.get("job") or (f"host {doc['host']}" if doc.get("host") else None)
    if job:
        say(f"  job        {job} on {doc.get('input')}")
    contract = [f"output {doc['output']}"] if doc.get("output") else []
    contract += [f"cites {c}" for c in doc.get("cites", ())]
    contract += [f"denies {d!r}" for d in doc.get("deny", ())]
    for line in contract:
        say(f"  result     {line}")
    for name in ("close_ms", "claim_by_ms", "finalize_ms", "pay_ms"):
        if doc.get(name) and doc[name] > now:
            say(f"  {name[:-3]:<10} in {format_duration(doc[name] - now)}")
    for b in doc["bids"]:
        say(f"  bid        {_c(b['cost'], doc)} credits, eta {format_duration(b['eta_ms'])} "
            f"by {b['bidder'][:16]} (round {b['round']})")
    if doc["decision"]:
        d = doc["decision"]
        say(f"  decided    {d['winner'][:16]} for {_c(d['cost'], doc)} credits; memo "
            f"{d['memo']}")
    if doc["lease"]:
        le = doc["lease"]
        say(f"  lease      {le['lease_id']} by {le['worker'][:16]}, progress "
            f"{le['progress']}%, {le['misses']} missed heartbeats")
    if doc["commit"]:
        cm = doc["commit"]
        say(f"  commit     {cm['result']} by {cm['worker'][:16]}")
        verdicts = {v["member"]: v["valid"] for v in cm["verdicts"]}
        for m in cm["committee"]:
            said = verdicts.get(m)
            say(f"  member     {m[:16]}: "
                f"{'not yet' if said is None else 'valid' if said else 'invalid'}")
    for p in doc.get("payouts", ()):
        say(f"  {p['kind']:<10} {_c(p['amount'], doc)} credits to {p['account'][:16]}")


@task_app.command("explain")
def explain(need: NeedArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Why the task's decision went as it did: every bid, its score and its parts."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get(f"/tasks/{need}/explain"), as_json)
    if as_json:
        emit_json(doc)
        return
    e = doc["explanation"]
    say(f"decision memo {doc['memo']} (epoch {e['epoch']}, round {e['round']}): {e['why']}")
    say(f"rule: {e['rule']}")
    w = e["weights"]
    say(f"score = {w['score_cost_bp']}*cost + {w['score_eta_bp']}*eta + "
        f"{w['score_reputation_bp']}*reputation + {w['score_capability_bp']}*capability "
        f"(parts in basis points; ETA half at {format_duration(w['eta_ref_ms'])})")
    table = new_table(title=f"bids, budget {_c(e['budget'], doc)} credits")
    for name in ("", "bidder", "cost", "eta", "cost bp", "eta bp", "rep bp", "caps bp",
                 "score"):
        table.add_column(name)
    for i, b in enumerate(e["bids"]):
        add_row(table, "winner" if i == 0 else i + 1, b["bidder"][:16], _c(b["cost"], doc),
                format_duration(b["eta_ms"]), b["cost_bp"], b["eta_bp"], b["reputation_bp"],
                b["capability_bp"], b["score"])
    out.print(table)


TERMINAL = ("CANCELLED",)


@task_app.command("watch")
def watch(
    need: NeedArg,
    timeout_s: Annotated[float, typer.Option("--timeout", min=1.0,
                                             help="Give up after this many seconds.")] = 600.0,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a task live through its states, as this node applies them; ends when
    the task is paid or cancelled (or after --timeout)."""
    c = client(home, as_json, timeout_s=30.0)  # longer than the stream's keep-alive
    deadline = time.monotonic() + timeout_s

    def follow() -> None:
        for event in c.events("/tasks/events", {"need": need}):
            if as_json:
                emit_json(event)
            else:
                say(_event_line(event))
            done = event.get("kind") == "transition" and (
                event["after"] in TERMINAL or event["cause"] == "paid")
            if done or time.monotonic() > deadline:
                return

    call(follow, as_json)


def _event_line(e: dict[str, Any]) -> str:
    match e.get("kind"):
        case "transition":
            arrow = e["after"] if e["before"] in ("", e["after"]) else \
                f"{e['before']} -> {e['after']}"
            return f"#{e['seq']} epoch {e['epoch']}: {arrow}: {e['cause']}"
        case "decision":
            return (f"#{e['seq']} decided: {e['winner'][:16]} for {e['cost']} units "
                    f"(memo {e['memo']})")
        case "payment":
            return f"#{e['seq']} paid {e['amount']} units to {e['account'][:16]} ({e['why']})"
        case "slash":
            return f"#{e['seq']} slashed {e['account'][:16]}: {e['misses']} heartbeats missed"
        case "gap":
            return f"(missed {e['missed']} events: this node keeps the latest only)"
    return str(e)


def _step(path: str, body: dict[str, Any], home: Any, as_json: bool, timeout_s: float,
          done: str) -> None:
    doc = _post(path, body, home, as_json, timeout_s)
    if as_json:
        emit_json(doc)
        return
    say(f"{done} {_where(doc)}")


def bid(
    need: NeedArg,
    cost: Annotated[str, typer.Argument(help="Credits asked (at most the budget less the "
                                             "verify bounty).")],
    eta: Annotated[str, typer.Option("--eta", help="When it will be done, e.g. 30s.")] = "60s",
    caps: Annotated[list[str] | None, typer.Option("--cap", help="A capability "
                                                                 "(repeatable).")] = None,
    patch: Annotated[Path | None, typer.Option(
        "--patch", help="A JSON file of plan ops under the NEED ({\"base_lamport\": N, "
                        "\"ops\": [...]}); they join the plan if this bid wins.",
        exists=True, dir_okay=False)] = None,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bid on a NEED while its bid window is open."""
    body: dict[str, Any] = {"cost": cost, "eta_ms": duration_ms(eta, "--eta"),
                            "capabilities": caps or []}
    if patch is not None:
        body["patch"] = read_json_file(patch, "--patch")
    _step(f"/tasks/{need}/bid", body, home, as_json, timeout_s,
          f"bid {cost} credits on {need}")


def claim(
    need: NeedArg,
    ttl: Annotated[str, typer.Option("--ttl", help="Lease time to live.")] = "10m",
    heartbeat_every: Annotated[str, typer.Option("--heartbeat", help="Heartbeat "
                                                                      "interval.")] = "10s",
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim a task this node's bid won: a lease, kept alive by heartbeats."""
    _step(f"/tasks/{need}/claim", {"lease_ttl_ms": duration_ms(ttl, "--ttl"),
                                   "heartbeat_interval_ms": duration_ms(heartbeat_every,
                                                                        "--heartbeat")},
          home, as_json, timeout_s, f"claimed {need}")


def heartbeat(
    need: NeedArg,
    progress: Annotated[int, typer.Option("--progress", min=0, max=100)] = 0,
    lease: Annotated[str | None, typer.Option("--lease", help="The lease's id (default: "
                                                              "the task's, as known "
                                                              "here).")] = None,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tell the task's bucket this node's lease is alive."""
    _step(f"/tasks/{need}/heartbeat", {"progress": progress, "lease": lease},
          home, as_json, timeout_s, f"heartbeat {progress}% on {need}")


def yield_task(
    need: NeedArg,
    reason: Annotated[str, typer.Option("--reason")] = "yielded",
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a claimed task back: the next-best bid wins, or a new auction opens."""
    _step(f"/tasks/{need}/yield", {"reason": reason}, home, as_json, timeout_s,
          f"yielded {need}")


def commit(
    need: NeedArg,
    result: Annotated[str, typer.Argument(help="The result's evidence CID.")],
    lease: Annotated[str | None, typer.Option("--lease")] = None,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Commit a result for a task this node holds the lease of."""
    _step(f"/tasks/{need}/commit", {"result": result, "lease": lease}, home, as_json,
          timeout_s, f"committed {result} for {need}")


def attest(
    need: NeedArg,
    verdict: Annotated[str, typer.Argument(help="valid | invalid")],
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Attest a committed result, as a member of its committee."""
    if verdict not in ("valid", "invalid"):
        fail("the verdict is valid or invalid", as_json=as_json)
    _step(f"/tasks/{need}/attest", {"verdict": verdict}, home, as_json, timeout_s,
          f"attested {verdict} on {need}")


def register(app: typer.Typer) -> None:
    """The lifecycle commands sit at the top level, as an agent uses them."""
    app.add_typer(task_app, name="task")
    app.command("bid")(bid)
    app.command("claim")(claim)
    app.command("heartbeat")(heartbeat)
    app.command("yield")(yield_task)
    app.command("commit")(commit)
    app.command("attest")(attest)
