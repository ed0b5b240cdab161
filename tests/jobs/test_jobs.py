"""The built-in WebAssembly jobs and the job host's limits.

Goal: each job computes what its source says, the same bytes for the same input (so a
verifier re-running it gets the same output CID), and a module can only fail as a
`JobError` naming why. Method: Hypothesis draws inputs and compares each job with a
few lines of Python that say what it computes; hand-written modules break each rule of
the ABI; the committed modules are rebuilt from source and compared byte for byte.
"""

from __future__ import annotations

import random

import pytest
import wasmtime
from hypothesis import example, given, settings
from hypothesis import strategies as st

from swarm.jobs import build, host
from swarm.jobs.host import JobError
from swarm.jobs.reference import REFERENCE, pgm, sorted_lines

texts = st.one_of(st.binary(max_size=600),
                  st.lists(st.sampled_from([b"a", b"b", b"ab", b"", b" ", b"\t", b"zz y"]),
                           max_size=60).map(b"\n".join))


@settings(max_examples=150, deadline=None)
@given(texts)
def test_every_builtin_job_computes_what_its_source_says(data: bytes) -> None:
    for name in host.BUILTIN:
        _same_as_reference(name, data)


def _same_as_reference(name: str, data: bytes) -> None:
    """The module's output is the reference's; where the reference refuses the input,
    the module traps."""
    try:
        expected = REFERENCE[name](data)
    except ValueError:
        with pytest.raises(JobError) as exc:
            host.run(host.builtin_module(name), data)
        assert exc.value.code == "trap", name
        return
    result = host.run(host.builtin_module(name), data)
    assert result.output == expected, name
    assert result.fuel > 0
    assert host.run(host.builtin_module(name), data) == result  # same bytes, same fuel


images = st.builds(
    lambda w, h, seed, sep, extra: (b"P5" + sep + b"%d" % w + sep + b"%d" % h + sep
                                    + b"255" + sep[:1] + random.Random(seed).randbytes(w * h)
                                    + extra),
    st.integers(2, 40), st.integers(2, 40), st.integers(0, 2**32),
    st.sampled_from([b"\n", b" ", b"\t\r\n", b"  "]), st.binary(max_size=3))
headers = st.lists(st.sampled_from([b"P5", b"P6", b" ", b"\n", b"255", b"2", b"3",
                                    b"000002", b"254", b"#", b"\x00\xff"]),
                   max_size=10).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(st.one_of(images, headers, images.map(lambda d: d[:-5]),
                 st.tuples(headers, st.binary(max_size=40)).map(b"".join)))
@example(b"P52 2\n255\n1234")  # no whitespace before the width
@example(b"P5\n2 2\n255\n1234")
@example(b"P5\n2 2\n255 1234")
def test_halve_halves_any_valid_image_and_traps_on_anything_else(data: bytes) -> None:
    _same_as_reference("halve", data)


def test_halve_averages_each_two_by_two_block_and_drops_an_odd_edge() -> None:
    image = pgm(3, 3, bytes([0, 4, 99, 8, 12, 99, 99, 99, 99]))
    assert host.run(host.builtin_module("halve"), image).output == b"P5\n1 1\n255\n\x06"


def test_the_committed_modules_are_built_from_their_sources() -> None:
    for name in host.BUILTIN:
        assert build.build_bytes(name) == host.builtin_module(name), name
    assert build.main(["--check"]) == 0
    assert set(host.builtin_cids()) == set(host.BUILTIN)


def test_fuel_bounds_a_run() -> None:
    data = b"\n".join(b"%d" % (1000 - i) for i in range(300))
    with pytest.raises(JobError) as exc:
        host.run(host.builtin_module("sortlines"), data, fuel=10_000)
    assert exc.value.code == "out_of_fuel"
    assert host.run(host.builtin_module("sortlines"), data).output == sorted_lines(data)


def wat(body: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {body})"))


ALLOC = '(func (export "alloc") (param i32) (result i32) (i32.const 1024))'


@pytest.mark.parametrize(("module", "code"), [
    (b"not wasm at all", "bad_module"),
    (wat('(memory (export "memory") 1)'), "bad_module"),  # no alloc, no run
    (wat('(import "env" "f" (func)) (memory (export "memory") 1)'), "bad_module"),
    (wat(f'(memory (export "memory") 1) {ALLOC} '
         '(func (export "run") (param i32 i32) (result i64) unreachable)'), "trap"),
    (wat(f'(memory (export "memory") 1) {ALLOC} '
         '(func (export "run") (param i32 i32) (result i64) (loop (br 0)) (i64.const 0))'),
     "out_of_fuel"),
    (wat(f'(memory (export "memory") 1) {ALLOC} '  # an output past the memory's end
         '(func (export "run") (param i32 i32) (result i64) (i64.const 0x0000ffff00000010))'),
     "bad_output"),
    (wat('(memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) '
         '(if (i32.eq (memory.grow (i32.const 5000)) (i32.const -1)) (then unreachable)) '
         '(i32.const 1024)) (func (export "run") (param i32 i32) (result i64) (i64.const 0))'),
     "trap"),  # growing past the memory limit fails, and this module gives up
])
def test_a_module_fails_only_as_a_job_error_naming_why(module: bytes, code: str) -> None:
    with pytest.raises(JobError) as exc:
        host.run(module, b"input", fuel=1_000_000, memory_bytes_max=1024 * 1024)
    assert exc.value.code == code, exc.value


def test_the_output_limit_and_an_unknown_builtin() -> None:
    with pytest.raises(JobError) as exc:
        host.run(host.builtin_module("sortlines"), b"b\na\n" * 10, output_bytes_max=5)
    assert exc.value.code == "bad_output"
    with pytest.raises(JobError) as exc:
        host.builtin_module("nope")
    assert exc.value.code == "unknown_job"
