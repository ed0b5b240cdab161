"""DECIDE benchmark on a real 5-node testnet, side by side with a 5-member etcd cluster
doing the same first-writer-wins transaction, in the same run.

Three figures for each system, through the same kind of client (Python, httpx, JSON over
HTTP on loopback: our control API's POST /decide, etcd's v3 JSON gateway /v3/kv/txn):

* latency: one client deciding distinct NEEDs one after another (p50/p95/p99);
* throughput: `clients` threads deciding distinct NEEDs as fast as answers come;
* failover: `kill -9` of the leader of one bucket (for etcd: of the cluster's leader),
  then the time until a write in that bucket commits again through another node,
  repeated `kills` times (the killed node is restarted in between).

etcd runs with its defaults (heartbeat 100 ms, election timeout 1000 ms); it comes from
Debian's `etcd-server` package (3.4). Without an `etcd` binary the etcd half is skipped
and said so.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from swarm.node.client import ApiError, Client
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid

from . import cluster
from .benchrecord import Figure, num, pcts, ratio
from .stats import percentiles_ms


def _need(tag: str, i: int) -> str:
    return str(dag_cbor_cid(f"{tag}-{i}".encode()))


# -- our side --

class SwarmSide:
    name = "can-swarm"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # DECIDE is measured on made-up NEED ids, chosen by bucket for the failover.
        self.members = cluster.up(directory, 5, decide_unknown_needs=True)
        self.bucket_count = Client(self.members[0].home).get("/raft/status")["bucket_count"]
        # Measure the steady state: after the first elections, leadership is still
        # being spread over the nodes (leader transfers) for some seconds.
        fair = -(-self.bucket_count // len(self.members))
        cluster.wait_until(lambda: max(Client(m.home).get("/raft/status")["leading"]
                                       for m in self.members) <= fair + 1, 120,
                           "leadership to spread over the nodes", 0.5)

    def client(self, i: int) -> Callable[[str, str], None]:
        c = Client(self.members[i % len(self.members)].home, timeout_s=30)

        def decide(need: str, proposal: str) -> None:
            c.post("/decide", {"need_id": need, "proposal_id": proposal, "timeout_s": 20})
        return decide

    def failover(self, tag: str) -> float:
        """Kill the leader of a bucket; seconds until that bucket commits again."""
        need0 = _need(tag, 0)
        bucket = bucket_of(Cid.parse(need0).raw, self.bucket_count)
        self.client(0)(need0, "warm")  # the bucket has a leader and is warm
        leader = None
        for m in self.members:
            rows = Client(m.home).get(f"/raft/status?bucket={bucket}")["buckets"]
            if rows[0].get("role") == "leader":
                leader = m
        assert leader is not None, "no leader found"
        other = next(m for m in self.members if m is not leader)
        c = Client(other.home, timeout_s=10)
        needs = (_need(tag, i) for i in range(1, 1_000_000)
                 if bucket_of(Cid.parse(_need(tag, i)).raw, self.bucket_count) == bucket)
        os.kill(leader.pid, signal.SIGKILL)
        t0 = time.monotonic()
        while True:
            try:
                c.post("/decide", {"need_id": next(needs), "proposal_id": "after",
                                   "timeout_s": 0.25})
                break
            except ApiError:
                continue
        took = time.monotonic() - t0
        cluster.wait_until(lambda: not leader.alive(), 10, "the leader to die")
        restarted = cluster.start_member(leader.index, leader.home, leader.addr)
        self.members[leader.index] = restarted
        cluster.save_state(self.directory, self.members)
        cluster.wait_until(lambda: cluster.status_of(restarted) is not None, 60, "restart")
        time.sleep(1.0)
        return took

    def close(self) -> None:
        cluster.down(self.directory)


# -- etcd --

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdSide:
    name = "etcd"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names = [f"e{i}" for i in range(5)]
        self.peer = {n: _free_port() for n in self.names}
        self.client_port = {n: _free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for n in self.names:
            self._start(n, new=True)
        for n in self.names:
            self._wait_ready(n)

    def _start(self, n: str, new: bool) -> None:
        cluster_spec = ",".join(f"{m}=http://127.0.0.1:{self.peer[m]}" for m in self.names)
        cmd = ["etcd", "--name", n, "--data-dir", str(self.directory / n),
               "--listen-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
               "--listen-client-urls", f"http://127.0.0.1:{self.client_port[n]}",
               "--advertise-client-urls", f"http://127.0.0.1:{self.client_port[n]}",
               "--initial-cluster", cluster_spec, "--initial-cluster-token", "bench",
               "--initial-cluster-state", "new" if new else "existing",
               "--log-level", "error"]
        log = (self.directory / f"{n}.log").open("ab")
        self.procs[n] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def _url(self, n: str) -> str:
        return f"http://127.0.0.1:{self.client_port[n]}"

    def _wait_ready(self, n: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self._url(n) + "/health", timeout=2).json().get("health") in (
                        "true", True):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"etcd member {n} did not become healthy")

    def client(self, i: int) -> Callable[[str, str], None]:
        http = httpx.Client(base_url=self._url(self.names[i % 5]), timeout=30)

        def decide(need: str, proposal: str) -> None:
            self._txn(http, need, proposal)
        return decide

    @staticmethod
    def _txn(http: httpx.Client, need: str, proposal: str) -> None:
        key = _b64("/decide/" + need)
        r = http.post("/v3/kv/txn", json={
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(proposal)}}],
            "failure": [{"request_range": {"key": key}}]})
        r.raise_for_status()

    def _leader(self) -> str:
        for n in self.names:
            with contextlib.suppress(httpx.HTTPError):
                st = httpx.post(self._url(n) + "/v3/maintenance/status", json={},
                                timeout=2).json()
                if st.get("leader") == st.get("header", {}).get("member_id"):
                    return n
        raise RuntimeError("no etcd leader")

    def failover(self, tag: str) -> float:
        leader = self._leader()
        other = next(n for n in self.names if n != leader)
        # Short attempts, retried: a request that reached the dead leader's proposal
        # queue would otherwise wait out etcd's 5 s request timeout.
        http = httpx.Client(base_url=self._url(other), timeout=0.25)
        self._txn(http, _need(tag, 0), "warm")
        self.procs[leader].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        i = 1
        while True:
            try:
                self._txn(http, _need(tag, i), "after")
                break
            except httpx.HTTPError:
                i += 1
        took = time.monotonic() - t0
        self.procs[leader].wait()
        self._start(leader, new=False)
        self._wait_ready(leader)
        time.sleep(1.0)
        return took

    def close(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


# -- the runs --

def measure(side: Any, tag: str, sequential: int, concurrent: int, clients: int,
            kills: int, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"{side.name}: warm-up")
    warm = side.client(0)
    for i in range(20):
        warm(_need(tag + "w", i), "p")
    progress(f"{side.name}: latency, {sequential} sequential decisions")
    lat = []
    for i in range(sequential):
        started = time.perf_counter()
        warm(_need(tag + "s", i), "p")
        lat.append(time.perf_counter() - started)
    progress(f"{side.name}: throughput, {clients} clients")
    per = concurrent // clients
    errors: list[str] = []

    def worker(k: int) -> None:
        d = side.client(k)
        for i in range(per):
            try:
                d(_need(f"{tag}c{k}", i), f"p{k}")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    fails = []
    for k in range(kills):
        progress(f"{side.name}: failover {k + 1}/{kills}")
        fails.append(side.failover(f"{tag}f{k}"))
    return {"latency": percentiles_ms(lat, ndigits=2),
            "throughput_per_s": round(per * clients / elapsed, 1),
            "throughput_errors": len(errors),
            "failover_s": [round(x, 3) for x in fails],
            "failover_median_s": round(statistics.median(fails), 3) if fails else None}


def run(sequential: int = 1000, concurrent: int = 1600, clients: int = 8, kills: int = 3,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raftbench-"))
    out: dict[str, Any] = {"sequential": sequential, "concurrent": concurrent,
                           "clients": clients, "kills": kills}
    try:
        progress("starting a 5-node testnet")
        ours = SwarmSide(root / "swarm")
        try:
            out["can_swarm"] = measure(ours, "s", sequential, concurrent, clients, kills,
                                       progress)
        finally:
            ours.close()
        if shutil.which("etcd") is None:
            out["etcd"] = {"skipped": "no etcd binary (Debian: apt-get install etcd-server)"}
        else:
            progress("starting a 5-member etcd cluster")
            (root / "etcd").mkdir()
            theirs = EtcdSide(root / "etcd")
            try:
                out["etcd"] = measure(theirs, "e", sequential, concurrent, clients, kills,
                                      progress)
            finally:
                theirs.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out



def _latency(side: dict[str, Any]) -> str:
    return pcts(side["latency"], "ms")


def _rate(side: dict[str, Any]) -> str:
    return f"{num(side['throughput_per_s'])} /s ({num(side['throughput_errors'])} errors)"


def _failover(side: dict[str, Any]) -> str:
    if side["failover_median_s"] is None:
        return "not measured (--kills 0)"
    return (f"median {side['failover_median_s']} s "
            f"({', '.join(map(str, side['failover_s']))} s)")


def figures(doc: dict[str, Any]) -> list[Figure]:
    """The rows of `swarm-testnet raftbench --markdown`: each figure for can-swarm, then
    for etcd and the ratio can-swarm / etcd (unless the etcd half was skipped)."""
    ours, theirs = doc["can_swarm"], doc["etcd"]
    specs: list[tuple[str, Callable[[dict[str, Any]], str],
                      Callable[[dict[str, Any], dict[str, Any]], str]]] = [
        ("DECIDE latency, one client", _latency,
         lambda a, b: ", ".join(f"{q[:3]} {ratio(a['latency'].get(q), b['latency'].get(q))}"
                                for q in ("p50_ms", "p95_ms", "p99_ms"))),
        (f"DECIDE throughput, {doc['clients']} client{'s' * (doc['clients'] != 1)}", _rate,
         lambda a, b: ratio(a["throughput_per_s"], b["throughput_per_s"])),
        ("failover: kill -9 of a leader to the next commit in its bucket", _failover,
         lambda a, b: ratio(a["failover_median_s"], b["failover_median_s"])),
    ]
    out = []
    for name, text, compare in specs:
        out.append(Figure(f"{name}, can-swarm", text(ours)))
        if "skipped" not in theirs:
            out.append(Figure(f"{name}, etcd", text(theirs)))
            out.append(Figure(f"{name}, can-swarm / etcd", compare(ours, theirs)))
    return out
