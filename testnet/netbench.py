"""Network benchmarks on real node processes: gossip delivery latency, throughput, CPU, RSS.

Latency is exact: every node logs when it published an envelope (before signing it) and
when it accepted one (stored and applied, just before gossipsub forwards it), in
wall-clock nanoseconds (`GET /debug/deliveries`); all nodes share the machine's clock,
so joining the logs gives publish-to-delivery for every (envelope, node) pair (its
percentiles: testnet/stats.py). The `swarm_gossip_delivery_seconds` histograms are read
as well, for comparison: they start from the envelope's `ts`, which is whole
milliseconds. CPU is each node's user+system time from /proc over the paced phase, net of
what it uses idle, per envelope published. Throughput is envelopes accepted per second
per node while one client posts NEEDs round-robin to every node as fast as the API
answers.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from swarm.node.client import Client

from . import cluster
from .benchrecord import Figure, num, pcts
from .stats import percentiles

BUCKET_METRIC = "swarm_gossip_delivery_seconds_bucket"


def histogram(text: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) pairs of the delivery histogram in /metrics text."""
    out = []
    for line in text.splitlines():
        if line.startswith(BUCKET_METRIC + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def merged(hists: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    totals: dict[float, float] = {}
    for h in hists:
        for le, count in h:
            totals[le] = totals.get(le, 0.0) + count
    return sorted(totals.items())


def quantile(hist: list[tuple[float, float]], q: float) -> float:
    if not hist or hist[-1][1] == 0:
        return float("nan")
    target = q * hist[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in hist:
        if count >= target:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            frac = (target - prev_count) / span if span else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return prev_le


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def metrics_text(member: cluster.Member) -> str:
    return httpx.get(Client(member.home).url + "/metrics", timeout=30).text


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exact_latencies(logs: list[list[dict[str, Any]]], origin: int,
                    ids: set[str]) -> list[float]:
    """Milliseconds from publish on node `origin` to acceptance on each other node, for
    the envelopes in `ids`, from the nodes' delivery logs."""
    published = {d["id"]: d["t_ns"] for d in logs[origin]
                 if d["event"] == "published" and d["id"] in ids}
    out = []
    for i, log in enumerate(logs):
        if i == origin:
            continue
        for d in log:
            t0 = published.get(d["id"])
            if d["event"] == "accepted" and t0 is not None:
                out.append((d["t_ns"] - t0) / 1e6)
    return out


def run(n: int, *, paced: int = 200, gap_s: float = 0.01, burst: int = 1000,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"swarm-netbench-{n}-"))
    say = progress or (lambda _m: None)
    try:
        say(f"{n} nodes: starting")
        members = cluster.up(directory, n)
        clients = [Client(m.home) for m in members]
        time.sleep(2.0)  # let the mesh settle past the first heartbeats
        idle_from = [cpu_seconds(m.pid) for m in members]
        t_idle = time.monotonic()
        time.sleep(2.0)
        idle_s = time.monotonic() - t_idle
        idle_rate = [(cpu_seconds(m.pid) - c) / idle_s for m, c in zip(members, idle_from,
                                                                          strict=True)]
        say(f"{n} nodes: {paced} NEEDs, one every {gap_s * 1000:.0f} ms")
        cpu_from = [cpu_seconds(m.pid) for m in members]
        t_paced = time.monotonic()
        ids = set()
        for k in range(paced):
            ids.add(clients[0].post("/plan/tasks", {"class": "simple", "budget": k + 1})["need_id"])
            time.sleep(gap_s)
        cluster.wait_until(lambda: all((cluster.status_of(m) or {}).get("envelopes", 0) >= paced
                                       for m in members), 120, "paced delivery")
        paced_s = time.monotonic() - t_paced
        cpu_ms = [((cpu_seconds(m.pid) - c) - r * paced_s) / paced * 1000
                  for m, c, r in zip(members, cpu_from, idle_rate, strict=True)]
        # Node 0 publishes; the other nodes' logs and histograms hold the delivery latency.
        exact = exact_latencies([clients[i].get("/debug/deliveries")["deliveries"]
                                 for i in range(n)], 0, ids)
        hist = merged([histogram(metrics_text(m)) for m in members[1:]])
        ranks = percentiles(exact, scale=1, unit="ms", quantiles=(0.50, 0.90, 0.99))
        latency = {**{k: ranks.get(k, math.nan) for k in ("p50_ms", "p90_ms", "p99_ms")},
                   "max_ms": round(max(exact, default=math.nan), 2),
                   "samples": len(exact),
                   "histogram_p50_ms": round(quantile(hist, 0.50) * 1000, 2),
                   "histogram_p99_ms": round(quantile(hist, 0.99) * 1000, 2)}
        cpu = {"publisher_ms_per_env": round(cpu_ms[0], 2),
               "receiver_ms_per_env": round(sum(cpu_ms[1:]) / max(1, n - 1), 2),
               "all_nodes_ms_per_env": round(sum(cpu_ms), 1)}
        say(f"{n} nodes: burst of {burst} NEEDs round-robin")
        t0 = time.monotonic()
        for k in range(burst):
            clients[k % n].post("/plan/tasks", {"class": "complex", "budget": k + 1})
        posted_s = time.monotonic() - t0
        total = paced + burst
        cluster.wait_until(lambda: all((cluster.status_of(m) or {}).get("envelopes", 0) >= total
                                       for m in members), 300, "burst delivery", 0.05)
        elapsed = time.monotonic() - t0
        roots = {(cluster.status_of(m) or {}).get("plan_root") for m in members}
        return {
            "nodes": n,
            "latency": latency,
            "cpu": cpu,
            "burst": {"envelopes": burst, "post_seconds": round(posted_s, 2),
                      "all_nodes_have_all_seconds": round(elapsed, 2),
                      "accepted_per_s_per_node": round(burst / elapsed)},
            "rss_mb": {"max": round(max(rss_mb(m.pid) for m in members), 1),
                       "mean": round(sum(rss_mb(m.pid) for m in members) / n, 1)},
            "converged": len(roots) == 1,
        }
    finally:
        with contextlib.suppress(cluster.TestnetError):
            cluster.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


def figures(results: list[dict[str, Any]]) -> list[Figure]:
    """The rows of `swarm-testnet netbench --markdown`, per testnet size."""
    out = []
    for r in results:
        n, lat = r["nodes"], r["latency"]
        out += [
            Figure(f"gossip latency, publish to acceptance, {n} nodes",
                   pcts(lat, "ms")),
            Figure(f"CPU per envelope, each receiver, {n} nodes",
                   f"{r['cpu']['receiver_ms_per_env']} ms"),
            Figure(f"CPU per envelope, whole swarm, {n} nodes",
                   f"{r['cpu']['all_nodes_ms_per_env']} ms"),
            Figure(f"burst accepted/s per node, {n} nodes",
                   f"{num(r['burst']['accepted_per_s_per_node'])} /s "
                   f"({num(r['burst']['envelopes'])} NEEDs)"),
            Figure(f"RSS per node after the burst, {n} nodes",
                   f"max {r['rss_mb']['max']} MB, mean {r['rss_mb']['mean']} MB"),
            Figure(f"one plan root on every node after the burst, {n} nodes",
                   "yes" if r["converged"] else "NO"),
        ]
    return out
