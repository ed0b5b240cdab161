"""The proof verifiers (jobs/verify_*.wat) against the rules they implement: each
output schema (protocol/output_schema.py), byte containment for citations, CID equality
for re-runs. Sound (a claim about a right result never holds) and complete (every
wrong result has a witness that holds), within the genesis `verify_fuel_max`."""

from __future__ import annotations

import hashlib

import pytest
import wasmtime
from hypothesis import example, given, settings
from hypothesis import strategies as st

from swarm.jobs import build, proofs
from swarm.jobs.host import HERE
from swarm.protocol.cid import Cid
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.output_schema import (
    CITED_OUTPUT_BYTES_MAX,
    FORMATS,
    OutputSchema,
    cites_problem,
    missing_cite,
)

FUEL = DEFAULT_PARAMS["verify_fuel_max"]
# Bytes that make UTF-8 interesting: ASCII, continuation bytes, every kind of first
# byte, the edges of Table 3-7's ranges, bytes never allowed.
UTF8_BYTES = st.sampled_from([*b"a0\n", 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                               0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED,
                                               0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5,
                                               0xFF])
DATA = st.one_of(st.binary(max_size=24), st.lists(UTF8_BYTES, max_size=16).map(bytes),
                 st.text(max_size=12).map(lambda t: t.encode()))
SCHEMAS = st.builds(OutputSchema, st.sampled_from(FORMATS),
                    st.one_of(st.none(), st.integers(1, 24)))


def cid_of(data: bytes) -> Cid:
    return Cid(bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest())


def holds(schema: OutputSchema, data: bytes, offset: int | None) -> bool:
    verdict = proofs.verify("schema_violation", proofs.schema_frame(schema, data, offset),
                            fuel=FUEL)
    assert verdict.fuel < 1_000  # a witness costs what a few bytes cost
    return verdict.holds


def test_committed_verifiers_match_their_sources() -> None:
    for name in proofs.VERIFIERS.values():
        assert (HERE / f"{name}.wasm").read_bytes() == build.build_bytes(name), name
        wasmtime.Module(wasmtime.Engine(), (HERE / f"{name}.wasm").read_bytes())
    assert set(proofs.verifier_cids()) == set(proofs.VERIFIERS)


@settings(max_examples=400)
@given(SCHEMAS, DATA)
@example(OutputSchema("utf8"), b"\xed\xa0\x80")  # a surrogate
@example(OutputSchema("utf8"), b"\xf4\x90\x80\x80")  # past U+10FFFF
@example(OutputSchema("utf8"), b"\xe0\x80\x80")  # overlong
@example(OutputSchema("utf8"), b"\xf0\x9f\x98\x80\x80")  # a fifth byte
@example(OutputSchema("uint"), b"")
@example(OutputSchema("uint"), b"\n")
@example(OutputSchema("hex"), b"ab\n\n")
def test_a_schema_witness_holds_exactly_when_the_result_breaks_the_schema(
        schema: OutputSchema, data: bytes) -> None:
    wrong = schema.violation(data) is not None
    witnesses = [None, *range(len(data))]
    assert any(holds(schema, data, w) for w in witnesses) == wrong
    if schema.format == "utf8":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:  # where Python's decoder stops is a witness
            assert holds(schema, data, exc.start)


def test_a_witness_outside_the_result_is_no_proof() -> None:
    with pytest.raises(proofs.ProofError):
        proofs.schema_frame(OutputSchema("uint"), b"12", 2)


def test_a_frame_that_lies_about_its_window_does_not_hold() -> None:
    frame = bytearray(proofs.schema_frame(OutputSchema("uint"), b"1x3", 1))
    frame[2] = 0  # `before` says 0; the offset says 1
    verdict = proofs.verify("schema_violation", bytes(frame), fuel=FUEL)
    assert not verdict.holds and "does not fit" in verdict.reason
    assert not proofs.verify("schema_violation", b"\x00" * 5, fuel=FUEL).holds


CID_A = cid_of(b"a")
TEXT_A = str(CID_A).encode()


@settings(max_examples=200)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_a_citation_claim_holds_exactly_when_the_text_is_absent(
        before: bytes, after: bytes, cite: bool) -> None:
    data = before + (TEXT_A if cite else TEXT_A[:-1]) + after
    verdict = proofs.verify("missing_citation", proofs.citation_frame(CID_A, data),
                            fuel=FUEL)
    assert verdict.holds == (TEXT_A not in data)
    assert verdict.holds == (missing_cite(data, [CID_A]) is not None)


@pytest.mark.parametrize("data", [
    TEXT_A[:-1] * (CITED_OUTPUT_BYTES_MAX // len(TEXT_A)),  # near misses all along
    TEXT_A[:1] * CITED_OUTPUT_BYTES_MAX,
    bytes(range(256)) * (CITED_OUTPUT_BYTES_MAX // 256),
])
def test_the_largest_cited_result_is_read_within_the_fuel(data: bytes) -> None:
    data = data[:CITED_OUTPUT_BYTES_MAX]
    verdict = proofs.verify("missing_citation", proofs.citation_frame(CID_A, data),
                            fuel=FUEL)
    assert verdict.holds, verdict  # absent, and said so before the fuel ran out
    assert verdict.fuel < FUEL


def test_a_result_past_the_fuel_is_not_shown_to_miss_a_citation() -> None:
    data = b"x" * (4 * CITED_OUTPUT_BYTES_MAX)
    verdict = proofs.verify("missing_citation", proofs.citation_frame(CID_A, data),
                            fuel=FUEL)
    assert not verdict.holds and "out of fuel" in verdict.reason
    assert verdict.fuel == FUEL


def test_a_mismatch_holds_when_the_outputs_differ_or_the_job_fails() -> None:
    a, b = cid_of(b"a"), cid_of(b"b")
    assert not proofs.verify("output_mismatch", proofs.mismatch_frame(a, a), fuel=FUEL).holds
    assert proofs.verify("output_mismatch", proofs.mismatch_frame(a, b), fuel=FUEL).holds
    assert proofs.verify("output_mismatch", proofs.mismatch_frame(a, None), fuel=FUEL).holds
    short = Cid(bytes([0x01, 0x55, 0x00, 0x01, 0x61]))  # an identity CID: other length
    assert proofs.verify("output_mismatch", proofs.mismatch_frame(a, short),
                         fuel=FUEL).holds
    for frame in (b"", b"\x02\x01a", b"\x00\x05ab", b"\x01\x01ab"):
        assert not proofs.verify("output_mismatch", frame, fuel=FUEL).holds


def test_running_out_of_fuel_is_a_verdict_not_an_error() -> None:
    frame = proofs.citation_frame(CID_A, b"y" * 1000)
    verdict = proofs.verify("missing_citation", frame, fuel=50)
    assert not verdict.holds and verdict.fuel == 50 and "fuel" in verdict.reason


def test_a_verifier_that_traps_does_not_hold() -> None:
    trapping = wasmtime.wat2wasm("""(module (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 16))
      (func (export "verify") (param i32 i32) (result i32) unreachable))""")
    answer, _ = proofs._run(bytes(trapping), b"x", FUEL)
    assert isinstance(answer, str) and "trapped" in answer


def test_the_host_checked_proof_type_has_no_module() -> None:
    with pytest.raises(proofs.LocalProtocolError) as info:
        proofs.module("semantic_contradiction")
    assert info.value.code == "no_verifier"


@settings(max_examples=200)
@given(st.binary(max_size=64), st.text(min_size=1, max_size=8), st.integers(0, 80))
@example(b"say no more", "more", 7)
@example(b"say no mor", "more", 7)
def test_a_policy_witness_holds_exactly_when_the_string_is_at_the_offset(
        data: bytes, denied: str, offset: int) -> None:
    text = denied.encode()[:64]
    denied = text.decode("utf-8", "ignore") or "x"
    text = denied.encode()
    if offset >= len(data):
        with pytest.raises(proofs.ProofError):
            proofs.policy_frame(denied, data, offset)
        return
    verdict = proofs.verify("policy_breach", proofs.policy_frame(denied, data, offset),
                            fuel=FUEL)
    assert verdict.holds == (data[offset:offset + len(text)] == text)
    assert verdict.fuel < 2_000


def test_a_policy_frame_that_does_not_fit_does_not_hold() -> None:
    for frame in (b"", b"\x00", b"\x02ab", b"\x02ababab", b"\x41" + b"a" * 0x82):
        assert not proofs.verify("policy_breach", frame, fuel=FUEL).holds


@pytest.mark.parametrize("data, field", [
    (b"\xff", "proof"), (b"[1]", "proof"), (b"[" * 10_240, "proof"), (b'{"offset": -1}', "offset"),
    (b'{"offset": true}', "offset"), (b'{"cite": 5}', "cite"), (b'{"claim": []}', "claim"),
])
def test_a_proof_document_that_says_nothing_checkable_is_refused(data: bytes,
                                                                  field: str) -> None:
    with pytest.raises(proofs.ProofError) as info:
        proofs.ProofDoc.parse(data)
    assert info.value.field == field


def test_a_proof_about_another_claim_or_result_is_refused() -> None:
    doc = proofs.ProofDoc.parse(b'{"claim": "schema_violation", "offset": 3, "note": "x"}')
    assert doc.offset == 3
    doc.about("schema_violation", "t", "r")  # what it leaves out is taken as said
    with pytest.raises(proofs.ProofError):
        doc.about("output_mismatch", "t", "r")
    with pytest.raises(proofs.ProofError):
        proofs.ProofDoc.parse(b'{"result": "other"}').about("output_mismatch", "t", "r")


def test_citations_need_a_bounded_output() -> None:
    assert cites_problem([], None) is None
    assert cites_problem([CID_A], "utf8<=4096") is None
    assert "MAX_BYTES" in str(cites_problem([CID_A], "utf8"))
    assert "MAX_BYTES" in str(cites_problem([CID_A], "utf8<=4097"))
    assert "twice" in str(cites_problem([CID_A, CID_A], "utf8<=10"))
    assert "at most 8" in str(cites_problem([cid_of(bytes([i])) for i in range(9)],
                                            "utf8<=10"))
    long = Cid(bytes([0x01, 0x55, 0x13, 0x40]) + bytes(64))  # sha2-512: 110 characters
    assert "characters" in str(cites_problem([long], "utf8<=10"))
