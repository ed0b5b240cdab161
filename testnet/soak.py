"""The chaos soak: real node processes, a workload of agents, a seeded nemesis, checks.

Owns `swarm-testnet soak` (Jepsen-style). It starts N `swarm-node` processes
(`cluster.up`), runs for M minutes a workload from several client threads -- NEEDs
created on random nodes, competing DECIDEs for each NEED submitted from every node at
once, ledger transfers between the genesis accounts, stake / unstake /
complete-unbonding -- and records every answer each client got. Meanwhile a nemesis
drawn from `random.Random(seed)` kills nodes with SIGKILL and restarts them, and freezes
nodes with SIGSTOP for 1-8 s (a long GC pause or a stalled machine: the peers declare
it dead, its buckets fail over, it comes back believing it still leads), never more
than a minority of the nodes at once, in storms separated by calm. Then it heals
everything, waits for convergence
and checks:

* one plan root and one ledger root on every node;
* every NEED decided once, the same on every node, equal to every answer any client
  got for it, and one of the proposals submitted for it (a final DECIDE after the heal
  reads the committed decision);
* every bucket live after the heal: a DECIDE of a new NEED in each bucket commits;
* the ledger: every node's supply is conserved with nothing in flight; every account's
  balance, stake and unbonding agree on every node, none negative; each account's total
  equals genesis plus the transfers acknowledged to clients plus some subset of the
  transfers whose outcome the client never learnt (a timeout) -- an acknowledged
  transfer lost, or one applied twice, shows up here;
* no node died other than by the nemesis; the tracebacks in the node logs are reported.

The nemesis' choices (which node, which fault, how long) come from the seed; the
timing of the workload against them does not (real processes, a shared machine), so a
seed reproduces the schedule, not the exact interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from swarm.node.home import HomeError, read_api, read_token
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid

from . import cluster

UNIT = 1_000_000  # testnet genesis: smallest units per credit
DECIDE_TIMEOUT_S = 8.0  # what each DECIDE / ledger request asks the node to wait
HTTP_TIMEOUT_S = 15.0  # the client's own limit (a frozen node never answers)
RECOVERY_S = 2.0  # an op this soon after a fault ended still counts as "during faults"


class SoakError(Exception):
    """The soak could not run (the testnet did not start); the message says why."""


@dataclass
class Op:
    """One client operation and everything the client learnt about it."""

    kind: str  # need | decide | transfer | stake | unstake | complete_unbonding
    node: int
    start: float
    end: float = 0.0
    outcome: str = ""  # ok | retried | refused | failed | indeterminate
    reason: str = ""
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    kind: str  # kill | stop
    node: int
    start: float
    end: float = 0.0  # when the node was back (answering, or CONT sent)
    planned_s: float = 0.0


class Answer(Exception):
    """A request's failure, classified: `definite` is True when the request surely did
    not take effect (the connection was refused, or a 4xx)."""

    def __init__(self, reason: str, status: int = 0, definite: bool = False,
                 detail: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.definite = definite
        self.detail = detail


class Cluster:
    """The running members, shared by the threads; restarts swap a member in place."""

    def __init__(self, directory: Path, members: list[cluster.Member]) -> None:
        self.directory = directory
        self.members = members
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.local = threading.local()

    def member(self, i: int) -> cluster.Member:
        with self.lock:
            return self.members[i]

    def restart(self, i: int) -> cluster.Member:
        old = self.member(i)
        (old.home / "api.json").unlink(missing_ok=True)
        stdio = (old.home / "stdio.log").open("ab")
        proc = subprocess.Popen([*cluster.node_cmd(), "start", "--home", str(old.home)],
                                stdout=stdio, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        stdio.close()
        new = cluster.Member(i, old.home, proc.pid, old.addr)
        with self.lock:
            self.members[i] = new
            self.procs[i] = proc
            cluster.save_state(self.directory, self.members)
        return new

    def _client(self, i: int) -> tuple[str, httpx.Client]:
        cache: dict[int, tuple[int, str, httpx.Client]] = self.local.__dict__.setdefault(
            "clients", {})
        m = self.member(i)
        hit = cache.get(i)
        if hit is not None and hit[0] == m.pid:
            return hit[1], hit[2]
        if hit is not None:
            hit[2].close()
            del cache[i]
        try:
            url = str(read_api(m.home)["url"]).rstrip("/")
            token = read_token(m.home)
        except (HomeError, OSError, KeyError, ValueError):
            raise Answer("unreachable (no api.json)", definite=True) from None
        c = httpx.Client(headers={"authorization": f"Bearer {token}"},
                         timeout=HTTP_TIMEOUT_S)
        cache[i] = (m.pid, url, c)
        return url, c

    def _drop(self, i: int) -> None:
        cache = self.local.__dict__.get("clients", {})
        hit = cache.pop(i, None)
        if hit is not None:
            hit[2].close()

    def call(self, i: int, method: str, path: str, body: Any = None,
             timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        url, c = self._client(i)
        try:
            r = c.request(method, url + path, json=body, timeout=timeout_s)
        except httpx.ConnectError:
            self._drop(i)
            raise Answer("unreachable (connection refused)", definite=True) from None
        except httpx.TimeoutException:
            self._drop(i)
            raise Answer("client timeout (no answer)") from None
        except httpx.HTTPError as exc:
            self._drop(i)
            raise Answer(f"connection lost ({type(exc).__name__})") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            code = detail.get("code", "") if isinstance(detail, dict) else ""
            raise Answer(f"{r.status_code} {code}".strip(), r.status_code,
                         definite=400 <= r.status_code < 500 and r.status_code != 408,
                         detail=detail)
        return r.json() if path != "/metrics" else r.text


class Recorder:
    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self.violations: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


# -- the workload ---------------------------------------------------------------------

class Workload:
    def __init__(self, net: Cluster, rec: Recorder, accounts: list[str], seed: int,
                 stop: threading.Event) -> None:
        self.net = net
        self.rec = rec
        self.accounts = accounts
        self.n = len(accounts)
        self.seed = seed
        self.stop = stop
        self.queues: list[queue.Queue[str]] = [queue.Queue() for _ in range(self.n)]
        self.needs: list[str] = []
        self.proposals: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def threads(self) -> list[threading.Thread]:
        ts = [threading.Thread(target=self.need_loop, name="needs", daemon=True)]
        ts += [threading.Thread(target=self.decide_loop, args=(i,), name=f"decide{i}",
                                daemon=True) for i in range(self.n)]
        ts += [threading.Thread(target=self.ledger_loop, args=(i,), name=f"ledger{i}",
                                daemon=True) for i in range(self.n)]
        return ts

    def need_loop(self) -> None:
        rng = random.Random(f"{self.seed}/needs")
        k = 0
        while not self.stop.is_set():
            i = rng.randrange(self.n)
            op = Op("need", i, self.rec.now())
            body = {"class": rng.choice(["simple", "complex", "critical"]),
                    # at most genesis' bounty_cap_simple, or the policy refuses it
                    "budget": rng.randint(1, 10) * UNIT, "title": f"soak {self.seed}/{k}"}
            k += 1
            try:
                for attempt in range(1, 4):
                    op.attempts = attempt
                    try:
                        doc = self.net.call(i, "POST", "/needs", body)
                        break
                    except Answer as exc:
                        if not exc.definite or attempt == 3:
                            raise
                        i = (i + 1) % self.n  # another node, as an agent would
                        op.node = i
                need = str(doc["need_id"])
                op.outcome = "ok" if op.attempts == 1 else "retried"
                op.info["need"] = need
                with self.lock:
                    self.needs.append(need)
                    self.proposals[need] = set()
                for q in self.queues:
                    q.put(need)
            except Answer as exc:
                op.outcome, op.reason = "failed", exc.reason
            op.end = self.rec.now()
            self.rec.add(op)
            self.stop.wait(rng.uniform(0.15, 0.45))

    def decide_loop(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                need = self.queues[i].get(timeout=0.5)
            except queue.Empty:
                continue
            proposal = f"node{i}-{need[-6:]}"
            with self.lock:
                self.proposals[need].add(proposal)
            op = Op("decide", i, self.rec.now(), info={"need": need, "proposal": proposal})
            deadline = time.monotonic() + 25
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
                    # DECIDE is idempotent: an agent retries on anything but a 4xx.
                    if (exc.definite and exc.status) or time.monotonic() > deadline \
                            or self.stop.is_set():
                        op.outcome, op.reason = "failed", exc.reason
                        break
                    op.attempts += 1
                    time.sleep(1.0)
            op.end = self.rec.now()
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
            op = Op(kind, i, self.rec.now(), info=info)
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
                    elif exc.definite and not exc.status and op.attempts < 3 \
                            and not self.stop.is_set():
                        # The request never reached the node: safe to send again.
                        op.attempts += 1
                        time.sleep(1.0)
                        continue
                    elif exc.definite:
                        op.outcome, op.reason = "failed", exc.reason
                    else:
                        # A timeout or a 503: the transfer may still commit later.
                        op.outcome, op.reason = "indeterminate", exc.reason
                    break
            op.end = self.rec.now()
            self.rec.add(op)
            self.stop.wait(rng.uniform(0.1, 0.4))


# -- the nemesis ----------------------------------------------------------------------

class Nemesis:
    """kill -9 + restart, SIGSTOP + SIGCONT; at most a minority of the nodes down."""

    def __init__(self, net: Cluster, rec: Recorder, n: int, seed: int,
                 stop: threading.Event) -> None:
        self.net = net
        self.rec = rec
        self.n = n
        self.rng = random.Random(seed)
        self.stop = stop
        self.max_down = (n - 1) // 2
        # node -> (fault, phase, due): phase "down" until due, then "restarting" (kill)
        self.active: dict[int, tuple[Fault, str, float]] = {}
        self.lock = threading.Lock()
        self.killed_pids: set[int] = set()

    def down_now(self) -> dict[int, str]:
        with self.lock:
            return {i: f.kind for i, (f, _, _) in self.active.items()}

    def run(self) -> None:
        """Storms of 20-40 s, in which a new fault follows 1-5 s after the last one as
        long as fewer than `max_down` nodes are down (so faults overlap and nodes come
        back into a cluster that moved on), each followed by 8-15 s of calm once every
        node is back, so that latency under faults can be told from calm latency."""
        storm_end = self.rec.now() + self.rng.uniform(20.0, 40.0)
        next_at = self.rec.now() + self.rng.uniform(2.0, 4.0)
        calm = False
        while not self.stop.is_set():
            self._advance(self.rec.now())
            now = self.rec.now()  # after the restarts and probes _advance may have made
            if not calm and now >= storm_end:
                calm, next_at = True, float("inf")
            if calm:
                if self.active:
                    next_at = float("inf")
                elif next_at == float("inf"):  # every node is back: calm starts now
                    next_at = now + self.rng.uniform(8.0, 15.0)
                elif now >= next_at:
                    calm = False
                    storm_end = now + self.rng.uniform(20.0, 40.0)
            if not calm and now >= next_at and len(self.active) < self.max_down:
                healthy = [i for i in range(self.n) if i not in self.active]
                node = self.rng.choice(healthy)
                kind = self.rng.choice(["kill", "stop"])
                planned = self.rng.uniform(2.0, 6.0) if kind == "kill" \
                    else self.rng.uniform(1.0, 8.0)
                self._inject(kind, node, planned, now)
                next_at = now + self.rng.uniform(1.0, 5.0)
            self.stop.wait(0.1)

    def _inject(self, kind: str, node: int, planned: float, now: float) -> None:
        m = self.net.member(node)
        if not m.alive():
            return  # the monitor reports and revives it
        f = Fault(kind, node, now, planned_s=round(planned, 2))
        with self.lock:
            if kind == "kill":
                self.killed_pids.add(m.pid)
                os.kill(m.pid, signal.SIGKILL)
            else:
                os.kill(m.pid, signal.SIGSTOP)
            self.active[node] = (f, "down", now + planned)
        with self.rec.lock:
            self.rec.faults.append(f)

    def _advance(self, now: float) -> None:
        with self.lock:
            items = list(self.active.items())
        for node, (f, phase, due) in items:
            if phase == "down" and now >= due:
                m = self.net.member(node)
                if f.kind == "stop":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(m.pid, signal.SIGCONT)
                    f.end = self.rec.now()
                    with self.lock:
                        del self.active[node]
                else:
                    with contextlib.suppress(cluster.TestnetError):
                        cluster.wait_until(lambda m=m: not m.alive(), 10,  # type: ignore[misc]
                                           f"node{node} to die")
                    self.net.restart(node)
                    with self.lock:
                        self.active[node] = (f, "restarting", now + 90)
            elif phase == "restarting":
                m = self.net.member(node)
                if cluster.status_of(m) is not None:
                    f.end = self.rec.now()
                    with self.lock:
                        del self.active[node]
                elif now >= due or not m.alive():
                    self.rec.violation(f"node{node} did not come back after a restart "
                                       f"(see {m.home / 'stdio.log'})")
                    f.end = self.rec.now()
                    with self.lock:
                        del self.active[node]

    def heal(self) -> None:
        """CONT every frozen node, restart every killed one, wait until all answer."""
        with self.lock:
            items = list(self.active.items())
        for node, (f, phase, _) in items:
            m = self.net.member(node)
            if f.kind == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.pid, signal.SIGCONT)
            elif phase == "down":
                with contextlib.suppress(cluster.TestnetError):
                    cluster.wait_until(lambda m=m: not m.alive(), 10,  # type: ignore[misc]
                                       f"node{node} to die")
                self.net.restart(node)
        for node, (f, _, _) in items:
            m = self.net.member(node)
            try:
                cluster.wait_until(lambda m=m: cluster.status_of(m) is not None, 90,  # type: ignore[misc]
                                   f"node{node} to answer after the heal")
            except cluster.TestnetError as exc:
                self.rec.violation(str(exc))
            f.end = self.rec.now()
        with self.lock:
            self.active.clear()


def monitor(net: Cluster, nemesis: Nemesis, rec: Recorder, stop: threading.Event) -> None:
    """A node that dies when the nemesis did not kill it is a crash: report, revive."""
    while not stop.wait(1.0):
        down = nemesis.down_now()
        for i in range(nemesis.n):
            m = net.member(i)
            if i in down or m.pid in nemesis.killed_pids or m.alive():
                continue
            proc = net.procs.get(i)
            code = proc.poll() if proc is not None else None
            rec.violation(f"node{i} (pid {m.pid}) died without the nemesis"
                          f"{f' (exit code {code})' if code is not None else ''}; last "
                          f"lines of {m.home / 'stdio.log'}: {tail(m.home / 'stdio.log')}")
            net.restart(i)


def tail(path: Path, lines: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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


def percentiles(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    s = sorted(samples)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 1)

    return {"n": len(s), "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99)}


def overlaps_fault(op: Op, faults: list[Fault]) -> bool:
    return any(op.start <= (f.end or op.end) + RECOVERY_S and op.end >= f.start
               for f in faults)


def subset_sums(values: list[int], cap: int = 200_000) -> set[int] | None:
    sums = {0}
    for v in values:
        sums |= {s + v for s in sums}
        if len(sums) > cap:
            return None
    return sums


# -- the checks -----------------------------------------------------------------------

def wait_converged(net: Cluster, n: int, needs: dict[str, str], timeout_s: float,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Until every node holds every NEED's certified decision, one plan root, one ledger
    root and nothing in flight; returns what was last seen either way."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while True:
        seen = {"plan_roots": {}, "ledger_roots": {}, "in_flight": {}, "missing": {}}
        for i in range(n):
            try:
                st = net.call(i, "GET", "/status")
                sup = net.call(i, "GET", "/ledger/supply")
                got = {d["need_id"]: d["proposal_id"]
                       for d in net.call(i, "GET", "/decisions")["decisions"]}
            except Answer as exc:
                seen["missing"][i] = f"unreachable: {exc.reason}"
                continue
            seen["plan_roots"][i] = st["plan_root"]
            seen["ledger_roots"][i] = st["ledger_root"]
            seen["in_flight"][i] = sup["in_flight"]
            lacking = [k for k, v in needs.items() if got.get(k) != v]
            if lacking:
                seen["missing"][i] = lacking
        ok = (not seen["missing"] and len(set(seen["plan_roots"].values())) == 1
              and len(set(seen["ledger_roots"].values())) == 1
              and not any(seen["in_flight"].values()))
        if ok or time.monotonic() > deadline:
            seen["converged"] = ok
            return seen
        short = sum(len(x) if isinstance(x, list) else 1 for x in seen["missing"].values())
        progress(f"converging: {short} "
                 f"decisions missing, {len(set(seen['plan_roots'].values()))} plan roots, "
                 f"{len(set(seen['ledger_roots'].values()))} ledger roots")
        time.sleep(1.0)


def check(net: Cluster, rec: Recorder, work: Workload, accounts: list[str],
          genesis_totals: dict[str, int], progress: Callable[[str], None],
          converge_s: float) -> dict[str, Any]:
    n = len(accounts)
    v = rec.violation
    # 1. Decisions: every answer for a NEED the same, and one of its proposals.
    answers: dict[str, set[str]] = {}
    for op in rec.ops:
        if op.kind == "decide" and op.outcome in ("ok", "retried"):
            answers.setdefault(op.info["need"], set()).add(op.info["answer"])
    for need, told in answers.items():
        if len(told) > 1:
            v(f"NEED {need}: clients were answered different decisions {sorted(told)}")
        if not told <= work.proposals.get(need, set()):
            v(f"NEED {need}: answered {sorted(told)}, never proposed "
              f"(proposals {sorted(work.proposals.get(need, set()))})")
    # 2. After the heal every bucket must decide again: a fresh NEED in each bucket, and
    # a final DECIDE per NEED of the run, which reads the committed decision (or decides
    # it now); in parallel, each tried on up to three nodes.
    bucket_count = int(net.call(0, "GET", "/raft/status")["bucket_count"])
    probes = probe_needs(work.seed, bucket_count)
    progress(f"final reads: {len(work.needs)} NEEDs and one new NEED in each of "
             f"{bucket_count} buckets")
    targets = [(need, "final-read") for need in work.needs] + \
        [(need, "probe") for need in probes.values()]

    def final_decide(k: int) -> str | None:
        need, proposal = targets[k]
        for attempt in range(3):
            try:
                d = net.call((k + attempt) % n, "POST", "/decide", {
                    "need_id": need, "proposal_id": proposal, "timeout_s": 8})
                return str(d["proposal_id"])
            except Answer:
                time.sleep(0.5)
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(final_decide, range(len(targets))))
    final: dict[str, str] = {}
    stuck: dict[int, int] = {}
    bucket_of_probe = {need: b for b, need in probes.items()}
    for (need, _), got in zip(targets, results, strict=True):
        if got is None:
            b = bucket_of(Cid.parse(need).raw, bucket_count)
            stuck[b] = stuck.get(b, 0) + 1
            continue
        final[need] = got
        if need in bucket_of_probe:
            if got != "probe":
                v(f"probe NEED {need} (bucket {bucket_of_probe[need]}) decided {got!r}, "
                  f"which nobody proposed")
            continue
        earlier = answers.get(need, set())
        if earlier and earlier != {got}:
            v(f"NEED {need}: clients were answered {sorted(earlier)}, the cluster holds "
              f"{got!r} after the heal (an acknowledged decision changed)")
        if got != "final-read" and got not in work.proposals.get(need, set()):
            v(f"NEED {need}: decided {got!r}, which no client proposed")
    unread = sum(stuck.values())
    if stuck:
        v(f"{len(stuck)} buckets decide nothing after the heal, every node up "
          f"({unread} DECIDEs failed on three nodes each): buckets {sorted(stuck)}")
    # 3. Convergence: certified everywhere, one plan root, one ledger root.
    progress("waiting for convergence")
    t0 = time.monotonic()
    seen = wait_converged(net, n, final, converge_s, progress)
    converge_took = round(time.monotonic() - t0, 1)
    if not seen["converged"]:
        for i, what in seen["missing"].items():
            if isinstance(what, list):
                v(f"node{i}: {len(what)} NEEDs without the agreed certified decision "
                  f"after {converge_s:.0f} s (e.g. {what[:3]})")
            else:
                v(f"node{i}: {what}")
        if len(set(seen["plan_roots"].values())) > 1:
            v(f"plan roots differ: {seen['plan_roots']}")
        if len(set(seen["ledger_roots"].values())) > 1:
            v(f"ledger roots differ: {seen['ledger_roots']}")
        if any(seen["in_flight"].values()):
            v(f"credits still in flight between buckets: {seen['in_flight']}")
    # Replicas still campaigning now that every node is up and converged: a replica that
    # never rejoins its group (no safety issue, one fault less tolerated until the
    # bucket's next entry). Reported, not a violation.
    # A replica caught in an election that is under way (the balancer hands buckets to
    # the node that leads fewest, each by a transfer: its target is a candidate for a
    # round trip) is not stuck: only those campaigning in two readings 3 s apart count.
    def scan() -> set[str]:
        found: set[str] = set()
        for i in range(n):
            with contextlib.suppress(Answer):
                for row in net.call(i, "GET", "/raft/status")["buckets"]:
                    if row.get("replica") and row.get("role") not in ("leader", "follower"):
                        found.add(f"node{i}/bucket{row['bucket']}")
        return found

    first = scan()
    if first:
        time.sleep(3.0)
    campaigning = sorted(first & scan()) if first else []
    # 4. The ledger on every node.
    progress("checking the ledger")
    views: dict[str, list[dict[str, Any]]] = {a: [] for a in accounts}
    supplies = []
    for i in range(n):
        try:
            sup = net.call(i, "GET", "/ledger/supply")
            supplies.append(sup)
            if not sup["conserved"] or sup["total"] + sup["burned"] != sup["genesis_supply"]:
                v(f"node{i}: supply not conserved: {sup}")
            for a in accounts:
                views[a].append(net.call(i, "GET", f"/ledger/balance?account={a}"))
        except Answer as exc:
            v(f"node{i}: ledger unreadable after the heal ({exc.reason})")
    acked: dict[str, int] = dict.fromkeys(accounts, 0)
    unknown: dict[str, list[int]] = {a: [] for a in accounts}
    for op in rec.ops:
        if op.kind != "transfer":
            continue
        src, dst, units = op.info["from"], op.info["to"], op.info["units"]
        if op.outcome in ("ok", "retried"):
            acked[src] -= units
            acked[dst] += units
        elif op.outcome == "indeterminate":
            unknown[src].append(-units)
            unknown[dst].append(units)
    unchecked = 0
    for a in accounts:
        rows = views[a]
        if not rows:
            continue
        fields = [(r["balance"], r["locked"], r["unbonding"], r["escrowed"]) for r in rows]
        if len(set(fields)) > 1:
            v(f"account {a[:12]}: nodes disagree on balance/locked/unbonding/escrowed: "
              f"{fields}")
        if any(x < 0 for x in fields[0]):
            v(f"account {a[:12]}: negative amount {fields[0]}")
        total = sum(fields[0])
        gap = total - genesis_totals[a] - acked[a]
        sums = subset_sums(unknown[a])
        if sums is None:
            unchecked += 1
        elif gap not in sums:
            v(f"account {a[:12]}: holds {total} units; genesis {genesis_totals[a]} plus "
              f"acknowledged transfers {acked[a]:+} leaves {gap:+} unexplained by any subset "
              f"of the {len(unknown[a])} transfers whose outcome is unknown")
    return {"final_reads": sum(1 for need in work.needs if need in final), "unread": unread,
            "buckets_probed": bucket_count, "buckets_stuck": sorted(stuck),
            "campaigning": campaigning,
            "converged": seen["converged"],
            "converge_s": converge_took, "plan_root": next(iter(seen["plan_roots"].values()),
                                                          None),
            "ledger_root": next(iter(seen["ledger_roots"].values()), None),
            "supply": supplies[0] if supplies else None,
            "accounts_unchecked": unchecked,
            "decided_final_read": sum(1 for p in final.values() if p == "final-read")}


def probe_needs(seed: int, bucket_count: int) -> dict[int, str]:
    """One made-up NEED id per bucket (DECIDE does not need the NEED to be known)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < bucket_count:
        cid = dag_cbor_cid(f"soak-probe/{seed}/{i}".encode())
        out.setdefault(bucket_of(cid.raw, bucket_count), str(cid))
        i += 1
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


# -- the run --------------------------------------------------------------------------

@dataclass
class SoakConfig:
    minutes: float = 5.0
    nodes: int = 5
    seed: int = 1
    directory: Path | None = None
    converge_s: float = 180.0


def run(config: SoakConfig, progress: Callable[[str, dict[str, Any]], None]
        = lambda _m, _s: None) -> dict[str, Any]:
    keep = config.directory is not None
    directory = config.directory or Path(tempfile.mkdtemp(prefix="soak-"))
    if keep and directory.exists() and any(directory.iterdir()):
        # A soak starts from genesis; never take over (or wipe) someone's testnet.
        raise SoakError(f"{directory} exists and is not empty; give --dir a new folder "
                        f"(or remove that one)")
    progress(f"starting {config.nodes} nodes in {directory}", {})
    try:
        # Probes decide made-up ids, one per bucket (`probe_needs`).
        members = cluster.up(directory, config.nodes, timeout_s=120, decide_unknown_needs=True)
    except cluster.TestnetError as exc:
        with contextlib.suppress(cluster.TestnetError):
            cluster.down(directory)
        raise SoakError(str(exc)) from None
    net = Cluster(directory, members)
    try:
        return _run(config, net, directory, progress)
    finally:
        for m in net.members:  # a node left frozen would ignore the SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGCONT)
        with contextlib.suppress(cluster.TestnetError):
            cluster.down(directory)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _run(config: SoakConfig, net: Cluster, directory: Path,
         progress: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    n = config.nodes
    t_start = time.monotonic()
    rec = Recorder(t_start)
    statuses = [net.call(i, "GET", "/status") for i in range(n)]
    accounts = [str(s["account"]) for s in statuses]
    genesis_totals = {}
    for a in accounts:
        b = net.call(0, "GET", f"/ledger/balance?account={a}")
        genesis_totals[a] = b["balance"] + b["locked"] + b["unbonding"] + b["escrowed"]
    rss_start = [rss_mb(m.pid) for m in net.members]
    stop = threading.Event()
    work = Workload(net, rec, accounts, config.seed, stop)
    nemesis = Nemesis(net, rec, n, config.seed, stop)
    threads = [*work.threads(),
               threading.Thread(target=nemesis.run, name="nemesis", daemon=True),
               threading.Thread(target=monitor, args=(net, nemesis, rec, stop),
                                name="monitor", daemon=True)]
    for t in threads:
        t.start()
    duration = config.minutes * 60
    while True:
        elapsed = rec.now()
        if elapsed >= duration:
            break
        with rec.lock:
            ops, faults, bad = len(rec.ops), len(rec.faults), len(rec.violations)
            failed = sum(1 for o in rec.ops if o.outcome in ("failed", "indeterminate"))
        progress("running", {"elapsed": elapsed, "duration": duration, "ops": ops,
                             "failed": failed, "faults": faults, "violations": bad,
                             "down": nemesis.down_now(), "needs": len(work.needs)})
        time.sleep(0.5)
    progress("stopping the workload", {})
    stop.set()
    for t in threads:
        t.join(timeout=HTTP_TIMEOUT_S + 30)
    progress("healing", {})
    nemesis.heal()
    result = check(net, rec, work, accounts, genesis_totals,
                   lambda m: progress(m, {}), config.converge_s)
    nodes = []
    for i in range(n):
        m = net.member(i)
        try:
            gc = gc_pauses(net.call(i, "GET", "/metrics"))
        except Answer:
            gc = None
        tbs = tracebacks(m.home)
        nodes.append({"node": i, "rss_start_mb": rss_start[i], "rss_end_mb": rss_mb(m.pid),
                      "restarts": sum(1 for f in rec.faults if f.node == i and
                                      f.kind == "kill"),
                      "gc": gc, "tracebacks": tbs})
    return report(config, directory, rec, result, nodes, time.monotonic() - t_start)


def report(config: SoakConfig, directory: Path, rec: Recorder, result: dict[str, Any],
           nodes: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for op in rec.ops:
        by_kind.setdefault(op.kind, {}).setdefault(op.outcome, 0)
        by_kind[op.kind][op.outcome] += 1
        if op.reason:
            key = f"{op.outcome}: {op.reason}"
            reasons.setdefault(op.kind, {}).setdefault(key, 0)
            reasons[op.kind][key] += 1
    faults = rec.faults
    latency: dict[str, dict[str, Any]] = {}
    ledger_kinds = ("transfer", "stake", "unstake", "complete_unbonding")
    for name, kinds in (("decide", ("decide",)), ("ledger", ledger_kinds)):
        calm: list[float] = []
        during: list[float] = []
        for op in rec.ops:
            if op.kind in kinds and op.outcome in ("ok", "retried", "refused"):
                (during if overlaps_fault(op, faults) else calm).append(op.end - op.start)
        latency[name] = {"calm": percentiles(calm), "faults": percentiles(during)}
    fault_counts: dict[str, int] = {}
    for f in faults:
        fault_counts[f.kind] = fault_counts.get(f.kind, 0) + 1
    return {
        "seed": config.seed, "nodes": config.nodes, "minutes": config.minutes,
        "dir": str(directory), "wall_s": round(wall_s, 1),
        "ops": len(rec.ops), "ops_by_kind": by_kind, "reasons": reasons,
        "faults": len(faults), "faults_by_kind": fault_counts,
        "fault_log": [{"kind": f.kind, "node": f.node, "at_s": round(f.start, 2),
                       "back_s": round(f.end, 2), "planned_s": f.planned_s} for f in faults],
        "needs": sum(1 for o in rec.ops if o.kind == "need" and o.info.get("need")),
        "latency": latency, "check": result, "node_stats": nodes,
        "tracebacks": sum(len(x["tracebacks"]) for x in nodes),
        "violations": list(rec.violations),
        "summary": f"soak: {len(rec.ops)} ops, {len(faults)} faults, "
                   f"{len(rec.violations)} violations",
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)


# -- the command's display ------------------------------------------------------------

def command(config: SoakConfig, as_json: bool, out: Any, err: Any) -> int:
    """Run the soak with a live progress line on `err`; print the report (rich tables,
    or one JSON document) on `out`. Returns the exit code: 1 on any violation."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from swarm.cli.common import safe

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("starting", total=config.minutes * 60)

        def progress(message: str, s: dict[str, Any]) -> None:
            if not s:
                bar.update(task, description=escape(message))
                return
            down = ", ".join(f"node{i} {k}" for i, k in sorted(s["down"].items())) or "none"
            bar.update(task, completed=s["elapsed"], description=escape(
                f"{s['elapsed']:.0f}/{s['duration']:.0f} s | {s['ops']} ops "
                f"({s['failed']} failed/unknown) | {s['needs']} NEEDs | {s['faults']} "
                f"faults | down: {down} | {s['violations']} violations"))

        try:
            doc = run(config, progress)
        except SoakError as exc:
            err.print(f"[bold red]error:[/] {escape(safe(str(exc), newlines=True))}")
            return 2
    if as_json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        render(doc, out)
    return 1 if doc["violations"] else 0


def render(doc: dict[str, Any], out: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from swarm.cli.common import safe

    t = Table(title=f"soak: {doc['nodes']} nodes, {doc['minutes']} min, seed {doc['seed']} "
                    f"({doc['wall_s']} s wall)")
    for c in ("op", "ok", "retried", "refused", "unknown", "failed"):
        t.add_column(c, no_wrap=True)
    for kind, counts in sorted(doc["ops_by_kind"].items()):
        t.add_row(kind, *(str(counts.get(o, 0)) for o in
                          ("ok", "retried", "refused", "indeterminate", "failed")))
    out.print(t)
    out.print("refused: the ledger said no (409, an answer); unknown: no answer (timeout, "
              "503), the op may have applied; failed: no answer and surely not applied, or "
              "DECIDE retried to its deadline.", highlight=False)
    for kind, reasons in sorted(doc["reasons"].items()):
        text = "; ".join(f"{r} ×{k}" for r, k in sorted(reasons.items(), key=lambda x: -x[1]))
        out.print(f"  {kind}: {escape(safe(text, newlines=True))}", highlight=False)
    f = Table(title=f"faults injected: {doc['faults']}")
    for c in ("kind", "count", "nodes"):
        f.add_column(c)
    for kind, count in sorted(doc["faults_by_kind"].items()):
        nodes = sorted({x["node"] for x in doc["fault_log"] if x["kind"] == kind})
        f.add_row({"kill": "kill -9, restart", "stop": "SIGSTOP, SIGCONT"}.get(kind, kind),
                  str(count), ", ".join(map(str, nodes)))
    out.print(f)
    lat = Table(title="latency (ms) of answered ops: during faults (or within "
                      f"{RECOVERY_S:.0f} s after) vs calm")
    for c in ("ops", "when", "n", "p50", "p95", "p99"):
        lat.add_column(c)
    for name, parts in doc["latency"].items():
        for when in ("calm", "faults"):
            p = parts[when]
            lat.add_row(name, when, str(p["n"]), str(p.get("p50_ms", "-")),
                        str(p.get("p95_ms", "-")), str(p.get("p99_ms", "-")))
    out.print(lat)
    nt = Table(title="nodes")
    for c in ("node", "RSS MB start", "end", "restarts", "GCs", "GC paused s",
              "gen2 max ≤ s", "tracebacks"):
        nt.add_column(c)
    for x in doc["node_stats"]:
        gc = x["gc"]
        if gc:
            gens = [v for v in gc.values() if isinstance(v, dict)]
            count = sum(int(v.get("count", 0)) for v in gens)
            paused = sum(v.get("sum", 0.0) for v in gens)
            gc_cols = [str(count), f"{paused:.3f}", str(gc.get("gen2_max_le_s") or "-")]
        else:
            gc_cols = ["-", "-", "-"]
        nt.add_row(str(x["node"]), str(x["rss_start_mb"]), str(x["rss_end_mb"]),
                   str(x["restarts"]), *gc_cols, str(len(x["tracebacks"])))
    out.print(nt)
    for x in doc["node_stats"]:
        for tb in x["tracebacks"][:5]:
            out.print(f"node{x['node']} traceback: {escape(safe(tb, newlines=True))}",
                      highlight=False)
    c = doc["check"]
    out.print(f"after the heal: {c['final_reads']} NEEDs read back by a final DECIDE "
              f"({c['decided_final_read']} were undecided until then); "
              f"{c['buckets_probed'] - len(c['buckets_stuck'])}/{c['buckets_probed']} "
              f"buckets decided a new NEED; converged "
              f"{'yes' if c['converged'] else 'NO'} in {c['converge_s']} s; plan root "
              f"{str(c['plan_root'])[:16]}…, ledger root {str(c['ledger_root'])[:16]}…",
              highlight=False)
    if c["campaigning"]:
        out.print(f"note: {len(c['campaigning'])} replicas still campaigning after "
                  f"convergence, in two readings 3 s apart (a replica that never "
                  f"rejoined its quiet group): "
                  f"{escape(', '.join(c['campaigning'][:12]))}", highlight=False)
    for v in doc["violations"]:
        out.print(f"[bold red]violation:[/] {escape(safe(v, newlines=True))}")
    colour = "red" if doc["violations"] else "green"
    out.print(f"[{colour}]{escape(safe(doc['summary'], newlines=True))}[/]")
