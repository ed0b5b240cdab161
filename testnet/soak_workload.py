"""The soak's workload: what agents do to the nodes while the nemesis runs.

Owns the client threads and what each records. One thread creates NEEDs on random
nodes; one DECIDE thread per node bids that node's own proposal for every NEED (every
NEED goes to every node's queue, so the bids compete); one ledger thread per node pays
from that node's account (transfers to other genesis accounts, stake, unstake, complete
unbonding). With the market on, one market thread per node posts funded tasks now and
then and acts on what its node shows: bids on others' open tasks, claims what it won,
commits what it holds, attests what it was drawn for. Every operation goes into the
history (`Recorder.begin` when invoked, `Recorder.add` with what the client learnt);
choices come from `random.Random` seeded per thread, the timing from the machine.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any

from .soak_history import Recorder
from .soak_nodes import Answer, Nodes

UNIT = 1_000_000  # testnet genesis: smallest units per credit
DECIDE_TIMEOUT_S = 8.0  # what each DECIDE / ledger request asks the node to wait
DECIDE_RETRY_S = 25.0  # an agent retries a DECIDE (idempotent) for this long
RETRY_PAUSE_S = 1.0
SENDS_MAX = 3  # a request that surely never arrived is sent at most this many times
# The market: a task of 3 credits with a verify bounty of 0.6 (within the simple cap),
# posted by each node's thread with this chance every round of looking (~1 s); leases
# long and heartbeats rare, so that no worker misses one within a soak.
TASK_POST_P = 0.08
TASK_BUDGET, TASK_BOUNTY = "3", "0.6"
TASK_LEASE_MS, TASK_HEARTBEAT_MS = 30 * 60_000, 10 * 60_000
TASK_RESULT = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


class Workload:
    def __init__(self, net: Nodes, rec: Recorder, accounts: list[str], seed: int,
                 stop: threading.Event, market: bool = False) -> None:
        self.market = market
        self.net = net
        self.rec = rec
        self.accounts = accounts
        self.n = len(accounts)
        self.seed = seed
        self.stop = stop
        self.queues: list[queue.Queue[str]] = [queue.Queue() for _ in range(self.n)]
        self.needs_created = 0

    def threads(self) -> list[threading.Thread]:
        ts = [threading.Thread(target=self.need_loop, name="needs", daemon=True)]
        ts += [threading.Thread(target=self.decide_loop, args=(i,), name=f"decide{i}",
                                daemon=True) for i in range(self.n)]
        ts += [threading.Thread(target=self.ledger_loop, args=(i,), name=f"ledger{i}",
                                daemon=True) for i in range(self.n)]
        if self.market:
            ts += [threading.Thread(target=self.market_loop, args=(i,), name=f"market{i}",
                                    daemon=True) for i in range(self.n)]
        return ts

    def need_loop(self) -> None:
        rng = random.Random(f"{self.seed}/needs")
        k = 0
        while not self.stop.is_set():
            i = rng.randrange(self.n)
            body = {"class": rng.choice(["simple", "complex", "critical"]),
                    # at most genesis' bounty_cap_simple, or the policy refuses it
                    "budget": rng.randint(1, 10) * UNIT, "title": f"soak {self.seed}/{k}"}
            op = self.rec.begin("need", i, {"title": body["title"]})
            k += 1
            try:
                for attempt in range(1, SENDS_MAX + 1):
                    op.attempts = attempt
                    try:
                        doc = self.net.call(i, "POST", "/plan/tasks", body)
                        break
                    except Answer as exc:
                        if not exc.definite or attempt == SENDS_MAX:
                            raise
                        i = (i + 1) % self.n  # another node, as an agent would
                        op.node = i
                need = str(doc["need_id"])
                op.outcome = "ok" if op.attempts == 1 else "retried"
                op.info["need"] = need
                self.needs_created += 1
                for q in self.queues:
                    q.put(need)
            except Answer as exc:
                # A timeout or a 5xx may still have published it: unknown, not failed.
                op.outcome = "failed" if exc.definite else "indeterminate"
                op.reason = exc.reason
            op.end_s = self.rec.now()
            self.rec.add(op)
            self.stop.wait(rng.uniform(0.15, 0.45))

    def decide_loop(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                need = self.queues[i].get(timeout=0.5)
            except queue.Empty:
                continue
            proposal = f"node{i}-{need[-6:]}"
            op = self.rec.begin("decide", i, {"need": need, "proposal": proposal})
            deadline = time.monotonic() + DECIDE_RETRY_S
            maybe_sent = False  # an attempt that may have reached the node
            while True:
                try:
                    d = self.net.call(i, "POST", "/decide", {
                        "need_id": need, "proposal_id": proposal,
                        "timeout_s": DECIDE_TIMEOUT_S})
                    op.outcome = "ok" if op.attempts == 1 else "retried"
                    op.info["answer"] = d["proposal_id"]
                    op.info["index"] = d.get("index")
                    break
                except Answer as exc:
                    # DECIDE is idempotent: an agent retries on anything but a 4xx. Given
                    # up after a timeout or a 5xx, its proposal may still have committed.
                    maybe_sent = maybe_sent or not exc.definite
                    if (exc.definite and exc.status) or time.monotonic() > deadline \
                            or self.stop.is_set():
                        op.outcome = "indeterminate" if maybe_sent else "failed"
                        op.reason = exc.reason
                        break
                    op.attempts += 1
                    time.sleep(RETRY_PAUSE_S)
            op.end_s = self.rec.now()
            self.rec.add(op)

    def ledger_loop(self, i: int) -> None:
        rng = random.Random(f"{self.seed}/ledger{i}")
        me = self.accounts[i]
        while not self.stop.is_set():
            kind = rng.choices(["transfer", "stake", "unstake", "complete_unbonding"],
                               weights=[70, 10, 10, 10])[0]
            info: dict[str, Any] = {}
            body: dict[str, Any]
            if kind == "transfer":
                to = rng.choice([a for a in self.accounts if a != me])
                cents = rng.randint(1, 500)
                info = {"from": me, "to": to, "units": cents * UNIT // 100}
                path, body = "/ledger/transfer", {"to": to, "amount": f"{cents / 100:.2f}"}
            elif kind in ("stake", "unstake"):
                credits = rng.randint(1, 20)
                info = {"units": credits * UNIT}
                path = "/stake/add" if kind == "stake" else "/stake/remove"
                body = {"amount": str(credits)}
            else:
                path, body = "/stake/complete-unbonding", {}
            body["timeout_s"] = DECIDE_TIMEOUT_S
            op = self.rec.begin(kind, i, info)
            while True:
                try:
                    doc = self.net.call(i, "POST", path, body)
                    op.outcome = "ok" if op.attempts == 1 else "retried"
                    op.info["op_id"] = doc.get("op_id")
                    break
                except Answer as exc:
                    if exc.status == 409:
                        code = exc.detail.get("code", "") if isinstance(exc.detail, dict) \
                            else ""
                        op.outcome, op.reason = "refused", f"409 {code}"
                    elif exc.definite and not exc.status and op.attempts < SENDS_MAX \
                            and not self.stop.is_set():
                        # The request never reached the node: safe to send again.
                        op.attempts += 1
                        time.sleep(RETRY_PAUSE_S)
                        continue
                    elif exc.definite:
                        op.outcome, op.reason = "failed", exc.reason
                    else:
                        # A timeout or a 503: the transfer may still commit later.
                        op.outcome, op.reason = "indeterminate", exc.reason
                    break
            op.end_s = self.rec.now()
            self.rec.add(op)
            self.stop.wait(rng.uniform(0.1, 0.4))

    # -- the market --

    def market_loop(self, i: int) -> None:
        rng = random.Random(f"{self.seed}/market{i}")
        me = self.accounts[i]
        k = 0
        while not self.stop.is_set():
            if rng.random() < TASK_POST_P:
                title = f"soak task {self.seed}/{i}/{k}"
                k += 1
                self._task_op(i, "task_post", "/tasks", {
                    "class": "simple", "budget": TASK_BUDGET, "verify_bounty": TASK_BOUNTY,
                    "bid_window_ms": 4_000, "title": title}, {"title": title})
            try:
                listed = self.net.call(i, "GET", "/tasks")["tasks"]
            except Answer:
                self.stop.wait(1.0)
                continue
            for brief in listed:
                if self.stop.is_set():
                    break
                if brief["state"] in ("CANCELLED", "FINALIZED"):
                    continue
                try:
                    t = self.net.call(i, "GET", f"/tasks/{brief['need_id']}")
                except Answer:
                    continue
                self._act_on(i, me, t, rng)
            self.stop.wait(rng.uniform(0.5, 1.0))

    def _act_on(self, i: int, me: str, t: dict[str, Any], rng: random.Random) -> None:
        need, state = t["need_id"], t["state"]
        base = f"/tasks/{need}"
        info = {"need": need, "epoch": t["epoch"]}
        if state == "OPEN" and t["poster"] != me and me not in t["excluded"] \
                and all(b["bidder"] != me for b in t["bids"]):
            self._task_op(i, "task_bid", base + "/bid", {
                "cost": f"{rng.randint(10, 24) / 10:.1f}", "eta_ms": rng.randint(1, 60) * 1000},
                info)
        elif state == "DECIDED" and t["winner"] == me:
            self._task_op(i, "task_claim", base + "/claim", {
                "lease_ttl_ms": TASK_LEASE_MS, "heartbeat_interval_ms": TASK_HEARTBEAT_MS},
                info)
        elif state == "CLAIMED" and t["lease"] and t["lease"]["worker"] == me:
            self._task_op(i, "task_commit", base + "/commit", {"result": TASK_RESULT}, info)
        elif state == "COMMITTED" and t["commit"] and me in t["commit"]["committee"] \
                and all(v["member"] != me for v in t["commit"]["verdicts"]):
            self._task_op(i, "task_attest", base + "/attest", {"verdict": "valid"}, info)

    def _task_op(self, i: int, kind: str, path: str, body: dict[str, Any],
                 info: dict[str, Any]) -> None:
        """One market command, recorded: `ok` with what the node answered, `refused`
        with the rule's code (409), `indeterminate` when it may still apply."""
        op = self.rec.begin(kind, i, dict(info))
        body = {**body, "timeout_s": DECIDE_TIMEOUT_S}
        try:
            doc = self.net.call(i, "POST", path, body)
            op.outcome = "ok"
            if kind == "task_post":
                op.info["need"] = str(doc["need_id"])
        except Answer as exc:
            if exc.status == 409:
                code = exc.detail.get("code", "") if isinstance(exc.detail, dict) else ""
                op.outcome, op.reason = "refused", f"409 {code}"
            elif exc.definite:
                op.outcome, op.reason = "failed", exc.reason
            else:
                op.outcome, op.reason = "indeterminate", exc.reason
        op.end_s = self.rec.now()
        self.rec.add(op)
