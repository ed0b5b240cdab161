"""Checking a challenge's proof: the proof document, the frame each verifier reads, and
running the verifiers, which are WebAssembly modules on the jobs' engine.

Owns what a proof says (`ProofDoc`, read from the bytes the challenge names), how the
judge turns the proof and the bytes it fetched itself into one frame per proof type,
and the verifier ABI. A verifier module imports nothing and exports `memory`,
`alloc(len: i32) -> i32` and `verify(ptr: i32, len: i32) -> i32`: 1 the claim holds,
0 it does not, -1 the frame does not fit the module's layout (each .wat file describes
its own). A run gets a fresh store on the policy's engine with the genesis
`verify_fuel_max` as its fuel; running out of fuel, trapping or answering anything
else is a verdict too, the claim not holding, never an exception.

The verifiers by proof type (docs/MARKET.md "Checking a proof"):

==========================  ========================================================
``schema_violation``        verify_schema: the witness (an offset, or the length)
                            breaks the NEED's output schema
``output_mismatch``         verify_mismatch: the job, re-run on its input under its
                            own fuel, gives another output CID, or fails
``missing_citation``        verify_citation: a CID the NEED asks the result to cite
                            is not in it
``policy_breach``           verify_policy: the result holds a string the NEED's
                            content policy (`deny`) forbids, at the offset named
==========================  ========================================================

`semantic_contradiction` has no module: its rule is the NEED's host check, which is
Python by design (jobs/hosted.py).
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from typing import Any

import wasmtime

from swarm.policy_wasm.host import compiled, engine, module_cid
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.output_schema import FORMATS, OutputSchema

from .host import HERE

VERIFIERS = {"schema_violation": "verify_schema", "output_mismatch": "verify_mismatch",
             "missing_citation": "verify_citation", "policy_breach": "verify_policy"}
MEMORY_BYTES_MAX = 16 * 1024 * 1024
SCHEMA_HEADER = struct.Struct("<BBBBQQQ")
UTF8_BEFORE = 3  # bytes back to the first byte of the sequence an offset lies in
UTF8_AFTER = 4  # the longest sequence


class ProofError(LocalProtocolError):
    """A proof that says nothing this judge can check: not a proof document, or a
    witness outside the result. The claim does not hold."""

    code = "bad_proof"


@dataclass(frozen=True, slots=True)
class ProofDoc:
    """What a proof document says: a JSON object, at most `proof_bytes_max` bytes,
    {"claim": proof type, "task_id", "result": the result's CID, and per type
    "offset" (schema_violation: where the result breaks its schema, absent: its length
    does; policy_breach: where it holds the denied string), "cite" (missing_citation:
    the CID it leaves out) or "deny" (policy_breach: the string)}. Other keys ("found",
    notes for people) are kept out of the verdict."""

    claim: str | None = None
    task_id: str | None = None
    result: str | None = None
    offset: int | None = None
    cite: str | None = None
    deny: str | None = None

    @classmethod
    def parse(cls, data: bytes) -> ProofDoc:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # 10 KiB of "[" nests deep
            raise ProofError("proof", "the proof is not a JSON document") from None
        if not isinstance(doc, dict):
            raise ProofError("proof", "the proof is not a JSON object")
        fields: dict[str, Any] = {}
        for key in ("claim", "task_id", "result", "cite", "deny"):
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise ProofError(key, f"the proof's {key} is not text")
            fields[key] = value
        offset = doc.get("offset")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)
                                   or offset < 0):
            raise ProofError("offset", "the proof's offset is not a byte offset")
        return cls(offset=offset, **fields)

    def about(self, proof_type: str, task_id: str, result: str) -> None:
        """ProofError unless the document is about this claim on this result (each
        part it leaves out is taken as said)."""
        for key, want in (("claim", proof_type), ("task_id", task_id), ("result", result)):
            said = getattr(self, key)
            if said is not None and said != want:
                raise ProofError(key, f"the proof is about {key} {said}, not {want}")


# -- frames ---------------------------------------------------------------------------

def schema_frame(schema: OutputSchema, data: bytes, offset: int | None) -> bytes:
    """verify_schema's frame: the witness `offset` (None: the length) in `data`."""
    fmt = FORMATS.index(schema.format)
    if offset is None:
        return SCHEMA_HEADER.pack(fmt, 0, 0, 0, schema.max_bytes or 0, len(data), 0)
    if offset >= len(data):
        raise ProofError("offset", f"the proof's offset {offset} is outside the result "
                                   f"({len(data)} bytes)")
    start = max(0, offset - UTF8_BEFORE)
    window = data[start:offset + UTF8_AFTER]
    return SCHEMA_HEADER.pack(fmt, 1, offset - start, len(window), schema.max_bytes or 0,
                              len(data), offset) + window


def mismatch_frame(result: Cid, rerun: Cid | None) -> bytes:
    """verify_mismatch's frame: the committed result and the re-run's output (None:
    the job failed on the input)."""
    if rerun is None:
        return bytes([1, len(result.raw)]) + result.raw
    return bytes([0, len(result.raw)]) + result.raw + rerun.raw


def policy_frame(denied: str, data: bytes, offset: int) -> bytes:
    """verify_policy's frame: the denied string and the result's bytes at `offset`."""
    text = denied.encode()
    if offset >= len(data):
        raise ProofError("offset", f"the proof's offset {offset} is outside the result "
                                   f"({len(data)} bytes)")
    return bytes([len(text)]) + text + data[offset:offset + len(text)]


def citation_frame(cite: Cid, data: bytes) -> bytes:
    """verify_citation's frame: the cited CID's text and the result."""
    text = str(cite).encode()
    return bytes([len(text)]) + text + data


# -- running a verifier ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Verdict:
    holds: bool  # the claim holds: the result is wrong as the proof type says
    reason: str
    fuel: int  # burnt
    verifier: str  # the module's CID


def module(proof_type: str) -> bytes:
    """The committed verifier module of a proof type."""
    return _committed(proof_type)[0]


@functools.cache
def _committed(proof_type: str) -> tuple[bytes, Cid]:
    """A verifier's module and CID, read once per process (each verdict needs both)."""
    name = VERIFIERS.get(proof_type)
    if name is None:
        raise LocalProtocolError("proof_type", f"no WebAssembly verifier for "
                                               f"{proof_type}", code="no_verifier")
    data = (HERE / f"{name}.wasm").read_bytes()
    return data, module_cid(data)


def verifier_cids() -> dict[str, str]:
    return {t: str(_committed(t)[1]) for t in VERIFIERS}


def _run(module_bytes: bytes, frame: bytes, fuel: int, cid: Cid | None = None
         ) -> tuple[int | str, int]:
    """The module's answer on `frame` (or why it gave none) and the fuel it burnt."""
    cid = cid or module_cid(module_bytes)
    store = wasmtime.Store(engine())
    store.set_limits(memory_size=MEMORY_BYTES_MAX, instances=1, tables=1, memories=1)
    store.set_fuel(fuel)
    try:
        instance = wasmtime.Instance(store, compiled(module_bytes, cid), [])
        exports = instance.exports(store)
        memory, alloc, verify = exports["memory"], exports["alloc"], exports["verify"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(alloc, wasmtime.Func) \
            and isinstance(verify, wasmtime.Func)
        ptr = alloc(store, len(frame))
        if not isinstance(ptr, int) or ptr < 0 or ptr + len(frame) > memory.data_len(store):
            return "alloc answered an address outside the module's memory", 0
        memory.write(store, frame, ptr)
        answer = verify(store, ptr, len(frame))
    except wasmtime.Trap as exc:
        burnt = fuel - store.get_fuel()
        if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            return f"the verifier ran out of fuel ({fuel})", burnt
        return f"the verifier trapped: {exc.message}", burnt
    except wasmtime.WasmtimeError as exc:
        return f"the verifier failed: {exc}", fuel - store.get_fuel()
    burnt = fuel - store.get_fuel()
    return (answer if isinstance(answer, int) else f"the verifier answered {answer!r}"), burnt


def verify(proof_type: str, frame: bytes, *, fuel: int, holds: str = "",
           fails: str = "") -> Verdict:
    """Run `proof_type`'s verifier on `frame` with `fuel`. `holds` and `fails` say, for
    people, what either answer means here (the verdict is the module's alone)."""
    data, module_id = _committed(proof_type)
    answer, burnt = _run(data, frame, fuel, module_id)
    cid = str(module_id)
    if answer == 1:
        return Verdict(True, holds or "the claim holds", burnt, cid)
    if answer == 0:
        return Verdict(False, fails or "the claim does not hold", burnt, cid)
    reason = answer if isinstance(answer, str) else f"the frame does not fit ({answer})"
    return Verdict(False, reason, burnt, cid)
