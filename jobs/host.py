"""Running a WebAssembly job: a module named by its CID, applied to input bytes.

Owns the job ABI and the limits one run may use. A job module imports nothing and
exports `memory`, `alloc(len: i32) -> i32` (room for the input, which the host writes
there) and `run(ptr: i32, len: i32) -> i64` (the output's address in the high 32 bits,
its length in the low). Each run gets a fresh store and instance on the policy's engine
(policy_wasm/host.py: fuel metering on, threads, SIMD, multi-memory and memory64 off,
NaN canonicalisation on), so a run is a function of the module and the input alone:
a verifier re-running it gets the same bytes, hence the same output CID. A run is
bounded by `fuel` and `memory_bytes_max`; a module that does not fit the ABI, traps,
runs out of fuel, grows past its memory or answers an output outside its memory fails
with a `JobError` naming why, never an exception of another kind.

Runs are CPU-bound and release no lock of ours: the node calls `run` in a worker
thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from swarm.policy_wasm.host import compiled, engine, module_cid
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError

HERE = Path(__file__).resolve().parent
# The jobs built from source in this folder (`python -m swarm.jobs.build`).
BUILTIN = ("wordcount", "checksum", "sortlines", "halve")
FUEL_DEFAULT = 2_000_000_000
MEMORY_BYTES_DEFAULT = 256 * 1024 * 1024


class JobError(LocalProtocolError):
    """A job run failed: `code` is bad_module, trap, out_of_fuel or bad_output."""

    code = "job_failed"


@dataclass(frozen=True, slots=True)
class JobResult:
    output: bytes
    fuel: int  # burnt

    @property
    def output_sha256(self) -> str:
        return hashlib.sha256(self.output).hexdigest()


def builtin_module(name: str) -> bytes:
    """The committed module of a built-in job."""
    if name not in BUILTIN:
        raise JobError("job", f"no built-in job {name!r}; there are {', '.join(BUILTIN)}",
                       code="unknown_job")
    return (HERE / f"{name}.wasm").read_bytes()


def builtin_cids() -> dict[str, Cid]:
    return {name: module_cid(builtin_module(name)) for name in BUILTIN}


def _check_exports(module: wasmtime.Module) -> str | None:
    if list(module.imports):
        return "imports are not allowed"
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        return "no exported memory named 'memory'"
    shapes = {"alloc": (["i32"], ["i32"]), "run": (["i32", "i32"], ["i64"])}
    for name, (params, results) in shapes.items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType) or \
                ([str(p) for p in ty.params], [str(r) for r in ty.results]) != (params, results):
            return f"no exported function {name}({', '.join(params)}) -> {results[0]}"
    return None


def run(module_bytes: bytes, data: bytes, *, fuel: int = FUEL_DEFAULT,
        memory_bytes_max: int = MEMORY_BYTES_DEFAULT, output_bytes_max: int | None = None
        ) -> JobResult:
    """Run the job `module_bytes` on `data`; its output and the fuel it burnt."""
    cid = module_cid(module_bytes)
    try:
        module = compiled(module_bytes, cid)
    except wasmtime.WasmtimeError as exc:
        raise JobError("module", f"{cid} does not compile: {exc}", code="bad_module") from None
    problem = _check_exports(module)
    if problem is not None:
        raise JobError("module", f"{cid}: {problem}", code="bad_module")
    store = wasmtime.Store(engine())
    store.set_limits(memory_size=memory_bytes_max, instances=1, tables=1, memories=1)
    store.set_fuel(fuel)
    try:
        instance = wasmtime.Instance(store, module, [])
        exports = instance.exports(store)
        memory = exports["memory"]
        alloc, entry = exports["alloc"], exports["run"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(alloc, wasmtime.Func) \
            and isinstance(entry, wasmtime.Func)
        ptr = alloc(store, len(data))
        if not isinstance(ptr, int) or ptr < 0 or ptr + len(data) > memory.data_len(store):
            raise JobError("alloc", f"alloc({len(data)}) answered {ptr!r}, outside the "
                                    f"module's memory", code="bad_output")
        memory.write(store, data, ptr)
        packed = entry(store, ptr, len(data))
    except wasmtime.Trap as exc:
        if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            raise JobError("fuel", f"the job ran out of fuel ({fuel})",
                           code="out_of_fuel") from None
        raise JobError("run", f"the job trapped: {exc.message}", code="trap") from None
    except wasmtime.WasmtimeError as exc:  # instantiation over the limits, and the like
        raise JobError("run", f"the job failed: {exc}", code="trap") from None
    burnt = fuel - store.get_fuel()
    assert isinstance(packed, int)
    out_ptr, out_len = (packed >> 32) & 0xFFFF_FFFF, packed & 0xFFFF_FFFF
    if out_ptr + out_len > memory.data_len(store):
        raise JobError("run", f"the output ({out_len} bytes at {out_ptr}) lies outside the "
                              f"module's memory", code="bad_output")
    if output_bytes_max is not None and out_len > output_bytes_max:
        raise JobError("run", f"the output is {out_len} bytes, over {output_bytes_max}",
                       code="bad_output")
    return JobResult(bytes(memory.read(store, out_ptr, out_ptr + out_len)), burnt)
