"""The control API's door: who may come in, and how many bytes they may bring.

Owns two rules applied to every HTTP request before FastAPI sees it, so that a refused
request costs the node no byte of its body:

* **Token first.** Every route but the open ones (metrics, the OpenAPI description and
  its pages, the identity challenge) needs `Authorization: Bearer <HOME/api.token>`. A
  missing or wrong token is answered 401 at once; the body is never read.
* **A body limit per route.** A request whose Content-Length is over its route's limit
  is answered 413 at once. A body sent without a length (chunked) is counted as it
  arrives, and the moment it passes the limit the route's work is abandoned and the
  answer is 413 (whatever the route would have said: it saw a body cut short). Small
  JSON routes take BODY_BYTES_MAX; a route that takes more says so in `limits`. A client
  that leaves in the middle of its body gets nothing, and logs nothing.

Both answers are JSON in the API's error shape: `{"detail": {"code", "field", "reason"}}`.

It also owns what a request body may look like once it is in: request models derive
from `StrictBody` (no coercion: `true` is no integer and `"5"` no number; unknown
fields are refused), and a request that does not fit is answered 422 by
`invalid_request`, naming each field at fault and never quoting what was sent.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A route's limit: bytes, or (bytes, what the body is) as a function of the query
# string (the evidence import's limit depends on the kind of object it is told to expect).
Limit = int | Callable[[str], tuple[int, str]]

BODY_BYTES_MAX = 64 * 1024
# A 422 lists at most this many faults, and a field name (which may be any key a client
# sent) at most this long: the answer stays small whatever the request was.
ERRORS_SHOWN_MAX = 10
FIELD_CHARS_MAX = 64
REASON_CHARS_MAX = 200


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its limit. An HTTPException so
    that FastAPI passes it through as it is (it turns other errors while reading a body
    into a 400) and the app answers it without a traceback; the guard then answers 413
    itself in place of whatever the app said."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, detail=_too_large(limit, what))


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (compared in constant time)."""
    given = (header or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


class ApiGuard:
    """ASGI middleware in front of the control API; see the module docstring."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str],
                 limits: Mapping[tuple[str, str], Limit],
                 default_limit: int = BODY_BYTES_MAX) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths
        self.limits = limits
        self.default_limit = default_limit

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """(bytes, what the body is) for a request."""
        limit = self.limits.get((scope["method"], scope["path"]), self.default_limit)
        if callable(limit):
            return limit(scope.get("query_string", b"").decode("latin-1"))
        return limit, "the body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        length = headers.get(b"content-length")
        # What is left of a refused body is never read, so the connection that carries
        # it cannot carry another request.
        close = length not in (None, b"0") or b"transfer-encoding" in headers
        if scope["path"] not in self.open_paths:
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.token):
                await _answer(send, 401, {"code": "unauthorized", "field": "authorization",
                                          "reason": "missing or wrong API token"}, close)
                return
        limit, what = self.limit_for(scope)
        if length is not None:
            if not length.isdigit():
                await _answer(send, 400, {"code": "bad_request", "field": "content-length",
                                          "reason": "must be a number of bytes"}, close)
                return
            digits = length.lstrip(b"0")  # counted first: int() of thousands raises
            if len(digits) > len(str(limit)) or int(digits or b"0") > limit:
                await _answer(send, 413, _too_large(limit, what), close)
                return
        await self._capped(scope, receive, send, limit, what)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int,
                      what: str) -> None:
        received = 0
        over = gone = started = False

        async def capped_receive() -> Message:
            nonlocal received, over, gone
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(limit, what)
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a body cut short; 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if gone and not over:
                return  # the client left mid-request: its route gave up, nobody to answer
            if not over or started:
                raise
        if over and not started:
            await _answer(send, 413, _too_large(limit, what), True)


def _too_large(limit: int, what: str) -> dict[str, str]:
    return {"code": "too_large", "field": "body",
            "reason": f"{what} is more than {limit} bytes, the limit"}


async def _answer(send: Send, status: int, detail: dict[str, str], close: bool) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StrictBody(BaseModel):
    """The base of every request model: exact JSON types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + "..."


def _fault(error: Any) -> dict[str, str]:
    loc = [str(part) for part in error.get("loc", ())]
    if error.get("type") == "json_invalid":
        at = f" at byte {loc[1]}" if len(loc) > 1 else ""
        reason = f"not valid JSON: {error.get('ctx', {}).get('error', 'cannot parse')}{at}"
        return {"field": "body", "reason": reason, "type": "json_invalid"}
    # ("body", "budget") -> "budget"; ("query", "limit") -> "limit"; ("body",) -> "body"
    path = loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path", "header") else loc
    return {"field": _clip(".".join(path) or "body", FIELD_CHARS_MAX),
            "reason": _clip(str(error.get("msg", "invalid")), REASON_CHARS_MAX),
            "type": str(error.get("type", "invalid"))}


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without the input it would quote back (once per fault: a 10 MB
    request with two faults was a 20 MB answer)."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    faults = [_fault(e) for e in errors[:ERRORS_SHOWN_MAX]] or [
        {"field": "body", "reason": "invalid", "type": "invalid"}]
    first = faults[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(status_code=422, content={"detail": {
        "code": "invalid", "field": first["field"], "reason": first["reason"] + more,
        "errors": faults}})
