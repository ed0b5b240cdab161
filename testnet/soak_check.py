"""The soak's checker: a verdict from a run's history and its final state, nothing else.

Owns every rule a soak run is judged by and the names of its violations (`VIOLATIONS`).
Pure, as Jepsen's checkers are: no HTTP, no clock, no processes; it reads a `Run`
(testnet/soak_history.py), so a saved run gives the same verdict again (`swarm-testnet
soak --check RUN_DIR`). The driver's convergence wait asks `convergence_violations` the
question the verdict asks, on the same data it then saves.

What the history holds and what it does not: the workload's operations (NEEDs created,
DECIDEs, ledger operations, market steps) with what each client was told, the DECIDEs after the heal
(a read of every NEED's decision, and one new NEED per bucket), the faults, and the
incidents the driver saw. The workload reads nothing else while it runs; a node's
balances and decisions are read from its local replica, which is not promised to be
linearizable, so the only reads judged against real time are the DECIDE answers: a
DECIDE is a write-once register's compare-and-set, and every answer for a NEED, before
or after the heal, must be the one decision (`decisions-differ`, `decision-changed`),
which rules out a stale read (an answer that misses a decision acknowledged before it
began) whatever the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid

from .soak_history import NodePoll, Op, Run

FINAL_PROPOSAL = "final-read"  # the proposal of the DECIDE that reads a NEED after the heal
PROBE_PROPOSAL = "probe"  # the proposal of the DECIDE of a new NEED in each bucket
SUBSET_SUMS_MAX = 200_000  # beyond this many sums an account's total is left unchecked
BALANCE_FIELDS = ("balance", "locked", "unbonding", "escrowed")

VIOLATIONS = {
    # seen by the driver during the run (history incidents)
    "crash": "a node process died without the nemesis",
    "restart-failed": "a node restarted after a kill did not answer in time",
    "heal-failed": "a node did not answer in time after the heal",
    # decisions (P1: one decision per NEED)
    "decisions-differ": "clients were answered different decisions for one NEED",
    "answer-not-proposed": "a client was answered a proposal nobody made for that NEED",
    "decision-changed": "the decision read after the heal differs from an earlier answer",
    "decision-not-proposed": "the decision read after the heal is no client's proposal",
    "probe-not-proposed": "a new NEED of the heal's probes got a decision nobody proposed",
    "buckets-stuck": "a bucket decided nothing after the heal, every node up",
    # convergence, from the last poll
    "node-unreachable": "a node did not answer the last convergence poll",
    "decision-missing": "a node lacks the agreed certified decision of NEEDs",
    "plan-roots-differ": "the nodes hold different plans",
    "ledger-roots-differ": "the nodes hold different ledgers",
    "credits-in-flight": "credits still travel between buckets after convergence",
    # the plan
    "need-lost": "a NEED acknowledged to a client is not in a node's plan",
    # the ledger, on every node
    "supply-not-conserved": "total + burned differs from the genesis supply",
    "ledger-unreadable": "a node's ledger could not be read after the heal",
    "balances-differ": "nodes disagree on an account's balance, stake, unbonding or escrow",
    # the market (with `soak --market`)
    "tasks-differ": "nodes know different tasks, or a task differently, after the heal",
    "task-lost": "a task whose posting was acknowledged to a client is no task after the "
                 "heal",
    "negative-amount": "an account holds a negative amount",
    "account-total-unexplained": "an account's total is not genesis plus the acknowledged "
                                 "transfers plus some of the unknown ones (a transfer "
                                 "lost or applied twice)",
}


@dataclass(frozen=True)
class Violation:
    name: str
    text: str

    def __post_init__(self) -> None:
        assert self.name in VIOLATIONS, self.name


@dataclass(frozen=True)
class Verdict:
    violations: list[Violation]
    facts: dict[str, Any]  # counts and roots the report shows; no verdict in them


def subset_sums(values: list[int], cap: int = SUBSET_SUMS_MAX) -> set[int] | None:
    """Every sum of a subset of `values` (0 included), or None past `cap` sums."""
    sums = {0}
    for v in values:
        sums |= {s + v for s in sums}
        if len(sums) > cap:
            return None
    return sums


def convergence_violations(expected: dict[str, str], polls: Sequence[NodePoll],
                           timeout_s: float) -> list[Violation]:
    """Why the nodes, as polled, have not converged: each must answer, hold every
    expected decision (NEED -> proposal) as certified, and agree on one plan root and
    one ledger root, with nothing in flight. Empty when converged."""
    out: list[Violation] = []
    plan_roots: dict[int, str | None] = {}
    ledger_roots: dict[int, str | None] = {}
    in_flight: dict[int, int] = {}
    for i, p in enumerate(polls):
        if p.error is not None:
            out.append(Violation("node-unreachable", f"node{i}: unreachable: {p.error}"))
            continue
        plan_roots[i], ledger_roots[i], in_flight[i] = p.plan_root, p.ledger_root, p.in_flight
        lacking = [k for k, v in expected.items() if p.decisions.get(k) != v]
        if lacking:
            out.append(Violation("decision-missing", f"node{i}: {len(lacking)} NEEDs without "
                                 f"the agreed certified decision after {timeout_s:.0f} s "
                                 f"(e.g. {lacking[:3]})"))
    if len(set(plan_roots.values())) > 1:
        out.append(Violation("plan-roots-differ", f"plan roots differ: {plan_roots}"))
    if len(set(ledger_roots.values())) > 1:
        out.append(Violation("ledger-roots-differ", f"ledger roots differ: {ledger_roots}"))
    if any(in_flight.values()):
        out.append(Violation("credits-in-flight",
                             f"credits still in flight between buckets: {in_flight}"))
    return out


def final_answers(final_ops: Sequence[Op]) -> dict[str, str]:
    """NEED -> the decision read after the heal, for every NEED and probe answered."""
    return {op.info["need"]: str(op.info["answer"]) for op in final_ops if op.acknowledged}


def check(run: Run) -> Verdict:
    """Every violation of the run, in this order: the incidents the driver saw, the
    answers clients got, the DECIDEs after the heal, convergence, the ledger, the
    plan; and the facts the report shows."""
    info, history, final = run.info, run.history, run.final
    out: list[Violation] = []

    def v(name: str, text: str) -> None:
        out.append(Violation(name, text))

    # 0. What the driver saw during the run.
    for x in history.incidents:
        v(x.kind, x.text)
    ops = history.workload()
    needs = [str(op.info["need"]) for op in ops if op.kind == "need" and op.info.get("need")]
    proposals: dict[str, set[str]] = {need: set() for need in needs}
    for op in ops:
        if op.kind == "decide":
            proposals.setdefault(op.info["need"], set()).add(op.info["proposal"])
    # 1. Decisions: every answer for a NEED the same, and one of its proposals.
    answers: dict[str, set[str]] = {}
    for op in ops:
        if op.kind == "decide" and op.acknowledged:
            answers.setdefault(op.info["need"], set()).add(op.info["answer"])
    for need, told in answers.items():
        if len(told) > 1:
            v("decisions-differ",
              f"NEED {need}: clients were answered different decisions {sorted(told)}")
        if not told <= proposals.get(need, set()):
            v("answer-not-proposed", f"NEED {need}: answered {sorted(told)}, never proposed "
              f"(proposals {sorted(proposals.get(need, set()))})")
    # 2. After the heal: a final DECIDE per NEED reads its decision (or decides it now),
    # and a new NEED in each bucket must commit.
    stuck: dict[int, int] = {}
    final_ops = history.final()
    for op in final_ops:
        need = str(op.info["need"])
        if not op.acknowledged:
            b = bucket_of(Cid.parse(need).raw, info.bucket_count)
            stuck[b] = stuck.get(b, 0) + 1
            continue
        got = str(op.info["answer"])
        if op.kind == "probe":
            if got != PROBE_PROPOSAL:
                v("probe-not-proposed", f"probe NEED {need} (bucket {op.info['bucket']}) "
                  f"decided {got!r}, which nobody proposed")
            continue
        earlier = answers.get(need, set())
        if earlier and earlier != {got}:
            v("decision-changed", f"NEED {need}: clients were answered {sorted(earlier)}, "
              f"the cluster holds {got!r} after the heal (an acknowledged decision changed)")
        if got != FINAL_PROPOSAL and got not in proposals.get(need, set()):
            v("decision-not-proposed", f"NEED {need}: decided {got!r}, which no client "
              f"proposed")
    unread = sum(stuck.values())
    if stuck:
        v("buckets-stuck", f"{len(stuck)} buckets decide nothing after the heal, every node "
          f"up ({unread} DECIDEs failed on three nodes each): buckets {sorted(stuck)}")
    # 3. Convergence, as the last poll saw it.
    expected = final_answers(final_ops)
    polls = [n.poll for n in final.nodes]
    converge = convergence_violations(expected, polls, final.converge_timeout_s)
    out.extend(converge)
    # Replicas campaigning in both readings: reported, not a violation (no safety issue;
    # one fault less tolerated until the bucket's next entry).
    campaigning = sorted(f"node{n.node}/bucket{b}" for n in final.nodes
                         for b in set(n.campaigning) & set(n.campaigning_again or []))
    # 4. The ledger on every node.
    views: dict[str, list[dict[str, Any]]] = {a: [] for a in info.accounts}
    supplies = []
    for n in final.nodes:
        sup = n.ledger.supply
        if sup is not None:
            supplies.append(sup)
            if not sup["conserved"] or sup["total"] + sup["burned"] != sup["genesis_supply"]:
                v("supply-not-conserved", f"node{n.node}: supply not conserved: {sup}")
        for a in info.accounts:
            if a in n.ledger.balances:
                views[a].append(n.ledger.balances[a])
        if n.ledger.error is not None:
            v("ledger-unreadable",
              f"node{n.node}: ledger unreadable after the heal ({n.ledger.error})")
    acked: dict[str, int] = dict.fromkeys(info.accounts, 0)
    unknown: dict[str, list[int]] = {a: [] for a in info.accounts}
    for op in ops:
        if op.kind != "transfer":
            continue
        src, dst, units = op.info["from"], op.info["to"], int(op.info["units"])
        if op.result == "ok":
            acked[src] -= units
            acked[dst] += units
        elif op.result == "info":
            unknown[src].append(-units)
            unknown[dst].append(units)
    # The market moves credits too: a funded task's budget left its poster, and its
    # payouts (a refund when cancelled) reached their accounts. Every node must know
    # the same tasks (they live in the ledger) and every task a client was told it
    # posted.
    tasks_read = [n.tasks for n in final.nodes if n.ledger.error is None]
    tasks = tasks_read[0] if tasks_read else {}
    for n in final.nodes:
        if n.ledger.error is None and n.tasks != tasks:
            differ = sorted((set(n.tasks) ^ set(tasks))
                            | {k for k in set(n.tasks) & set(tasks) if n.tasks[k] != tasks[k]})
            v("tasks-differ", f"node{n.node}: its tasks differ from node"
              f"{final.nodes[0].node}'s (e.g. {differ[:3]})")
    for op in ops:
        if op.kind == "task_post" and op.acknowledged and op.info.get("need") not in tasks:
            v("task-lost", f"task {op.info.get('need')} acknowledged to node{op.node}'s "
              f"client is not a task after the heal")
    for t in tasks.values():
        if t["poster"] in acked:
            acked[t["poster"]] -= int(t["budget"])
        for p in t["payouts"]:
            if p["account"] in acked:
                acked[p["account"]] += int(p["amount"])
    unchecked = 0
    for a in info.accounts:
        rows = views[a]
        if not rows:
            continue
        fields = [tuple(int(r[k]) for k in BALANCE_FIELDS) for r in rows]
        if len(set(fields)) > 1:
            v("balances-differ", f"account {a[:12]}: nodes disagree on "
              f"balance/locked/unbonding/escrowed: {fields}")
        if any(x < 0 for x in fields[0]):
            v("negative-amount", f"account {a[:12]}: negative amount {fields[0]}")
        total = sum(fields[0])
        gap = total - info.genesis_totals[a] - acked[a]
        sums = subset_sums(unknown[a])
        if sums is None:
            unchecked += 1
        elif gap not in sums:
            v("account-total-unexplained", f"account {a[:12]}: holds {total} units; genesis "
              f"{info.genesis_totals[a]} plus acknowledged transfers and the market's "
              f"budgets and payouts {acked[a]:+} leaves "
              f"{gap:+} unexplained by any subset of the {len(unknown[a])} transfers whose "
              f"outcome is unknown")
    # 5. Every acknowledged NEED in the plan (one root everywhere makes a lookup on one
    # node stand for all).
    acked_needs = [str(op.info["need"]) for op in ops if op.kind == "need"
                   and op.acknowledged]
    looked_up = {need for n in final.nodes for need in n.plan_needs}
    for n in final.nodes:
        lost = [need for need in acked_needs if n.plan_needs.get(need) is False]
        if lost:
            v("need-lost", f"node{n.node}: {len(lost)} NEEDs acknowledged to clients are "
              f"not in its plan after the heal (e.g. {lost[:3]})")
    first_plan = next((p.plan_root for p in polls if p.error is None), None)
    first_ledger = next((p.ledger_root for p in polls if p.error is None), None)
    facts = {"final_reads": sum(1 for need in needs if need in expected), "unread": unread,
             "buckets_probed": info.bucket_count, "buckets_stuck": sorted(stuck),
             "campaigning": campaigning, "converged": not converge,
             "plan_root": first_plan, "ledger_root": first_ledger,
             "supply": supplies[0] if supplies else None, "accounts_unchecked": unchecked,
             "decided_final_read": sum(1 for p in expected.values() if p == FINAL_PROPOSAL),
             "needs_looked_up": sum(1 for need in acked_needs if need in looked_up)}
    return Verdict(out, facts)
