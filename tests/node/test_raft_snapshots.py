"""Snapshots streamed apart from the Raft frames (node/raft_snapshots.py).

Goals: the receiver's bounds hold and everything it drops is counted (one snapshot per
(peer, bucket), bytes per peer, truncated, garbage, wrong digest, a sender speaking for
another); a follower that was down catches up through a snapshot many chunks long while
the other buckets keep deciding and the leader does not restart the transfer, however
long it takes (multi-raft on real stores over the in-memory transport of
tests/node/test_multiraft.py); and a multi-chunk snapshot crosses real libp2p hosts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from test_multiraft import BUCKETS, Cluster, N, need, running

from swarm.node import multiraft, p2p, raft_group, raft_snapshots
from swarm.node.multiraft import MultiRaft
from swarm.node.raft_snapshots import (
    BUSY,
    OK,
    REJECTED,
    SnapshotReceiver,
    SnapshotStreams,
    snapshot_protocol,
)
from swarm.node.raftstore import RaftStore
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import Decision, TryDecide
from swarm.protocol.logformat import uvarint
from swarm.protocol.placement import Placement
from swarm.protocol.raft import Message, MsgType, Role
from swarm.protocol.raftlog import Snapshot
from swarm.protocol.raftsnap import encode_stream, header_of

# -- the receiver's bounds --


def snap_msg(data: bytes, frm: int = 1, to: int = 2) -> Message:
    return Message(MsgType.SNAP, to=to, frm=frm, term=3,
                   snapshot=Snapshot(9, 3, (1, 2, 3), data))


def reader(pieces: list[bytes], gate: trio.Event | None = None,
           hold_after: int = 1) -> Callable[[], Awaitable[bytes]]:
    it = iter(pieces)
    n = 0

    async def read() -> bytes:
        nonlocal n
        n += 1
        if gate is not None and n > hold_after:
            await gate.wait()
        await trio.sleep(0)
        return next(it, b"")
    return read


class Delivered:
    def __init__(self, ok: bool = True) -> None:
        self.got: list[tuple[int, int, Message]] = []
        self.ok = ok

    def __call__(self, peer: int, bucket: int, m: Message) -> bool:
        self.got.append((peer, bucket, m))
        return self.ok


async def test_a_whole_snapshot_is_delivered_attributed_to_its_peer() -> None:
    out = Delivered()
    rx = SnapshotReceiver(16, 5, out)
    m = snap_msg(os.urandom(50_000))
    assert await rx.receive(1, reader(list(encode_stream(4, m, 4096)))) == OK
    assert out.got == [(1, 4, m)]
    assert rx.stats["snapshots_received"] == 1 and not rx.reserved and not rx.inflight


async def test_bad_streams_are_counted_and_dropped() -> None:
    out = Delivered()
    rx = SnapshotReceiver(16, 5, out)
    m = snap_msg(b"s" * 5000)
    pieces = list(encode_stream(4, m, 1000))
    truncated = pieces[:-1]
    wrong = [*pieces[:-1], pieces[-1][:-1] + b"!"]
    garbage = [b"\x05hello", b"\x00"]
    oversize_chunk = [pieces[0], uvarint(2 << 20)]
    for bad in (truncated, wrong, garbage, oversize_chunk, [], [b"\xff" * 20]):
        assert await rx.receive(1, reader(bad)) == REJECTED
    # Node 3 sending a snapshot that claims to be node 1's.
    assert await rx.receive(3, reader(pieces)) == REJECTED
    assert rx.stats["snapshots_rejected"] == 7 and out.got == []
    assert not rx.reserved and not rx.inflight  # nothing left held
    # The node refuses what is not for it: counted apart.
    rx.deliver = Delivered(ok=False)
    assert await rx.receive(1, reader(pieces)) == REJECTED
    assert rx.stats["snapshots_refused"] == 1
    # And the receiver still takes a good one.
    rx.deliver = out
    assert await rx.receive(1, reader(pieces)) == OK


async def test_a_transfer_slower_than_the_rate_floor_is_cut(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_snapshots, "STALL_S", 0.05)
    monkeypatch.setattr(raft_snapshots, "RATE_BYTES_S_MIN", 10**9)
    rx = SnapshotReceiver(16, 5, Delivered())
    pieces = list(encode_stream(4, snap_msg(b"z" * 2000), 100))
    it = iter(pieces)

    async def drip() -> bytes:
        await trio.sleep(0.02)  # each piece in time, but 20 of them are too slow in all
        return next(it, b"")

    assert await rx.receive(1, drip) == REJECTED
    assert rx.stats["snapshots_rejected"] == 1 and not rx.reserved and not rx.inflight


async def test_one_snapshot_per_peer_and_bucket_and_bytes_per_peer() -> None:
    out = Delivered()
    rx = SnapshotReceiver(16, 5, out, peer_bytes_max=30_000, total_bytes_max=50_000)
    big = list(encode_stream(4, snap_msg(b"a" * 20_000), 1000))
    other = list(encode_stream(5, snap_msg(b"b" * 20_000), 1000))
    gate = trio.Event()
    results: dict[str, int] = {}

    async def run(name: str, peer: int, pieces: list[bytes], g: trio.Event | None) -> None:
        results[name] = await rx.receive(peer, reader(pieces, g))

    async with trio.open_nursery() as n:
        # Two transfers admitted, then held mid-stream.
        n.start_soon(run, "first", 1, big, gate)
        n.start_soon(run, "another peer", 2,
                     list(encode_stream(5, snap_msg(b"c" * 20_000, frm=2), 1000)), gate)
        await trio.sleep(0.05)
        assert rx.reserved == {1: 20_000, 2: 20_000}
        await run("same bucket", 1, big, None)
        await run("over the peer's bytes", 1, other, None)
        await run("over the total", 3, list(encode_stream(5, snap_msg(b"d" * 20_000, frm=3),
                                                           1000)), None)
        gate.set()
    assert results == {"first": OK, "same bucket": BUSY, "over the peer's bytes": BUSY,
                       "another peer": OK, "over the total": BUSY}
    assert rx.stats["snapshots_busy"] == 3 and not rx.reserved and not rx.inflight


# -- multi-raft over memory: a follower catches up through a snapshot --

CHUNK = 512


class SnapCluster(Cluster):
    """The in-memory cluster of test_multiraft with snapshots on their own "streams":
    the pieces `encode_stream` cuts, read one at a time by each node's SnapshotReceiver
    (the same receiver the libp2p transport uses). `gate`, when set up, holds every
    transfer after its first chunk."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.receivers: dict[int, SnapshotReceiver] = {}
        self.sending: set[tuple[int, int, int]] = set()  # (src, dst, bucket)
        self.started: list[tuple[int, int, int]] = []
        self.coalesced = 0
        self.gate: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self.chunks = 0

    def snap_from(self, src: int) -> Callable[[int, int, Message], None]:
        def send_snapshot(peer: int, bucket: int, m: Message) -> None:
            key = (src, peer, bucket)
            if key in self.sending:
                self.coalesced += 1
                return
            self.sending.add(key)
            self.started.append(key)
            assert self.nursery is not None
            self.nursery.start_soon(self.transfer, key, m)
        return send_snapshot

    async def transfer(self, key: tuple[int, int, int], m: Message) -> None:
        src, dst, bucket = key
        pieces = list(encode_stream(bucket, m, CHUNK))
        self.chunks = max(self.chunks, len(pieces) - 1)
        status = REJECTED
        rx = self.receivers.get(dst)
        if rx is not None and dst in self.nodes and not self.cut & {src, dst}:
            status = await rx.receive(src, reader(pieces, self.gate, hold_after=2))
        self.sending.discard(key)
        node = self.nodes.get(src)
        if node is not None:
            node.snapshot_status(dst, bucket, status == OK)

    def make(self, node_id: int, store: RaftStore) -> MultiRaft:
        mr = MultiRaft(self.identity_of(node_id), self.genesis.swarm_id, self.placement,
                       store, self.send_from(node_id), self.publish, seed=node_id,
                       send_snapshot=self.snap_from(node_id),
                       announced=self.announced.__contains__)
        self.receivers[node_id] = SnapshotReceiver(BUCKETS, N, mr.receive_snapshot)
        return mr

    async def start(self, nursery: trio.Nursery, node_id: int) -> None:
        self.nursery = nursery  # where transfers run
        await super().start(nursery, node_id)


@pytest.fixture
async def snap_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[tuple[SnapCluster, trio.Nursery]]:
    monkeypatch.setattr(multiraft, "SNAPSHOT_EVERY", 20)
    monkeypatch.setattr(multiraft, "LOG_TAIL_KEEP", 5)
    monkeypatch.setattr(multiraft, "BALANCE_TICKS", 10**9)  # leaders stay put
    async with running(SnapCluster(tmp_path)) as running_cluster:
        yield running_cluster


async def test_a_follower_that_was_down_catches_up_through_a_chunked_snapshot(
        snap_cluster: tuple[SnapCluster, trio.Nursery]) -> None:
    c, nursery = snap_cluster
    with trio.fail_after(60):
        first = await c.nodes[1].try_decide(TryDecide(need(0), b"warm"))
    bucket = first.bucket
    leader = c.leader_of(bucket)
    victim = next(n for n in c.placement.replicas(bucket) if n != leader)
    await c.crash(victim)
    mine = [i for i in range(1, 5000) if bucket_of(need(i), BUCKETS) == bucket][:60]
    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            for i in mine:
                n.start_soon(c.nodes[leader].try_decide, TryDecide(need(i), b"p" * 100))
    g = c.nodes[leader].groups[bucket]
    with trio.fail_after(30):  # compaction waits until the decisions are certified
        while g.storage.first_index() <= 10:  # compacted past what the victim holds
            await trio.sleep(0.05)
    assert len(g.storage.snapshot().data) > 8 * CHUNK

    c.gate = trio.Event()
    await c.start(nursery, victim)
    with trio.fail_after(30):
        while (leader, victim, bucket) not in c.sending:
            await trio.sleep(0.02)
    # The transfer is held after its first chunk. Meanwhile the victim's other buckets
    # decide, from every node (their frames are not stuck behind the snapshot) ...
    others = [i for i in range(5000, 9000)
              if bucket_of(need(i), BUCKETS) != bucket
              and victim in c.placement.replicas(bucket_of(need(i), BUCKETS))][:12]
    with trio.fail_after(60):
        for k, i in enumerate(others):
            d = await c.nodes[1 + k % N].try_decide(TryDecide(need(i), b"o"))
            assert d.proposal_id == b"o"
        for i in others:
            while c.nodes[victim].local_decision(need(i)) is None:
                await trio.sleep(0.02)
        # ... and more than an election timeout passes (ELECTION_TICKS, the core's old
        # snapshot timeout) with the transfer under way: it is not started again, and
        # the leader still leads.
        await trio.sleep(2 * multiraft.ELECTION_TICKS * raft_group.TICK_MS / 1000)
    assert c.started.count((leader, victim, bucket)) == 1
    assert (leader, victim, bucket) in c.sending
    assert c.nodes[leader].groups[bucket].raw.raft.role == Role.LEADER
    assert c.nodes[victim].local_decision(need(mine[-1])) is None

    c.gate.set()
    with trio.fail_after(60):
        for i in mine:
            while c.nodes[victim].local_decision(need(i)) is None:
                await trio.sleep(0.02)
    assert c.nodes[victim].local_decision(need(mine[0])) == \
        c.nodes[leader].local_decision(need(mine[0]))
    assert c.nodes[victim].stats["snapshots_in"] >= 1
    assert c.receivers[victim].stats["snapshots_received"] >= 1
    assert c.chunks > 8
    # And deciding in the bucket goes on, with the victim replicating.
    fresh = next(i for i in range(9000, 20000) if bucket_of(need(i), BUCKETS) == bucket)
    with trio.fail_after(60):
        d: Decision = await c.nodes[victim].try_decide(TryDecide(need(fresh), b"f"))
        while c.nodes[victim].local_decision(need(fresh)) is None:
            await trio.sleep(0.02)
    assert d.proposal_id == b"f"


# -- over real libp2p hosts --


async def test_a_multi_chunk_snapshot_crosses_libp2p(monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm.protocol import genesis
    from swarm.protocol.envelope import Identity
    seeds = [bytes([0x70 + i]) * 32 for i in range(3)]
    ids = [Identity(s) for s in seeds]
    gen = genesis.new(name="snap", created_ms=0,
                      validators=[{"account": i.public_key, "org": f"o{k}", "asn": k,
                                   "region": "r", "stake": 1} for k, i in enumerate(ids)],
                      params={"bucket_count": 8, "replicas": 3})
    placement = Placement.from_genesis(gen)
    node_of = {s: placement.node_id(Identity(s).public_key) for s in seeds}
    a_seed, b_seed, stranger_seed = seeds[0], seeds[1], os.urandom(32)
    a_id, b_id = node_of[a_seed], node_of[b_seed]
    assert a_id and b_id
    proto = snapshot_protocol(gen.short_id)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    got = Delivered()
    reports: list[tuple[int, int, bool]] = []
    done = trio.Event()

    def report(peer: int, bucket: int, ok: bool) -> None:
        reports.append((peer, bucket, ok))
        done.set()

    data = os.urandom(3 * 1024 * 1024 + 123)
    m = Message(MsgType.SNAP, to=b_id, frm=a_id, term=4,
                snapshot=Snapshot(5000, 4, (1, 2, 3), data))
    async with AsyncExitStack() as stack:
        hosts: dict[bytes, Any] = {}
        for s in (a_seed, b_seed, stranger_seed):
            h, _ = p2p.make_host(s, listen)
            await stack.enter_async_context(h.run(listen_addrs=listen))
            hosts[s] = h
        b_addr = info_from_p2p_addr(multiaddr.Multiaddr(str(hosts[b_seed].get_addrs()[0])))
        await hosts[a_seed].connect(b_addr)
        await hosts[stranger_seed].connect(b_addr)
        a = SnapshotStreams(hosts[a_seed], proto, placement, a_id,
                            SnapshotReceiver(8, 3, Delivered()), report,
                            chunk_bytes=256 * 1024)
        rx = SnapshotReceiver(8, 3, got)
        b = SnapshotStreams(hosts[b_seed], proto, placement, b_id, rx,
                            lambda *_: None)
        async with trio.open_nursery() as n:
            await n.start(a.run)
            await n.start(b.run)
            a.send(b_id, 6, m)
            a.send(b_id, 6, m)  # a repeat while one is under way: coalesced
            with trio.fail_after(60):
                await done.wait()
            assert reports == [(b_id, 6, True)]
            assert got.got == [(a_id, 6, m)]
            assert a.stats["snapshots_sent"] == 1 and a.stats["snapshots_coalesced"] == 1
            assert a.stats["snapshot_bytes_sent"] > len(data)
            # A validator sending garbage is answered REJECTED and counted; a peer that
            # is not a validator is refused outright.
            with trio.fail_after(30):
                s = await hosts[a_seed].new_stream(hosts[b_seed].get_id(), [proto])
                await s.write(b"\x03abc")
                await s.close()
                assert await s.read(1) == bytes([REJECTED])
                with pytest.raises(Exception):  # noqa: B017 - reset by the receiver
                    s = await hosts[stranger_seed].new_stream(hosts[b_seed].get_id(),
                                                              [proto])
                    await s.write(b"\x03abc")
                    await s.read(1)
                    await s.read(1)
            assert rx.stats["snapshots_rejected"] == 1
            assert b.stats["streams_refused"] == 1
            # A validator's stream that stalls is cut (STALL_S), and while it is open a
            # second one past the per-peer bound is refused.
            monkeypatch.setattr(raft_snapshots, "STALL_S", 0.5)
            monkeypatch.setattr(b.slots, "per_peer", 1)
            with trio.fail_after(30):
                s = await hosts[a_seed].new_stream(hosts[b_seed].get_id(), [proto])
                await s.write(b"\x40half a header")
                while not b.slots.in_use:
                    await trio.sleep(0.01)
                with pytest.raises(Exception):  # noqa: B017 - reset by the receiver
                    s2 = await hosts[a_seed].new_stream(hosts[b_seed].get_id(), [proto])
                    await s2.write(b"\x03abc")
                    await s2.read(1)
                    await s2.read(1)
                assert await s.read(1) == bytes([REJECTED])
                while b.slots.in_use:  # the handler closes its end after answering
                    await trio.sleep(0.01)
            assert rx.stats["snapshots_stalled"] == 1 and b.stats["streams_refused"] == 2
            assert not rx.reserved
            n.cancel_scope.cancel()


def test_header_states_what_follows() -> None:
    m = snap_msg(b"xyz")
    h = header_of(2, m)
    assert (h.bucket, h.frm, h.to, h.term, h.index, h.snap_term, h.voters, h.total) == \
        (2, 1, 2, 3, 9, 3, (1, 2, 3), 3)
