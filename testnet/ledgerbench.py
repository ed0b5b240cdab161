"""Committed ledger operations per second on a real 5-node testnet.

Method: `swarm-testnet up -n 5` in a fresh directory; every figure is taken through the
control API (Python httpx on loopback, as the CLI talks to a node), so it includes
signing the envelope, the policy, forwarding to the payer's bucket leader, the Raft
commit (one fsync per round per node), applying on every replica and the answer:

* latency: one client on node0 transferring to node1, one transfer after another;
* throughput: `clients` threads per node, each transferring the smallest unit from its
  node's account to a random other node's account for `seconds`; every transfer is a
  ledger operation in the payer's bucket plus an effect batch in the payee's bucket
  (and, every 200 ms per bucket pair, an acknowledgement), all certified and sent to
  the nodes that do not replicate those buckets;
* convergence: after the load, the time until all five nodes report the same
  `ledger_root` with nothing in flight, and whether the genesis supply is conserved.

The machine is shared with the clients (the same 2 cores), so client CPU counts against
the nodes: the figures are a floor for the nodes themselves.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.node.client import ApiError, Client

from . import cluster
from .benchrecord import Figure, num, pcts
from .stats import percentiles_ms

UNIT = "0.000001"


def percentiles(samples: list[float]) -> dict[str, float]:
    """testnet/stats.py's percentiles in milliseconds, and the mean."""
    out = percentiles_ms(samples)
    if samples:
        out["mean_ms"] = round(statistics.fmean(samples) * 1000, 2)
    return out


def _applied(members: list[cluster.Member]) -> int:
    """Entries applied, summed over nodes (each entry is applied by its R replicas)."""
    return sum(Client(m.home).get("/raft/status")["stats"].get("applied", 0) for m in members)


def run(directory: Path | None = None, seconds: float = 20.0, clients: int = 4,
        sequential: int = 200, progress: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    say = progress or (lambda text: None)
    with tempfile.TemporaryDirectory(prefix="ledgerbench-") as tmp:
        where = directory or Path(tmp) / "tn"
        say("starting 5 nodes")
        members = cluster.up(where, 5)
        try:
            return _measure(members, seconds, clients, sequential, say)
        finally:
            say("stopping")
            cluster.down(where)


def _measure(members: list[cluster.Member], seconds: float, clients: int, sequential: int,
             say: Callable[[str], None]) -> dict[str, Any]:
    accounts = [Client(m.home).get("/status")["account"] for m in members]
    replicas = Client(members[0].home).get("/raft/status")["replicas_per_bucket"]
    # Warm: every payer's bucket has a leader before anything is timed.
    for m, to in zip(members, accounts[1:] + accounts[:1], strict=True):
        Client(m.home, timeout_s=60).post("/ledger/transfer", {"to": to, "amount": UNIT,
                                                               "timeout_s": 30})

    say(f"latency: {sequential} transfers one after another")
    c = Client(members[0].home, timeout_s=60)
    lat = []
    for _ in range(sequential):
        t0 = time.perf_counter()
        c.post("/ledger/transfer", {"to": accounts[1], "amount": UNIT, "timeout_s": 30})
        lat.append(time.perf_counter() - t0)
    c.close()

    say(f"throughput: {clients} clients per node for {seconds:g} s")
    done = [0] * (len(members) * clients)
    failed: list[str] = []
    applied_before = _applied(members)

    def worker(k: int) -> None:
        node = k % len(members)
        rng = random.Random(k)
        client = Client(members[node].home, timeout_s=60)
        others = [a for i, a in enumerate(accounts) if i != node]
        try:
            while time.monotonic() < stop:
                try:
                    client.post("/ledger/transfer", {"to": rng.choice(others), "amount": UNIT,
                                                     "timeout_s": 30})
                    done[k] += 1
                except ApiError as exc:
                    failed.append(str(exc))
        finally:
            client.close()

    t0 = time.monotonic()
    stop = t0 + seconds  # read by the workers, which start next
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(done))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    applied = (_applied(members) - applied_before) / replicas

    say("waiting for every node to agree")
    t1 = time.monotonic()

    def agreed() -> bool:
        roots = set()
        for m in members:
            supply = Client(m.home).get("/ledger/supply")
            if supply["in_flight"]:
                return False
            roots.add(Client(m.home).get("/status")["ledger_root"])
        return len(roots) == 1

    cluster.wait_until(agreed, 300, "every node to agree on the ledger root", 0.25)
    converge = time.monotonic() - t1
    conserved = all(Client(m.home).get("/ledger/supply")["conserved"] for m in members)
    total = sum(done)
    return {
        "latency": percentiles(lat),
        "clients": len(done),
        "seconds": round(elapsed, 2),
        "transfers": total,
        "transfers_per_s": round(total / elapsed, 1),
        "entries_per_s": round(applied / elapsed, 1),
        "failed": len(failed),
        "failures": sorted(set(failed))[:5],
        "converge_s": round(converge, 2),
        "conserved": conserved,
    }


def figures(doc: dict[str, Any]) -> list[Figure]:
    """The rows of `swarm-testnet ledgerbench --markdown`."""
    return [
        Figure("transfer latency, one client, in sequence", pcts(doc["latency"], "ms")),
        Figure(f"committed transfers/s, {doc['clients']} clients",
               f"{num(doc['transfers_per_s'])} /s over {doc['seconds']} s "
               f"({num(doc['entries_per_s'])} log entries/s), {num(doc['failed'])} failed"),
        Figure("time until all five nodes agree on the ledger root after the load",
               f"{doc['converge_s']} s, supply "
               f"{'conserved' if doc['conserved'] else 'NOT CONSERVED'}"),
    ]
