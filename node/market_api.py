"""Control-API routes for the task market.

Owns the routes' shapes only; `MarketService` (node/market_service.py) does the work.
Amounts sent to the node (budget, bounty, cost) are credits as text ("12.5"); amounts
it answers are integers in the smallest unit, with `unit_per_credit` alongside.

Errors as the ledger's routes: 400 for bad input (detail names the field), 409 when the
bucket refused the step as it applied it (detail: the rule's `code`, such as
`bid_window_closed`, `not_winner`, `not_lease_holder`, `not_in_committee`,
`insufficient_balance`, its `reason`, and the full `outcome`), 503 when no quorum of
the bucket answered in time, 404 for a task this node does not know.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import Field

from swarm.protocol.errors import ProtocolError

from .api_guard import StrictBody
from .client import OUTCOME_WAIT_S_DEFAULT, OUTCOME_WAIT_S_MAX
from .ledger_api import write
from .market_events import FOLLOWERS_MAX
from .market_service import MarketService

CREDITS = "Credits as text, decimals allowed (\"12.5\"); exact to the smallest unit."
CID_CHARS_MAX = 128
MS_MAX = 2**63 - 1


class StepBody(StrictBody):
    timeout_s: float = Field(default=OUTCOME_WAIT_S_DEFAULT, gt=0, le=OUTCOME_WAIT_S_MAX)


class PostBody(StepBody):
    task_class: Literal["simple", "complex", "critical"] = Field(alias="class")
    budget: str = Field(description=CREDITS, max_length=40)
    title: str = Field(default="", max_length=200)
    verify_bounty: str = Field(default="0", description=CREDITS, max_length=40)
    bid_window_ms: int | None = Field(default=None, ge=1, le=MS_MAX)
    k_result: int | None = Field(default=None, ge=1, le=64)
    k_plan: int | None = Field(default=None, ge=0, le=64)
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    job: str | None = Field(default=None, max_length=CID_CHARS_MAX,
                            description="The WebAssembly job to run: its module's CID.")
    input: str | None = Field(default=None, max_length=CID_CHARS_MAX,
                              description="The evidence the job runs on.")
    host: str | None = Field(default=None, max_length=64,
                             description="Or a host job: its registered name.")
    check: str | None = Field(default=None, max_length=64,
                              description="The host check that verifies the result (the "
                                          "host job's own when absent).")
    output: str | None = Field(default=None, max_length=64,
                               description="The result's output schema: FORMAT or "
                                           "FORMAT<=MAX_BYTES (docs/JOBS.md).")
    cites: list[str] = Field(default_factory=list, max_length=8,
                             description="CIDs whose text the result must contain; the "
                                         "output schema must then bound it (docs/JOBS.md).")
    deny: list[str] = Field(default_factory=list, max_length=8,
                            description="Strings (1-64 bytes) the result must not contain: "
                                        "the task's content policy (docs/JOBS.md).")


class BidBody(StepBody):
    cost: str = Field(description=CREDITS, max_length=40)
    eta_ms: int = Field(ge=0, le=MS_MAX)
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    proposal_id: str = Field(default="", max_length=128)
    ballot: str = Field(default="", max_length=128)
    patch: dict[str, Any] | None = Field(
        default=None, description="Plan ops under the NEED ({\"base_lamport\": N, "
                                  "\"ops\": [...]}, as UPDATE_PLAN's payload in JSON form); "
                                  "they join the plan if the bid wins.")


class ClaimBody(StepBody):
    lease_ttl_ms: int = Field(ge=1, le=MS_MAX)
    heartbeat_interval_ms: int = Field(ge=1, le=MS_MAX)


class HeartbeatBody(StepBody):
    progress: int = Field(ge=0, le=100)
    lease: str | None = Field(default=None, max_length=CID_CHARS_MAX)


class YieldBody(StepBody):
    reason: str = Field(default="yielded", max_length=256)


class CommitBody(StepBody):
    result: str = Field(description="The result's evidence CID.", max_length=CID_CHARS_MAX)
    lease: str | None = Field(default=None, max_length=CID_CHARS_MAX)


class AttestBody(StepBody):
    verdict: Literal["valid", "invalid"]


ProofType = Literal["schema_violation", "missing_citation", "semantic_contradiction",
                    "output_mismatch", "policy_breach"]
Complexity = Literal["low", "medium", "high"]


class ChallengeBody(StepBody):
    task_id: str = Field(max_length=CID_CHARS_MAX)
    proof_type: ProofType
    evidence: str = Field(max_length=CID_CHARS_MAX,
                          description="The proof's CID (at most proof_bytes_max bytes).")
    complexity: Complexity = Field(default="low", description="The bond's multiplier: "
                                   "1, or the genesis' medium or high.")
    size_bytes: int | None = Field(default=None, ge=0, le=MS_MAX,
                                   description="The proof's size; read from this node's "
                                               "evidence store when absent.")


class VoteBody(StepBody):
    verdict: Literal["uphold", "reject"]


def market_router(service: Callable[[], MarketService], dependencies: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=dependencies, tags=["market"])

    @router.post("/tasks")
    async def post(body: PostBody) -> dict[str, Any]:
        """Post a NEED and escrow its budget from this node's account."""
        return await write(lambda: service().post(
            body.task_class, body.budget, title=body.title, verify_bounty=body.verify_bounty,
            bid_window_ms=body.bid_window_ms, k_result=body.k_result,
            capabilities=body.capabilities, k_plan=body.k_plan, job=body.job,
            data=body.input, host=body.host, check=body.check, output=body.output,
            cites=body.cites, deny=body.deny,
            timeout_s=body.timeout_s))

    @router.get("/tasks")
    async def tasks(state: str | None = None) -> dict[str, Any]:
        return service().tasks(state)

    @router.get("/tasks/events")
    async def events(after: int = 0, need: str | None = None) -> StreamingResponse:
        """Server-sent events (`text/event-stream`), one per task event this node
        applies, numbered (`id:`); `after` resumes after a number, `need` keeps one
        task's. A comment line every few seconds of silence keeps the stream open."""
        events = service().events
        if events.followers >= FOLLOWERS_MAX:
            raise HTTPException(status_code=503, detail={
                "code": "too_many_streams",
                "reason": f"{FOLLOWERS_MAX} event streams are open on this node"})

        async def body() -> AsyncIterator[bytes]:
            # Closed with the response, so a client that goes away frees its slot.
            async with aclosing(events.follow(after, need)) as stream:
                async for event in stream:
                    if event is None:
                        yield b": keep-alive\n\n"
                    else:
                        yield (f"id: {event['seq']}\nevent: {event['kind']}\n"
                               f"data: {json.dumps(event, sort_keys=True)}\n\n").encode()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    @router.get("/tasks/{need}")
    async def task(need: str) -> dict[str, Any]:
        try:
            return service().task(need)
        except ProtocolError as exc:
            status = 404 if exc.code == "unknown_task" else 400
            raise HTTPException(status_code=status, detail=exc.to_dict()) from None

    @router.get("/tasks/{need}/explain")
    async def explain(need: str) -> dict[str, Any]:
        """The decision's explanation memo: every bid, its score and parts, the rule."""
        try:
            return await service().explain(need)
        except ProtocolError as exc:
            status = 404 if exc.code in ("unknown_task", "memo_unknown") else 400
            raise HTTPException(status_code=status, detail=exc.to_dict()) from None

    @router.post("/tasks/{need}/bid")
    async def bid(need: str, body: BidBody) -> dict[str, Any]:
        return await write(lambda: service().bid(
            need, body.cost, body.eta_ms, capabilities=body.capabilities,
            proposal_id=body.proposal_id, ballot=body.ballot, patch=body.patch,
            timeout_s=body.timeout_s))

    @router.post("/tasks/{need}/claim")
    async def claim(need: str, body: ClaimBody) -> dict[str, Any]:
        return await write(lambda: service().claim(
            need, body.lease_ttl_ms, body.heartbeat_interval_ms, timeout_s=body.timeout_s))

    @router.post("/tasks/{need}/heartbeat")
    async def heartbeat(need: str, body: HeartbeatBody) -> dict[str, Any]:
        return await write(lambda: service().heartbeat(
            need, body.progress, lease=body.lease, timeout_s=body.timeout_s))

    @router.post("/tasks/{need}/yield")
    async def yield_task(need: str, body: YieldBody) -> dict[str, Any]:
        return await write(lambda: service().yield_task(need, body.reason,
                                                        timeout_s=body.timeout_s))

    @router.post("/tasks/{need}/commit")
    async def commit(need: str, body: CommitBody) -> dict[str, Any]:
        return await write(lambda: service().commit(need, body.result, lease=body.lease,
                                                    timeout_s=body.timeout_s))

    @router.get("/challenges")
    async def challenges(state: str | None = None, task: str | None = None
                         ) -> dict[str, Any]:
        """Challenges this node knows of, open and decided, newest first."""
        try:
            return service().challenges(state, task)
        except ProtocolError as exc:
            raise HTTPException(status_code=400, detail=exc.to_dict()) from None

    @router.get("/challenges/bond")
    async def bond(proof_type: ProofType, complexity: Complexity = "low") -> dict[str, Any]:
        """What a challenge would lock, before opening it."""
        m = service()
        return {"bond": m.bond(proof_type, complexity), "unit_per_credit": m.unit,
                "proof_type": proof_type, "complexity": complexity,
                "proof_bytes_max": m.genesis.params["proof_bytes_max"]}

    @router.post("/challenges")
    async def open_challenge(body: ChallengeBody) -> dict[str, Any]:
        """Challenge a task's attested result; the bond leaves this node's account."""
        return await write(lambda: service().open_challenge(
            body.task_id, body.proof_type, body.evidence, complexity=body.complexity,
            size_bytes=body.size_bytes, timeout_s=body.timeout_s))

    @router.get("/challenges/{challenge_id}")
    async def challenge(challenge_id: str) -> dict[str, Any]:
        try:
            return service().challenge(challenge_id)
        except ProtocolError as exc:
            status = 404 if exc.code == "unknown_challenge" else 400
            raise HTTPException(status_code=status, detail=exc.to_dict()) from None

    @router.post("/challenges/{challenge_id}/withdraw")
    async def withdraw(challenge_id: str, body: StepBody) -> dict[str, Any]:
        """Take back this node's open challenge: the bond less the withdrawal fee."""
        return await write(lambda: service().withdraw(challenge_id,
                                                      timeout_s=body.timeout_s))

    @router.post("/challenges/{challenge_id}/vote")
    async def vote(challenge_id: str, body: VoteBody) -> dict[str, Any]:
        """A panel member's vote on the challenge under way."""
        return await write(lambda: service().vote(challenge_id, body.verdict == "uphold",
                                                  timeout_s=body.timeout_s))

    @router.get("/slashes")
    async def slashes(account: str | None = None) -> dict[str, Any]:
        """Slashes carried out in the buckets this node holds, newest first."""
        try:
            who = bytes.fromhex(account) if account else None
        except ValueError:
            who = b""
        if who is not None and len(who) != 32:
            raise HTTPException(status_code=400, detail={
                "code": "schema", "field": "account",
                "reason": "an account is 64 hex digits"})
        return service().slashes(who)

    @router.post("/tasks/{need}/attest")
    async def attest(need: str, body: AttestBody) -> dict[str, Any]:
        return await write(lambda: service().attest(need, body.verdict,
                                                    timeout_s=body.timeout_s))

    return router
