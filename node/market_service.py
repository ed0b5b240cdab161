"""The task market in the node: what the control API's task routes do.

Owns turning a user's request into a signed market envelope and its outcome: the node
signs a NEED (posting and funding a task), PROPOSE (a bid), CLAIM, HEARTBEAT, YIELD,
COMMIT, ATTEST, CHALLENGE or WITHDRAW with its identity, and submits it through the
ledger's request path (`LedgerService.submit_own`) to the bucket that orders it: a NEED
or a CHALLENGE to the signer's bucket, which debits the budget or the bond and funds the
task, or opens the challenge, in the NEED's bucket; the others to the NEED's bucket,
whose task book applies them (docs/MARKET.md). A panel member's vote on a challenge is
an ATTEST naming it. A refusal by a rule
(`bid_window_closed`, `not_winner`, `insufficient_balance`, ...) is an outcome
(`LedgerRefused`, its code the rule's). A funded NEED is then also gossiped, so that the
plan's DAG has it.

Reads come from this node's own state, as the ledger's do: the task book of a bucket it
replicates, or of its certified read replica of the others. A decision's explanation
memo is read from the node's evidence store, where every applied memo is pinned, or
fetched from peers (node/market_memos.py).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from swarm.protocol import cbor, output_schema, verbs
from swarm.protocol.bucket_machine import chain_digest
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope
from swarm.protocol.errors import DecodeError, LocalProtocolError, SchemaError
from swarm.protocol.genesis import Genesis
from swarm.protocol.ledger import SlashRecord
from swarm.protocol.schema import to_json
from swarm.protocol.task import (
    OUTCOMES,
    Challenge,
    Ruling,
    Task,
    challenge_json,
    ruling_json,
    task_json,
)

from .bitswap import Bitswap
from .client import OUTCOME_WAIT_S_DEFAULT
from .evidence_store import EvidenceStore
from .ledger_service import LedgerRefused, LedgerService
from .market_events import TaskEvents
from .market_memos import MarketMemos

TASKS_LISTED_MAX = 1000
COMPLEXITIES = ("low", "medium", "high")  # bond multipliers 1 and the genesis' two
LEASES_KEPT = 4096
BALLOT_BYTES = 8  # a fresh ballot per bid, as 16 hex digits


class MarketService:
    """`ledger` routes and reads; `sign` makes an envelope signed by this node with
    `ts_ms`; `gossip` publishes an envelope's bytes as the gossip path judges them;
    `evidence` keeps the decisions' explanation memos (`run` writes them there)."""

    def __init__(self, ledger: LedgerService, genesis: Genesis,
                 sign: Callable[[str, dict[str, Any], int], Envelope],
                 gossip: Callable[[bytes], Awaitable[dict[str, Any]]],
                 registry: CollectorRegistry, evidence: EvidenceStore) -> None:
        self.ledger = ledger
        self.genesis = genesis
        self.sign = sign
        self.gossip = gossip
        self.unit = genesis.params["unit_per_credit"]
        self.events = TaskEvents(registry)
        ledger.net.listeners.append(self.events.publish)
        # Explanation memos of the decisions this node applies, pinned as evidence under
        # the CID the decision names (the bytes are the same on every node).
        self.memos = MarketMemos(evidence)
        self.evidence = evidence
        ledger.net.listeners.append(self.memos.keep)
        # The leases this node's claims opened (a lease's id is its CLAIM's), so that a
        # heartbeat or commit right after a claim need not wait for this node's view of
        # the bucket to show the lease.
        self.leases: OrderedDict[Cid, Cid] = OrderedDict()
        self.refusals = PromCounter("swarm_task_refusals", "Market commands of this node "
                                    "the bucket refused, by rule", ["code"],
                                    registry=registry)

    async def run(self, bitswap: Bitswap | None = None, *,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Store the applied decisions' memos until cancelled; `bitswap` fetches from
        peers those `explain` does not find here."""
        await self.memos.run(bitswap, task_status=task_status)

    # -- writes --

    async def post(self, task_class: str, budget: str | int, *, title: str = "",
                   verify_bounty: str | int = 0, bid_window_ms: int | None = None,
                   k_result: int | None = None, capabilities: Sequence[str] = (),
                   k_plan: int | None = None, units: bool = False,
                   job: str | None = None, data: str | None = None,
                   host: str | None = None, check: str | None = None,
                   output: str | None = None, cites: Sequence[str] = (),
                   deny: Sequence[str] = (),
                   timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Post a NEED and escrow its budget from this node's account. Amounts are
        credits as text, or integers in the smallest unit with `units`. The job is a
        WebAssembly module's CID (`job`) or a host job's name (`host`, with its `check`);
        `output` is the result's output schema, `cites` CIDs the result must cite,
        `deny` strings it must not contain."""
        def amount(value: str | int) -> int:
            return value if units and isinstance(value, int) else self.ledger.amount(value)

        payload: dict[str, Any] = {"class": task_class, "budget": amount(budget)}
        bounty = amount(verify_bounty) if verify_bounty not in (0, "0", "") else 0
        for name, value in (("title", title), ("verify_bounty", bounty),
                            ("bid_window_ms", bid_window_ms), ("k_result", k_result),
                            ("capabilities", sorted(set(capabilities)))):
            if value:
                payload[name] = value
        if k_plan is not None:
            payload["k_plan"] = k_plan
        if job:
            payload["job"] = parse_cid(job, "job")
        if data:
            payload["input"] = parse_cid(data, "input")
        if job and host:
            raise SchemaError("host", "a NEED names a WebAssembly job or a host job, "
                                      "not both")
        if check and not host:
            raise SchemaError("check", "a check is for a host job")
        for name, text in (("host", host), ("check", check), ("output", output)):
            if text:
                payload[name] = text
        if cites:
            payload["cites"] = [parse_cid(c, "cites") for c in cites]
            problem = output_schema.cites_problem(payload["cites"], output)
            if problem:
                raise SchemaError("cites", problem)
        if deny:
            payload["deny"] = sorted(set(deny))
        env = self._sign("NEED", payload)
        outcome = await self._submit(env, timeout_s)
        await self.gossip(env.wire)  # the plan's DAG; the task itself lives in its bucket
        return {**outcome, "need_id": str(env.id), "lamport": env.lamport,
                "task_bucket": bucket_of(env.id.raw, self.ledger.bucket_count)}

    async def bid(self, need: str, cost: str | int, eta_ms: int, *,
                  capabilities: Sequence[str] = (), proposal_id: str = "",
                  ballot: str = "", patch: Mapping[str, Any] | None = None,
                  timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Bid on a task. A `patch` (plan ops under the NEED, as an UPDATE_PLAN's
        payload) joins the plan if the bid wins; the bid is then also gossiped, so every
        node's plan holds the patch until then."""
        need_id = parse_need(need)
        payload: dict[str, Any] = {
            "need_id": need_id, "proposal_id": proposal_id or f"bid-{os.urandom(4).hex()}",
            "cost": self.ledger.amount(cost) if cost not in (0, "0") else 0,
            "eta_ms": eta_ms, "ballot": ballot or os.urandom(BALLOT_BYTES).hex()}
        if capabilities:
            payload["capabilities"] = sorted(set(capabilities))
        if patch is not None:
            payload["patch"] = verbs.payload_from_json("UPDATE_PLAN", dict(patch))
        env = self._sign("PROPOSE", payload)
        outcome = await self._submit(env, timeout_s)
        if patch is not None:
            await self.gossip(env.wire)
        return {**outcome, "proposal": str(env.id)}

    async def claim(self, need: str, lease_ttl_ms: int, heartbeat_interval_ms: int, *,
                    timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        need_id = parse_need(need)
        env = self._sign("CLAIM", {"task_id": str(need_id), "lease_ttl_ms": lease_ttl_ms,
                                   "heartbeat_interval_ms": heartbeat_interval_ms})
        out = await self._submit(env, timeout_s)
        self.leases[need_id] = env.id
        self.leases.move_to_end(need_id)
        while len(self.leases) > LEASES_KEPT:
            self.leases.popitem(last=False)
        return out

    async def heartbeat(self, need: str, progress: int, *, lease: str | None = None,
                        timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        need_id = parse_need(need)
        return await self._step("HEARTBEAT", {"task_id": str(need_id),
                                              "lease_id": self._lease(need_id, lease),
                                              "progress": progress}, timeout_s)

    async def yield_task(self, need: str, reason: str, *,
                         timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        return await self._step("YIELD", {"task_id": str(parse_need(need)),
                                          "reason": reason}, timeout_s)

    async def commit(self, need: str, result: str, *, lease: str | None = None,
                     timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        need_id = parse_need(need)
        return await self._step("COMMIT", {"task_id": str(need_id),
                                           "lease_id": self._lease(need_id, lease),
                                           "result": parse_cid(result, "result")}, timeout_s)

    async def attest(self, need: str, verdict: str, *,
                     timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        need_id = parse_need(need)
        task = self.task_of(need_id)
        if task is None or task.commit is None:
            raise LocalProtocolError("need", f"task {need_id} has no commit to attest "
                                             f"here yet", code="wrong_state")
        return await self._step("ATTEST", {"task_id": str(need_id),
                                           "commit_id": task.commit.commit_id,
                                           "verdict": verdict}, timeout_s)

    async def _step(self, kind: str, payload: dict[str, Any],
                    timeout_s: float) -> dict[str, Any]:
        return await self._submit(self._sign(kind, payload), timeout_s)

    async def _submit(self, env: Envelope, timeout_s: float) -> dict[str, Any]:
        try:
            return await self.ledger.submit_own(env, timeout_s)
        except LedgerRefused as exc:
            self.refusals.labels(exc.code).inc()
            raise

    def _sign(self, kind: str, payload: dict[str, Any]) -> Envelope:
        return self.sign(kind, payload, time.time_ns() // 1_000_000)

    def _lease(self, need: Cid, given: str | None) -> Cid:
        if given:
            return parse_cid(given, "lease")
        task = self.task_of(need)
        ours = self.leases.get(need)
        if ours is not None and (task is None or task.lease is None
                                 or task.lease.lease_id != ours):
            return ours  # our view of the bucket has not caught up with our claim
        if task is None or task.lease is None:
            raise LocalProtocolError("lease", f"task {need} has no lease here; name it "
                                              f"(`lease`)", code="not_lease_holder")
        return task.lease.lease_id

    # -- challenges --

    def bond(self, proof_type: str, complexity: str = "low") -> int:
        """What a challenge of `proof_type` at `complexity` locks (smallest units)."""
        if proof_type not in verbs.PROOF_TYPES:
            raise SchemaError("proof_type", f"must be one of {', '.join(verbs.PROOF_TYPES)}")
        if complexity not in COMPLEXITIES:
            raise SchemaError("complexity", f"must be one of {', '.join(COMPLEXITIES)}")
        p = self.genesis.params
        factor = 1 if complexity == "low" else p[f"challenge_complexity_{complexity}"]
        return int(p[f"challenge_bond_{proof_type}"]) * int(factor)

    async def open_challenge(self, need: str, proof_type: str, evidence: str, *,
                             complexity: str = "low", size_bytes: int | None = None,
                             timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """Challenge a task's attested result: sign a CHALLENGE naming its current
        commit and the proof (`evidence`, a CID; its size from the evidence store unless
        given) and submit it to this node's bucket, which takes the bond and opens the
        challenge in the task's bucket."""
        need_id = parse_need(need)
        task = self.task_of(need_id)
        if task is None or task.commit is None:
            raise LocalProtocolError("need", f"task {need_id} has no result known here to "
                                             f"challenge", code="unknown_task")
        if task.state != "ATTESTED":
            # The bucket would refuse it and pay the bond back; say so before signing.
            raise LocalProtocolError("need", f"task {need_id} is {task.state} here; only "
                                             f"an attested result, in its challenge window, "
                                             f"can be challenged", code="wrong_state")
        proof = parse_cid(evidence, "evidence")
        if size_bytes is None:
            size_bytes = self.evidence.size_of(proof)
            if size_bytes is None:
                raise LocalProtocolError("size_bytes", f"the proof {proof} is not in this "
                                                       f"node's evidence store; add it, or "
                                                       f"give its size")
        bond = self.bond(proof_type, complexity)
        env = self._sign("CHALLENGE", {
            "task_id": str(need_id), "commit_id": task.commit.commit_id,
            "proof_type": proof_type, "evidence": proof, "bond_amount": bond,
            "size_bytes": size_bytes})
        outcome = await self._submit(env, timeout_s)
        return {**outcome, "challenge_id": str(env.id), "task_id": str(need_id),
                "bond": bond}

    async def vote(self, challenge_id: str, uphold: bool, *,
                   timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """A panel member's vote on the challenge under way: an ATTEST naming it,
        "invalid" to uphold it (the result is wrong), "valid" to reject it."""
        task, found = self.find_challenge(challenge_id)
        if not isinstance(found, Challenge):
            raise LocalProtocolError("challenge_id", f"challenge {challenge_id} is "
                                                     f"{found.outcome}", code="wrong_state")
        return await self._step("ATTEST", {
            "task_id": str(task.terms.need), "commit_id": found.terms.commit_id,
            "evidence": found.terms.challenge_id,
            "verdict": "invalid" if uphold else "valid"}, timeout_s)

    async def withdraw(self, challenge_id: str, *,
                       timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        task, _ = self.find_challenge(challenge_id)
        return await self._step("WITHDRAW", {"task_id": str(task.terms.need),
                                             "challenge_id": parse_cid(challenge_id,
                                                                       "challenge_id")},
                                timeout_s)

    def find_challenge(self, challenge_id: str) -> tuple[Task, Challenge | Ruling]:
        """The task holding the challenge (open, or decided and still remembered)."""
        cid = parse_cid(challenge_id, "challenge_id")
        for task in self.all_tasks():
            for c in task.challenges:
                if c.terms.challenge_id == cid:
                    return task, c
            for r in task.rulings:
                if r.challenge_id == cid:
                    return task, r
        raise LocalProtocolError("challenge_id", f"no challenge {cid} is known here (one "
                                                 f"its task's bucket refused is not kept: "
                                                 f"its bond came back, and the task's "
                                                 f"events say why)",
                                 code="unknown_challenge")

    def challenge(self, challenge_id: str) -> dict[str, Any]:
        task, found = self.find_challenge(challenge_id)
        doc = (challenge_json(task, found) if isinstance(found, Challenge)
               else {**ruling_json(found), "task_id": str(task.terms.need)})
        return {**doc, "unit_per_credit": self.unit, "task_state": task.state,
                "queue": [str(c.terms.challenge_id) for c in task.challenges]}

    def challenges(self, state: str | None = None, task: str | None = None
                   ) -> dict[str, Any]:
        """Challenges this node knows of: open ones ("queued", "awaiting_panel",
        "voting") and decided ones (`OUTCOMES`), newest first; `state` "open" keeps
        the open ones."""
        states = ("open", "queued", "awaiting_panel", "voting", *OUTCOMES)
        if state is not None and state not in states:
            raise SchemaError("state", f"must be one of {', '.join(states)}")
        need = parse_need(task) if task else None
        rows: list[dict[str, Any]] = []
        for t in self.all_tasks():
            if need is not None and t.terms.need != need:
                continue
            rows += [challenge_json(t, c) for c in t.challenges]
            rows += [{**ruling_json(r), "task_id": str(t.terms.need)} for r in t.rulings]
        if state == "open":
            rows = [r for r in rows if r["state"] not in OUTCOMES]
        elif state is not None:
            rows = [r for r in rows if r["state"] == state]
        rows.sort(key=lambda r: (-(r.get("opened_ms") or r.get("ts_ms") or 0),
                                 r["challenge_id"]))
        return {"unit_per_credit": self.unit, "challenges": rows[:TASKS_LISTED_MAX]}

    def slashes(self, account: bytes | None = None) -> dict[str, Any]:
        """Slashes carried out in the buckets this node holds (replicated or read),
        newest first: each bucket's own record of what it took and why."""
        rows: list[tuple[int, SlashRecord]] = []
        for bucket in range(self.ledger.bucket_count):
            rows += [(bucket, r) for r in
                     self.ledger.net.part(bucket).ledger.slashes(account)]
        rows.sort(key=lambda br: (-br[1].ts_ms, br[0], -br[1].index))
        return {"unit_per_credit": self.unit, "slashes": [
            {"bucket": b, "index": r.index, "ts_ms": r.ts_ms, "account": r.account.hex(),
             "reason": r.reason, "evidence": str(r.evidence), "amount": r.amount,
             "challenger": r.challenger.hex() if r.challenger else None,
             "honest": [h.hex() for h in r.honest]}
            for b, r in rows[:TASKS_LISTED_MAX]]}

    # -- reads --

    async def explain(self, need: str) -> dict[str, Any]:
        """Why the task's current decision went as it did: its explanation memo (every
        bid with its score and parts, the weights, the rule), from the evidence store
        or from peers."""
        need_id = parse_need(need)
        task = self.task_of(need_id)
        if task is None or task.decision is None:
            raise LocalProtocolError("need", f"task {need_id} has no decision known here",
                                     code="unknown_task")
        memo = task.decision.memo
        data = await self.memos.read(memo)
        return {"memo": str(memo), "unit_per_credit": self.unit,
                "explanation": to_json(cbor.decode(data))}

    def task_of(self, need: Cid) -> Task | None:
        return self.task_in(bucket_of(need.raw, self.ledger.bucket_count), need)

    def task_in(self, bucket: int, need: Cid) -> Task | None:
        return self.ledger.net.part(bucket).ledger.tasks.get(need)

    def task_named(self, task_id: str) -> Task | None:
        """The funded task whose NEED id is `task_id` as text, if this node knows one."""
        try:
            return self.task_of(Cid.parse(task_id, "task_id"))
        except DecodeError:
            return None

    def all_tasks(self) -> list[Task]:
        found: list[Task] = []
        for bucket in range(self.ledger.bucket_count):
            found.extend(self.ledger.net.part(bucket).ledger.tasks.tasks.values())
        return found

    def task(self, need: str) -> dict[str, Any]:
        need_id = parse_need(need)
        bucket = bucket_of(need_id.raw, self.ledger.bucket_count)
        task = self.task_of(need_id)
        if task is None:
            raise LocalProtocolError("need", f"no funded task {need_id} is known here "
                                             f"(bucket {bucket})", code="unknown_task")
        part = self.ledger.net.part(bucket)
        return {**task_json(task), "bucket": bucket, "as_of_index": part.last,
                "source": "replica" if self.ledger.net.replicated(bucket) else "read_replica",
                "unit_per_credit": self.unit,
                "transitions": [self._certified(bucket, index, state)
                                for index, state in task.history]}

    def _certified(self, bucket: int, index: int, state: str) -> dict[str, Any]:
        """A state the task entered, at the chain entry `index`, with that entry's
        certificate (None until a quorum's signatures reached this node): the
        signatures over (swarm, bucket, index, term, `digest`), the entry's
        `chain_digest` (docs/LEDGER.md), which anyone holding the entry can rebuild."""
        proof = self.ledger.net.proof_of(bucket, index)
        cert = None if proof is None else {
            "term": proof.term, "digest": chain_digest(proof.entry).hex(),
            "sigs": [{"signer": a.hex(), "sig": b.hex()} for a, b in sorted(proof.sigs)]}
        return {"index": index, "state": state, "certificate": cert}

    def tasks(self, state: str | None = None) -> dict[str, Any]:
        """The tasks this node knows of, newest first."""
        found: list[Task] = []
        for bucket in range(self.ledger.bucket_count):
            book = self.ledger.net.part(bucket).ledger.tasks
            found.extend(t for t in book.tasks.values() if state in (None, t.state))
        found.sort(key=lambda t: (-t.created_ms, t.terms.need.raw))
        return {"unit_per_credit": self.unit, "tasks": [
            task_json(t, brief=True) for t in found[:TASKS_LISTED_MAX]]}


def parse_cid(text: str, field: str) -> Cid:
    try:
        return Cid.parse(text, field)
    except DecodeError as exc:
        raise LocalProtocolError(field, exc.reason) from None


def parse_need(text: str) -> Cid:
    return parse_cid(text, "need")
