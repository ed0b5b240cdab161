"""Streamed snapshots (protocol/raftsnap.py): a snapshot survives any split of its
stream; truncated, oversize, wrong-digest, mislabelled and garbage streams are refused
with a RemoteProtocolError and nothing else. And the core's side (RawNode.report_snapshot,
the snapshot timeout as a backstop): the leader does not send a snapshot again while the
shell reports one under way."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.logformat import uvarint
from swarm.protocol.raft import Config, Message, MsgType, ProgressState, RawNode
from swarm.protocol.raftlog import MemoryStorage, Snapshot
from swarm.protocol.raftsnap import (
    HEADER_BYTES_MAX,
    SnapHeader,
    SnapshotDecoder,
    encode_stream,
    header_of,
)

BUCKETS, NODES = 16, 5


def snap_msg(data: bytes, *, index: int = 7) -> Message:
    return Message(MsgType.SNAP, to=3, frm=1, term=2,
                   snapshot=Snapshot(index, 2, (1, 2, 3), data))


def wire(bucket: int, m: Message, chunk: int) -> bytes:
    return b"".join(encode_stream(bucket, m, chunk))


def decode_all(data: bytes, **kw: int) -> tuple[int, Message]:
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES, **kw)
    dec.feed(data)
    return dec.message()


@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700),
       cuts=st.lists(st.integers(0, 6000), max_size=20))
def test_a_snapshot_survives_any_split(data: bytes, chunk: int, cuts: list[int]) -> None:
    m = snap_msg(data)
    raw = wire(5, m, chunk)
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES)
    pos = 0
    for cut in [*sorted(c for c in cuts if c <= len(raw)), len(raw)]:
        dec.feed(raw[pos:cut])
        pos = cut
    assert dec.complete
    assert dec.message() == (5, m)


def test_chunks_are_bounded_by_the_senders_size() -> None:
    data = os.urandom(10_000)
    pieces = list(encode_stream(0, snap_msg(data), 1024))
    assert len(pieces) == 1 + 10  # the header, then ten chunks of at most 1 KiB
    assert all(len(p) <= 1024 + 2 for p in pieces[1:])


def test_truncated_stream_is_not_a_snapshot() -> None:
    raw = wire(1, snap_msg(os.urandom(3000)), 512)
    for cut in (0, 3, 40, len(raw) - 1):
        dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES)
        dec.feed(raw[:cut])
        assert not dec.complete
        with pytest.raises(RemoteProtocolError, match="truncated"):
            dec.message()


def test_wrong_digest_is_refused() -> None:
    m = snap_msg(b"x" * 2000)
    pieces = list(encode_stream(1, m, 500))
    bad = [*pieces[:-1], pieces[-1][:-1] + b"y"]  # same sizes, one byte changed
    with pytest.raises(RemoteProtocolError, match="digest"):
        decode_all(b"".join(bad))


def test_more_bytes_than_stated_are_refused() -> None:
    raw = wire(1, snap_msg(b"a" * 100), 50)
    with pytest.raises(RemoteProtocolError, match="after the last chunk"):
        decode_all(raw + uvarint(1) + b"z")
    # A chunk overshooting the stated total.
    h = header_of(1, snap_msg(b"a" * 100)).encode()
    with pytest.raises(RemoteProtocolError, match="exceed"):
        decode_all(uvarint(len(h)) + h + uvarint(101) + b"a" * 101)


def test_oversize_is_refused_before_the_data_comes() -> None:
    # A declared total over the limit: refused on the header alone.
    h = header_of(0, snap_msg(b"a" * 100)).encode()
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES, snapshot_bytes_max=99)
    with pytest.raises(RemoteProtocolError, match="total"):
        dec.feed(uvarint(len(h)) + h)
    # A chunk over the receiver's chunk limit: refused on its length prefix.
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES, chunk_bytes_max=64)
    with pytest.raises(RemoteProtocolError, match="over 64"):
        dec.feed(uvarint(len(h)) + h + uvarint(100))
    # A header over its limit.
    with pytest.raises(RemoteProtocolError, match="over"):
        SnapshotDecoder(buckets=BUCKETS, nodes=NODES).feed(uvarint(HEADER_BYTES_MAX + 1))
    # And a sender never cuts an oversize snapshot.
    with pytest.raises(LocalProtocolError):
        list(encode_stream(0, snap_msg(b"a" * 10), 0))


def test_empty_chunks_and_bad_prefixes_are_refused() -> None:
    h = header_of(0, snap_msg(b"a" * 10)).encode()
    with pytest.raises(RemoteProtocolError, match="empty"):
        decode_all(uvarint(len(h)) + h + uvarint(0))
    with pytest.raises(RemoteProtocolError, match="prefix"):
        decode_all(b"\xff" * 12)


@pytest.mark.parametrize("fields", [
    [16, 2, 1, 3, 7, 2, [1], 0, b"\0" * 32],  # bucket out of range
    [0, 0, 1, 3, 7, 2, [1], 0, b"\0" * 32],  # term 0
    [0, 2, 6, 3, 7, 2, [1], 0, b"\0" * 32],  # sender not a node
    [0, 2, 1, 3, 0, 2, [1], 0, b"\0" * 32],  # index 0
    [0, 2, 1, 3, 7, 2, [], 0, b"\0" * 32],  # no voters
    [0, 2, 1, 3, 7, 2, [9], 0, b"\0" * 32],  # voter not a node
    [0, 2, 1, 3, 7, 2, [1], -1, b"\0" * 32],  # negative total
    [0, 2, 1, 3, 7, 2, [1], 0, b"\0" * 31],  # short digest
    [0, 2, 1, 3, 7, 2, [1], True, b"\0" * 32],  # a boolean for an integer
    [0, 2, 1, 3, 7, 2, [1], 0],  # a field missing
])
def test_malformed_headers_are_refused(fields: list[object]) -> None:
    from swarm.protocol import cbor
    h = cbor.encode(fields)
    with pytest.raises(RemoteProtocolError):
        decode_all(uvarint(len(h)) + h)


@given(st.binary(max_size=300))
def test_garbage_raises_only_remote_protocol_errors(junk: bytes) -> None:
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES)
    try:
        dec.feed(junk)
        dec.message()
    except RemoteProtocolError:
        pass


def test_admit_sees_the_header_before_any_chunk() -> None:
    seen: list[SnapHeader] = []

    def admit(h: SnapHeader) -> None:
        seen.append(h)
        raise RemoteProtocolError("test", "no room")

    raw = wire(2, snap_msg(b"q" * 1000), 100)
    dec = SnapshotDecoder(buckets=BUCKETS, nodes=NODES, admit=admit)
    with pytest.raises(RemoteProtocolError, match="no room"):
        dec.feed(raw)
    assert seen[0].total == 1000 and seen[0].digest == hashlib.sha256(b"q" * 1000).digest()
    assert dec.received == 0 and dec.header is None


# -- the core: report_snapshot and the snapshot timeout --

def leader_with_snapshot_pending(timeout: int | None) -> RawNode:
    """Node 1 leads {1, 2, 3} and has sent 3 a snapshot (its log starts past 3's)."""
    disk = MemoryStorage([1, 2, 3])
    node = RawNode(Config(1, election_tick=10, seed=1, check_quorum=False,
                          snapshot_timeout_tick=timeout), disk)
    node.campaign()
    for peer in (2, 3):
        node.step(Message(MsgType.PRE_VOTE_RESP, to=1, frm=peer, term=1))
    for peer in (2, 3):
        node.step(Message(MsgType.VOTE_RESP, to=1, frm=peer, term=1))
    rd = node.ready()
    disk.append(rd.entries)
    if rd.hard_state is not None:
        disk.set_hard_state(rd.hard_state)
    node.advance(rd)
    node.step(Message(MsgType.APP_RESP, to=1, frm=2, term=1, index=1))
    rd = node.ready()
    disk.set_hard_state(rd.hard_state or disk.initial_state()[0])
    node.advance(rd)
    disk.create_snapshot(1, [1, 2, 3], b"state")
    disk.compact(1)
    # 3 answers from an empty log: the leader's log no longer has what 3 needs.
    node.step(Message(MsgType.APP_RESP, to=1, frm=3, term=1, index=0, reject=True,
                      reject_hint=0))
    assert node.raft.prs[3].state == ProgressState.SNAPSHOT
    assert [m.type for m in node.raft.msgs if m.to == 3] == [MsgType.SNAP]
    node.raft.msgs.clear()
    return node


def snaps_sent(node: RawNode, ticks: int) -> int:
    """Tick the leader; 2 and 3 answer heartbeats, and 3 (which has not received a
    snapshot) rejects every append. How many snapshots went to 3?"""
    n = 0
    for _ in range(ticks):
        node.tick()
        for _ in range(3):
            msgs, node.raft.msgs = node.raft.msgs, []
            n += sum(1 for m in msgs if m.type == MsgType.SNAP)
            for m in msgs:
                if m.type == MsgType.HEARTBEAT:
                    node.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=m.to, term=1))
                elif m.type == MsgType.APP and m.to == 3:
                    node.step(Message(MsgType.APP_RESP, to=1, frm=3, term=1, index=m.index,
                                      reject=True, reject_hint=0))
    return n


def test_default_timeout_resends_a_snapshot_after_an_election_timeout() -> None:
    # Today's behaviour without reports: right for a lost snapshot, a restart loop for
    # one that takes longer than 10 ticks to send.
    assert snaps_sent(leader_with_snapshot_pending(None), 35) == 3


def test_with_reports_a_long_transfer_is_not_restarted() -> None:
    node = leader_with_snapshot_pending(100)
    assert snaps_sent(node, 99) == 0
    node.report_snapshot(3, True)
    pr = node.raft.prs[3]
    assert pr.state == ProgressState.PROBE and pr.next == 2 and pr.probe_sent
    # 3's answer to the snapshot moves it on to replicating.
    node.step(Message(MsgType.APP_RESP, to=1, frm=3, term=1, index=1))
    assert pr.state == ProgressState.REPLICATE and pr.match == 1


def test_a_failed_transfer_is_sent_again_after_a_heartbeat() -> None:
    node = leader_with_snapshot_pending(100)
    node.raft.msgs.clear()
    node.report_snapshot(3, False)
    pr = node.raft.prs[3]
    assert pr.state == ProgressState.PROBE and pr.pending_snapshot == 0 and pr.probe_sent
    assert not any(m.type == MsgType.SNAP for m in node.raft.msgs)
    node.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=3, term=1))
    assert [m.to for m in node.raft.msgs if m.type == MsgType.SNAP] == [3]
    assert pr.state == ProgressState.SNAPSHOT


def test_reports_are_ignored_unless_a_snapshot_is_pending() -> None:
    node = leader_with_snapshot_pending(100)
    before = node.raft.prs[2].state, node.raft.prs[2].next
    node.report_snapshot(2, False)
    node.report_snapshot(9, True)  # not a member
    assert (node.raft.prs[2].state, node.raft.prs[2].next) == before
    # From the network, a SNAP_STATUS is a local type and is dropped.
    node.step(Message(MsgType.SNAP_STATUS, to=1, frm=3, term=1))
    assert node.raft.prs[3].state == ProgressState.SNAPSHOT
    with pytest.raises(LocalProtocolError):
        Config(1, snapshot_timeout_tick=0).validate()
