"""Control-API routes for DECIDE and Raft: submit a decision, read one, bucket status.

Owns the routes' shapes only; `DecideService` (node/decide_service.py) does the work.
Errors: 400 for a malformed NEED id or proposal, or an id that names another kind of
envelope; 404 for an id that is no NEED known here (`POST /decide`, after waiting a
little for it to arrive) or a NEED with no decision known here (`GET /decisions/{id}`);
503 when no quorum of the NEED's bucket answered in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from swarm.protocol.cid import Cid
from swarm.protocol.errors import ProtocolError

from .api_guard import StrictBody
from .client import OUTCOME_WAIT_S_DEFAULT, OUTCOME_WAIT_S_MAX
from .decide_service import NEED_WAIT_S, DecideService, UnknownNeed
from .raft_kinds import DecideError

# What is left of a request's wait once its NEED is known, at the least: try_decide
# takes a positive timeout.
DECIDE_WAIT_S_MIN = 0.001


class DecideRequestBody(StrictBody):
    need_id: str = Field(description="The NEED's id (a CID string).")
    proposal_id: str = Field(description="The winning proposal's id (1..128 bytes).")
    k_plan: int = Field(default=0, ge=0, le=64)
    epoch: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=OUTCOME_WAIT_S_DEFAULT, gt=0, le=OUTCOME_WAIT_S_MAX)


def decide_router(service: Callable[[], DecideService], dependencies: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=dependencies, tags=["decide"])

    @router.post("/decide")
    async def decide(body: DecideRequestBody) -> dict[str, Any]:
        """Submit a decision for a NEED known here; answers the committed one (first
        writer wins), which may name another proposal. Idempotent: safe to retry."""
        svc = service()
        try:
            waited = await svc.require_need(Cid.parse(body.need_id, "need_id"),
                                            min(body.timeout_s, NEED_WAIT_S))
            return await svc.try_decide(body.need_id, body.proposal_id, body.k_plan,
                                        body.epoch,
                                        max(body.timeout_s - waited, DECIDE_WAIT_S_MIN))
        except DecideError as exc:
            raise HTTPException(status_code=503, detail=exc.to_dict()) from None
        except UnknownNeed as exc:
            raise HTTPException(status_code=404, detail=exc.to_dict()) from None
        except ProtocolError as exc:
            raise HTTPException(status_code=400, detail=exc.to_dict()) from None

    @router.get("/decisions/{need_id}")
    async def decision(need_id: str) -> dict[str, Any]:
        """The decision for a NEED as this node knows it: certified (from a DECIDE
        envelope whose certificate checked) or, on a replica, committed locally."""
        try:
            d = service().decision(need_id)
        except ProtocolError as exc:
            raise HTTPException(status_code=400, detail=exc.to_dict()) from None
        if d is None:
            raise HTTPException(status_code=404, detail={
                "code": "not_found", "field": "need_id",
                "reason": "no decision for this NEED is known here"})
        return d

    @router.get("/decisions")
    async def decisions() -> dict[str, Any]:
        """Every certified decision this node holds (its read replica)."""
        svc = service()
        return {"decisions": sorted((svc.certified_json(n) or {} for n in list(svc.certified)),
                                    key=lambda d: d["need_id"])}

    @router.get("/raft/status")
    async def raft_status(bucket: int | None = None) -> dict[str, Any]:
        """Per bucket: role, leader, term, commit index, replicas, lag."""
        svc = service()
        if bucket is not None and not 0 <= bucket < svc.placement.bucket_count:
            raise HTTPException(status_code=400, detail={
                "code": "local_error", "field": "bucket",
                "reason": f"must be 0..{svc.placement.bucket_count - 1}"})
        return svc.status(bucket)

    return router
