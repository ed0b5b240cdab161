"""The control API: HTTP/JSON on 127.0.0.1, a bearer token from the home directory,
an OpenAPI description at /openapi.json, and Prometheus text at /metrics, served by
hypercorn on trio (`serve_api`).

Owns routes and their request/response shapes only; every action is a method of the
running node (`NodeControl`), so the API holds no state of its own. Requests pass the
guard first (node/api_guard.py: token, then body size), so no route reads a byte from
a client without the token, nor more bytes than its limit. `GET /identity` answers a
client's challenge with proof that this node holds the token, before the client sends
it (node/client.py).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qs

import trio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from pydantic import Field

from swarm.protocol.errors import ProtocolError

from .api_guard import BODY_BYTES_MAX, ApiGuard, StrictBody, invalid_request, token_matches
from .bitswap import Bitswap
from .blockstore import Blockstore, parse_kind
from .client import OUTCOME_WAIT_S_DEFAULT, OUTCOME_WAIT_S_MAX
from .decide_api import decide_router
from .decide_service import DecideService
from .evidence_api import evidence_router
from .evidence_store import EvidenceStore
from .home import identity_proof
from .job_api import job_router
from .job_service import JobService
from .judge import Judge, judge_router
from .ledger_api import ledger_router, write
from .ledger_service import LedgerRefused, LedgerService
from .market_api import market_router
from .market_service import MarketService
from .raft_kinds import SubmitError

# The status of a verdict other than ACCEPT: a REJECT is the client's envelope's fault
# (400), except a fault of ours; an IGNORE is "not now" (409), or the sender's rate.
_VERDICT_STATUS = {"rate_limited": 429, "internal": 500}


class NodeControl(Protocol):
    def status(self) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    async def connect(self, multiaddr: str) -> dict[str, Any]: ...
    async def publish(self, kind: str, payload: dict[str, Any], thread: str,
                      refs: list[str]) -> dict[str, Any]: ...
    async def submit_wire(self, data: bytes, timeout_s: float) -> dict[str, Any]: ...
    def plan_root(self) -> dict[str, Any]: ...
    def plan_thread(self, thread: str) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def deliveries(self) -> list[dict[str, Any]]: ...
    blockstore: Blockstore
    bitswap: Bitswap
    evidence: EvidenceStore
    decider: DecideService
    ledger: LedgerService
    market: MarketService
    jobs: JobService
    judge: Judge


class ConnectRequest(StrictBody):
    multiaddr: str = Field(description="A full multiaddr ending in /p2p/<peer id>.",
                           max_length=1024)


class EnvelopeRequest(StrictBody):
    kind: str
    payload: dict[str, Any] = Field(description="The payload as JSON: bytes as hex, CIDs as "
                                                "strings.")
    thread: str = ""
    refs: list[str] = Field(default_factory=list)


class NeedRequest(StrictBody):
    task_class: str = Field(alias="class", description="simple | complex | critical")
    budget: int = Field(description="In the smallest credit unit.")
    title: str = ""
    verify_bounty: int = Field(default=0, ge=0, description="In the smallest credit unit; "
                                                            "part of the budget.")
    bid_window_ms: int | None = Field(default=None, ge=1)
    k_result: int | None = Field(default=None, ge=1, le=64)
    timeout_s: float = Field(default=OUTCOME_WAIT_S_DEFAULT, gt=0, le=OUTCOME_WAIT_S_MAX)


class PlanTaskRequest(StrictBody):
    task_class: str = Field(alias="class", description="simple | complex | critical")
    budget: int = Field(description="In the smallest credit unit (not escrowed).")
    title: str = ""


# Nonces of the identity challenge: 16 to 64 bytes, in hex.
NONCE_PATTERN = "^[0-9a-f]{32,128}$"


async def serve_api(nursery: trio.Nursery, app: ApiGuard, bind: str) -> str:
    """Serve `app` on `bind` (host:port) in `nursery`; answers the URL it listens on."""
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("swarm.api")
    binds = await nursery.start(
        lambda task_status: serve(app, config,  # type: ignore[arg-type]
                                  shutdown_trigger=trio.sleep_forever,
                                  task_status=task_status))
    url: str = binds[0]
    return url


def build_app(node: NodeControl, token: str, peer_id: str) -> ApiGuard:
    """The control API behind its guard, ready to serve (an ASGI app)."""
    app = FastAPI(title="CAN Swarm node control API", version="1",
                  description="Local control of one swarm-node. Send the token from "
                              "HOME/api.token as `Authorization: Bearer <token>`; check "
                              "first, with `GET /identity`, that the node holds it. "
                              f"Request bodies are at most {BODY_BYTES_MAX} bytes unless a "
                              "route says otherwise (413).")
    app.add_exception_handler(RequestValidationError, invalid_request)

    # The guard has checked the token already; this checks it again for routes mounted
    # some other way, and marks the routes that need it. async, so FastAPI runs it on
    # the event loop: a plain def would cost every request a worker-thread hop.
    async def authorised(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), token):
            raise HTTPException(status_code=401, detail={
                "code": "unauthorized", "field": "authorization",
                "reason": "missing or wrong API token"})

    auth = [Depends(authorised)]

    @app.get("/identity",
             description="Unauthenticated. Proof that this node holds the API token: "
                         "`proof` is hex HMAC-SHA256(token, \"can-swarm/control-api/"
                         "identity/v1\\0\" || nonce || peer_id). A client sends its "
                         "token only to a node whose proof checks.")
    async def identity(nonce: Annotated[str, Query(pattern=NONCE_PATTERN)]
                       ) -> dict[str, str]:
        return {"peer_id": peer_id,
                "proof": identity_proof(token, bytes.fromhex(nonce), peer_id)}

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
        """Dial a peer at exactly the address given. 400 names what is wrong with the
        address (not a multiaddr, no /p2p/, a transport this node cannot dial, this
        node's own id) or why the dial failed."""
        try:
            return await node.connect(req.multiaddr)
        except ProtocolError as exc:
            raise bad_request(exc) from None

    @app.post("/envelopes", dependencies=auth)
    async def publish(req: EnvelopeRequest) -> dict[str, Any]:
        try:
            return await node.publish(req.kind, req.payload, req.thread, req.refs)
        except ProtocolError as exc:
            raise bad_request(exc) from None

    @app.post("/envelopes/wire", dependencies=auth, openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}},
              description="An envelope signed elsewhere, as its wire bytes (the body, at "
                          "most 64 KiB). Judged as gossip is; a ledger verb goes to its "
                          "signer's bucket. 200: accepted (or a duplicate), with the "
                          "verdict and, for a ledger verb, the outcome; 400: rejected, "
                          "naming the code and field; 409: ignored for now (e.g. "
                          "`lamport_future`), or refused by the ledger; 429: the sender's "
                          "rate; 503: no quorum of the bucket in time.")
    async def submit_wire(request: Request,
                          timeout_s: Annotated[float, Query(
                              gt=0, le=OUTCOME_WAIT_S_MAX)] = OUTCOME_WAIT_S_DEFAULT
                          ) -> dict[str, Any]:
        data = await request.body()
        try:
            doc = await node.submit_wire(data, timeout_s)
        except LedgerRefused as exc:
            raise HTTPException(status_code=409, detail={
                "verdict": "accept", "code": exc.code, "field": "ledger",
                "reason": exc.reason, "outcome": exc.outcome.to_json()}) from None
        except SubmitError as exc:
            status = 503 if exc.code == "submit_failed" else 400
            raise HTTPException(status_code=status, detail=exc.to_dict()) from None
        except ProtocolError as exc:
            status = 429 if exc.code == "rate_limited" else 400
            raise HTTPException(status_code=status, detail=exc.to_dict()) from None
        if doc["verdict"] == "accept" or doc["code"] == "duplicate":
            return doc
        status = _VERDICT_STATUS.get(doc["code"], 409 if doc["verdict"] == "ignore" else 400)
        raise HTTPException(status_code=status, detail=doc)

    @app.post("/needs", dependencies=auth,
              description="Post a NEED and escrow its budget from this node's account "
                          "(as `POST /tasks`, amounts in the smallest unit): a market task. "
                          "409 names the rule that refused it (`insufficient_balance`, ...).")
    async def need(req: NeedRequest) -> dict[str, Any]:
        return await write(lambda: node.market.post(
            req.task_class, req.budget, title=req.title, verify_bounty=req.verify_bounty,
            bid_window_ms=req.bid_window_ms, k_result=req.k_result, units=True,
            timeout_s=req.timeout_s))

    @app.post("/plan/tasks", dependencies=auth,
              description="Add a task to the plan's DAG by gossiping a NEED nobody funds: "
                          "no escrow, no auction (a market task is `POST /needs`).")
    async def plan_task(req: PlanTaskRequest) -> dict[str, Any]:
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
    app.include_router(market_router(lambda: node.market, auth))
    app.include_router(job_router(lambda: node.jobs, auth))
    app.include_router(judge_router(lambda: node.judge, auth))

    @app.get("/debug/deliveries", dependencies=auth,
             description="This node's recent publishes and acceptances (envelope id, "
                         "wall-clock nanoseconds, event), oldest first; for benchmarks.")
    async def deliveries() -> dict[str, Any]:
        return {"deliveries": node.deliveries()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(node.metrics_text().decode(),
                                 media_type="text/plain; version=0.0.4")

    def evidence_limit(query: str) -> tuple[int, str]:
        """An import's body is the file: at most its kind's limit (genesis)."""
        kind = parse_qs(query).get("kind", ["evidence"])[0]
        try:
            return node.evidence.limits[parse_kind(kind)], kind
        except ProtocolError:
            return BODY_BYTES_MAX, "the body"  # the route answers 400 for the kind

    docs = [app.openapi_url, app.docs_url, app.redoc_url,
            app.swagger_ui_oauth2_redirect_url]
    open_paths = frozenset(["/metrics", "/identity", *(p for p in docs if p)])
    return ApiGuard(app, token, open_paths, {("POST", "/evidence"): evidence_limit})
