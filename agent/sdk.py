"""The agent SDK's client: one node's control API and task event stream, async (trio).

Owns talking to a node for an agent: finding it through its home directory and
checking that whatever answers at its address holds the node's API token before the
token goes out (the same challenge as the CLI's, node/client.py), one request per
lifecycle command with its answer decoded, the refusals as exceptions naming the rule,
and the event stream parsed into `TaskEvent`s. It holds no state of the market: every
answer comes from the node, which reads the buckets' certified entries.

Amounts sent are credits as text ("2.5"); amounts answered are integers in the
smallest unit (`unit_per_credit` in the answers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from swarm.node.client import (
    OUTCOME_MARGIN_S,
    OUTCOME_WAIT_S_DEFAULT,
    error_of,
    need_body,
    proves_identity,
)
from swarm.node.home import read_api, read_token

log = logging.getLogger("swarm.agent")

NONCE_BYTES = 32
TIMEOUT_S = 30.0  # a read's; a write waits for its outcome plus a margin
EVIDENCE_READ_MAX = 16 * 1024 * 1024  # what `get_evidence` holds in memory at most
JOB_TIMEOUT_S = 300.0  # fetching a job's module and input, and running it


class AgentError(Exception):
    """The node answered with an error, or could not be reached; `detail` is its answer."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class Refused(AgentError):
    """A rule refused the command (409): `code` names it (`bid_window_closed`,
    `not_winner`, `insufficient_balance`, ...). Nothing changed; the task goes on."""

    def __init__(self, code: str, reason: str, detail: Any = None) -> None:
        super().__init__(f"{code}: {reason}", detail)
        self.code = code
        self.reason = reason


class Unavailable(AgentError):
    """No answer: the node is unreachable, or its bucket had no quorum in time (503).
    The command may or may not have been applied; read the task before retrying."""


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of the node's task stream: `kind` is transition, decision, payment,
    slash or gap; `data` the whole event as the node sent it."""

    seq: int
    kind: str
    need_id: str
    data: Mapping[str, Any]


class Backoff:
    """Randomised exponential backoff, reproducible per agent: the wait before the
    `attempt`-th retry on `key` (a NEED lost, a refused claim) is uniform in
    [0, min(cap, base * 2**attempt)] ("full jitter"), drawn from a hash of the agent's
    seed, the key and the attempt, so agents that lost together do not retry together,
    and one agent's waits replay exactly."""

    def __init__(self, seed: bytes, base_ms: int = 500, cap_ms: int = 30_000) -> None:
        if base_ms < 1 or cap_ms < base_ms:
            raise ValueError("backoff: need 1 <= base_ms <= cap_ms")
        self.seed, self.base_ms, self.cap_ms = seed, base_ms, cap_ms

    def delay_ms(self, key: str, attempt: int) -> int:
        ceiling = min(self.cap_ms, self.base_ms << min(max(attempt, 0), 40))
        digest = hashlib.sha256(b"can-swarm/backoff/v1\x00" + self.seed + b"\x00"
                                + key.encode() + attempt.to_bytes(8, "big")).digest()
        return int.from_bytes(digest[:8], "big") % (ceiling + 1)


class Agent:
    """A connection to one node, acting with its account. Make one with `Agent.open`."""

    def __init__(self, url: str, token: str, peer_id: str) -> None:
        self.url = url.rstrip("/")
        self.peer_id = peer_id
        self._token = token
        self._http = httpx.AsyncClient(timeout=TIMEOUT_S)
        self.account = ""  # hex, once connected
        self.unit_per_credit = 1_000_000

    @classmethod
    @asynccontextmanager
    async def open(cls, home: Path) -> AsyncIterator[Agent]:
        """Connect to the node whose home is `home` (its `api.json` and `api.token`)."""
        api = read_api(home)
        agent = cls(str(api["url"]), read_token(home), str(api.get("peer_id", "")))
        try:
            await agent.connect()
            yield agent
        finally:
            await agent.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def connect(self) -> None:
        """Check that the program at `url` holds the token, then learn the account."""
        nonce = os.urandom(NONCE_BYTES)
        try:
            response = await self._http.get(self.url + "/identity",
                                            params={"nonce": nonce.hex()})
            doc = response.json() if response.status_code == 200 else None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the node at {self.url} ({exc})") from None
        except ValueError:
            doc = None
        if not proves_identity(doc, self._token, nonce, self.peer_id):
            raise AgentError(f"the program at {self.url} cannot prove it holds this "
                             f"node's API token; the token was not sent")
        self._http.headers["authorization"] = f"Bearer {self._token}"
        status = await self.status()
        self.account = str(status["account"])

    # -- reads --

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/status")

    async def balance(self, account: str | None = None) -> int:
        """An account's spendable balance in the smallest unit (default: ours)."""
        doc = await self._call("GET", "/ledger/balance",
                               params={"account": account} if account else None)
        return int(doc["balance"])

    async def task(self, need: str) -> dict[str, Any]:
        """One task as the node holds it (state, bids, decision, lease, commit,
        committee, verdicts, payouts, transitions with their certificates)."""
        doc = await self._call("GET", f"/tasks/{need}")
        self.unit_per_credit = int(doc.get("unit_per_credit", self.unit_per_credit))
        return doc

    async def plan_task(self, task_id: str) -> dict[str, Any]:
        """A task as the plan holds it (title, class, parent; its state from its
        bucket, None if nobody funded it); AgentError if the plan does not know it."""
        doc = await self._call("GET", f"/plan/threads/{task_id}")
        first: dict[str, Any] = (doc.get("tasks") or [{}])[0]
        if not first.get("known"):
            raise AgentError(f"the plan does not know {task_id} yet")
        return first

    async def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        doc = await self._call("GET", "/tasks", params={"state": state} if state else None)
        return list(doc["tasks"])

    # -- the lifecycle --

    async def post(self, budget: str, *, task_class: str = "simple", title: str = "",
                   bounty: str = "0", window_ms: int | None = None,
                   k_result: int | None = None, capabilities: Sequence[str] = (),
                   job: str | None = None, data: str | None = None,
                   host: str | None = None, check: str | None = None,
                   output: str | None = None, k_plan: int | None = None,
                   cites: Sequence[str] = (), deny: Sequence[str] = (),
                   timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> str:
        """Post a NEED, its budget escrowed from our account; returns its id. `job`
        names a WebAssembly job's module and `data` its input (evidence CIDs); or
        `host` names a host job and `check` its check. `output` is the result's output
        schema, `cites` CIDs the result must cite and `deny` strings it must not
        contain (docs/JOBS.md)."""
        body = need_body(task_class, budget, title=title, bounty=bounty,
                         capabilities=capabilities, window_ms=window_ms, k_result=k_result,
                         k_plan=k_plan, job=job, data=data, host=host, check=check,
                         output=output, cites=cites, deny=deny)
        doc = await self._write("/tasks", body, timeout_s)
        return str(doc["need_id"])

    async def bid(self, need: str, cost: str, *, eta_ms: int = 60_000,
                  capabilities: Sequence[str] = (), patch: Mapping[str, Any] | None = None,
                  proposal_id: str = "",
                  timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Bid on a task; `proposal_id` names the bid (a fresh one when empty)."""
        body: dict[str, Any] = {"cost": cost, "eta_ms": eta_ms,
                                "capabilities": list(capabilities), "proposal_id": proposal_id}
        if patch is not None:
            body["patch"] = dict(patch)
        return await self._write(f"/tasks/{need}/bid", body, timeout_s)

    async def claim(self, need: str, *, ttl_ms: int = 60_000, heartbeat_ms: int = 5_000,
                    timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._write(f"/tasks/{need}/claim", {
            "lease_ttl_ms": ttl_ms, "heartbeat_interval_ms": heartbeat_ms}, timeout_s)

    async def heartbeat(self, need: str, progress: int = 0,
                        timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._write(f"/tasks/{need}/heartbeat", {"progress": progress},
                                 timeout_s)

    async def yield_task(self, need: str, reason: str = "yielded",
                         timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._write(f"/tasks/{need}/yield", {"reason": reason}, timeout_s)

    async def commit(self, need: str, result: str,
                     timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Commit the result whose evidence CID is `result` (`put_evidence`)."""
        return await self._write(f"/tasks/{need}/commit", {"result": result}, timeout_s)

    async def attest(self, need: str, valid: bool,
                     timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._write(f"/tasks/{need}/attest",
                                 {"verdict": "valid" if valid else "invalid"}, timeout_s)

    # -- challenges --

    async def challenge(self, need: str, proof_type: str, evidence: str, *,
                        complexity: str = "low",
                        timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Challenge a task's attested result with a proof (`evidence`, a CID stored at
        our node); the bond leaves our account. Answers the outcome and `challenge_id`."""
        return await self._write("/challenges", {
            "task_id": need, "proof_type": proof_type, "evidence": evidence,
            "complexity": complexity}, timeout_s)

    async def bond_quote(self, proof_type: str, complexity: str = "low") -> dict[str, Any]:
        """What such a challenge locks (`bond`), and the swarm's `proof_bytes_max`."""
        return await self._call("GET", "/challenges/bond",
                                params={"proof_type": proof_type, "complexity": complexity})

    async def verdict(self, challenge_id: str) -> dict[str, Any]:
        """Our node's verdict on an open challenge's proof: `holds` (the claim is
        true), `reason`, `fuel`, `verifier` (the WebAssembly module's CID). AgentError
        `no_verifier` for a proof type with no rule, and when the bytes are out of
        reach."""
        return await self._call("GET", f"/challenges/{challenge_id}/verdict",
                                timeout=JOB_TIMEOUT_S)

    async def check_proof(self, need: str, proof_type: str, evidence: str
                          ) -> dict[str, Any]:
        """The verdict a challenge of `need`'s result with this proof would get at our
        node, before any bond is locked; answers as `verdict`."""
        return await self._call("POST", "/challenges/check", json={
            "task_id": need, "proof_type": proof_type, "evidence": evidence},
            timeout=JOB_TIMEOUT_S)

    async def challenge_status(self, challenge_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/challenges/{challenge_id}")

    async def challenges(self, *, state: str | None = None,
                         task: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("state", state), ("task", task)) if v}
        doc = await self._call("GET", "/challenges", params=params or None)
        return list(doc["challenges"])

    async def vote(self, challenge_id: str, uphold: bool,
                   timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Our vote as a member of a challenge's panel."""
        return await self._write(f"/challenges/{challenge_id}/vote",
                                 {"verdict": "uphold" if uphold else "reject"}, timeout_s)

    async def withdraw(self, challenge_id: str,
                       timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._write(f"/challenges/{challenge_id}/withdraw", {}, timeout_s)

    async def slashes(self, account: str | None = None) -> list[dict[str, Any]]:
        doc = await self._call("GET", "/slashes",
                               params={"account": account} if account else None)
        return list(doc["slashes"])

    # -- stake and the verifier pool --

    async def stake_info(self) -> dict[str, Any]:
        """Our balance, stake, `min_verifier_stake` and whether we are a verifier."""
        return await self._call("GET", "/stake")

    async def stake(self, amount: str,
                    timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Lock `amount` credits of our balance as stake."""
        return await self._write("/stake/add", {"amount": amount}, timeout_s)

    async def register_verifier(self, *, org: str, asn: int, region: str,
                                capabilities: Sequence[str] = (),
                                timeout_s: float = OUTCOME_WAIT_S_DEFAULT
                                ) -> dict[str, Any]:
        """Join the verifier pool (needs the minimum stake)."""
        return await self._write("/pool/register", {
            "org": org, "asn": asn, "region": region,
            "capabilities": sorted(set(capabilities))}, timeout_s)

    # -- evidence --

    async def put_evidence(self, data: bytes) -> str:
        """Store `data` as evidence on the node (pinned); returns its CID."""
        doc = await self._call("POST", "/evidence", content=data,
                               headers={"content-type": "application/octet-stream"})
        return str(doc["cid"])

    async def get_evidence(self, cid: str, max_bytes: int = EVIDENCE_READ_MAX) -> bytes:
        """The bytes of evidence `cid`, fetched from peers by the node if need be,
        every block checked against the CID; at most `max_bytes`."""
        try:
            async with self._http.stream("GET", f"{self.url}/evidence/{cid}") as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                data = bytearray()
                async for piece in response.aiter_bytes():
                    data += piece
                    if len(data) > max_bytes:
                        raise AgentError(f"evidence {cid} is over {max_bytes} bytes")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise Unavailable(f"reading evidence {cid} from {self.url} failed ({exc})") \
                from None

    # -- jobs --

    async def run_job(self, module: str, data: str, *, schema: str | None = None,
                      cites: Sequence[str] = (), deny: Sequence[str] = ()
                      ) -> dict[str, Any]:
        """Run the WebAssembly job `module` on the evidence `data` on the node (both
        fetched from peers if need be); the output is stored there as evidence.
        Answers `output` (its CID), `size`, `fuel` and, given an output `schema`,
        `violation` (None when the output fits it, contains every CID of `cites` and
        none of the strings of `deny`);
        AgentError if the job failed."""
        return await self._call("POST", "/jobs/run", json={
            "module": module, "input": data, "schema": schema, "cites": list(cites),
            "deny": list(deny)},
            timeout=JOB_TIMEOUT_S)

    async def run_host_job(self, job: str, data: str, *, schema: str | None = None,
                           cites: Sequence[str] = (), deny: Sequence[str] = ()
                           ) -> dict[str, Any]:
        """Run the host job registered as `job` on the node, on the evidence `data`;
        answers as `run_job` (without fuel)."""
        return await self._call("POST", "/jobs/host/run", json={
            "job": job, "input": data, "schema": schema, "cites": list(cites),
            "deny": list(deny)},
            timeout=JOB_TIMEOUT_S)

    async def check_host_job(self, job: str, data: str, output: str, *,
                             check: str | None = None, schema: str | None = None,
                             cites: Sequence[str] = (), deny: Sequence[str] = ()
                             ) -> dict[str, Any]:
        """Ask the node whether `output` is an acceptable result of host job `job` on
        `data` (its `check`, else the job's own); answers `valid` and `violation`."""
        return await self._call("POST", "/jobs/host/check", json={
            "job": job, "input": data, "output": output, "check": check, "schema": schema,
            "cites": list(cites), "deny": list(deny)},
            timeout=JOB_TIMEOUT_S)

    async def host_jobs(self) -> dict[str, Any]:
        """The host jobs (name -> check, output schema, about) and checks the node has."""
        return await self._call("GET", "/jobs/host")

    async def builtin_jobs(self, *, publish: bool = False) -> dict[str, str]:
        """The built-in jobs' module CIDs by name; with `publish`, stored on the node
        as evidence first, so that peers can fetch them."""
        doc = await self._call("POST" if publish else "GET", "/jobs/builtins")
        return dict(doc["jobs"])

    # -- events --

    async def events(self, *, after: int = 0, need: str | None = None
                     ) -> AsyncIterator[TaskEvent]:
        """The node's task events numbered above `after` (one task's with `need`), then
        each as it comes. Raises Unavailable when the stream breaks: resume with
        `after` set to the last `seq` seen."""
        params: dict[str, Any] = {"after": after}
        if need:
            params["need"] = need
        try:
            async with self._http.stream("GET", self.url + "/tasks/events", params=params,
                                         timeout=httpx.Timeout(TIMEOUT_S, read=None)
                                         ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue  # ids, kinds, keep-alive comments, blank separators
                    doc = json.loads(line[len("data: "):])
                    yield TaskEvent(int(doc.get("seq", 0)), str(doc.get("kind", "")),
                                    str(doc.get("need_id", "")), doc)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the event stream of {self.url} broke ({exc})") from None

    async def follow(self, on_event: Callable[[TaskEvent], None], *, after: int = 0,
                     reconnect_s: float = 1.0) -> None:
        """Call `on_event` with each task event, for ever: `events` resumed after the
        last event seen whenever the stream breaks (the node restarting, say). Returns
        only by cancellation; `on_event` must not block (start work in a nursery)."""
        seen = after
        while True:
            try:
                async for event in self.events(after=seen):
                    seen = max(seen, event.seq)
                    on_event(event)
            except Unavailable as exc:
                log.warning("the event stream broke (%s); resuming after %d", exc, seen)
                await trio.sleep(reconnect_s)

    # -- plumbing --

    async def _write(self, path: str, body: dict[str, Any],
                     timeout_s: float) -> dict[str, Any]:
        return await self._call("POST", path, json={**body, "timeout_s": timeout_s},
                                timeout=timeout_s + OUTCOME_MARGIN_S)

    async def _call(self, method: str, path: str, *, timeout: float = TIMEOUT_S,
                    **kw: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, self.url + path, timeout=timeout,
                                                **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(f"no answer from the node at {self.url} ({exc}); the "
                              f"command may or may not have been applied") from None
        _raise_for(response)
        doc: dict[str, Any] = response.json()
        return doc


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message, detail = error_of(response)
    code = detail.get("code", "") if isinstance(detail, dict) else ""
    if response.status_code == 409 and code:
        raise Refused(code, str(detail.get("reason", message)), detail)
    if response.status_code == 503:
        raise Unavailable(f"{code or 'unavailable'}: {message}", detail)
    raise AgentError(f"{response.status_code} {code + ': ' if code else ''}{message}", detail)
