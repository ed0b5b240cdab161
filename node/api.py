"""The control API: HTTP/JSON on 127.0.0.1, a bearer token from the home directory,
an OpenAPI description at /openapi.json, and Prometheus text at /metrics.

Owns routes and their request/response shapes only; every action is a method of the
running node (`NodeControl`), so the API holds no state of its own.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from swarm.protocol.errors import ProtocolError

from .bitswap import Bitswap
from .blockstore import Blockstore
from .decide_api import decide_router
from .decide_service import DecideService
from .evidence_api import evidence_router
from .evidence_store import EvidenceStore
from .ledger_api import ledger_router
from .ledger_service import LedgerService


class NodeControl(Protocol):
    def status(self) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    async def connect(self, multiaddr: str) -> dict[str, Any]: ...
    async def publish(self, kind: str, payload: dict[str, Any], thread: str,
                      refs: list[str]) -> dict[str, Any]: ...
    def plan_root(self) -> dict[str, Any]: ...
    def plan_thread(self, thread: str) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def deliveries(self) -> list[dict[str, Any]]: ...
    blockstore: Blockstore
    bitswap: Bitswap
    evidence: EvidenceStore
    decider: DecideService
    ledger: LedgerService


class ConnectRequest(BaseModel):
    multiaddr: str = Field(description="A full multiaddr ending in /p2p/<peer id>.")


class EnvelopeRequest(BaseModel):
    kind: str
    payload: dict[str, Any] = Field(description="The payload as JSON: bytes as hex, CIDs as "
                                                "strings.")
    thread: str = ""
    refs: list[str] = Field(default_factory=list)


class NeedRequest(BaseModel):
    task_class: str = Field(alias="class", description="simple | complex | critical")
    budget: int = Field(description="In the smallest credit unit.")
    title: str = ""


def build_app(node: NodeControl, token: str) -> FastAPI:
    app = FastAPI(title="CAN Swarm node control API", version="1",
                  description="Local control of one swarm-node. Send the token from "
                              "HOME/api.token as `Authorization: Bearer <token>`.")

    # async, so FastAPI runs it on the event loop: a plain def would cost every request
    # a worker-thread hop (measured: docs/NETWORK.md).
    async def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API token")

    auth = [Depends(authorised)]

    def bad_request(exc: ProtocolError) -> HTTPException:
        return HTTPException(status_code=400, detail=exc.to_dict())

    @app.get("/status", dependencies=auth)
    async def status() -> dict[str, Any]:
        return node.status()

    @app.get("/peers", dependencies=auth)
    async def peers() -> list[dict[str, Any]]:
        return node.peers()

    @app.post("/peers/connect", dependencies=auth)
    async def connect(req: ConnectRequest) -> dict[str, Any]:
        try:
            return await node.connect(req.multiaddr)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail={"reason": str(exc)}) from None

    @app.post("/envelopes", dependencies=auth)
    async def publish(req: EnvelopeRequest) -> dict[str, Any]:
        try:
            return await node.publish(req.kind, req.payload, req.thread, req.refs)
        except ProtocolError as exc:
            raise bad_request(exc) from None

    @app.post("/needs", dependencies=auth)
    async def need(req: NeedRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"class": req.task_class, "budget": req.budget}
        if req.title:
            payload["title"] = req.title
        try:
            result = await node.publish("NEED", payload, "", [])
        except ProtocolError as exc:
            raise bad_request(exc) from None
        return {"need_id": result["id"], **result}

    @app.get("/plan/root", dependencies=auth)
    async def plan_root() -> dict[str, Any]:
        return node.plan_root()

    @app.get("/plan/threads/{thread}", dependencies=auth)
    async def plan_thread(thread: str) -> dict[str, Any]:
        return node.plan_thread(thread)

    app.include_router(evidence_router(lambda: node.evidence, auth, lambda: node.bitswap))
    app.include_router(decide_router(lambda: node.decider, auth))
    app.include_router(ledger_router(lambda: node.ledger, auth))

    @app.get("/debug/deliveries", dependencies=auth,
             description="This node's recent publishes and acceptances (envelope id, "
                         "wall-clock nanoseconds, event), oldest first; for benchmarks.")
    async def deliveries() -> dict[str, Any]:
        return {"deliveries": node.deliveries()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(node.metrics_text().decode(),
                                 media_type="text/plain; version=0.0.4")

    return app
