"""Control-API routes for evidence: add, get, pin, unpin, list pins, garbage-collect.

Owns the routes' shapes only; the node's `Blockstore` does the work. Bodies stream both
ways: an upload is read piece by piece into an import (so its size is limited by the
object kind's genesis limit, not by memory) and a download is sent block by block as the
UnixFS reader checks each one. Errors: 400 for a bad CID or kind, 404 when the object
(or one of its blocks) is not in this node's store, 413 when it is over its limit, 422
for a stored DAG that does not check out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from swarm.protocol.cid import Cid
from swarm.protocol.errors import ProtocolError
from swarm.protocol.unixfs import BlockMissing, TooLarge

from .blockstore import Blockstore, Kind, parse_kind


class PinRequest(BaseModel):
    kind: str = Field(default="evidence", description="evidence | proof")


def _http_error(exc: ProtocolError) -> HTTPException:
    if isinstance(exc, BlockMissing):
        return HTTPException(status_code=404, detail=exc.to_dict())
    if isinstance(exc, TooLarge):
        return HTTPException(status_code=413, detail=exc.to_dict())
    if exc.code in ("local_error", "decode"):
        return HTTPException(status_code=400, detail=exc.to_dict())
    return HTTPException(status_code=422, detail=exc.to_dict())


def _parse(cid: str, kind: str) -> tuple[Cid, Kind]:
    try:
        return Cid.parse(cid, "cid"), parse_kind(kind)
    except ProtocolError as exc:
        raise _http_error(exc) from None


def evidence_router(blockstore: Callable[[], Blockstore], dependencies: list[Any]) -> APIRouter:
    """Routes under /evidence; `blockstore()` returns the running node's store."""
    router = APIRouter(prefix="/evidence", dependencies=dependencies, tags=["evidence"])

    @router.post("")
    async def add(request: Request, cid_version: int = 0, kind: str = "evidence"
                  ) -> dict[str, Any]:
        """Import the request body as a file; pin it; answer its CID (as `ipfs add`)."""
        try:
            object_kind = parse_kind(kind)
            session = blockstore().begin_import(object_kind, cid_version)
        except ProtocolError as exc:
            raise _http_error(exc) from None
        try:
            async for piece in request.stream():
                session.feed(piece)
            pin = session.finish()
        except ProtocolError as exc:
            raise _http_error(exc) from None
        finally:
            session.close()
        return pin.to_json()

    @router.get("/pins")
    async def pins() -> list[dict[str, object]]:
        return [p.to_json() for p in blockstore().pins()]

    @router.post("/gc")
    async def gc() -> dict[str, int]:
        return blockstore().gc().to_json()

    @router.get("/{cid}", response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}})
    async def get(cid: str, kind: str = "evidence") -> StreamingResponse:
        """The file's bytes. Every block is checked against its CID; all blocks are
        looked up before the first byte goes out, so a missing one is a 404, not a
        truncated body."""
        root, object_kind = _parse(cid, kind)
        store = blockstore()
        try:
            size = store.size_of(root)
            if size is None:
                raise BlockMissing(root)
            if size > store.limits[object_kind]:
                raise TooLarge("size", f"{root} is {size} bytes, limit "
                                       f"{store.limits[object_kind]}")
            missing = store.missing(root)
            if missing is not None:
                raise BlockMissing(missing)
        except ProtocolError as exc:
            raise _http_error(exc) from None

        async def body() -> AsyncIterator[bytes]:
            # A block read from RocksDB takes well under a millisecond, so reading them
            # on the event loop (rather than in a worker thread) is the cheaper choice.
            for piece in store.read(root, object_kind):
                yield piece

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"x-file-size": str(size),
                                          "content-length": str(size)})

    @router.post("/{cid}/pin")
    async def pin(cid: str, req: PinRequest) -> dict[str, object]:
        root, object_kind = _parse(cid, req.kind)
        try:
            return blockstore().pin(root, object_kind).to_json()
        except ProtocolError as exc:
            raise _http_error(exc) from None

    @router.post("/{cid}/unpin")
    async def unpin(cid: str) -> dict[str, object]:
        root, _ = _parse(cid, "evidence")
        if not blockstore().unpin(root):
            raise HTTPException(status_code=404, detail={
                "code": "not_pinned", "field": "cid", "reason": f"{root} is not pinned"})
        return {"cid": str(root), "unpinned": True}

    return router
