"""The control-API client the CLI uses: finds the node through its home directory.

The node's address comes from `HOME/api.json`, which outlives a node that was killed:
another program may listen on that port since. So before the token goes out, the
client challenges whatever answers there (`GET /identity` with a fresh random nonce)
and checks its proof -- an HMAC of the nonce and the peer id `api.json` names, keyed
with the token (node/home.py `identity_proof`) -- which only a holder of the token can
make. It checks again after any connection failure, as the node may have gone.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .home import HomeError, identity_proof, read_api, read_token

NONCE_BYTES = 32
TIMEOUT_S = 30.0  # an HTTP request's, unless the caller expects a longer answer
# How long a write (POST /decide, the ledger writes, /envelopes/wire) waits on the node
# for its outcome, its `timeout_s`: by default and at most. One fact for the API's
# request bodies and the CLI's --timeout options.
OUTCOME_WAIT_S_DEFAULT = 15.0
OUTCOME_WAIT_S_MAX = 120  # an int: the API schema and its errors print it as 120
# A request that waits for an outcome gives up this much later than the node's wait,
# so that the node's answer (the outcome, or that it has none) arrives first.
OUTCOME_MARGIN_S = 5.0


class ApiError(Exception):
    """The node answered with an error, or could not be reached; the message says which."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class Unreachable(ApiError):
    """No answer came: the request may or may not have reached the node."""


class Client:
    def __init__(self, home: Path, timeout_s: float = TIMEOUT_S) -> None:
        api = read_api(home)
        self.home = home
        self.url = str(api["url"]).rstrip("/")
        self.peer_id = str(api.get("peer_id", ""))
        self._token = read_token(home)
        self._verified = False
        # One pooled connection: a fresh connection per request costs about 40 ms on
        # loopback here, a reused one about 2 ms.
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def verify(self) -> None:
        """Check that the program at `url` holds this home's token (see the module
        docstring); only then is the token sent with requests. Raises ApiError."""
        if self._verified:
            return
        nonce = os.urandom(NONCE_BYTES)
        try:
            response = self._http.get(self.url + "/identity", params={"nonce": nonce.hex()})
            doc = response.json() if response.status_code == 200 else None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except ValueError:
            doc = None
        if not proves_identity(doc, self._token, nonce, self.peer_id):
            raise ApiError(f"the program answering at {self.url} is not the node of "
                           f"{self.home}: it cannot prove that it holds the API token, which "
                           "was not sent. The node may have stopped and another program "
                           "taken its port; start the node again.")
        self._http.headers["authorization"] = f"Bearer {self._token}"
        self._verified = True

    def _unreachable(self, exc: httpx.HTTPError, what: str = "") -> ApiError:
        # The node may be gone, and another program on its port by the next call.
        self._verified = False
        self._http.headers.pop("authorization", None)
        if what:
            return Unreachable(f"{what} ({exc})")
        return Unreachable(f"cannot reach the node at {self.url} ({exc}); is it running?")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        self.verify()
        try:
            response = self._http.request(method, self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        _raise_for(response)
        return response.json()

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def get_text(self, path: str) -> str:
        """GET a route that answers text (`/metrics`)."""
        return self.get_bytes(path).decode("utf-8", "replace")

    def get_bytes(self, path: str) -> bytes:
        """GET a route that answers bytes (`/evidence/CID`)."""
        self.verify()
        try:
            response = self._http.get(self.url + path)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        _raise_for(response)
        return response.content

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, body)

    def post_bytes(self, path: str, data: bytes,
                   params: dict[str, Any] | None = None) -> Any:
        """POST `data` as it is (application/octet-stream); the JSON answer."""
        self.verify()
        try:
            response = self._http.post(self.url + path, content=data, params=params,
                                        headers={"content-type": "application/octet-stream"})
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        _raise_for(response)
        return response.json()

    def post_stream(self, path: str, pieces: Iterable[bytes],
                    params: dict[str, Any] | None = None) -> Any:
        """POST a body sent piece by piece (chunked), so a large file never sits in memory."""
        self.verify()
        try:
            response = self._http.post(self.url + path, content=pieces, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        _raise_for(response)
        return response.json()

    def stream_lines(self, path: str, params: dict[str, Any] | None = None
                     ) -> Iterator[dict[str, Any]]:
        """POST to a route that answers JSON lines (progress reports); yields each."""
        for line in self._lines("POST", path, params, "transfer from the node at {} failed"):
            if line.strip():
                yield json.loads(line)

    def events(self, path: str, params: dict[str, Any] | None = None
               ) -> Iterator[dict[str, Any]]:
        """GET a server-sent event stream; yields each event's JSON data."""
        for line in self._lines("GET", path, params,
                                "the event stream of the node at {} broke"):
            if line.startswith("data: "):
                yield json.loads(line[len("data: "):])

    def _lines(self, method: str, path: str, params: dict[str, Any] | None,
               broke: str) -> Iterator[str]:
        self.verify()
        try:
            with self._http.stream(method, self.url + path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, broke.format(self.url)) from None

    @contextmanager
    def stream_get(self, path: str, params: dict[str, Any] | None = None
                   ) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        """GET a large body: yields (size from X-File-Size if sent, pieces)."""
        self.verify()
        try:
            with self._http.stream("GET", self.url + path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                size = response.headers.get("x-file-size")
                yield (int(size) if size is not None else None), response.iter_bytes()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, f"transfer from the node at {self.url} failed") \
                from None


def proves_identity(doc: Any, token: str, nonce: bytes, peer_id: str) -> bool:
    """Whether `doc`, the answer to `GET /identity?nonce=...`, proves that the program
    answering holds `token` (node/home.py `identity_proof`) and is the node `peer_id`."""
    return (isinstance(doc, dict) and doc.get("peer_id") == peer_id
            and isinstance(doc.get("proof"), str)
            and hmac.compare_digest(doc["proof"], identity_proof(token, nonce, peer_id)))


def error_of(response: httpx.Response) -> tuple[str, Any]:
    """An error answer's message (the field and reason when it names them) and its
    `detail` as the node sent it."""
    try:
        doc = response.json()
    except ValueError:
        doc = response.text
    detail = doc.get("detail") if isinstance(doc, dict) else doc
    if isinstance(detail, dict) and "field" in detail:
        message = f"{detail['field']}: {detail['reason']}"
    elif isinstance(detail, dict) and "reason" in detail:
        message = str(detail["reason"])
    else:
        message = str(detail)
    return message, detail


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message, detail = error_of(response)
    raise ApiError(message, detail)


__all__ = ["ApiError", "Client", "HomeError", "Unreachable"]


def need_body(task_class: str, budget: str, *, title: str = "", bounty: str = "0",
              capabilities: Sequence[str] = (), window_ms: int | None = None,
              k_result: int | None = None, k_plan: int | None = None,
              job: str | None = None, data: str | None = None, host: str | None = None,
              check: str | None = None, output: str | None = None,
              cites: Sequence[str] = (), deny: Sequence[str] = ()) -> dict[str, Any]:
    """The body of `POST /tasks` (post and fund a NEED), the optional parts only when
    given: one shape for the CLI and the agent SDK."""
    body: dict[str, Any] = {"class": task_class, "budget": budget, "title": title,
                            "verify_bounty": bounty, "capabilities": list(capabilities)}
    for name, value in (("bid_window_ms", window_ms), ("k_result", k_result),
                        ("k_plan", k_plan), ("job", job), ("input", data), ("host", host),
                        ("check", check), ("output", output)):
        if value is not None:
            body[name] = value
    if cites:
        body["cites"] = list(cites)
    if deny:
        body["deny"] = list(deny)
    return body
