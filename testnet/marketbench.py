"""Whole task lifecycles per second on a real 5-node testnet, and what each one costs.

Method: `swarm-testnet up -n 5` with the built-in roles in a fresh directory, windows
short (bid window `BID_WINDOW_MS`, challenge window and escrow hold `CHALLENGE_MS`);
node0 publishes the built-in jobs and posters store their inputs first (not timed).
Then `tasks` NEEDs (small WebAssembly jobs) are posted from node0, node2 and node4 as
fast as the control API takes them, and the run lasts until the last one is paid.
Nobody else drives them: the nodes' planners bid, their workers claim, run and commit,
their verifiers attest, and the buckets finalize and pay.

* lifecycles/s: tasks paid over the seconds from the first post to the last payout;
* latency: per task, from its NEED's funding to its payout, in its bucket's own
  timestamps (the windows are part of it: a lifecycle cannot be shorter than the bid
  window plus the challenge window);
* cost per lifecycle, per node: gossip envelopes received and published, Raft entries
  applied, and CPU seconds of the node's process (from /proc), each divided by the
  tasks; the bucket entries a lifecycle writes, by kind (a lifecycle verb, or a ledger
  body: effects, acknowledgements, ticks, pool views, draws); and the ceiling they imply
  on this machine: cores / CPU seconds per lifecycle summed over the nodes.

The posting client and the five nodes share the machine, so the figures are a floor.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.node.client import Client

from . import cluster, demo
from .benchrecord import Figure, num, pcts
from .stats import percentiles_ms

BID_WINDOW_MS = 1_000
CHALLENGE_MS = 1_000
PARAMS = {"bid_window_ms": BID_WINDOW_MS, "challenge_window_ms": CHALLENGE_MS,
          "attest_window_ms": 20_000}
JOBS = ("wordcount", "checksum", "sortlines")
_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of `name` in Prometheus text whose labels contain
    `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m[1] == name and labels in (m[2] or ""):
            total += float(m[3])
    return total


def metric_by(text: str, name: str, label: str) -> dict[str, float]:
    """The samples of `name` in Prometheus text by the value of their `label`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m[1] == name and m[2]:
            found = re.search(rf'{label}="([^"]*)"', m[2])
            if found:
                out[found[1]] = out.get(found[1], 0.0) + float(m[3])
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(members: list[cluster.Member]) -> tuple[list[dict[str, float]],
                                                       dict[str, float]]:
    """Each node's counters, and the bucket entries applied by kind over all nodes."""
    out: list[dict[str, float]] = []
    kinds: dict[str, float] = {}
    for m in members:
        text = Client(m.home).get_text("/metrics")
        pid = m.running_pids()[-1]
        out.append({
            "envelopes_in": metric(text, "swarm_envelopes_total"),
            "envelopes_out": metric(text, "swarm_envelopes_published_total"),
            "raft_entries": metric(text, "swarm_raft_events_total", 'kind="applied"'),
            "cpu_s": cpu_seconds(pid),
        })
        for kind, n in metric_by(text, "swarm_bucket_entries_total", "kind").items():
            kinds[kind] = kinds.get(kind, 0.0) + n
    return out, kinds


def run(tasks: int = 30, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda text: None)
    with tempfile.TemporaryDirectory(prefix="marketbench-") as tmp:
        where = Path(tmp) / "tn"
        say("starting 5 nodes with their roles")
        members = cluster.up(where, 5, roles=True, params=PARAMS, timeout_s=120)
        try:
            return _measure(members, tasks, say)
        finally:
            say("stopping")
            cluster.down(where)


def _measure(members: list[cluster.Member], count: int,
             say: Callable[[str], None]) -> dict[str, Any]:
    rng = random.Random(11)
    modules = Client(members[0].home).post("/jobs/builtins", {})["jobs"]
    posters = [members[i] for i in (0, 2, 4)]
    clients = {m.index: Client(m.home) for m in posters}
    inputs = [(m, clients[m.index].post_bytes("/evidence", demo.demo_text(rng))["cid"])
              for m in posters for _ in range(max(1, count // len(posters) + 1))]
    say("warming up: one lifecycle")
    _run_batch(members, clients, modules, inputs[:1], 1, 120)

    replicas = int(Client(members[0].home).get("/raft/status")["replicas_per_bucket"])
    before, kinds_before = counters(members)
    say(f"posting {count} NEEDs")
    t0 = time.monotonic()
    posted = _run_batch(members, clients, modules, inputs, count, 600, say)
    elapsed = time.monotonic() - t0
    after, kinds_after = counters(members)
    # Each entry is applied by each of its bucket's replicas: per log, divide by them.
    by_kind = {k: round((n - kinds_before.get(k, 0.0)) / replicas / count, 2)
               for k, n in kinds_after.items() if n > kinds_before.get(k, 0.0)}

    latencies = [(d["ended_ms"] - d["created_ms"]) / 1000 for d in posted
                 if d.get("ended_ms")]
    per_node = [{k: round((a[k] - b[k]) / count, 4 if k == "cpu_s" else 2) for k in a}
                for a, b in zip(after, before, strict=True)]
    cpu_total = sum(n["cpu_s"] for n in per_node)
    cores = os.cpu_count() or 1
    return {
        "tasks": count, "seconds": round(elapsed, 2),
        "lifecycles_per_s": round(count / elapsed, 2),
        "latency": percentiles_ms(latencies, ndigits=0),
        "per_node": per_node,
        "per_lifecycle": {k: round(sum(n[k] for n in per_node), 4 if k == "cpu_s" else 1)
                          for k in per_node[0]},
        "entries_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "entries_per_lifecycle": round(sum(by_kind.values()), 1),
        "replicas": replicas,
        "ceiling_per_s": round(cores / cpu_total, 1) if cpu_total else None,
        "cores": cores, "windows_ms": {"bid": BID_WINDOW_MS, "challenge": CHALLENGE_MS},
    }


def _run_batch(members: list[cluster.Member], clients: dict[int, Client],
               modules: dict[str, str], inputs: list[tuple[cluster.Member, str]],
               count: int, timeout_s: float,
               say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Post `count` NEEDs (jobs in turn, inputs in turn); wait until all are paid; the
    tasks as their posters' nodes show them."""
    needs: list[tuple[int, str]] = []
    for k in range(count):
        poster, data = inputs[k % len(inputs)]
        job = JOBS[k % len(JOBS)]
        doc = clients[poster.index].post("/tasks", {
            "class": "simple", "budget": "4", "verify_bounty": "1", "k_result": 2,
            "job": modules[job], "input": data, "title": f"{job} #{k}"})
        needs.append((poster.index, doc["need_id"]))

    def paid() -> bool:
        listed: dict[str, dict[str, Any]] = {}
        for c in clients.values():
            listed.update({t["need_id"]: t for t in c.get("/tasks")["tasks"]})
        left = [n for _, n in needs if not listed.get(n, {}).get("paid")]
        bad = [n for n in (n for _, n in needs) if listed.get(n, {}).get("state") == "CANCELLED"]
        if bad:
            raise cluster.TestnetError(f"{len(bad)} tasks were cancelled, e.g. {bad[0]}")
        say(f"{count - len(left)} of {count} lifecycles paid")
        return not left

    cluster.wait_until(paid, timeout_s, f"{count} tasks to be paid", interval_s=1.0)
    return [clients[i].get(f"/tasks/{n}") for i, n in needs]


def figures(doc: dict[str, Any]) -> list[Figure]:
    """The rows of `swarm-testnet marketbench --markdown`."""
    per = doc["per_lifecycle"]
    w = doc["windows_ms"]
    return [
        Figure(f"complete lifecycles/s, {doc['tasks']} tasks at once, 5 nodes",
               f"{num(doc['lifecycles_per_s'])} /s over {doc['seconds']} s"),
        Figure(f"NEED funded to payout (bid window {w['bid']} ms, challenge window "
               f"{w['challenge']} ms)", pcts(doc["latency"], "ms")),
        Figure("per lifecycle, summed over the 5 nodes",
               f"{num(per['envelopes_in'])} gossip envelopes in, "
               f"{num(per['envelopes_out'])} published, {num(per['raft_entries'])} Raft "
               f"entries applied, {per['cpu_s']} CPU s"),
        Figure("bucket entries per lifecycle (each applied by "
               f"{doc['replicas']} replicas), by kind",
               f"{doc['entries_per_lifecycle']}: " + ", ".join(
                   f"{k} {v}" for k, v in doc["entries_by_kind"].items())),
        Figure("ceiling those CPU seconds imply on this machine",
               f"{num(doc['ceiling_per_s'])} lifecycles/s ({doc['cores']} cores)"),
    ]
