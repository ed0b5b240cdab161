"""Hostile or broken policy modules are contained: each gives a denial with a reason,
never an exception into the node, and the host keeps working afterwards.

Method: small modules written here in WAT, loaded through the same `PolicyHost` the node
uses, with the default genesis parameters (fuel budget = verify_fuel_max).
"""

from __future__ import annotations

import pytest
import wasmtime

from swarm.policy_wasm import abi
from swarm.policy_wasm.host import (
    MEMORY_BYTES_MAX,
    PolicyHost,
    PolicyLoadError,
    committed_cid,
    committed_module,
    load_for_genesis,
    module_cid,
)
from swarm.protocol.genesis import DEFAULT_PARAMS

VIEW = abi.raw_view(kind=abi.KIND_CODES["STAKE"], payload_bytes=11, fields=1, sender_rate=1)
BUDGET = DEFAULT_PARAMS["verify_fuel_max"]


def module(evaluate_body: str, *, extra: str = "", memory: str = "1 1",
           abi_version: int = 1) -> bytes:
    return bytes(wasmtime.wat2wasm(f"""
      (module
        (memory (export "memory") {memory})
        {extra}
        (func (export "abi_version") (result i32) (i32.const {abi_version}))
        (func (export "evaluate") (result i32) {evaluate_body}))"""))


def host_of(data: bytes) -> PolicyHost:
    return PolicyHost(data, DEFAULT_PARAMS, fuel_budget=BUDGET)


def test_infinite_loop_runs_out_of_fuel_and_the_host_recovers() -> None:
    host = host_of(module("(loop $l (br $l)) (i32.const 0)"))
    for _ in range(3):  # each time a fresh instance, each time contained
        result = host.evaluate_view(VIEW)
        assert (result.verdict, result.reason) == ("reject", "policy_out_of_fuel")
        assert result.fuel == BUDGET


def test_huge_memory_grow_is_refused_by_the_store_limit() -> None:
    # memory.grow answers -1 when the store's limit forbids it; the module returns that.
    host = host_of(module("(memory.grow (i32.const 60000))", memory="1"))
    result = host.evaluate_view(VIEW)
    assert (result.verdict, result.reason) == ("reject", "policy_bad_result")
    # A module that grows within the limit but traps when refused more is contained too.
    host = host_of(module("""
        (if (i32.lt_s (memory.grow (i32.const 60000)) (i32.const 0)) (then unreachable))
        (i32.const 0)""", memory="1"))
    assert host.evaluate_view(VIEW).reason == "policy_trap"


def test_a_module_that_asks_for_huge_memory_up_front_is_unusable() -> None:
    pages = MEMORY_BYTES_MAX // 65536 + 1
    host = host_of(module("(i32.const 0)", memory=f"{pages}"))
    assert host.unusable == "policy_instantiate_failed"
    result = host.evaluate_view(VIEW)
    assert (result.verdict, result.reason, result.fuel) == ("ignore",
                                                           "policy_instantiate_failed", 0)


@pytest.mark.parametrize("body,reason", [
    ("unreachable", "policy_trap"),
    ("(i32.div_u (i32.const 1) (i32.const 0))", "policy_trap"),
    ("(i32.load (i32.const 70000))", "policy_trap"),
])
def test_a_trap_is_a_denial_and_the_next_call_runs_on_a_fresh_instance(
        body: str, reason: str) -> None:
    host = host_of(module(body))
    assert host.evaluate_view(VIEW).reason == reason
    assert host.evaluate_view(VIEW).reason == reason


def test_unbounded_recursion_is_contained() -> None:
    host = host_of(module("(call $down (i32.const 0))", extra="""
        (func $down (param i32) (result i32)
          (call $down (i32.add (local.get 0) (i32.const 1))))"""))
    result = host.evaluate_view(VIEW)
    assert result.verdict == "reject" and result.reason in {"policy_trap",
                                                            "policy_out_of_fuel"}


def test_a_start_function_that_never_ends_leaves_the_module_unusable() -> None:
    host = host_of(module("(i32.const 0)", extra="""
        (func $forever (loop $l (br $l))) (start $forever)"""))
    assert host.unusable == "policy_instantiate_failed"
    assert host.evaluate_view(VIEW).verdict == "ignore"


@pytest.mark.parametrize("wat,detail", [
    ('(module (memory (export "memory") 1) (func (export "abi_version") (result i32) '
     "(i32.const 1)))", "evaluate"),
    ('(module (memory (export "memory") 1) (func (export "abi_version") (result i32) '
     '(i32.const 1)) (func (export "evaluate") (param i32) (result i32) (i32.const 0)))',
     "evaluate"),
    ('(module (memory (export "memory") 1) (func (export "abi_version") (result i32) '
     '(i32.const 1)) (func (export "evaluate") (result i64) (i64.const 0)))', "evaluate"),
    ('(module (func (export "abi_version") (result i32) (i32.const 1)) '
     '(func (export "evaluate") (result i32) (i32.const 0)))', "memory"),
    ('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) '
     '(result i32))) (memory (export "memory") 1) (func (export "abi_version") (result i32)'
     ' (i32.const 1)) (func (export "evaluate") (result i32) (i32.const 0)))', "imports"),
])
def test_wrong_exports_or_any_import_make_the_module_unusable(wat: str, detail: str) -> None:
    host = host_of(bytes(wasmtime.wat2wasm(wat)))
    assert host.unusable == "policy_bad_exports"
    assert detail in host.unusable_detail
    assert host.evaluate_view(VIEW).reason == "policy_bad_exports"
    assert host.rules() == {}


def test_another_abi_version_or_too_little_memory_is_unusable() -> None:
    assert host_of(module("(i32.const 0)", abi_version=2)).unusable == "policy_bad_exports"
    tiny = bytes(wasmtime.wat2wasm("""
      (module (memory (export "memory") 0 0)
        (func (export "abi_version") (result i32) (i32.const 1))
        (func (export "evaluate") (result i32) (i32.const 0)))"""))
    host = host_of(tiny)
    assert host.unusable == "policy_bad_exports" and "memory" in host.unusable_detail


def test_bytes_that_are_not_wasm_are_an_unusable_module() -> None:
    host = host_of(b"\x00asm but not really")
    assert host.unusable == "policy_invalid_module"
    assert host.evaluate_view(VIEW).verdict == "ignore"


@pytest.mark.parametrize("value", [3 << 8, (0 << 8) | 4, (1 << 8) | 0, (1 << 8) | 200,
                                   1 << 16, -1])
def test_an_answer_outside_the_abi_is_a_denial(value: int) -> None:
    result = host_of(module(f"(i32.const {value})")).evaluate_view(VIEW)
    assert (result.verdict, result.reason) == ("reject", "policy_bad_result")


def test_a_module_genesis_does_not_pin_is_refused() -> None:
    other = module("(i32.const 0)")
    with pytest.raises(PolicyLoadError, match="not the one genesis pins"):
        load_for_genesis(DEFAULT_PARAMS, str(committed_cid()), data=other)
    pinned = load_for_genesis(DEFAULT_PARAMS, str(module_cid(other)), data=other)
    assert pinned.evaluate_view(VIEW).allowed
    assert load_for_genesis(DEFAULT_PARAMS, str(committed_cid())).cid == module_cid(
        committed_module())
