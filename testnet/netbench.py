"""Network benchmarks on real node processes: gossip delivery latency, throughput, RSS.

Latency is what every node's `swarm_gossip_delivery_seconds` histogram saw: from the
sender's timestamp (milliseconds, the envelope's `ts`) to acceptance, so figures have
1 ms resolution and are read from histogram buckets by linear interpolation, as
Prometheus' histogram_quantile does. Throughput is envelopes accepted per second per
node while one client posts NEEDs round-robin to every node as fast as the API answers.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from swarm.node.client import Client

from . import cluster

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


def run(n: int, *, paced: int = 200, gap_s: float = 0.01, burst: int = 1000,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"swarm-netbench-{n}-"))
    say = progress or (lambda _m: None)
    try:
        say(f"{n} nodes: starting")
        members = cluster.up(directory, n)
        clients = [Client(m.home) for m in members]
        time.sleep(2.0)  # let the mesh settle past the first heartbeats
        say(f"{n} nodes: {paced} NEEDs, one every {gap_s * 1000:.0f} ms")
        for k in range(paced):
            clients[0].post("/needs", {"class": "simple", "budget": k + 1})
            time.sleep(gap_s)
        cluster.wait_until(lambda: all((cluster.status_of(m) or {}).get("envelopes", 0) >= paced
                                       for m in members), 120, "paced delivery")
        # Node 0 publishes; the others' histograms hold the gossip delivery latency.
        hist = merged([histogram(metrics_text(m)) for m in members[1:]])
        latency = {"p50_ms": round(quantile(hist, 0.50) * 1000, 2),
                   "p99_ms": round(quantile(hist, 0.99) * 1000, 2),
                   "samples": int(hist[-1][1]) if hist else 0}
        say(f"{n} nodes: burst of {burst} NEEDs round-robin")
        t0 = time.monotonic()
        for k in range(burst):
            clients[k % n].post("/needs", {"class": "complex", "budget": k + 1})
        posted_s = time.monotonic() - t0
        total = paced + burst
        cluster.wait_until(lambda: all((cluster.status_of(m) or {}).get("envelopes", 0) >= total
                                       for m in members), 300, "burst delivery", 0.05)
        elapsed = time.monotonic() - t0
        roots = {(cluster.status_of(m) or {}).get("plan_root") for m in members}
        return {
            "nodes": n,
            "latency": latency,
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
