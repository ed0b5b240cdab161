"""The soak driver's handle on its running nodes: members shared by its threads,
restarts in place, and control-API calls whose every failure is classified.

Owns how a client of the soak reaches a node (one pooled HTTP connection per thread and
node, found again through `api.json` after a restart) and what a failed request means
(`Answer`): `definite` when it surely did not take effect (the connection was refused,
no API yet, or a 4xx), otherwise unknown (a timeout, a connection lost after sending, a
5xx). No checking here.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from swarm.node.home import HomeError, read_api, read_token

from . import cluster

HTTP_TIMEOUT_S = 15.0  # the client's own limit (a frozen node never answers)


class Answer(Exception):
    """A request's failure, classified: `definite` is True when the request surely did
    not take effect (the connection was refused, or a 4xx)."""

    def __init__(self, reason: str, status: int = 0, definite: bool = False,
                 detail: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.definite = definite
        self.detail = detail


class Nodes:
    """The running members, shared by the threads; restarts swap a member in place."""

    def __init__(self, directory: Path, members: list[cluster.Member]) -> None:
        self.directory = directory
        self.members = members
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.local = threading.local()

    @property
    def n(self) -> int:
        return len(self.members)

    def member(self, i: int) -> cluster.Member:
        with self.lock:
            return self.members[i]

    def restart(self, i: int) -> cluster.Member:
        old = self.member(i)
        (old.home / "api.json").unlink(missing_ok=True)
        stdio = (old.home / "stdio.log").open("ab")
        proc = subprocess.Popen([*cluster.node_cmd(), "start", "--home", str(old.home)],
                                stdout=stdio, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        stdio.close()
        new = cluster.Member(i, old.home, proc.pid, old.addr)
        with self.lock:
            self.members[i] = new
            self.procs[i] = proc
            cluster.save_state(self.directory, self.members)
        return new

    def _client(self, i: int) -> tuple[str, httpx.Client]:
        cache: dict[int, tuple[int, str, httpx.Client]] = self.local.__dict__.setdefault(
            "clients", {})
        m = self.member(i)
        hit = cache.get(i)
        if hit is not None and hit[0] == m.pid:
            return hit[1], hit[2]
        if hit is not None:
            hit[2].close()
            del cache[i]
        try:
            url = str(read_api(m.home)["url"]).rstrip("/")
            token = read_token(m.home)
        except (HomeError, OSError, KeyError, ValueError):
            raise Answer("unreachable (no api.json)", definite=True) from None
        c = httpx.Client(headers={"authorization": f"Bearer {token}"},
                         timeout=HTTP_TIMEOUT_S)
        cache[i] = (m.pid, url, c)
        return url, c

    def _drop(self, i: int) -> None:
        cache = self.local.__dict__.get("clients", {})
        hit = cache.pop(i, None)
        if hit is not None:
            hit[2].close()

    def call(self, i: int, method: str, path: str, body: Any = None,
             timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        url, c = self._client(i)
        try:
            r = c.request(method, url + path, json=body, timeout=timeout_s)
        except httpx.ConnectError:
            self._drop(i)
            raise Answer("unreachable (connection refused)", definite=True) from None
        except httpx.TimeoutException:
            self._drop(i)
            raise Answer("client timeout (no answer)") from None
        except httpx.HTTPError as exc:
            self._drop(i)
            raise Answer(f"connection lost ({type(exc).__name__})") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            code = detail.get("code", "") if isinstance(detail, dict) else ""
            raise Answer(f"{r.status_code} {code}".strip(), r.status_code,
                         definite=400 <= r.status_code < 500 and r.status_code != 408,
                         detail=detail)
        return r.json() if path != "/metrics" else r.text
