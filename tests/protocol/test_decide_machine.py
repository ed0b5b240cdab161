"""The DECIDE state machine: first committed decision per NEED wins (P1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import cbor, decide
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.decide import (
    DecideMachine,
    TryDecide,
    decode_command,
    encode_command,
)
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.errors import RemoteProtocolError
from swarm.testnet.workload import TEST_SWARM


def test_first_committed_decision_is_final() -> None:
    m = DecideMachine(bucket=7)
    a = m.apply(1, 1, encode_command(TryDecide(b"need", b"p1"), 100))
    b = m.apply(2, 1, encode_command(TryDecide(b"need", b"p2"), 200))
    assert a is not None and b is not None
    assert a == b and a.proposal_id == b"p1" and a.index == 1 and a.bucket == 7


def test_time_is_the_leaders_and_never_goes_back() -> None:
    m = DecideMachine(bucket=0)
    m.apply(1, 1, encode_command(TryDecide(b"a", b"p"), 500))
    d = m.apply(2, 2, encode_command(TryDecide(b"b", b"p"), 400))
    assert d is not None and d.ts_ms == 500


def test_noops_and_garbage_are_skipped_alike() -> None:
    m = DecideMachine(bucket=0)
    assert m.apply(1, 1, b"") is None
    assert m.apply(2, 1, b"\xff\x00") is None
    assert m.applied == 2 and not m.decisions
    with pytest.raises(AssertionError):
        m.apply(2, 1, b"")


def test_command_validation() -> None:
    with pytest.raises(RemoteProtocolError):
        TryDecide(b"", b"p")
    with pytest.raises(RemoteProtocolError):
        TryDecide(b"n", b"p", k_plan=-1)
    with pytest.raises(RemoteProtocolError):
        decode_command(b"\xa0")


def test_snapshot_round_trip() -> None:
    m = DecideMachine(bucket=3)
    for i in range(1, 6):
        m.apply(i, 1, encode_command(TryDecide(bytes([i % 3 + 1]), bytes([i])), i))
    again = DecideMachine.restore(m.snapshot(), 3)
    assert again.decisions == m.decisions and again.applied == m.applied
    assert again.clock_ms == m.clock_ms


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.binary(min_size=1, max_size=4)),
                max_size=40))
def test_replicas_applying_one_log_agree(cmds: list[tuple[bytes, bytes]]) -> None:
    """Every replica applying the same committed log (from any snapshot point) holds
    exactly one decision per NEED: the first one in the log."""
    log = [encode_command(TryDecide(n, p), i) for i, (n, p) in enumerate(cmds)]
    full = DecideMachine(0)
    for i, data in enumerate(log, 1):
        full.apply(i, 1, data)
    first: dict[bytes, bytes] = {}
    for n, p in cmds:
        first.setdefault(n, p)
    assert {k: d.proposal_id for k, d in full.decisions.items()} == first
    cut = len(log) // 2
    part = DecideMachine(0)
    for i, data in enumerate(log[:cut], 1):
        part.apply(i, 1, data)
    resumed = DecideMachine.restore(part.snapshot(), 0)
    for i, data in enumerate(log[cut:], cut + 1):
        resumed.apply(i, 1, data)
    assert resumed.decisions == full.decisions


# -- the submission protocol of nodes that are not validators --

ASKER = Identity(b"\x0a" * 32)
NEED = dag_cbor_cid(b"a need").raw


def request(cmd: TryDecide, swarm: bytes = TEST_SWARM, **extra: object) -> bytes:
    return make_envelope(ASKER, kind="DECIDE", swarm=swarm, lamport=1, ts=0,
                         payload={**decide.request_payload(cmd), **extra}).wire


def test_submission_and_answer_round_trip() -> None:
    cmd = TryDecide(NEED, b"p", 2, 3)
    env, back, timeout = decide.decode_submission(
        decide.encode_submission(request(cmd), 1500), TEST_SWARM)
    assert (back, timeout) == (cmd, 1500) and env.sender == ASKER.public_key
    d = decide.Decision(NEED, b"p", 2, 3, bucket=7, index=9, term=2, ts_ms=123)
    assert decide.decode_answer(decide.encode_answer(d)) == d
    with pytest.raises(RemoteProtocolError, match="no quorum"):
        decide.decode_answer(decide.encode_answer(None, "no quorum"))


def test_a_request_must_be_the_askers_uncertified_decide_for_this_swarm() -> None:
    cmd = TryDecide(NEED, b"p")
    good = request(cmd)
    forged = good[:7] + bytes([good[7] ^ 1]) + good[8:]
    need = make_envelope(ASKER, kind="NEED", swarm=TEST_SWARM, lamport=1, ts=0,
                         payload={"class": "simple", "budget": 1}).wire
    also = request(cmd, also=[{**decide.request_payload(TryDecide(NEED, b"q")),
                               "cert": {"bucket": 0, "index": 1, "term": 1, "ts_ms": 0,
                                        "entry_hash": bytes(32),
                                        "sigs": [{"signer": bytes(32), "sig": bytes(64)}]}}])
    for wire, code in [(forged, "bad_signature"), (request(cmd, swarm=b"\x01" * 32),
                                                   "wrong_swarm"),
                       (need, "invalid"), (also, "invalid")]:
        with pytest.raises(RemoteProtocolError) as err:
            decide.decode_submission(decide.encode_submission(wire, 5), TEST_SWARM)
        assert err.value.code == code


@pytest.mark.parametrize("value", [
    {"env": b"x"},  # no timeout
    {"env": b"x", "timeout_ms": 0},
    {"env": b"x", "timeout_ms": 10**9},
    {"env": "text", "timeout_ms": 5},
    {"env": b"garbage", "timeout_ms": 5},
    {"env": b"x", "timeout_ms": 5, "x": 1},
    [1, 2, 3],
])
def test_malformed_submissions_are_refused(value: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decide.decode_submission(cbor.encode(value), TEST_SWARM)


def test_oversize_and_garbage_submissions_and_answers_are_refused() -> None:
    for parse in (lambda d: decide.decode_submission(d, TEST_SWARM), decide.decode_answer):
        with pytest.raises(RemoteProtocolError):
            parse(b"\x00" * (decide.SUBMISSION_BYTES_MAX + 1))
        with pytest.raises(RemoteProtocolError):
            parse(b"\xff\xfe")
    with pytest.raises(RemoteProtocolError):
        decide.decode_answer(cbor.encode({"ok": True, "need": b"n"}))
