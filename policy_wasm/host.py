"""The wasmtime host: loads the policy module by CID and runs one evaluation per envelope.

Owns the engine configuration (fuel metering on; threads, SIMD, multi-memory and
memory64 off; NaN canonicalisation on, so even a module with floats computes the same
bits everywhere), the per-store limits (one instance, one memory of at most
`memory_bytes_max`, one small table), the compiled-module cache (by CID), and the
containment rule: a module that does not compile, lacks the ABI's exports, traps, runs
out of fuel or answers something outside the ABI yields a denial with a reason, never an
exception into the node. The one refusal that raises is a CID that differs from the one
pinned in genesis: that is the operator's mistake, and the node must not start with it.

Resource handling: one `Store` and one instance per host, reused across evaluations (the
ABI makes `evaluate` a pure function of the view, which the host rewrites whole before
each call); after any trap the instance is thrown away and a fresh one made, so no state
a failed call left behind can leak into the next.

Speed: `Func.__call__` rebuilds the function type and converts values on each call
(~16 us here); the evaluation goes through `wasmtime_func_call_unchecked`, the
binding's lower-level path (~2 us), with the argument/result slot and the trap pointer
allocated once. These are underscored names of the pinned wasmtime release (50.0.1);
the tests exercise them, so an upgrade that moves them fails loudly.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from swarm.protocol.cid import CODEC_RAW, HASH_SHA2_256, Cid

from . import abi

HERE = Path(__file__).resolve().parent
COMMITTED_MODULE = HERE / "policy.wasm"
PAGE_BYTES = 65536
MEMORY_BYTES_MAX = 4 * PAGE_BYTES  # ours needs one page; room for a module that asks more
TABLE_ELEMENTS_MAX = 1024
WASM_STACK_BYTES_MAX = 256 * 1024
# The smallest memory the ABI can work in: the view, the params and the rule table.
MEMORY_BYTES_MIN = abi.RULES_OFFSET + abi.RULE_BYTES * (abi.KIND_CODE_MAX + 1)


class PolicyLoadError(Exception):
    """The module cannot be used as this swarm's policy; the message says why."""


def module_cid(data: bytes) -> Cid:
    """CIDv1 (raw, sha2-256) of a module's bytes: what genesis `policy_cid` pins."""
    return Cid(bytes([0x01, CODEC_RAW, HASH_SHA2_256, 0x20]) + hashlib.sha256(data).digest())


def committed_module() -> bytes:
    return COMMITTED_MODULE.read_bytes()


def committed_cid() -> Cid:
    return module_cid(committed_module())


def _make_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.wasm_threads = False
    config.wasm_simd = False
    config.wasm_relaxed_simd = False
    config.wasm_multi_memory = False
    config.wasm_memory64 = False
    config.cranelift_nan_canonicalization = True
    config.max_wasm_stack = WASM_STACK_BYTES_MAX
    # A memory never moves when it grows, so the host can keep its base address.
    config.memory_may_move = False
    config.parallel_compilation = False
    return wasmtime.Engine(config)


_ENGINE: wasmtime.Engine | None = None
_MODULES: dict[bytes, wasmtime.Module] = {}


def engine() -> wasmtime.Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _make_engine()
    return _ENGINE


def compiled(data: bytes, cid: Cid) -> wasmtime.Module:
    """The compiled module for these bytes, compiled once per process."""
    module = _MODULES.get(cid.raw)
    if module is None:
        module = wasmtime.Module(engine(), data)
        _MODULES[cid.raw] = module
    return module


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation's answer: verdict ("accept" | "reject" | "ignore"), reason, fuel."""

    verdict: str
    reason: str
    fuel: int

    @property
    def allowed(self) -> bool:
        return self.verdict == "accept"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "fuel": self.fuel}


def _check_exports(module: wasmtime.Module) -> str | None:
    """Why the module does not fit the ABI, or None."""
    if list(module.imports):
        return "imports are not allowed"
    exports = {e.name: e.type for e in module.exports}
    mem = exports.get("memory")
    if not isinstance(mem, wasmtime.MemoryType):
        return "no exported memory named 'memory'"
    for name in ("evaluate", "abi_version"):
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            return f"no exported function {name!r}"
        if ty.params or [str(r) for r in ty.results] != ["i32"]:
            return f"{name!r} must take nothing and return one i32"
    return None


class PolicyHost:
    """One loaded policy module, ready to evaluate views.

    `params` are the genesis parameters (`abi.PARAM_SLOTS` are read); `fuel_budget` is
    the fuel one evaluation may burn. `pinned_cid`, when given, must equal the module's
    CID or `PolicyLoadError` is raised.
    """

    def __init__(self, data: bytes, params: Mapping[str, int], *, fuel_budget: int,
                 pinned_cid: str | None = None,
                 memory_bytes_max: int = MEMORY_BYTES_MAX) -> None:
        self.cid = module_cid(data)
        if pinned_cid is not None and str(self.cid) != pinned_cid:
            raise PolicyLoadError(f"policy module {self.cid} is not the one genesis pins "
                                  f"({pinned_cid})")
        if fuel_budget < 1:
            raise PolicyLoadError("the fuel budget must be at least 1")
        self.size_bytes = len(data)
        self.fuel_budget = fuel_budget
        self.memory_bytes_max = memory_bytes_max
        self._params = abi.params_view(params)
        self.params = {name: int(params[name]) for name in abi.PARAM_SLOTS}
        self.unusable: str | None = None  # the reason every evaluation is denied, if set
        self.unusable_detail = ""
        self.abi_version = 0
        self.init_fuel = 0
        self._module: wasmtime.Module | None = None
        try:
            self._module = compiled(data, self.cid)
        except wasmtime.WasmtimeError as exc:
            self._fail("policy_invalid_module", str(exc).splitlines()[0])
            return
        problem = _check_exports(self._module)
        if problem is not None:
            self._fail("policy_bad_exports", problem)
            return
        self._instantiate()

    def _fail(self, reason: str, detail: str) -> None:
        self.unusable = reason
        self.unusable_detail = detail

    def _instantiate(self) -> None:
        """A fresh store and instance; params written; the fast call path prepared."""
        assert self._module is not None
        store = wasmtime.Store(engine())
        store.set_limits(memory_size=self.memory_bytes_max,
                         table_elements=TABLE_ELEMENTS_MAX, instances=1, tables=1,
                         memories=1)
        # The start function (the rule table) runs on fuel too.
        store.set_fuel(self.fuel_budget)
        try:
            instance = wasmtime.Instance(store, self._module, [])
            self.init_fuel = self.fuel_budget - store.get_fuel()
            exports = instance.exports(store)
            memory = exports["memory"]
            evaluate = exports["evaluate"]
            version = exports["abi_version"]
            assert isinstance(memory, wasmtime.Memory)
            assert isinstance(evaluate, wasmtime.Func) and isinstance(version, wasmtime.Func)
            store.set_fuel(self.fuel_budget)
            self.abi_version = int(version(store))
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            self._fail("policy_instantiate_failed", str(exc).splitlines()[0])
            return
        if self.abi_version != abi.ABI_VERSION:
            self._fail("policy_bad_exports",
                       f"abi_version() is {self.abi_version}, this host speaks "
                       f"{abi.ABI_VERSION}")
            return
        if memory.data_len(store) < MEMORY_BYTES_MIN:
            self._fail("policy_bad_exports",
                       f"memory is {memory.data_len(store)} bytes, the ABI needs "
                       f"{MEMORY_BYTES_MIN}")
            return
        self._store = store
        self._memory = memory
        self._evaluate = evaluate
        base = ctypes.cast(memory.data_ptr(store), ctypes.c_void_p).value
        assert base is not None, "an instantiated memory has an address"
        self._base: int = base
        ctypes.memmove(self._base + abi.PARAMS_OFFSET, self._params, len(self._params))
        self._context = store._context()
        self._func_ref = ctypes.byref(evaluate._func)
        self._slot = (ffi.wasmtime_val_raw * 1)()
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)

    # --- evaluation ---------------------------------------------------------------------

    def evaluate_view(self, view: bytes) -> Evaluation:
        """Run the module on one VIEW block (`abi.VIEW.size` bytes)."""
        if self.unusable is not None:
            return Evaluation("ignore", self.unusable, 0)
        assert len(view) == abi.VIEW.size, "a view is exactly abi.VIEW.size bytes"
        ctypes.memmove(self._base + abi.VIEW_OFFSET, view, len(view))
        store = self._store
        store.set_fuel(self.fuel_budget)
        error = ffi.wasmtime_func_call_unchecked(self._context, self._func_ref, self._slot, 1,
                                                 self._trap_ref)
        fuel = self.fuel_budget - store.get_fuel()
        if error or self._trap:
            return self._contain(error, fuel)
        return self._decode(self._slot[0].i32, fuel)

    def evaluate_view_func_call(self, view: bytes) -> Evaluation:
        """`evaluate_view` through wasmtime's public `Func.__call__` and `Memory.write`:
        the same answer, slower; kept so the benchmark can show the difference."""
        if self.unusable is not None:
            return Evaluation("ignore", self.unusable, 0)
        store = self._store
        self._memory.write(store, view, abi.VIEW_OFFSET)
        store.set_fuel(self.fuel_budget)
        try:
            result = self._evaluate(store)
        except (wasmtime.WasmtimeError, wasmtime.Trap):
            fuel = self.fuel_budget - store.get_fuel()
            self._instantiate()
            return Evaluation("reject", "policy_trap", fuel)
        return self._decode(int(result), self.fuel_budget - store.get_fuel())

    def _contain(self, error: Any, fuel: int) -> Evaluation:
        """Turn a trap or an error into a denial and start over with a fresh instance."""
        reason = "policy_trap"
        if error:
            wasmtime.WasmtimeError._from_ptr(error)  # takes ownership, frees it
            reason = "policy_error"
        if self._trap:
            trap = wasmtime.Trap._from_ptr(self._trap)
            if trap.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
                reason = "policy_out_of_fuel"
        self._instantiate()
        return Evaluation("reject", reason, fuel)

    @staticmethod
    def _decode(result: int, fuel: int) -> Evaluation:
        verdict, reason = (result >> 8) & 0xFF, result & 0xFF
        if (result >> 16 == 0 and verdict in abi.VERDICT_NAMES and reason in abi.REASONS
                and (verdict == abi.VERDICT_ACCEPT) == (reason == 0)):
            return Evaluation(abi.VERDICT_NAMES[verdict], abi.REASONS[reason], fuel)
        return Evaluation("reject", "policy_bad_result", fuel)

    # --- introspection ------------------------------------------------------------------

    def rules(self) -> dict[str, abi.Rule]:
        """The module's rule table, read back from its memory (what it will enforce)."""
        if self.unusable is not None:
            return {}
        data = bytes(self._memory.read(self._store, abi.RULES_OFFSET,
                                       abi.RULES_OFFSET + abi.RULE_BYTES
                                       * (abi.KIND_CODE_MAX + 1)))
        out = {}
        for kind, code in abi.KIND_CODES.items():
            fields = abi.RULE.unpack_from(data, code * abi.RULE_BYTES)
            out[kind] = abi.Rule(kind, *fields)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "cid": str(self.cid),
            "size_bytes": self.size_bytes,
            "abi_version": self.abi_version,
            "fuel_budget": self.fuel_budget,
            "memory_bytes_max": self.memory_bytes_max,
            "usable": self.unusable is None,
            "unusable": ({"reason": self.unusable, "detail": self.unusable_detail}
                         if self.unusable else None),
            "params": dict(self.params),
            "rules": {k: r.to_json() for k, r in self.rules().items()},
        }


def load_for_genesis(params: Mapping[str, int], policy_cid: str | None,
                     data: bytes | None = None) -> PolicyHost:
    """The host a node runs: the committed module (or `data`), checked against the CID
    genesis pins when it pins one, with genesis `verify_fuel_max` as the fuel budget."""
    return PolicyHost(committed_module() if data is None else data, params,
                      fuel_budget=params["verify_fuel_max"], pinned_cid=policy_cid)
