"""After the heal: the soak's last operations and each node's final state, as data.

Owns what the driver reads once the nemesis has healed everything: a final DECIDE of
every NEED of the run and of one new NEED per bucket (recorded in the history, as
operations), the convergence wait, and per node what the checker needs (`NodeFinal`:
the last convergence poll, replicas still campaigning, the ledger, whether each
acknowledged NEED is in its plan) and what the report shows (RSS, GC pauses,
tracebacks in its logs). It judges nothing: the checker (testnet/soak_check.py) does,
from these records.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid

from .soak_check import FINAL_PROPOSAL, PROBE_PROPOSAL, convergence_violations, final_answers
from .soak_history import NodeFinal, NodeLedger, NodePoll, Op, Recorder
from .soak_nodes import Answer, Nodes

FINAL_DECIDE_TIMEOUT_S = 8.0
FINAL_TRIES = 3  # nodes each final DECIDE is tried on
FINAL_RETRY_PAUSE_S = 0.5
READ_THREADS = 8
POLL_PAUSE_S = 1.0
CAMPAIGN_RECHECK_S = 3.0  # a transfer's target campaigns for a round trip; a stuck one longer


def probe_needs(seed: int, bucket_count: int) -> dict[int, str]:
    """One made-up NEED id per bucket (DECIDE does not need the NEED to be known)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < bucket_count:
        cid = dag_cbor_cid(f"soak-probe/{seed}/{i}".encode())
        out.setdefault(bucket_of(cid.raw, bucket_count), str(cid))
        i += 1
    return out


def final_reads(net: Nodes, rec: Recorder, needs: list[str], probes: dict[int, str],
                progress: Callable[[str], None]) -> list[Op]:
    """A DECIDE of every NEED (proposal `final-read`: it reads the committed decision,
    or decides one now) and of every probe, in parallel, each tried on up to three
    nodes; recorded in the history in that order."""
    progress(f"final reads: {len(needs)} NEEDs and one new NEED in each of "
             f"{len(probes)} buckets")
    ops = [rec.begin("final_read", k % net.n, {"need": need, "proposal": FINAL_PROPOSAL},
                     process="final") for k, need in enumerate(needs)]
    ops += [rec.begin("probe", (len(needs) + k) % net.n,
                      {"need": need, "proposal": PROBE_PROPOSAL, "bucket": b},
                      process="final") for k, (b, need) in enumerate(probes.items())]

    def final_decide(op: Op) -> None:
        first = op.node
        for attempt in range(FINAL_TRIES):
            op.node, op.attempts = (first + attempt) % net.n, attempt + 1
            try:
                d = net.call(op.node, "POST", "/decide", {
                    "need_id": op.info["need"], "proposal_id": op.info["proposal"],
                    "timeout_s": FINAL_DECIDE_TIMEOUT_S})
                op.outcome = "ok" if attempt == 0 else "retried"
                op.info["answer"] = str(d["proposal_id"])
                break
            except Answer as exc:
                op.outcome = "failed" if exc.definite else "indeterminate"
                op.reason = exc.reason
                time.sleep(FINAL_RETRY_PAUSE_S)
        op.end_s = rec.now()

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        list(pool.map(final_decide, ops))
    for op in ops:
        rec.add(op)
    return ops


def poll(net: Nodes) -> list[NodePoll]:
    out = []
    for i in range(net.n):
        try:
            st = net.call(i, "GET", "/status")
            sup = net.call(i, "GET", "/ledger/supply")
            got = {str(d["need_id"]): str(d["proposal_id"])
                   for d in net.call(i, "GET", "/decisions")["decisions"]}
        except Answer as exc:
            out.append(NodePoll(error=exc.reason))
            continue
        out.append(NodePoll(plan_root=st["plan_root"], ledger_root=st["ledger_root"],
                            in_flight=int(sup["in_flight"]), decisions=got))
    return out


def wait_converged(net: Nodes, final_ops: list[Op], timeout_s: float,
                   progress: Callable[[str], None]) -> tuple[list[NodePoll], float]:
    """Poll until the checker finds the nodes converged (every decision read after
    the heal held certified everywhere, one plan root, one ledger root, nothing in
    flight) or `timeout_s` passes; the last poll either way, and how long it took."""
    expected = final_answers(final_ops)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        polls = poll(net)
        problems = convergence_violations(expected, polls, timeout_s)
        if not problems or time.monotonic() > deadline:
            return polls, round(time.monotonic() - t0, 1)
        lacking = sum(len([k for k, v in expected.items() if p.decisions.get(k) != v])
                      if p.error is None else 1 for p in polls)
        plans = {p.plan_root for p in polls if p.error is None}
        ledgers = {p.ledger_root for p in polls if p.error is None}
        progress(f"converging: {lacking} decisions missing, {len(plans)} plan roots, "
                 f"{len(ledgers)} ledger roots")
        time.sleep(POLL_PAUSE_S)


def campaigning(net: Nodes) -> list[list[int]]:
    """Per node, the buckets with a replica neither leader nor follower."""
    found: list[list[int]] = []
    for i in range(net.n):
        rows: list[int] = []
        with contextlib.suppress(Answer):
            for row in net.call(i, "GET", "/raft/status")["buckets"]:
                if row.get("replica") and row.get("role") not in ("leader", "follower"):
                    rows.append(int(row["bucket"]))
        found.append(rows)
    return found


def read_ledger(net: Nodes, i: int, accounts: list[str]) -> NodeLedger:
    supply: dict[str, Any] | None = None
    balances: dict[str, dict[str, Any]] = {}
    try:
        supply = net.call(i, "GET", "/ledger/supply")
        for a in accounts:
            balances[a] = net.call(i, "GET", f"/ledger/balance?account={a}")
    except Answer as exc:
        return NodeLedger(error=exc.reason, supply=supply, balances=balances)
    return NodeLedger(supply=supply, balances=balances)


def lookup_needs(net: Nodes, needs: list[str]) -> list[dict[str, bool]]:
    """Per node, whether its plan holds each NEED looked up there: NEED k on node
    k mod n (the next node if that one does not answer); a NEED no node answered for
    is left out."""
    def one(k: int) -> tuple[int, bool] | None:
        for attempt in range(net.n):
            i = (k + attempt) % net.n
            try:
                tasks = net.call(i, "GET", f"/plan/threads/{needs[k]}")["tasks"]
            except Answer:
                continue
            return i, bool(tasks and tasks[0]["task_id"] == needs[k] and tasks[0]["known"])
        return None

    out: list[dict[str, bool]] = [{} for _ in range(net.n)]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for need, got in zip(needs, pool.map(one, range(len(needs))), strict=True):
            if got is not None:
                out[got[0]][need] = got[1]
    return out


def capture(net: Nodes, final_ops: list[Op], accounts: list[str], acked_needs: list[str],
            converge_timeout_s: float, rss_start: list[float | None],
            progress: Callable[[str], None]) -> tuple[list[NodeFinal], float]:
    """Every node's final state, once converged (or given up); and the time that took."""
    progress("waiting for convergence")
    polls, converge_s = wait_converged(net, final_ops, converge_timeout_s, progress)
    first = campaigning(net)
    again = None
    if any(first):
        time.sleep(CAMPAIGN_RECHECK_S)
        again = campaigning(net)
    progress("reading the ledger and the plans")
    ledgers = [read_ledger(net, i, accounts) for i in range(net.n)]
    tasks = [read_tasks(net, i) for i in range(net.n)]
    plans = lookup_needs(net, acked_needs)
    nodes = []
    for i in range(net.n):
        m = net.member(i)
        try:
            gc = gc_pauses(net.call(i, "GET", "/metrics"))
        except Answer:
            gc = None
        stats = {"rss_start_mb": rss_start[i], "rss_end_mb": rss_mb(m.pid), "gc": gc,
                 "tracebacks": tracebacks(m.home)}
        nodes.append(NodeFinal(node=i, poll=polls[i], ledger=ledgers[i],
                               campaigning=first[i],
                               campaigning_again=None if again is None else again[i],
                               plan_needs=plans[i], stats=stats, tasks=tasks[i]))
    return nodes, converge_s


def read_tasks(net: Nodes, i: int) -> dict[str, dict[str, Any]]:
    """Every task node i knows, with what the ledger check needs of it (none when it
    does not answer: the convergence check already says so)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        for brief in net.call(i, "GET", "/tasks")["tasks"]:
            t = net.call(i, "GET", f"/tasks/{brief['need_id']}")
            out[t["need_id"]] = {k: t[k] for k in ("state", "epoch", "paid", "poster",
                                                   "budget", "payouts")}
    except Answer:
        return {}
    return out


# -- measurements ---------------------------------------------------------------------

def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


GC_LINE = re.compile(r'^swarm_gc_pause_seconds_(count|sum|bucket)\{([^}]*)\} (\S+)$')


def gc_pauses(text: str) -> dict[str, Any] | None:
    """`swarm_gc_pause_seconds` from a node's /metrics: collections and seconds paused by
    generation, and the largest bucket bound a generation-2 pause reached."""
    out: dict[str, Any] = {}
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        m = GC_LINE.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in m.group(2).split(","))
        gen = labels.get("generation", "").strip('"')
        if m.group(1) == "bucket":
            if gen == "2":
                le = labels["le"].strip('"')
                buckets.append((float("inf") if le == "+Inf" else float(le),
                                float(m.group(3))))
            continue
        out.setdefault(f"gen{gen}", {})[m.group(1)] = float(m.group(3))
    if not out:
        return None
    if buckets:
        buckets.sort()
        total = buckets[-1][1]
        out["gen2_max_le_s"] = next((le for le, c in buckets if c >= total), None) \
            if total else None
    return out


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def tracebacks(home: Path) -> list[str]:
    """Each traceback in the node's logs, as the innermost exception it ends with (an
    exception group's too), with the file and line it starts at."""
    found: list[str] = []
    for name in ("node.log", "stdio.log"):
        try:
            lines = (home / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        k = 0
        while k < len(lines):
            if "Traceback (most recent call last)" not in lines[k]:
                k += 1
                continue
            start, last = k, "?"
            k += 1
            # The block (nested tracebacks of an exception group included) ends at the
            # next log record or plain line.
            while k < len(lines) and (lines[k][:1] in (" ", "|", "+") or
                                      EXCEPTION_LINE.match(lines[k])):
                text = lines[k].lstrip(" |+-")
                if EXCEPTION_LINE.match(text) and not text.startswith(
                        ("ExceptionGroup", "BaseExceptionGroup")):
                    last = text
                k += 1
            found.append(f"{name}:{start + 1}: {last.strip()[:200]}")
    return found
