"""Build the built-in jobs and proof verifiers: jobs/<name>.wat -> jobs/<name>.wasm,
like the policy.

`python -m swarm.jobs.build` writes the modules; `--check` exits 1 if a committed module
differs from its source, and the test suite checks the same, so source and binary never
drift. The assembler is the pinned wasmtime's `wat2wasm`: the bytes, hence each job's
CID, depend only on the source and that one pin.
"""

from __future__ import annotations

import argparse
import sys

import wasmtime

from swarm.policy_wasm.host import module_cid

from .host import BUILTIN, HERE
from .proofs import VERIFIERS


def build_bytes(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((HERE / f"{name}.wat").read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a committed module differs")
    args = parser.parse_args(argv)
    stale = 0
    for name in (*BUILTIN, *VERIFIERS.values()):
        data, target = build_bytes(name), HERE / f"{name}.wasm"
        if args.check:
            if not target.exists() or target.read_bytes() != data:
                print(f"{target} is stale: rebuild it with `python -m swarm.jobs.build`",
                      file=sys.stderr)
                stale += 1
            continue
        target.write_bytes(data)
        print(f"wrote {target.name} ({len(data)} bytes) {module_cid(data)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
