"""Multi-raft on real RocksDB stores over an in-memory transport, in one trio run:
DECIDE through many buckets from every node, certificates, crash and restart with the
disk kept, garbage frames."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from swarm.node.multiraft import MultiRaft
from swarm.node.raft_kinds import DecideError
from swarm.node.raftstore import RaftStore
from swarm.protocol import certificate, genesis
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import Decision, TryDecide
from swarm.protocol.envelope import Identity
from swarm.protocol.placement import Placement
from swarm.protocol.raft import Role

N = 5
BUCKETS = 16
C = TypeVar("C", bound="Cluster")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ids = [Identity(bytes([i + 1]) * 32) for i in range(N)]
        self.genesis = genesis.new(
            name="mr", created_ms=0,
            validators=[{"account": i.public_key, "org": f"o{k}", "asn": k, "region": "r",
                         "stake": 1} for k, i in enumerate(self.ids)],
            params={"bucket_count": BUCKETS, "replicas": 3})
        self.placement = Placement.from_genesis(self.genesis)
        self.nodes: dict[int, MultiRaft] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.stopped: dict[int, trio.Event] = {}
        self.stores: dict[int, RaftStore] = {}
        self.published: list[tuple[Decision, dict[str, object]]] = []
        self.announced: set[bytes] = set()
        self.cut: set[int] = set()

    def leader_of(self, bucket: int) -> int:
        return next(n for n in self.placement.replicas(bucket)
                    if self.nodes[n].groups[bucket].raw.raft.role == Role.LEADER)

    def identity_of(self, node_id: int) -> Identity:
        account = self.placement.account(node_id)
        return next(i for i in self.ids if i.public_key == account)

    def send_from(self, src: int):  # type: ignore[no-untyped-def]
        def send(peer: int, data: bytes) -> None:
            if src in self.cut or peer in self.cut:
                return
            node = self.nodes.get(peer)
            if node is not None:
                node.receive(src, data)
        return send

    async def publish(self, d: Decision, cert: dict[str, object]) -> None:
        self.published.append((d, cert))
        self.announced.add(d.need_id)

    def make(self, node_id: int, store: RaftStore) -> MultiRaft:
        """The node's MultiRaft; subclasses wire more into it. What one node publishes
        every node has heard (as gossip would bring it)."""
        return MultiRaft(self.identity_of(node_id), self.genesis.swarm_id, self.placement,
                         store, self.send_from(node_id), self.publish, seed=node_id,
                         announced=self.announced.__contains__)

    def loops(self, node_id: int, mr: MultiRaft) -> list[Callable[[], Awaitable[None]]]:
        """What runs for the node until it is crashed."""
        return [mr.run]

    async def start(self, nursery: trio.Nursery, node_id: int) -> None:
        store = RaftStore(self.root / f"n{node_id}")
        self.stores[node_id] = store
        mr = self.nodes[node_id] = self.make(node_id, store)
        loops = self.loops(node_id, mr)
        scope = self.scopes[node_id] = trio.CancelScope()
        stopped = self.stopped[node_id] = trio.Event()

        async def runner() -> None:
            try:
                with scope:
                    async with trio.open_nursery() as n:
                        for loop in loops:
                            n.start_soon(loop)
            finally:
                stopped.set()

        nursery.start_soon(runner)

    async def crash(self, node_id: int) -> None:
        """Like kill -9: the loop stops mid-flight; only what was written remains."""
        self.scopes.pop(node_id).cancel()
        self.nodes.pop(node_id)
        await self.stopped.pop(node_id).wait()
        self.stores.pop(node_id).close()


@asynccontextmanager
async def running(c: C) -> AsyncIterator[tuple[C, trio.Nursery]]:
    """All N nodes of `c` running; their stores closed afterwards."""
    async with trio.open_nursery() as nursery:
        for i in range(1, N + 1):
            await c.start(nursery, i)
        yield c, nursery
        nursery.cancel_scope.cancel()
    for s in c.stores.values():
        s.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Cluster, trio.Nursery]]:
    async with running(Cluster(tmp_path)) as running_cluster:
        yield running_cluster


def need(i: int) -> bytes:
    return b"need-%04d" % i


async def test_competing_decides_from_every_node_agree(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    c, _ = cluster
    results: dict[tuple[int, int], Decision] = {}

    async def submit(node_id: int, i: int) -> None:
        d = await c.nodes[node_id].try_decide(TryDecide(need(i), b"p%d-%d" % (node_id, i)))
        results[(node_id, i)] = d

    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            for i in range(40):
                for node_id in range(1, N + 1):
                    n.start_soon(submit, node_id, i)
    for i in range(40):
        ds = {results[(node_id, i)] for node_id in range(1, N + 1)}
        assert len(ds) == 1, f"need {i} got {ds}"
        (d,) = ds
        assert d.bucket == bucket_of(need(i), BUCKETS)
    # Every replica's state machine agrees with what the callers were told.
    for i in range(40):
        d = results[(1, i)]
        for node_id in c.placement.replicas(d.bucket):
            with trio.fail_after(30):
                while c.nodes[node_id].local_decision(need(i)) is None:
                    await trio.sleep(0.05)
            assert c.nodes[node_id].local_decision(need(i)) == d


async def test_decisions_are_certified_by_a_quorum(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    c, _ = cluster
    with trio.fail_after(60):
        d = await c.nodes[2].try_decide(TryDecide(need(1), b"p"))
        while not any(x.need_id == need(1) for x, _ in c.published):
            await trio.sleep(0.05)
    cert = next(cert for x, cert in c.published if x.need_id == need(1))
    assert cert["bucket"] == d.bucket and cert["index"] == d.index
    from swarm.protocol.decide import encode_command
    digest = certificate.entry_hash(encode_command(TryDecide(need(1), b"p"), d.ts_ms))
    certificate.check(cert, c.genesis.swarm_id, c.placement, d.bucket, digest)
    forged = dict(cert, sigs=list(cert["sigs"])[:1])  # type: ignore[call-overload]
    with pytest.raises(certificate.CertificateError):
        certificate.check(forged, c.genesis.swarm_id, c.placement, d.bucket, digest)


async def test_replicas_announce_what_the_leader_did_not(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    """Followers send their signatures to the leader only; when the leader does not
    announce (here: it cannot publish), the replicas share their signatures and one of
    them publishes the certified decision."""
    c, _ = cluster
    with trio.fail_after(60):
        first = await c.nodes[1].try_decide(TryDecide(need(3), b"p"))
    bucket = first.bucket
    leader = c.leader_of(bucket)
    c.nodes[leader].publish = None
    i = next(i for i in range(100, 10_000) if bucket_of(need(i), BUCKETS) == bucket)
    with trio.fail_after(60):
        d = await c.nodes[leader].try_decide(TryDecide(need(i), b"q"))
        while not any(x.need_id == need(i) for x, _ in c.published):
            await trio.sleep(0.05)
    cert = next(cert for x, cert in c.published if x.need_id == need(i))
    from swarm.protocol.decide import encode_command
    digest = certificate.entry_hash(encode_command(TryDecide(need(i), b"q"), d.ts_ms))
    certificate.check(cert, c.genesis.swarm_id, c.placement, bucket, digest)
    followers = [n for n in c.placement.replicas(bucket) if n != leader]
    assert sum(c.nodes[n].stats["sigs_shared"] for n in followers) >= 1


async def test_leader_crash_and_restart_keeps_decisions_and_resumes(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    c, nursery = cluster
    with trio.fail_after(60):
        first = await c.nodes[1].try_decide(TryDecide(need(7), b"first"))
    bucket = first.bucket
    leader = c.leader_of(bucket)
    await c.crash(leader)
    other = next(n for n in c.nodes)
    with trio.fail_after(60):
        # Same NEED again: the committed decision comes back, whoever leads now.
        again = await c.nodes[other].try_decide(TryDecide(need(7), b"second"))
        assert again == first
        # And deciding resumes in the leader's bucket.
        fresh = next(i for i in range(1000, 5000) if bucket_of(need(i), BUCKETS) == bucket)
        await c.nodes[other].try_decide(TryDecide(need(fresh), b"x"))
    await c.start(nursery, leader)
    with trio.fail_after(60):
        while c.nodes[leader].local_decision(need(fresh)) is None:
            await trio.sleep(0.05)
    assert c.nodes[leader].local_decision(need(7)) == first


async def test_garbage_frames_are_counted_not_fatal(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    c, _ = cluster
    node = c.nodes[1]
    for junk in (b"", b"\xff", b"\xa1\x64from\x00", b"\xa2\x64from\x02\x61m\x81\x80",
                 b"\x82\x01\x02" * 100):
        node.receive(2, junk)
    from swarm.protocol.raftwire import Frame
    node.receive(3, Frame(2).encode())  # node 3 speaking for node 2
    assert node.stats["frames_rejected"] == 6
    with trio.fail_after(60):
        await node.try_decide(TryDecide(need(3), b"ok"))


async def test_a_replica_publishes_when_the_leader_did_not(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    c, _ = cluster
    with trio.fail_after(60):
        warm = await c.nodes[1].try_decide(TryDecide(need(50), b"w"))
    bucket = warm.bucket
    fresh = next(i for i in range(2000, 9000) if bucket_of(need(i), BUCKETS) == bucket)
    leader = c.leader_of(bucket)
    c.nodes[leader].publish = None  # as if it died right after committing
    before = len(c.published)
    with trio.fail_after(60):
        await c.nodes[leader].try_decide(TryDecide(need(fresh), b"p"))
        while not any(d.need_id == need(fresh) for d, _ in c.published[before:]):
            await trio.sleep(0.1)


async def test_leadership_spreads_across_nodes(cluster: tuple[Cluster, trio.Nursery]) -> None:
    """However the elections fell, leadership moves (by leader transfer) until no node
    leads more than its share plus one, and the buckets keep deciding meanwhile."""
    c, _ = cluster
    fair = -(-BUCKETS // N)

    def leads() -> dict[int, int]:
        return {n: sum(1 for g in mr.groups.values() if g.raw.raft.role == Role.LEADER)
                for n, mr in c.nodes.items()}

    # Unbalance it first: every bucket node 1 replicates moves to node 1.
    with trio.fail_after(60):
        await c.nodes[1].try_decide(TryDecide(need(0), b"warm"))
        for g in c.nodes[1].groups.values():
            r = g.raw.raft
            if r.role != Role.LEADER and r.lead:
                c.nodes[r.lead].groups[g.bucket].raw.transfer_leader(1)
                c.nodes[r.lead].dirty.add(g.bucket)
                c.nodes[r.lead].groups[g.bucket].idle_ticks = 0
        while leads()[1] <= fair + 1:  # (the balancer may start moving some back)
            await trio.sleep(0.05)
    with trio.fail_after(120):
        while max(leads().values()) > fair + 1:
            await trio.sleep(0.2)
    assert c.nodes[1].stats["leader_transfers"] > 0
    with trio.fail_after(60):
        for i in range(1, 30):
            d = await c.nodes[1 + i % N].try_decide(TryDecide(need(i), b"p"))
            assert d.proposal_id == b"p"


async def test_a_quiet_leader_gives_up_a_transfer_its_target_never_acts_on(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    """Found by `swarm-testnet soak` (docs/SOAK.md): the balancer hands a quiet bucket to
    a replica that never acts on the TIMEOUT_NOW (a pre-candidate ignores it; here it is
    lost). The leader refuses proposals while a transfer is pending, so it must keep
    ticking until its core gives the transfer up after an election timeout; quiet, it
    never did, and the bucket refused every DECIDE for good."""
    c, _ = cluster
    with trio.fail_after(60):
        first = await c.nodes[1].try_decide(TryDecide(need(3), b"warm"))
    bucket = first.bucket
    leader = c.leader_of(bucket)
    g = c.nodes[leader].groups[bucket]
    with trio.fail_after(30):
        while not g.quiet:
            await trio.sleep(0.05)
    target = next(n for n in c.placement.replicas(bucket) if n != leader)
    c.cut.add(target)  # the TIMEOUT_NOW is lost
    g.raw.transfer_leader(target)  # as Peers.balance does
    g.idle_ticks = 0
    c.nodes[leader].dirty.add(bucket)
    c.nodes[leader].wake.set()
    await trio.sleep(0.3)
    c.cut.discard(target)
    fresh = next(i for i in range(1000, 5000) if bucket_of(need(i), BUCKETS) == bucket)
    with trio.fail_after(40):
        d = await c.nodes[leader].try_decide(TryDecide(need(fresh), b"after"), timeout_s=30)
    assert d.proposal_id == b"after"


def test_what_nobody_waits_for_rides_the_next_frame_or_tick(tmp_path: Path) -> None:
    """An append that only moves the commit index, an acknowledgement repeating the last
    one and heartbeats wait for the next frame to their peer, or for the next tick's;
    an append carrying entries and a new acknowledgement go at once."""
    from swarm.protocol.raft import Message, MsgType
    from swarm.protocol.raftlog import Entry, EntryKind
    from swarm.protocol.raftwire import Frame, decode_frame

    c = Cluster(tmp_path)
    sent: list[tuple[int, Frame]] = []
    store = RaftStore(tmp_path / "n1")
    try:
        mr = MultiRaft(c.identity_of(1), c.genesis.swarm_id, c.placement, store,
                       lambda peer, data: sent.append(
                           (peer, decode_frame(data, buckets=BUCKETS, nodes=N))), seed=1)
        b = min(mr.groups)
        commit_only = Message(MsgType.APP, to=2, frm=1, term=2, log_term=2, index=5,
                              commit=5)
        mr.outbox.raft(b, commit_only)
        mr.flush()
        assert sent == []
        ack = Message(MsgType.APP_RESP, to=3, frm=1, term=2, index=5)
        mr.outbox.raft(b, ack)  # acknowledges something new: urgent
        mr.flush()
        assert [(p, f.msgs) for p, f in sent] == [(3, ((b, ack),))]
        mr.outbox.raft(b, ack)  # the same again: not urgent
        mr.outbox.raft(b, Message(MsgType.HEARTBEAT, to=3, frm=1, term=2))
        mr.flush()
        assert len(sent) == 1
        append = Message(MsgType.APP, to=2, frm=1, term=2, log_term=2, index=5, commit=5,
                         entries=(Entry(2, 6, EntryKind.NORMAL, b"x"),))
        mr.outbox.raft(b, append)
        mr.flush()
        assert [(p, f.msgs) for p, f in sent[1:]] == [(2, ((b, commit_only), (b, append)))]
        mr.tick()  # the next tick's round sends what waited
        mr.flush()
        assert [p for p, _ in sent[2:]] == [3]
        assert [m.type for _, m in sent[2][1].msgs] == [MsgType.APP_RESP, MsgType.HEARTBEAT]
    finally:
        store.close()


async def test_certified_decisions_travel_to_the_announcer(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    """One validator announces for the swarm: the lowest-numbered one a node takes to be
    alive. Others send it their certified decisions in a Raft frame, intact."""
    c, _ = cluster
    with trio.fail_after(30):  # (each knows only itself alive until the first beats)
        while {mr.peers.announcer() for mr in c.nodes.values()} != {1}:
            await trio.sleep(0.05)
    got: list[tuple[int, object]] = []
    c.nodes[1].relayed = lambda sender, a: got.append((sender, a))
    with trio.fail_after(60):
        d = await c.nodes[2].try_decide(TryDecide(need(7), b"p"))
        while not any(x.need_id == need(7) for x, _ in c.published):
            await trio.sleep(0.05)
    cert = next(cert for x, cert in c.published if x.need_id == need(7))
    c.nodes[3].certs.forward_announcement(1, d, cert)
    with trio.fail_after(30):
        while not got:
            await trio.sleep(0.05)
    from swarm.protocol.raftwire import Announcement
    sender, a = got[0]
    assert sender == 3 and isinstance(a, Announcement)
    assert certificate.check_relayed(a, c.genesis.swarm_id, c.placement) == cert
    assert (a.need_id, a.proposal_id, a.index) == (d.need_id, d.proposal_id, d.index)
    c.nodes[2].peer_lost(1)
    assert c.nodes[2].peers.announcer() == 2


async def test_a_leader_stamping_far_ahead_is_shunned_and_replaced(
        cluster: tuple[Cluster, trio.Nursery]) -> None:
    """A leader whose clock jumped a minute ahead: its replicas refuse the entries it
    stamps (they would expire every honest envelope and lease in the bucket), stop
    following it, and elect another; the decision commits with a sane stamp and every
    replica, the skewed one included, applies it."""
    c, _ = cluster
    with trio.fail_after(60):
        warm = await c.nodes[1].try_decide(TryDecide(need(60), b"w"))
    bucket = warm.bucket
    skewed = c.leader_of(bucket)
    sane_clock = c.nodes[skewed].clock_ms
    c.nodes[skewed].clock_ms = lambda: sane_clock() + 60_000
    fresh = next(i for i in range(3000, 9000) if bucket_of(need(i), BUCKETS) == bucket)
    other = next(n for n in c.placement.replicas(bucket) if n != skewed)
    decision = None
    with trio.fail_after(120):
        while decision is None:  # the first attempts go to the skewed leader
            try:
                decision = await c.nodes[other].try_decide(TryDecide(need(fresh), b"sane"),
                                                           timeout_s=10)
            except DecideError:
                await trio.sleep(0.2)
        for n in c.placement.replicas(bucket):
            while c.nodes[n].local_decision(need(fresh)) != decision:
                await trio.sleep(0.05)
    assert decision.ts_ms < sane_clock() + 5_000  # not the skewed clock's stamp
    followers = [n for n in c.placement.replicas(bucket) if n != skewed]
    assert sum(c.nodes[n].stats["appends_stamped_ahead"] for n in followers) >= 1
