"""The built-in agents a node runs on its own account: planner, worker and verifier.

`swarm-node start --roles planner,worker,verifier` (any subset; or the config's `roles`)
runs them in the node's process. They reach their node through the control API and the
task event stream, as any agent does (`swarm.agent.sdk`), so the same rules and bounds
hold them, and they act on events, never by polling:

* **planner**: when a task opens that names a job this node can run (any WebAssembly
  job; a host job registered here) and that it did not post, bids a cost and ETA from
  its own measurements of that job (`JobCosts`); after losing a task it waits a
  `Backoff` before bidding on it again. It stops bidding while the worker holds
  `capacity` tasks it has not committed.
* **worker**: when a decision names this node's bid made by a planner role (its proposal
  id begins `role-`; a bid made by hand or by another agent is left to it), claims the
  task, heartbeats while the job runs, has the node run the job (the module and input
  fetched from peers by bitswap), checks the output against the NEED's schema,
  citations and content policy and commits its CID; a job that fails or an output that
  does not fit gets the task yielded, so another worker can take it.
* **verifier**: stakes `verifier_stake` and joins the verifier pool at start if that is
  configured and this account is not a verifier yet; when seated on a committee, checks
  the result (a WebAssembly job is re-run and the output CIDs compared; a host job's
  output goes to its registered check; the output schema, citations and content policy
  either way) and attests. The job failing on the input is a verdict (invalid); evidence
  it cannot reach is none: it stays silent rather than wrong. Seated on a challenge's panel, it
  votes what its node's proof verifier says (`GET /challenges/{id}/verdict`: the proof
  type's WebAssembly verifier, node/judge.py), and does not vote when that gives no
  verdict. With `audit`, it also re-checks every result attested while it watches,
  unless it is a party to it, and challenges a wrong one while the window is open (an
  `output_mismatch` whose proof names the output it got), once its node's verifier
  says the proof holds.

Fault injection, for testnets: a worker with `fault_bp` commits a made-up result for
that share of its tasks (chosen by a hash of the account and the task, so a run is
reproducible), and a verifier with `collude_with` attests valid, and votes to reject a
challenge, for those workers' results without checking them.

Every action is logged (logger `swarm.roles`) and counted in `/metrics`
(`swarm_role_actions_total{role,action,outcome}`, `swarm_role_job_seconds`).
Whatever a stranger can make the roles hold is bounded: actions waiting to run
(`PENDING_MAX`), remembered tasks (`REMEMBERED_MAX`) and measured jobs (`JOBS_MEASURED_MAX`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swarm.protocol.amounts import format_credits, parse_credits
from swarm.protocol.errors import ProtocolError

from .sdk import Agent, AgentError, Backoff, Refused, TaskEvent, Unavailable

log = logging.getLogger("swarm.roles")

ROLES = ("planner", "worker", "verifier")
PENDING_MAX = 256  # actions started and not finished; a flood of NEEDs past it is skipped
ACTIONS_AT_ONCE = 16  # talking to the node (bids, checks)
REMEMBERED_MAX = 4096  # tasks whose bids and losses are remembered
JOBS_MEASURED_MAX = 256
EWMA_WEIGHT = 0.3  # of the newest run
HEARTBEAT_SHARE = 0.5  # heartbeat this far into each interval
JOIN_ATTEMPTS_MAX = 60  # joining the pool at start, a backoff apart
JOIN_RETRY_MIN_MS = 1_000
ROLE_BID = "role-"
# A job's own failures (jobs/host.py, jobs/hosted.py): a verdict, never worth a retry.
JOB_FAILURES = frozenset({"bad_module", "trap", "out_of_fuel", "bad_output"})
# Not reaching the evidence at once: worth another try. (A fetch that timed out already
# waited a minute; it is not tried again.)
TRANSIENT = frozenset({"block_missing"})
FOUND_CHARS = 512  # of an audit's note on what it found (the proof stays well in bounds)
TRIES = 3  # running a job or a check when the evidence or the node is slow to answer
RETRY_S = 2.0  # how a planner role's proposal ids begin: its worker works only those


def parse_roles(text: str | list[str]) -> frozenset[str]:
    """Roles from "planner,worker" or a list; ValueError naming an unknown one."""
    names = [r.strip() for r in (text.split(",") if isinstance(text, str) else text)]
    names = [r for r in names if r]
    unknown = sorted(set(names) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
    return frozenset(names)


@dataclass(frozen=True)
class RoleConfig:
    """How the roles act; from the config's `roles` and `role_options`."""

    roles: frozenset[str] = frozenset()
    fee: str = "0.05"  # credits: the planner's price floor per task
    cpu_second_price: str = "1"  # credits per second of measured job time
    prior_s: float = 0.25  # a job's time before any measurement of it
    capacity: int = 4  # tasks won and not committed, before the planner pauses
    slots: int = 1  # jobs the worker runs at once
    lease_ms: int = 60_000
    heartbeat_ms: int = 5_000
    verifier_stake: str | None = None  # credits; stake and join the pool at start
    org: str = ""  # the pool registration's org (default: from the account)
    asn: int = 0
    region: str = "local"
    audit: bool = False  # re-check attested results and challenge wrong ones
    fault_bp: int = 0  # testnets: commit a made-up result for this share of tasks
    collude_with: tuple[str, ...] = ()  # testnets: workers whose results pass unchecked

    OPTIONS = ("fee", "cpu_second_price", "prior_s", "capacity", "slots", "lease_ms",
               "heartbeat_ms", "verifier_stake", "org", "asn", "region", "audit",
               "fault_bp", "collude_with")

    @classmethod
    def from_config(cls, roles: Any, options: Mapping[str, Any] | None) -> RoleConfig:
        """ValueError naming the bad key."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise ValueError(f"role_options: unknown key {unknown[0]!r} (keys: "
                             f"{', '.join(cls.OPTIONS)})")
        if not isinstance(roles, (str, list)):
            raise ValueError("roles: a list of role names or \"planner,worker,...\"")
        if "collude_with" in options:
            accounts = options["collude_with"]
            if not isinstance(accounts, list) or not all(
                    isinstance(a, str) and re.fullmatch(r"[0-9a-f]{64}", a) for a in accounts):
                raise ValueError("role_options.collude_with: a list of accounts (64 hex "
                                 "digits)")
            options["collude_with"] = tuple(accounts)
        if not isinstance(options.get("audit", False), bool):
            raise ValueError("role_options.audit: true or false")
        config = cls(roles=parse_roles(roles), **options)
        for name in ("fee", "cpu_second_price", "verifier_stake"):
            value = getattr(config, name)
            if value is None:
                continue
            try:
                parse_credits(str(value), 10**6, f"role_options.{name}")
            except ProtocolError as exc:
                raise ValueError(str(exc)) from None
        for name, low in (("capacity", 1), ("slots", 1), ("lease_ms", 1),
                          ("heartbeat_ms", 1), ("asn", 0), ("fault_bp", 0)):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"role_options.{name}: an integer >= {low}")
        if config.fault_bp > 10_000:
            raise ValueError("role_options.fault_bp: basis points, 0..10000")
        if not isinstance(config.prior_s, (int, float)) or not config.prior_s > 0:
            raise ValueError("role_options.prior_s: seconds > 0")
        if config.heartbeat_ms >= config.lease_ms:
            raise ValueError("role_options: heartbeat_ms must be under lease_ms")
        return config


class JobCosts:
    """What running each job took here: an exponentially weighted mean of the seconds
    a run took (fetching included), per job, for the most recent `JOBS_MEASURED_MAX`
    jobs. The planner prices from it; the worker and the verifier feed it."""

    def __init__(self, prior_s: float) -> None:
        self.prior_s = prior_s
        self.seconds: OrderedDict[str, float] = OrderedDict()

    def estimate_s(self, job: str) -> float:
        return self.seconds.get(job, self.prior_s)

    def measured(self, job: str, seconds: float) -> None:
        old = self.seconds.pop(job, None)
        self.seconds[job] = seconds if old is None else \
            EWMA_WEIGHT * seconds + (1 - EWMA_WEIGHT) * old
        while len(self.seconds) > JOBS_MEASURED_MAX:
            self.seconds.popitem(last=False)


class RoleMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.actions = Counter("swarm_role_actions", "What the node's built-in roles did, "
                               "by role, action and outcome", ["role", "action", "outcome"],
                               registry=registry)
        self.job_seconds = Histogram("swarm_role_job_seconds", "Seconds a role's job run "
                                     "or check took, fetching included", ["role"],
                                     registry=registry,
                                     buckets=(.005, .02, .1, .5, 2, 10, 60, 300))
        self.in_hand = Gauge("swarm_role_tasks_in_hand", "Tasks won and not yet "
                             "committed", registry=registry)


def _code(exc: AgentError) -> str:
    return str(exc.detail.get("code", "")) if isinstance(exc.detail, dict) else ""


def _won_by_role(task: Mapping[str, Any]) -> bool:
    """Whether the task's winning bid is one a planner role made (its proposal id says
    so; the id is in the signed PROPOSE, so this holds across restarts)."""
    won = (task.get("decision") or {}).get("proposal")
    return any(b.get("proposal") == won and str(b.get("proposal_id", "")).startswith(ROLE_BID)
               for b in task.get("bids", ()))


def _job_key(task: Mapping[str, Any]) -> str | None:
    """The job a task names, as one key ("wasm:CID" or "host:NAME"); None if none."""
    if task.get("job"):
        return f"wasm:{task['job']}"
    if task.get("host"):
        return f"host:{task['host']}"
    return None


@dataclass
class Roles:
    """The configured roles over one `Agent`; `run` until cancelled."""

    agent: Agent
    config: RoleConfig
    registry: CollectorRegistry | None = None
    costs: JobCosts = field(init=False)

    def __post_init__(self) -> None:
        self.done: Tally[str] = Tally()  # action:outcome -> times, for logs and tests
        self.costs = JobCosts(self.config.prior_s)
        self.metrics = RoleMetrics(self.registry)
        self.backoff = Backoff(bytes.fromhex(self.agent.account or "00"))
        # NEED -> [the (epoch, round) last bid in, auctions lost]; the newest kept.
        self.bid_on: OrderedDict[str, list[Any]] = OrderedDict()
        self.working: set[str] = set()
        self.verifying: set[str] = set()
        self.host_jobs: set[str] = set()
        self.host_checks: set[str] = set()
        self._pending = 0
        self._talk = trio.Semaphore(ACTIONS_AT_ONCE)
        self._slots = trio.Semaphore(self.config.slots)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        roles = self.config.roles
        log.info("roles %s on account %s", ",".join(r for r in ROLES if r in roles),
                 self.agent.account)
        if roles & {"planner", "verifier"}:
            await self._learn_host_jobs()
        task_status.started()
        async with trio.open_nursery() as nursery:
            if "verifier" in roles and self.config.verifier_stake is not None:
                nursery.start_soon(self._join_pool)
            await self.agent.follow(lambda event: self._dispatch(nursery, event))

    # -- events to actions

    def _dispatch(self, nursery: trio.Nursery, event: TaskEvent) -> None:
        d, roles, need = event.data, self.config.roles, event.need_id
        if event.kind == "transition" and d.get("after") == "OPEN" and "planner" in roles:
            self._start(nursery, "planner", "bid", self.bid, need)
        elif event.kind == "decision":
            if d.get("winner") == self.agent.account:
                if "worker" in roles:
                    self._start(nursery, "worker", "work", self.work, need)
            elif need in self.bid_on:
                self.bid_on[need][1] += 1
        elif event.kind == "transition" and "verifier" in roles \
                and str(d.get("cause", "")).startswith("committee"):
            self._start(nursery, "verifier", "attest", self.verify, need)
        elif event.kind == "transition" and "verifier" in roles \
                and str(d.get("cause", "")).startswith("panel of"):
            self._start(nursery, "verifier", "judge", self.judge, need)
        elif event.kind == "transition" and d.get("after") == "ATTESTED" \
                and d.get("before") == "COMMITTED" and "verifier" in roles \
                and self.config.audit:
            self._start(nursery, "verifier", "audit", self.audit, need)

    def _start(self, nursery: trio.Nursery, role: str, action: str,
               fn: Callable[[str], Awaitable[str]], need: str) -> None:
        if self._pending >= PENDING_MAX:
            self._count(role, action, "skipped")
            log.warning("%s: %d actions pending; %s on %s skipped", role, self._pending,
                        action, need)
            return
        self._pending += 1
        nursery.start_soon(self._guarded, role, action, fn, need)

    async def _guarded(self, role: str, action: str,
                       fn: Callable[[str], Awaitable[str]], need: str) -> None:
        """One action; a refusal or a node error is logged and counted, never fatal."""
        try:
            outcome = await fn(need)
        except Refused as exc:
            outcome = f"refused:{exc.code}"
            log.info("%s: %s on %s refused: %s", role, action, need, exc)
        except AgentError as exc:
            outcome = "failed"
            log.warning("%s: %s on %s failed: %s", role, action, need, exc)
        except Exception:  # a bug here, or an answer of a shape we did not expect
            outcome = "error"
            log.exception("%s: %s on %s failed unexpectedly", role, action, need)
        finally:
            self._pending -= 1
        self._count(role, action, outcome)

    def _count(self, role: str, action: str, outcome: str) -> None:
        self.metrics.actions.labels(role, action, outcome).inc()
        self.done[f"{action}:{outcome}"] += 1

    # -- planner

    async def bid(self, need: str) -> str:
        async with self._talk:
            task = await self.agent.task(need)
        key = _job_key(task)
        if task["poster"] == self.agent.account or task["state"] != "OPEN":
            return "passed"
        if key is None or not task.get("input") or \
                (task.get("host") and task["host"] not in self.host_jobs):
            return "cannot"
        if len(self.working) >= self.config.capacity:
            return "busy"
        at = (task["epoch"], task["round"])
        known = self.bid_on.get(need)
        if known is not None and known[0] == at:
            return "again"  # this auction's OPEN seen twice (a replica and a read view)
        self._remember(need, at)
        losses = known[1] if known is not None else 0
        if losses:  # lost it before: let the others go first, at random
            await trio.sleep(self.backoff.delay_ms(need, losses) / 1000)
        unit = self.agent.unit_per_credit
        est_s = self.costs.estimate_s(key)
        cost = parse_credits(self.config.fee, unit) + math.ceil(
            est_s * parse_credits(self.config.cpu_second_price, unit))
        room = task["budget"] - task.get("verify_bounty", 0)
        if cost > room:
            log.info("planner: %s pays at most %s, this job costs %s here; no bid", need,
                     format_credits(room, unit), format_credits(cost, unit))
            return "too_cheap"
        eta_ms = max(1_000, math.ceil(est_s * 2_000) + 1_000)
        async with self._talk:
            await self.agent.bid(need, format_credits(cost, unit), eta_ms=eta_ms,
                                 capabilities=[key[:64]],
                                 proposal_id=f"{ROLE_BID}{os.urandom(6).hex()}")
        log.info("planner: bid %s on %s (%s, about %.3f s)", format_credits(cost, unit),
                 need, key, est_s)
        return "ok"

    def _remember(self, need: str, at: tuple[int, int]) -> None:
        self.bid_on.setdefault(need, [at, 0])[0] = at
        self.bid_on.move_to_end(need)
        while len(self.bid_on) > REMEMBERED_MAX:
            self.bid_on.popitem(last=False)

    # -- worker

    async def work(self, need: str) -> str:
        if need in self.working:
            return "again"
        self.working.add(need)
        self.metrics.in_hand.set(len(self.working))
        try:
            async with self._slots:
                return await self._work(need)
        finally:
            self.working.discard(need)
            self.metrics.in_hand.set(len(self.working))

    async def _work(self, need: str) -> str:
        task = await self.agent.task(need)
        if task["state"] != "DECIDED" or task["winner"] != self.agent.account:
            return "stale"
        if not _won_by_role(task):
            return "not_mine"  # the account's owner bid by hand, or another agent did
        key = _job_key(task)
        if key is None or not task.get("input"):
            await self.agent.yield_task(need, "no job named")
            return "yielded"
        await self.agent.claim(need, ttl_ms=self.config.lease_ms,
                               heartbeat_ms=self.config.heartbeat_ms)
        log.info("worker: claimed %s (%s)", need, key)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats, need)
            try:
                ran = await self._retrying(lambda: self._run(task, "worker"))
            except Refused:
                raise
            except AgentError as exc:
                nursery.cancel_scope.cancel()
                await self.agent.yield_task(need, f"the job failed: {exc}"[:256])
                log.warning("worker: %s's job failed (%s); yielded", need, exc)
                return "yielded"
            nursery.cancel_scope.cancel()
        if ran.get("violation"):
            await self.agent.yield_task(need, f"output does not fit: {ran['violation']}"
                                        [:256])
            log.warning("worker: %s's output does not fit its schema (%s); yielded",
                        need, ran["violation"])
            return "yielded"
        output = ran["output"]
        if self._faulty(need):
            output = await self.agent.put_evidence(b"made up by a faulty worker for "
                                                   + need.encode())
            log.warning("worker: fault injection: committing a made-up result for %s",
                        need)
        await self.agent.commit(need, output)
        log.info("worker: committed %s -> %s", need, output)
        return "faulty" if output != ran["output"] else "ok"

    def _faulty(self, need: str) -> bool:
        """Whether fault injection picks this task (`fault_bp` of them, by hash)."""
        if not self.config.fault_bp:
            return False
        digest = hashlib.sha256(f"{self.agent.account}/{need}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 10_000 < self.config.fault_bp

    async def _heartbeats(self, need: str) -> None:
        progress = 0
        while True:
            await trio.sleep(self.config.heartbeat_ms * HEARTBEAT_SHARE / 1000)
            progress = min(progress + 10, 90)
            try:
                await self.agent.heartbeat(need, progress=progress)
            except AgentError as exc:  # the next one may pass; the lease says how many
                log.info("worker: heartbeat on %s failed: %s", need, exc)

    async def _run(self, task: Mapping[str, Any], role: str) -> dict[str, Any]:
        """Run the task's job on its input at the node; measure it."""
        key = _job_key(task)
        assert key is not None
        started = time.monotonic()
        if task.get("job"):
            ran = await self.agent.run_job(task["job"], task["input"],
                                           schema=task.get("output"),
                                           cites=task.get("cites", ()),
                                           deny=task.get("deny", ()))
        else:
            ran = await self.agent.run_host_job(task["host"], task["input"],
                                                schema=task.get("output"),
                                                cites=task.get("cites", ()),
                                                deny=task.get("deny", ()))
        took = time.monotonic() - started
        self.costs.measured(key, took)
        self.metrics.job_seconds.labels(role).observe(took)
        return ran

    # -- verifier

    async def verify(self, need: str) -> str:
        if need in self.verifying:
            return "again"  # the same draw seen twice (a replica and a read view)
        self.verifying.add(need)
        try:
            return await self._verify(need)
        finally:
            self.verifying.discard(need)

    async def _verify(self, need: str) -> str:
        async with self._talk:
            task = await self.agent.task(need)
        commit = task.get("commit") or {}
        me = self.agent.account
        if me not in commit.get("committee", ()) or task["state"] != "COMMITTED":
            return "passed"
        if any(v["member"] == me for v in commit.get("verdicts", ())):
            return "again"
        if commit.get("worker") in self.config.collude_with:
            await self.agent.attest(need, valid=True)
            log.warning("verifier: fault injection: attested %s valid unchecked", need)
            return "colluded"
        if _job_key(task) is None or not task.get("input"):
            log.info("verifier: %s names no job to check it by; no verdict", need)
            return "cannot"
        valid, why = await self._check(task, commit["result"])
        await self.agent.attest(need, valid=valid)
        log.info("verifier: attested %s %s%s", need, "valid" if valid else "invalid",
                 "" if valid else f" ({why})")
        return "valid" if valid else "invalid"

    async def _check(self, task: Mapping[str, Any], result: str) -> tuple[bool, str]:
        """The verdict on `result`. The job failing on the input is one (invalid: no
        right result exists to commit); not reaching the evidence is none: the error
        goes up after a few tries, and the member stays silent rather than wrong."""
        try:
            if task.get("job"):
                again = await self._retrying(lambda: self._run(task, "verifier"))
                if again["output"] != result:
                    return False, f"re-running gives {again['output']}"
                return again.get("violation") is None, str(again.get("violation"))
            started = time.monotonic()
            doc = await self._retrying(lambda: self.agent.check_host_job(
                task["host"], task["input"], result, check=task.get("check"),
                schema=task.get("output"), cites=task.get("cites", ()),
                deny=task.get("deny", ())))
            self.metrics.job_seconds.labels("verifier").observe(time.monotonic() - started)
            return bool(doc["valid"]), str(doc.get("violation"))
        except AgentError as exc:
            if _code(exc) in JOB_FAILURES:
                return False, str(exc)
            raise

    # -- challenge verifier

    async def judge(self, need: str) -> str:
        """Seated on the panel of a challenge of `need`: check the proof's claim and
        vote. Uphold when the claim holds (the result is wrong as the proof type says);
        reject when it does not, or the proof is over `proof_bytes_max`. A proof type
        this role cannot check, or evidence it cannot reach, gets no vote."""
        key = f"judge:{need}"
        if key in self.verifying:
            return "again"
        self.verifying.add(key)
        try:
            return await self._judge(need)
        finally:
            self.verifying.discard(key)

    async def _judge(self, need: str) -> str:
        async with self._talk:
            task = await self.agent.task(need)
        me = self.agent.account
        ch = next((c for c in task.get("challenges", ()) if c["state"] == "voting"
                   and any(m["member"] == me for m in c["panel"])), None)
        if ch is None or task["state"] != "ATTESTED":
            return "passed"
        if any(v["member"] == me and v["round"] == ch["round"] for v in ch["votes"]):
            return "again"
        if task["commit"]["worker"] in self.config.collude_with:
            await self.agent.vote(ch["challenge_id"], uphold=False)
            log.warning("verifier: fault injection: voted reject on %s unchecked",
                        ch["challenge_id"])
            return "colluded"
        claim = await self._claim_holds(task, ch)
        if claim is None:
            return "cannot"
        await self.agent.vote(ch["challenge_id"], uphold=claim[0])
        log.info("verifier: voted %s on challenge %s of %s (%s)",
                 "uphold" if claim[0] else "reject", ch["challenge_id"], need, claim[1])
        return "uphold" if claim[0] else "reject"

    async def _claim_holds(self, task: Mapping[str, Any], ch: Mapping[str, Any]
                           ) -> tuple[bool, str] | None:
        """(whether the challenge's claim holds, why) by the node's proof verifier, or
        None: no verdict (no rule for the type, bytes out of reach)."""
        try:
            doc = await self._retrying(lambda: self.agent.verdict(ch["challenge_id"]))
        except AgentError as exc:
            if isinstance(exc, Refused):
                raise
            log.info("verifier: no verdict on %s (%s); no vote", ch["challenge_id"], exc)
            return None
        return bool(doc["holds"]), f"{doc['reason']}; fuel {doc['fuel']}"

    async def audit(self, need: str) -> str:
        """Re-check a result the committee accepted; challenge it if it is wrong
        (`output_mismatch`, the proof naming the output this node got)."""
        key = f"audit:{need}"
        if key in self.verifying:
            return "again"
        self.verifying.add(key)
        try:
            async with self._talk:
                task = await self.agent.task(need)
            commit, me = task.get("commit") or {}, self.agent.account
            if task["state"] != "ATTESTED" or not commit or me in (
                    commit.get("worker"), *commit.get("committee", ())):
                return "passed"  # a party to the result does not judge it
            if _job_key(task) is None or not task.get("input"):
                return "cannot"
            valid, why = await self._check(task, commit["result"])
            if valid:
                return "valid"
            proof = json.dumps({"claim": "output_mismatch", "task_id": need,
                                "result": commit["result"], "found": why[:FOUND_CHARS]},
                               sort_keys=True).encode()
            cid = await self.agent.put_evidence(proof)
            judged = await self._retrying(lambda: self.agent.check_proof(
                need, "output_mismatch", cid))
            if not judged["holds"]:  # the bond would be lost: say so, do not challenge
                log.warning("verifier: %s's result %s looked wrong (%s) but the proof "
                            "verifier says %s; not challenged", need, commit["result"],
                            why, judged["reason"])
                return "unproven"
            doc = await self.agent.challenge(need, "output_mismatch", cid)
            log.warning("verifier: %s's result %s is wrong (%s): challenged it (%s)", need,
                        commit["result"], why, doc["challenge_id"])
            return "challenged"
        finally:
            self.verifying.discard(key)

    async def _retrying_bytes(self, call: Callable[[], Awaitable[bytes]]) -> bytes:
        out: dict[str, bytes] = {}

        async def wrapped() -> dict[str, Any]:
            out["data"] = await call()
            return {}

        await self._retrying(wrapped)
        return out["data"]

    async def _retrying(self, call: Callable[[], Awaitable[dict[str, Any]]]
                        ) -> dict[str, Any]:
        """`call`, tried again after a pause while what fails is reaching the evidence
        or the node (a peer slow to serve a block, the node busy), not the job."""
        for attempt in range(TRIES):
            try:
                return await call()
            except Refused:
                raise
            except AgentError as exc:
                transient = isinstance(exc, Unavailable) or _code(exc) in TRANSIENT
                if not transient or attempt == TRIES - 1:
                    raise
                log.info("%s; trying again", exc)
                await trio.sleep(RETRY_S * (attempt + 1))
        raise AssertionError("unreachable")

    # -- start

    async def _learn_host_jobs(self) -> None:
        try:
            doc = await self.agent.host_jobs()
        except AgentError as exc:
            log.warning("roles: cannot list the host jobs (%s); bidding on wasm jobs only",
                        exc)
            return
        self.host_jobs, self.host_checks = set(doc["jobs"]), set(doc["checks"])

    async def _join_pool(self) -> None:
        """Stake up to `verifier_stake` and register, unless already a verifier. A node
        that cannot reach its buckets yet (just started, not connected) tries again
        after a backoff; a rule's refusal (too little balance) ends the attempt."""
        amount = self.config.verifier_stake
        assert amount is not None
        for attempt in range(JOIN_ATTEMPTS_MAX):
            try:
                info = await self.agent.stake_info()
                if info.get("verifier"):
                    return
                want = parse_credits(amount, self.agent.unit_per_credit)
                short = want - int(info.get("locked", 0))
                if short > 0:
                    await self.agent.stake(format_credits(short, self.agent.unit_per_credit))
                await self.agent.register_verifier(
                    org=self.config.org or f"acct-{self.agent.account[:8]}",
                    asn=self.config.asn, region=self.config.region)
                self._count("verifier", "join_pool", "ok")
                log.info("verifier: staked up to %s credits and joined the pool", amount)
                return
            except Refused as exc:
                self._count("verifier", "join_pool", f"refused:{exc.code}")
                log.warning("verifier: the pool refused this node: %s", exc)
                return
            except AgentError as exc:
                self._count("verifier", "join_pool", "failed")
                wait_ms = self.backoff.delay_ms("join_pool", attempt) + JOIN_RETRY_MIN_MS
                log.warning("verifier: could not join the pool yet (%s); trying again in "
                            "%.1f s", exc, wait_ms / 1000)
                await trio.sleep(wait_ms / 1000)
        log.warning("verifier: gave up joining the pool after %d attempts",
                    JOIN_ATTEMPTS_MAX)


async def run_roles(agent: Agent, config: RoleConfig, registry: CollectorRegistry | None,
                    *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run `config.roles` over `agent` until cancelled."""
    roles = Roles(agent, config, registry)
    await roles.run(task_status=task_status)
