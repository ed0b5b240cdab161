"""The Raft frame's ledger parts: submitted commands and their outcomes, certified chain
entries and fetch requests; decoded strictly like the rest of a frame."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import cbor
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.raftwire import (
    CertifiedEntry,
    Frame,
    SubmitRequest,
    SubmitResponse,
    decode_frame,
)


def ledger_frame() -> Frame:
    return Frame(2, submits=(SubmitRequest(7, 3, b"\xa1bop" * 3), SubmitRequest(0, 255, b"")),
                 results=(SubmitResponse(7, True, cbor.encode({"x": 1})),
                          SubmitResponse(8, False, b"", "not_leader:4")),
                 chain=(CertifiedEntry(3, 12, 2, b"entry", ((b"a" * 32, b"s" * 64),
                                                            (b"b" * 32, b"t" * 64))),),
                 fetch=((3, 11), (200, 0)))


def test_ledger_parts_round_trip_and_stay_out_of_empty_frames() -> None:
    f = ledger_frame()
    assert decode_frame(f.encode(), buckets=256, nodes=5) == f
    assert set(cbor.decode(Frame(1).encode())) == {"from"}


@pytest.mark.parametrize("key, value", [
    ("u", [[1, 3]]),  # a submit without its command
    ("u", [[1, 300, b""]]),  # bucket out of range
    ("u", [[-1, 3, b""]]),
    ("v", [[1, "yes", b"", ""]]),  # ok not a boolean
    ("v", [[1, True, "text", ""]]),
    ("c", [[3, 0, 1, b"e", []]]),  # index 0
    ("c", [[3, 1, 1, b"e", [[b"a" * 33, b"s" * 64]]]]),  # signer too long
    ("c", [[3, 1, 1, b"e", [[b"a" * 32]]]]),
    ("c", [[3, 1, 1, b"e", [[b"a" * 32, b"s"]] * 65]]),  # too many signatures
    ("g", [[3]]),
    ("g", [[256, 0]]),
    ("z", []),  # unknown key
])
def test_malformed_ledger_parts_are_remote_errors(key: str, value: object) -> None:
    doc = {"from": 2, key: value}
    with pytest.raises(RemoteProtocolError):
        decode_frame(cbor.encode(doc), buckets=256, nodes=5)


@given(st.data())
def test_mutated_ledger_frames_raise_only_remote_errors(data: st.DataObject) -> None:
    wire = bytearray(ledger_frame().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(bytes(wire), buckets=256, nodes=5)
