"""Placement of buckets on validators, commit certificates, and the Raft frame codec."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import certificate, genesis
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.decide import TryDecide, encode_command
from swarm.protocol.envelope import Identity
from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.placement import Placement, spread
from swarm.protocol.raft import Message, MsgType
from swarm.protocol.raftlog import Entry, EntryKind, Snapshot
from swarm.protocol.raftwire import (
    Announcement,
    DecideRequest,
    DecideResponse,
    Frame,
    SigNote,
    bitmap_has,
    decode_frame,
    leads_bitmap,
)

IDS = [Identity(bytes([i + 1]) * 32) for i in range(7)]
SWARM = b"\x07" * 32


def make_genesis(n: int = 5, replicas: int = 3) -> genesis.Genesis:
    return genesis.new(
        name="t", created_ms=0,
        validators=[{"account": i.public_key, "org": "o", "asn": 1, "region": "r",
                     "stake": 1} for i in IDS[:n]],
        params={"replicas": replicas})


# -- placement --

def test_placement_is_deterministic_balanced_and_sized() -> None:
    p = Placement.from_genesis(make_genesis())
    again = Placement.from_genesis(make_genesis())
    assert [p.replicas(b) for b in range(256)] == [again.replicas(b) for b in range(256)]
    assert all(len(p.replicas(b)) == 3 and len(set(p.replicas(b))) == 3 for b in range(256))
    counts = spread(p)
    assert sum(counts) == 256 * 3
    assert max(counts) - min(counts) < 256 * 3 // 5 // 2  # roughly even
    assert p.quorum(0) == 2


def test_adding_a_validator_moves_only_the_buckets_it_wins() -> None:
    before = Placement.from_genesis(make_genesis(5))
    after = Placement.from_genesis(make_genesis(6))
    newcomer = after.node_id(IDS[5].public_key)
    moved = 0
    for b in range(256):
        old = {before.account(n) for n in before.replicas(b)}
        new = {after.account(n) for n in after.replicas(b)}
        if old != new:
            moved += 1
            assert IDS[5].public_key in new and len(old & new) == 2
    assert moved == len(after.buckets_of(newcomer))


def test_placement_errors() -> None:
    p = Placement.from_genesis(make_genesis())
    with pytest.raises(LocalProtocolError):
        p.replicas(256)
    with pytest.raises(LocalProtocolError):
        p.account(0)
    assert p.node_id(b"\x00" * 32) is None


# -- certificates --

def signed_cert(p: Placement, bucket: int, data: bytes, signers: list[int],
                ts: int = 5) -> dict[str, object]:
    digest = certificate.entry_hash(data)
    ids = {i.public_key: i for i in IDS}
    sigs = [certificate.sign(ids[p.account(n)], SWARM, bucket, 9, 2, digest)
            for n in signers]
    return certificate.cert_payload(bucket, 9, 2, ts, digest, sigs)


def test_certificate_needs_a_quorum_of_distinct_replicas() -> None:
    p = Placement.from_genesis(make_genesis())
    data = encode_command(TryDecide(b"n", b"p"), 5)
    reps = list(p.replicas(3))
    digest = certificate.entry_hash(data)
    certificate.check(signed_cert(p, 3, data, reps[:2]), SWARM, p, 3, digest)
    with pytest.raises(certificate.CertificateError, match="quorum"):
        certificate.check(signed_cert(p, 3, data, reps[:1]), SWARM, p, 3, digest)
    outsider = next(n for n in range(1, 6) if n not in reps)
    with pytest.raises(certificate.CertificateError, match="not a replica"):
        certificate.check(signed_cert(p, 3, data, [reps[0], outsider]), SWARM, p, 3, digest)
    doubled = signed_cert(p, 3, data, [reps[0], reps[0]])
    with pytest.raises(certificate.CertificateError, match="twice"):
        certificate.check(doubled, SWARM, p, 3, digest)
    with pytest.raises(certificate.CertificateError, match=r"entry_hash|match"):
        certificate.check(signed_cert(p, 3, data, reps[:2]), SWARM, p, 3, b"\x00" * 32)
    with pytest.raises(certificate.CertificateError, match="bucket"):
        certificate.check(signed_cert(p, 3, data, reps[:2]), SWARM, p, 4, digest)
    # A signature for another swarm does not verify here.
    with pytest.raises(certificate.CertificateError, match="verify"):
        certificate.check(signed_cert(p, 3, data, reps[:2]), b"\x08" * 32, p, 3, digest)


def test_decide_digest_rebuilds_the_entry_from_a_payload() -> None:
    need = dag_cbor_cid(b"need")
    payload = {"need_id": need, "proposal_id": "p-1", "k_plan": 2, "epoch": 1,
               "cert": {"ts_ms": 77}}
    expect = certificate.entry_hash(encode_command(TryDecide(need.raw, b"p-1", 2, 1), 77))
    assert certificate.decide_digest(payload) == expect


# -- frames --

def sample_frame() -> Frame:
    m = Message(MsgType.APP, to=2, frm=1, term=3, log_term=2, index=7, commit=6,
                entries=(Entry(3, 8, EntryKind.NORMAL, b"x"), Entry(3, 9, EntryKind.CONF,
                                                                   b"y")))
    s = Message(MsgType.SNAP, to=2, frm=1, term=3,
                snapshot=Snapshot(10, 3, (1, 2, 3), b"state"))
    r = Message(MsgType.APP_RESP, to=2, frm=1, term=3, index=4, reject=True, reject_hint=2,
                log_term=1)
    return Frame(1, ((5, m), (6, s), (7, r)), leads_bitmap([5, 200], 256),
                 (SigNote(5, 9, 3, b"d" * 32, 11, b"s" * 64),),
                 (DecideRequest(1, 5, b"need", b"prop", 0, 0),),
                 (DecideResponse(2, True, (b"n", b"p", 0, 0, 5, 9, 3, 11)),
                  DecideResponse(3, False, (), "not_leader:2")),
                 announce=(Announcement(5, 9, 3, 11, b"need", b"prop", 1, 2,
                                        ((b"a" * 32, b"s" * 64), (b"b" * 32, b"t" * 64))),))


def test_frame_round_trip() -> None:
    f = sample_frame()
    assert decode_frame(f.encode(), buckets=256, nodes=5) == f
    assert bitmap_has(f.leads, 200) and not bitmap_has(f.leads, 201)


def test_announcements_decode_strictly() -> None:
    a = Announcement(5, 9, 3, 11, b"need", b"prop", 0, 0, ((b"a" * 32, b"s" * 64),))
    ok = Frame(1, announce=(a,))
    assert decode_frame(ok.encode(), buckets=256, nodes=5) == ok
    for bad in (a.__class__(300, 9, 3, 11, b"need", b"prop", 0, 0, ()),  # bucket
                a.__class__(5, 0, 3, 11, b"need", b"prop", 0, 0, ()),  # index 0
                a.__class__(5, 9, 3, 11, b"n" * 129, b"prop", 0, 0, ()),  # need too long
                a.__class__(5, 9, 3, 11, b"need", b"prop", 0, 0, ((b"a" * 33, b"s"),))):
        with pytest.raises(RemoteProtocolError, match=r"frame\.a"):
            decode_frame(Frame(1, announce=(bad,)).encode(), buckets=256, nodes=5)


def test_frame_limits() -> None:
    f = sample_frame()
    with pytest.raises(RemoteProtocolError):
        decode_frame(f.encode(), buckets=6, nodes=5)  # bucket 6, 7 out of range
    with pytest.raises(RemoteProtocolError):
        decode_frame(Frame(9).encode(), buckets=256, nodes=5)  # unknown sender
    local = Frame(1, ((0, Message(MsgType.HUP, to=2, frm=1)),))
    with pytest.raises(RemoteProtocolError, match="network message"):
        decode_frame(local.encode(), buckets=256, nodes=5)


@given(st.binary(max_size=300))
def test_garbage_frames_raise_only_remote_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):  # anything else fails the test
        decode_frame(data, buckets=256, nodes=5)


@given(st.data())
def test_mutated_frames_raise_only_remote_errors(data: st.DataObject) -> None:
    wire = bytearray(sample_frame().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(bytes(wire), buckets=256, nodes=5)
