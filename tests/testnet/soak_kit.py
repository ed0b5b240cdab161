"""Made-up soak runs for the checker's tests: `Story` writes what clients and the
nemesis saw, and a final state of three nodes that agrees with it unless a test breaks
it; `a_clean_story` is a run with every kind of operation and outcome that passes.
"""

from __future__ import annotations

from typing import Any

from swarm.protocol.cid import dag_cbor_cid
from swarm.testnet.soak_capture import probe_needs
from swarm.testnet.soak_check import FINAL_PROPOSAL, PROBE_PROPOSAL
from swarm.testnet.soak_history import (
    Fault,
    FinalState,
    History,
    Incident,
    NodeFinal,
    NodeLedger,
    NodePoll,
    Op,
    Run,
    RunInfo,
)

NODES = 3
BUCKETS = 4
ACCOUNTS = ["a0" * 32, "b1" * 32, "c2" * 32]
GENESIS_UNITS = 1_000_000_000
FIELDS = ("balance", "locked", "unbonding", "escrowed")


def need_id(k: int) -> str:
    return str(dag_cbor_cid(f"made-up need {k}".encode()))


class Story:
    """A run being made up: what clients were told, and the state the nodes end in. The
    final state follows the acknowledged operations unless a test says otherwise."""

    def __init__(self) -> None:
        self.t = 0.0
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self.incidents: list[Incident] = []
        self.balances = {a: dict.fromkeys(FIELDS, 0) | {"balance": GENESIS_UNITS}
                         for a in ACCOUNTS}
        self.plan: list[str] = []  # NEEDs every node's plan holds
        self.decisions: dict[str, str] = {}  # what every node holds certified
        self.tasks: dict[str, dict[str, Any]] = {}  # what every node's ledger holds

    def _op(self, kind: str, node: int, outcome: str, **info: Any) -> Op:
        op = Op(kind, node, self.t, self.t + 0.05, outcome=outcome, info=info,
                process=f"{kind}{node}")
        self.t += 0.1
        self.ops.append(op)
        return op

    def need(self, k: int, node: int = 0, outcome: str = "ok") -> str:
        need = need_id(k)
        if outcome in ("ok", "retried"):
            self._op("need", node, outcome, title=f"t{k}", need=need)
            self.plan.append(need)
        else:
            self._op("need", node, outcome, title=f"t{k}")
        return need

    def decide(self, need: str, node: int, answer: str | None,
               outcome: str = "ok") -> None:
        info: dict[str, Any] = {"need": need, "proposal": f"node{node}-{need[-6:]}"}
        if answer is not None:
            info |= {"answer": answer, "index": 7}
        self._op("decide", node, outcome, **info)

    def transfer(self, src: int, dst: int, units: int, outcome: str = "ok",
                 applied: int | None = None) -> None:
        """`applied`: how many times the ledger applied it (default: once if
        acknowledged, else never)."""
        self._op("transfer", src, outcome, **{"from": ACCOUNTS[src], "to": ACCOUNTS[dst],
                                              "units": units, "op_id": "ab" * 16})
        times = applied if applied is not None else int(outcome in ("ok", "retried"))
        self.balances[ACCOUNTS[src]]["balance"] -= units * times
        self.balances[ACCOUNTS[dst]]["balance"] += units * times

    def stake(self, node: int, units: int) -> None:
        """Staking moves credits inside an account: its total does not change."""
        self._op("stake", node, "ok", units=units, op_id="cd" * 16)
        self.balances[ACCOUNTS[node]]["balance"] -= units
        self.balances[ACCOUNTS[node]]["locked"] += units

    def task(self, k: int, poster: int, budget: int, payouts: list[tuple[int, int, str]],
             outcome: str = "ok", state: str = "FINALIZED") -> str:
        """A task posted by `poster` and known to every node after the heal with these
        payouts (account, units, kind); the budget leaves the poster, the payouts
        reach their accounts."""
        need = need_id(1000 + k)
        info = {"title": f"task {k}"} | ({"need": need} if outcome == "ok" else {})
        self._op("task_post", poster, outcome, **info)
        self.tasks[need] = {"state": state, "epoch": 0, "paid": bool(payouts),
                            "poster": ACCOUNTS[poster], "budget": budget,
                            "payouts": [{"account": ACCOUNTS[a], "amount": u, "kind": kind}
                                        for a, u, kind in payouts]}
        self.balances[ACCOUNTS[poster]]["balance"] -= budget
        for a, units, _ in payouts:
            self.balances[ACCOUNTS[a]]["balance"] += units
        return need

    def heal_and_read(self, stuck: frozenset[int] = frozenset()) -> None:
        """The final DECIDEs: every NEED reads its decision (decided now if nobody's
        had committed), every bucket decides a probe unless stuck."""
        answered: dict[str, str] = {}
        for op in self.ops:
            if op.kind == "decide" and op.acknowledged:
                answered.setdefault(op.info["need"], op.info["answer"])
        for k, need in enumerate(self.plan):
            got = answered.get(need, FINAL_PROPOSAL)
            self._op("final_read", k % NODES, "ok", need=need, proposal=FINAL_PROPOSAL,
                     answer=got)
            self.decisions[need] = got
        for b, need in probe_needs(1, BUCKETS).items():
            if b in stuck:
                op = self._op("probe", b % NODES, "indeterminate", need=need,
                              proposal=PROBE_PROPOSAL, bucket=b)
                op.reason, op.attempts = "503 submit_failed", 3
                continue
            self._op("probe", b % NODES, "ok", need=need, proposal=PROBE_PROPOSAL,
                     bucket=b, answer=PROBE_PROPOSAL)
            self.decisions[need] = PROBE_PROPOSAL

    def final_nodes(self) -> list[NodeFinal]:
        total = sum(sum(v.values()) for v in self.balances.values())
        total += sum(t["budget"] for t in self.tasks.values() if not t["payouts"])  # held
        supply = {"total": total, "burned": 0, "genesis_supply": GENESIS_UNITS * 3,
                  "in_flight": 0, "conserved": total == GENESIS_UNITS * 3,
                  "unit_per_credit": 1_000_000}
        acked = [op.info["need"] for op in self.ops if op.kind == "need" and op.acknowledged]
        return [NodeFinal(
            node=i,
            poll=NodePoll(plan_root="p" * 64, ledger_root="l" * 64, in_flight=0,
                          decisions=dict(self.decisions)),
            ledger=NodeLedger(supply=dict(supply),
                              balances={a: dict(v) for a, v in self.balances.items()}),
            plan_needs={need: need in self.plan for k, need in enumerate(acked)
                        if k % NODES == i},
            stats={"rss_start_mb": 130.0, "rss_end_mb": 150.0, "gc": None,
                   "tracebacks": []},
            tasks={k: dict(v) for k, v in self.tasks.items()}) for i in range(NODES)]

    def run(self, nodes: list[NodeFinal] | None = None) -> Run:
        info = RunInfo(seed=1, nodes=NODES, minutes=0.5, t0_unix=1.7e9, bucket_count=BUCKETS,
                       accounts=list(ACCOUNTS),
                       genesis_totals=dict.fromkeys(ACCOUNTS, GENESIS_UNITS))
        return Run(info, History(list(self.ops), list(self.faults), list(self.incidents)),
                   FinalState(nodes if nodes is not None else self.final_nodes(),
                              converge_timeout_s=180.0, converge_s=1.4, wall_s=40.0))


def a_clean_story() -> Story:
    """Two NEEDs, competing DECIDEs (one retried), transfers acknowledged, refused and
    unknown, a stake, a kill and a freeze."""
    s = Story()
    n1, n2 = s.need(1, node=0), s.need(2, node=1)
    s.need(3, node=2, outcome="failed")
    s.decide(n1, 0, "node1-" + n1[-6:])
    s.decide(n1, 1, "node1-" + n1[-6:], outcome="retried")
    s.decide(n1, 2, None, outcome="failed")
    s.decide(n2, 2, "node2-" + n2[-6:])
    s.transfer(0, 1, 250_000)
    s.transfer(1, 2, 40_000, outcome="retried")
    s.transfer(2, 0, 999, outcome="refused")
    s.transfer(2, 1, 5_000, outcome="indeterminate", applied=1)
    s.transfer(0, 2, 7_000, outcome="indeterminate", applied=0)
    s.stake(1, 3_000_000)
    s.faults += [Fault("kill", 1, 0.1, 0.6, 3.1), Fault("stop", 2, 0.7, 0.9, 1.5)]
    s.heal_and_read()
    return s
