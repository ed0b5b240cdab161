"""Benchmark of local evidence handling: UnixFS import, block-store add, verified read.

`bench_evidence(size_mb)` measures, on this run and this machine:

* `hash_mb_s`: the importer alone (chunking, dag-pb encoding, SHA-256), blocks dropped,
  which is what `evidence add --only-hash` does;
* `add_mb_s`: importing into a fresh RocksDB block store and pinning (`evidence add`
  without the HTTP hop);
* `read_mb_s`: reading the object back through the UnixFS reader, every block's hash
  and sizes checked (what `evidence get` serves);
* `read_peak_mib`: the most memory Python allocated at once during a second, traced
  read (tracemalloc), to show the read streams instead of holding the object.

The input is deterministic (SHAKE-128 pieces of 1 MiB, as in the test vectors' recipe),
generated before timing starts. Run: `python -m swarm.testnet.evidencebench [SIZE_MB]`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from swarm.node.blockstore import Blockstore, Kind
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.unixfs import Importer

from .bench import machine

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


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    results = [bench_evidence(size_mb, version) for version in (0, 1)]
    sys.stdout.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
