"""Build the policy: policy.wat -> policy.wasm with the pinned wasmtime's own assembler.

Owns the one build step and its check. `make policy` runs `python -m
swarm.policy_wasm.build`; the test suite runs `build_bytes()` and compares it with the
committed `policy.wasm`, so source and binary never drift. The assembler is the
`wat2wasm` inside the pinned `wasmtime` wheel (the same wasm-tools code wabt's
`wat2wasm` agrees with), so the bytes depend only on the source and that one pin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import wasmtime

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "policy.wat"
MODULE = HERE / "policy.wasm"


def build_bytes(source: Path = SOURCE) -> bytes:
    """Assemble the policy source; raises wasmtime.WasmtimeError on a bad source."""
    return bytes(wasmtime.wat2wasm(source.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODULE, help="where to write the module")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the committed module differs")
    args = parser.parse_args(argv)
    from .host import module_cid

    data = build_bytes()
    if args.check:
        committed = MODULE.read_bytes() if MODULE.exists() else b""
        if committed != data:
            print(f"{MODULE} is stale: rebuild it with `make policy` "
                  f"(built {module_cid(data)}, committed "
                  f"{module_cid(committed) if committed else 'nothing'})", file=sys.stderr)
            return 1
        print(f"{MODULE.name} matches {SOURCE.name}: {module_cid(data)}")
        return 0
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes) {module_cid(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
