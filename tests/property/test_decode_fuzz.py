"""Decoding hostile bytes only ever raises the typed error.

Goal: no byte string, random or a mutation of a valid envelope, makes
`decode_envelope` raise anything but `RemoteProtocolError` (the node must never crash
on a peer's garbage). Method: Hypothesis draws random bytes, random CBOR documents
shaped like envelopes, and byte-level mutations (flip, insert, delete, truncate) of
real envelopes.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import cbor
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity, decode_envelope, signing_message
from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.logformat import iter_log
from swarm.protocol.replay import Replica
from swarm.testnet.workload import TEST_SWARM, Agent, example_payloads, fake_cid

AGENT = Agent(Identity(b"\x05" * 32), TEST_SWARM)
VALID = [AGENT.make(kind, payload) for kind, payload in example_payloads().items()]


def check(data: bytes) -> Envelope | None:
    try:
        return decode_envelope(data, swarm=TEST_SWARM)
    except RemoteProtocolError:
        return None


@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(0, 3), inner, max_size=5)
    | st.builds(cbor2.CBORTag, st.sampled_from([0, 2, 42, 258, 1000]), inner),
    max_leaves=30,
)


@given(st.fixed_dictionaries({}, optional={
    "sig": st.binary(min_size=60, max_size=70) | cbor_values,
    "body": st.fixed_dictionaries({}, optional={
        k: cbor_values for k in ("v", "kind", "swarm", "sender", "lamport", "ts", "thread",
                                 "payload", "refs")}) | cbor_values,
    "extra": cbor_values,
}), st.booleans())
def test_envelope_shaped_documents(doc: dict[str, Any], canonical: bool) -> None:
    try:
        data = cbor2.dumps(doc, canonical=canonical)
    except Exception:  # noqa: BLE001 - some drawn values cannot be encoded
        return
    check(data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@given(st.sampled_from(sorted(example_payloads())), st.data())
def test_signed_envelopes_with_a_field_replaced(kind: str, data: st.DataObject) -> None:
    """Structure-aware: a properly signed envelope whose payload has one value swapped
    for an arbitrary one (wrong type, unhashable, float, link, nested junk)."""
    payload = copy.deepcopy(example_payloads()[kind])
    path = data.draw(st.sampled_from(_paths(payload)[1:] or [()]))
    replacement = data.draw(cbor_values | st.just(fake_cid("x")))
    if not path:
        return
    target = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    body = {"v": 1, "kind": kind, "swarm": TEST_SWARM, "sender": AGENT.identity.public_key,
            "lamport": 1, "ts": 0, "thread": "", "payload": payload, "refs": []}
    try:
        body_bytes = cbor.encode(body)
    except LocalProtocolError:
        return  # not even encodable as DAG-CBOR (floats, huge ints, non-text keys)
    sig = AGENT.identity.sign(signing_message(dag_cbor_cid(body_bytes)))
    check(b"\xa2\x63sig\x58\x40" + sig + b"\x64body" + body_bytes)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(VALID)).wire)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            wire.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete" and wire:
            del wire[pos]
        elif op == "truncate":
            del wire[pos:]
        elif wire:
            wire[pos] = draw(st.sampled_from([0x00, 0x18, 0x1B, 0x5B, 0x9B, 0xBB, 0xD8, 0xF9,
                                              0xFB, 0xFF, 0x9F, 0xBF]))
    return bytes(wire)


@given(mutations())
def test_mutated_envelopes(data: bytes) -> None:
    env = check(data)
    if env is not None:
        # Anything that still decodes is a genuine, correctly signed envelope.
        assert env.id in {v.id for v in VALID}


@given(st.lists(mutations() | st.binary(max_size=50), max_size=8))
def test_replica_never_raises(wires: list[bytes]) -> None:
    replica = Replica(swarm=TEST_SWARM)
    for w in wires:
        replica.receive(w)
    assert replica.received == len(wires)


@given(st.binary(max_size=200))
def test_log_decoder_only_raises_typed_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        list(iter_log(b"swarm-log/v1\n" + data))
