"""Control-API routes for evidence: add, get, fetch, pin, unpin, list pins, gc.

Owns the routes' shapes only; the node's evidence store (the embedded `Blockstore`, or
the user's IPFS daemon, see node/evidence_store.py) and `Bitswap` do the work. Bodies
stream both ways: an upload is read piece by piece into an import (so its size is
limited by the object kind's genesis limit, not by memory) and a download is sent block
by block as the UnixFS reader checks each one. An object that is not all here is
fetched from peers first (bitswap), by `GET /evidence/{cid}` silently or by
`POST /evidence/{cid}/fetch`, which reports progress as JSON lines; with a daemon, what
bitswap fetched is then copied into the daemon and pinned there. Calls to a daemon are
network I/O and run in a worker thread, never on the event loop.

Errors: 400 for a bad CID or kind, 404 when the object (or one of its blocks) is
neither here nor with any peer, 413 when it is over its limit, 422 for a DAG that does
not check out, 502 when the IPFS daemon fails, 503 when too many fetches are running.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import trio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from swarm.protocol.cid import Cid
from swarm.protocol.errors import ProtocolError
from swarm.protocol.unixfs import BlockMissing, TooLarge

from .api_guard import StrictBody
from .bitswap import Bitswap
from .blockstore import BlockstoreError, Kind, Pin, parse_kind
from .evidence_store import EvidenceStore, is_blocking

# How often `POST /evidence/{cid}/fetch` reports progress while a fetch runs.
PROGRESS_S = 0.25
T = TypeVar("T")


class PinRequest(StrictBody):
    kind: str = Field(default="evidence", description="evidence | proof")


def _http_error(exc: ProtocolError | BlockstoreError) -> HTTPException:
    if isinstance(exc, BlockstoreError):
        return HTTPException(status_code=502, detail={"code": "store", "field": "store",
                                                      "reason": str(exc)})
    if isinstance(exc, BlockMissing):
        return HTTPException(status_code=404, detail=exc.to_dict())
    if isinstance(exc, TooLarge):
        return HTTPException(status_code=413, detail=exc.to_dict())
    if exc.code == "busy":
        return HTTPException(status_code=503, detail=exc.to_dict())
    if exc.code in ("local_error", "decode"):
        return HTTPException(status_code=400, detail=exc.to_dict())
    return HTTPException(status_code=422, detail=exc.to_dict())


def _error_doc(exc: ProtocolError | BlockstoreError) -> dict[str, str]:
    if isinstance(exc, BlockstoreError):
        return {"code": "store", "field": "store", "reason": str(exc)}
    return exc.to_dict()


def _parse(cid: str, kind: str) -> tuple[Cid, Kind]:
    try:
        return Cid.parse(cid, "cid"), parse_kind(kind)
    except ProtocolError as exc:
        raise _http_error(exc) from None


async def _call(store: EvidenceStore, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the event loop for the embedded store, in a worker thread for a
    daemon (whose every call is HTTP)."""
    if is_blocking(store):
        return await trio.to_thread.run_sync(functools.partial(fn, *args))
    return fn(*args)


def evidence_router(store: Callable[[], EvidenceStore], dependencies: list[Any],
                    bitswap: Callable[[], Bitswap] | None = None) -> APIRouter:
    """Routes under /evidence; `store()` returns the running node's evidence store and
    `bitswap()` its exchange with peers (without it, only local objects are served)."""
    router = APIRouter(prefix="/evidence", dependencies=dependencies, tags=["evidence"])

    async def settle(root: Cid, kind: Kind, pin: Pin) -> Pin:
        """After a bitswap fetch into the embedded store: with a daemon, copy the
        object there and pin it, then let the embedded store drop it."""
        target = store()
        assert bitswap is not None
        embedded = bitswap().blockstore
        if target is embedded:
            return pin
        settled = await _call(target, target.put_dag, root, kind, embedded.get)
        embedded.unpin(root)
        return settled

    async def ensure_here(root: Cid, kind: Kind) -> None:
        """Fetch `root` from peers unless every block of it is here."""
        target = store()
        missing = await _call(target, target.missing, root)
        if missing is None:
            return
        if bitswap is None:
            raise BlockMissing(missing)
        await settle(root, kind, await bitswap().fetch(root, kind))

    @router.post("")
    async def add(request: Request, cid_version: int = 0, kind: str = "evidence"
                  ) -> dict[str, Any]:
        """Import the request body as a file; pin it; answer its CID (as `ipfs add`)."""
        target = store()
        try:
            object_kind = parse_kind(kind)
            session = target.begin_import(object_kind, cid_version)
        except ProtocolError as exc:
            raise _http_error(exc) from None
        try:
            async for piece in request.stream():
                await _call(target, session.feed, piece)
            pin: Pin = await _call(target, session.finish)
        except (ProtocolError, BlockstoreError) as exc:
            raise _http_error(exc) from None
        finally:
            session.close()
        return pin.to_json()

    @router.get("/pins")
    async def pins() -> list[dict[str, object]]:
        target = store()
        try:
            return [p.to_json() for p in await _call(target, target.pins)]
        except BlockstoreError as exc:
            raise _http_error(exc) from None

    @router.post("/gc")
    async def gc() -> dict[str, int]:
        target = store()
        try:
            return (await _call(target, target.gc)).to_json()
        except BlockstoreError as exc:
            raise _http_error(exc) from None

    @router.get("/{cid}", response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}})
    async def get(cid: str, kind: str = "evidence") -> StreamingResponse:
        """The file's bytes. Every block is checked against its CID; all blocks are
        looked up (and fetched from peers if need be) before the first byte goes out,
        so a missing one is a 404, not a truncated body."""
        root, object_kind = _parse(cid, kind)
        target = store()
        try:
            await ensure_here(root, object_kind)
            size = await _call(target, target.size_of, root)
            if size is None:
                raise BlockMissing(root)
            if size > target.limits[object_kind]:
                raise TooLarge("size", f"{root} is {size} bytes, limit "
                                       f"{target.limits[object_kind]}")
        except (ProtocolError, BlockstoreError) as exc:
            raise _http_error(exc) from None

        async def body() -> AsyncIterator[bytes]:
            pieces: Iterator[bytes] = target.read(root, object_kind)
            if not is_blocking(target):
                # A block read from RocksDB takes well under a millisecond, so reading
                # them on the event loop (not in a worker thread) is the cheaper choice.
                for piece in pieces:
                    yield piece
                return
            while (piece := await trio.to_thread.run_sync(next, pieces, None)) is not None:
                yield piece

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"x-file-size": str(size),
                                          "content-length": str(size)})

    @router.post("/{cid}/fetch", response_class=StreamingResponse,
                 responses={200: {"content": {"application/x-ndjson": {}}}})
    async def fetch(cid: str, kind: str = "evidence") -> StreamingResponse:
        """Bring the object here from peers (bitswap), every block checked, and pin it.

        Answers JSON lines: `{"received": bytes, "size": bytes or null}` while it runs,
        then `{"done": {cid, kind, size, blocks}}` or `{"error": {code, field, reason}}`.
        An object already all here answers `{"done": {"cid": ..., "here": true}}` at
        once, without pinning it."""
        root, object_kind = _parse(cid, kind)
        target = store()
        try:
            missing = await _call(target, target.missing, root)
            if missing is not None and bitswap is None:
                raise BlockMissing(missing)
            handle = bitswap().start_fetch(root, object_kind) \
                if missing is not None and bitswap is not None else None
        except (ProtocolError, BlockstoreError) as exc:
            raise _http_error(exc) from None

        async def lines() -> AsyncIterator[bytes]:
            if handle is None:
                yield _line({"done": {"cid": str(root), "here": True}})
                return
            while not handle.done.is_set():
                yield _line({"received": handle.received_bytes, "size": handle.size})
                with trio.move_on_after(PROGRESS_S):
                    await handle.done.wait()
            if handle.error is not None:
                yield _line({"error": handle.error.to_dict()})
                return
            assert handle.pin is not None
            yield _line({"received": handle.received_bytes, "size": handle.size})
            try:
                pin = await settle(root, object_kind, handle.pin)
            except (ProtocolError, BlockstoreError) as exc:
                yield _line({"error": _error_doc(exc)})
                return
            yield _line({"done": pin.to_json()})

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @router.post("/{cid}/pin")
    async def pin(cid: str, req: PinRequest) -> dict[str, object]:
        root, object_kind = _parse(cid, req.kind)
        target = store()
        try:
            return (await _call(target, target.pin, root, object_kind)).to_json()
        except (ProtocolError, BlockstoreError) as exc:
            raise _http_error(exc) from None

    @router.post("/{cid}/unpin")
    async def unpin(cid: str) -> dict[str, object]:
        root, _ = _parse(cid, "evidence")
        target = store()
        try:
            unpinned = await _call(target, target.unpin, root)
        except BlockstoreError as exc:
            raise _http_error(exc) from None
        if not unpinned:
            raise HTTPException(status_code=404, detail={
                "code": "not_pinned", "field": "cid", "reason": f"{root} is not pinned"})
        return {"cid": str(root), "unpinned": True}

    return router


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"
