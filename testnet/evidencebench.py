"""Benchmarks of evidence: local import and read, and the exchange between two nodes.

`bench_evidence(size_mb)` measures local handling, in-process, on this run and this
machine:

* `hash_mb_s`: the importer alone (chunking, dag-pb encoding, SHA-256), blocks dropped,
  which is what `evidence add --only-hash` does;
* `add_mb_s`: importing into a fresh RocksDB block store and pinning (`evidence add`
  without the HTTP hop);
* `read_mb_s`: reading the object back through the UnixFS reader, every block's hash
  and sizes checked (what `evidence get` serves);
* `read_peak_mib`: the most memory Python allocated at once during a second, traced
  read (tracemalloc), to show the read streams instead of holding the object.

`bench_exchange(size_mb)` measures the exchange between two real `swarm-node`
processes on loopback (each its own Python process, so each can use a core), driven
through the control API as the CLI drives it:

* `add_mb_s`: `POST /evidence` on the first node (the file streamed over HTTP,
  imported, stored and pinned);
* `fetch_mb_s`: `POST /evidence/{cid}/fetch` on the second node, which has none of it:
  bitswap from the first node, every block checked and stored, the root pinned (what
  `evidence get` waits for before it writes anything);
* `get_mb_s`: the whole `evidence get` path on a node that does not have the object:
  fetch, then the checked file streamed back over HTTP (read to nothing);
* `fetch_peak_rss_mib` / `serve_peak_rss_mib`: the most resident memory the fetching
  and the serving process had during the fetch (VmHWM, reset just before it through
  /proc/PID/clear_refs), beside `rss_before_mib`, their resident memory before it.

The input is deterministic (SHAKE-128 pieces of 1 MiB, as in the test vectors' recipe),
generated before timing starts. Run: `python -m swarm.testnet.evidencebench [SIZE_MB]
[--local-only] [--json | --markdown]` (JSON without either).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.node.blockstore import Blockstore, Kind
from swarm.node.client import Client
from swarm.node.home import create_identity
from swarm.node.p2p import key_pair, peer_id_of
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.unixfs import Importer

from . import benchrecord, cluster
from .bench import machine
from .benchrecord import Figure

PIECE_BYTES = 1024 * 1024


def _pieces(size_mb: int) -> list[bytes]:
    return [hashlib.shake_128(b"can-swarm/evidencebench/" + k.to_bytes(8, "big"))
            .digest(PIECE_BYTES) for k in range(size_mb)]


def bench_evidence(size_mb: int = 64, cid_version: int = 0) -> dict[str, Any]:
    pieces = _pieces(size_mb)
    size = size_mb * PIECE_BYTES
    params = {**DEFAULT_PARAMS, "evidence_bytes_max": max(size,
                                                         DEFAULT_PARAMS["evidence_bytes_max"])}

    start = time.perf_counter()
    importer = Importer(cid_version)
    for piece in pieces:
        importer.feed(piece)
    importer.finish()
    hash_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="evidencebench-") as tmp:
        store = Blockstore(Path(tmp) / "blocks", params)
        try:
            start = time.perf_counter()
            pin = store.add(pieces, Kind.EVIDENCE, cid_version)
            add_s = time.perf_counter() - start
            assert pin.root == importer.root

            start = time.perf_counter()
            read = sum(len(p) for p in store.read(pin.root))
            read_s = time.perf_counter() - start
            assert read == size

            tracemalloc.start()
            for _ in store.read(pin.root):
                pass
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        finally:
            store.close()

    mb = size / 1e6
    return {
        "size_bytes": size,
        "cid_version": cid_version,
        "cid": str(importer.root),
        "blocks": pin.blocks,
        "hash_mb_s": round(mb / hash_s, 1),
        "add_mb_s": round(mb / add_s, 1),
        "read_mb_s": round(mb / read_s, 1),
        "read_peak_mib": round(peak / 2**20, 2),
        "machine": machine(),
    }


def _memory_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _reset_peak(pid: int) -> bool:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _start_pair(directory: Path, params: dict[str, int]) -> list[cluster.Member]:
    """Two node processes, the second dialling the first, under a genesis with `params`."""
    homes = [directory / f"node{i}" for i in range(2)]
    identities = [create_identity(h) for h in homes]
    addrs = []
    for ident in identities:
        peer = peer_id_of(key_pair(ident.seed).public_key).to_base58()
        addrs.append(f"/ip4/127.0.0.1/tcp/{cluster.free_port()}/p2p/{peer}")
    gen = genesis_mod.new(
        name="evidencebench", created_ms=0,
        validators=[{"account": ident.public_key, "org": f"org{i}", "asn": 64512 + i,
                     "region": "r", "stake": 1} for i, ident in enumerate(identities)],
        params={"replicas": 1, **params})
    (directory / "genesis.json").write_text(gen.to_json())
    for i, home in enumerate(homes):
        cmd = [*cluster.node_cmd(), "init", "--home", str(home), "--genesis",
               str(directory / "genesis.json"), "--listen", addrs[i].rsplit("/p2p/", 1)[0]]
        if i:
            cmd += ["--bootstrap", addrs[0]]
        subprocess.run(cmd, check=True, capture_output=True)
    members = [cluster.start_member(i, home, addrs[i]) for i, home in enumerate(homes)]
    for m in members:
        def ready(m: cluster.Member = m) -> bool:
            if not m.alive():
                raise cluster.TestnetError(f"node{m.index} exited; see {m.home / 'stdio.log'}")
            status = cluster.status_of(m)
            return status is not None and status["peers"] >= 1
        cluster.wait_until(ready, 90, f"node{m.index} to start and connect")
    return members


def _fetch(client: Client, cid: str) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for line in client.stream_lines(f"/evidence/{cid}/fetch"):
        last = line
        if "error" in line:
            raise RuntimeError(f"fetch failed: {line['error']}")
    return last


def bench_exchange(size_mb: int = 100, cid_version: int = 0) -> dict[str, Any]:
    pieces = _pieces(size_mb)
    size = size_mb * PIECE_BYTES
    params = {"evidence_bytes_max": max(size, DEFAULT_PARAMS["evidence_bytes_max"])}
    with tempfile.TemporaryDirectory(prefix="evidencebench-x-") as tmp:
        members = _start_pair(Path(tmp), params)
        owner, fetcher = (Client(m.home, timeout_s=600) for m in members)
        try:
            start = time.perf_counter()
            added = owner.post_stream("/evidence", iter(pieces),
                                      params={"cid_version": cid_version})
            add_s = time.perf_counter() - start
            cid = added["cid"]

            before = {m.index: _memory_kib(m.pid)["VmRSS"] for m in members}
            peaks_reset = all(_reset_peak(m.pid) for m in members)
            start = time.perf_counter()
            done = _fetch(fetcher, cid)
            fetch_s = time.perf_counter() - start
            after = {m.index: _memory_kib(m.pid)["VmHWM"] for m in members}
            assert done["done"]["size"] == size, done

            # The whole `evidence get` on a node without the object: drop it, fetch again.
            fetcher.post(f"/evidence/{cid}/unpin", {})
            fetcher.post("/evidence/gc", {})
            start = time.perf_counter()
            _fetch(fetcher, cid)
            read = 0
            with fetcher.stream_get(f"/evidence/{cid}") as (_, body):
                for piece in body:
                    read += len(piece)
            get_s = time.perf_counter() - start
            assert read == size
        finally:
            owner.close()
            fetcher.close()
            for m in members:
                if m.alive():
                    os.kill(m.pid, signal.SIGTERM)
            for m in members:
                cluster.wait_until(lambda m=m: not m.alive(), 30,  # type: ignore[misc]
                                   f"node{m.index} to stop")
    mb = size / 1e6
    return {
        "size_bytes": size,
        "cid_version": cid_version,
        "cid": cid,
        "blocks": added["blocks"],
        "add_mb_s": round(mb / add_s, 1),
        "fetch_mb_s": round(mb / fetch_s, 1),
        "get_mb_s": round(mb / get_s, 1),
        "rss_before_mib": {"fetcher": round(before[1] / 1024, 1),
                           "server": round(before[0] / 1024, 1)},
        "fetch_peak_rss_mib": round(after[1] / 1024, 1) if peaks_reset else None,
        "serve_peak_rss_mib": round(after[0] / 1024, 1) if peaks_reset else None,
        "machine": machine(),
    }


def figures(results: dict[str, Any]) -> list[Figure]:
    """The rows of `--markdown`: each figure for CIDv0 and CIDv1 in one value."""
    def both(part: str, text: Callable[[dict[str, Any]], str]) -> str:
        return ", ".join(f"CIDv{r['cid_version']} {text(r)}" for r in results[part])

    def peak(r: dict[str, Any], who: str, key: str) -> str:
        return f"{r['rss_before_mib'][who]} -> {r[key]} MiB"

    out = [
        Figure("import only (`--only-hash`)", both("local", lambda r: f"{r['hash_mb_s']} MB/s")),
        Figure("import into RocksDB and pin", both("local", lambda r: f"{r['add_mb_s']} MB/s")),
        Figure("verified read back", both("local", lambda r: f"{r['read_mb_s']} MB/s")),
        Figure("peak Python allocation while reading (tracemalloc)",
               both("local", lambda r: f"{r['read_peak_mib']} MiB")),
    ]
    if "exchange" in results:
        out += [
            Figure("`POST /evidence` on one node",
                   both("exchange", lambda r: f"{r['add_mb_s']} MB/s")),
            Figure("fetch between two nodes",
                   both("exchange", lambda r: f"{r['fetch_mb_s']} MB/s")),
            Figure("`evidence get` between two nodes",
                   both("exchange", lambda r: f"{r['get_mb_s']} MB/s")),
            Figure("fetching process RSS before -> peak",
                   both("exchange", lambda r: peak(r, "fetcher", "fetch_peak_rss_mib"))),
            Figure("serving process RSS before -> peak",
                   both("exchange", lambda r: peak(r, "server", "serve_peak_rss_mib"))),
        ]
    return out


USAGE = "python -m swarm.testnet.evidencebench [SIZE_MB] [--local-only] [--json | --markdown]"


def main() -> None:
    flags = {a for a in sys.argv[1:] if a.startswith("-")}
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    unknown = flags - {"--local-only", "--json", "--markdown"}
    if unknown or len(args) > 1 or {"--json", "--markdown"} <= flags:
        sys.exit(f"usage: {USAGE}")
    size_mb = int(args[0]) if args else 64
    run = benchrecord.describe("evidencebench", module="swarm.testnet.evidencebench")
    results: dict[str, Any] = {
        "local": [bench_evidence(size_mb, version) for version in (0, 1)]}
    if "--local-only" not in flags:
        results["exchange"] = [bench_exchange(size_mb, version) for version in (0, 1)]
    if "--markdown" in flags:
        sys.stdout.write(benchrecord.markdown(run, figures(results)))
        return
    results["run"] = run.as_dict()  # JSON, with or without --json
    sys.stdout.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
