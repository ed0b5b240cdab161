"""Multi-raft: every bucket this node replicates, driven by one loop, on one store.

Owns the shell around `protocol.raft.RawNode` for up to `bucket_count` groups: ticks,
the Ready loop with its group commit (one synced RocksDB write per round, whatever the
number of buckets that moved), batching of every message for one peer into one frame,
quiescence of idle buckets, fast failover when a leader's node is gone, DECIDE requests
and ledger commands (from this node's API or forwarded by other nodes: `try_decide`,
`submit`) and the collection of commit certificates, for DECIDEs and for the ledger
chain (`protocol/bucket_machine.py`). Each group's state machine is a `BucketMachine`;
what the ledger does with applied entries beyond answering callers (delivering
effects, the certified read replica) is node/ledger_raft.py's, through `ledger_hook`.

Transport-agnostic: frames leave through `send(peer_id, bytes)` and arrive through
`receive(bytes)`; node/raft_transport.py carries them over libp2p, tests over memory.

Time: `tick()` is called every `TICK_MS` by the node. A bucket whose leader is idle and
whose followers are caught up stops ticking ("goes quiet"); its followers stay quiet for
as long as the leader's node keeps beating (one beat per peer per tick, carrying the
bitmap of buckets the sender leads: CockroachDB's coalesced heartbeats). When a peer's
beats stop or its connection drops, each bucket it led is taken over: its lowest-id live
replica campaigns at once (after forgetting the old leader), which makes failover a
fraction of a second rather than an election timeout.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from swarm.protocol import cbor, certificate
from swarm.protocol.bucket_machine import (
    LEDGER_VERBS,
    REJECTION_KINDS,
    BucketHalted,
    BucketMachine,
    Command,
    LedgerApplied,
    LedgerOutcome,
    decode_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import Decision, TryDecide, encode_command
from swarm.protocol.decide import decode_command as decode_decide
from swarm.protocol.envelope import Identity, decode_envelope
from swarm.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from swarm.protocol.genesis import DEFAULT_PARAMS, Genesis
from swarm.protocol.ledger import LedgerError
from swarm.protocol.placement import Placement
from swarm.protocol.raft import (
    NONE,
    Config,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Role,
)
from swarm.protocol.raftlog import Compacted, Entry, EntryKind
from swarm.protocol.raftwire import (
    Announcement,
    CertifiedEntry,
    DecideRequest,
    DecideResponse,
    Frame,
    SigNote,
    SubmitRequest,
    SubmitResponse,
    bitmap_has,
    decode_frame,
    leads_bitmap,
)

from .raftstore import BucketStorage, RaftStore

log = logging.getLogger("swarm.raft")
T = TypeVar("T")

TICK_MS = 50
ELECTION_TICKS = 20  # 1-2 s randomized
HEARTBEAT_TICKS = 2
# A liveness beat to every peer every 500 ms (on a frame going anyway). Beats are most of
# an idle node's work (one frame per peer each, through Noise and Yamux in Python): 16
# idle nodes took 1.5 of the 2 cores here with 100 ms beats, 0.8 with 250 ms. A killed
# peer is noticed at once anyway (its connection drops); beats only catch a hung or
# cut-off one.
BEAT_TICKS = 10
PEER_DEAD_TICKS = 40  # no frame for 2 s: the peer is gone
CERT_SWEEP_TICKS = 10
# A leader commits and tells its followers the new commit index at once (an append
# goes out as soon as the commit moves), so once everyone matches, heartbeats only renew
# the lease; beats do that for quiet buckets. One tick of being caught up is enough: a
# bucket touched by each DECIDE otherwise heartbeats for 300 ms after it, and under a
# stream of DECIDEs to random buckets that kept dozens of buckets beating (most of the
# Raft frames in a trace of one DECIDE).
QUIET_AFTER_TICKS = 1
# Leadership balance: every BALANCE_TICKS a node that leads more than its share (the
# bucket count over the validators, rounded up) plus BALANCE_SLACK hands up to
# BALANCE_MOVES_MAX of its idle buckets to replicas that lead less than their share (as
# their beats tell), by Raft leader transfer. Elections alone left one node of five
# leading about a third of the buckets, so its CPU paced every other node's.
BALANCE_TICKS = 40
BALANCE_SLACK = 1
BALANCE_MOVES_MAX = 16
SNAPSHOT_EVERY = 1000
# With streamed snapshots every transfer's outcome is reported (`snapshot_status`), so
# the core's snapshot timeout is only a backstop against a report that never comes; a
# repeat it causes while a transfer runs is dropped by the transport.
SNAPSHOT_BACKSTOP_TICKS = 60_000 // TICK_MS
LOG_TAIL_KEEP = 100
ATTEMPT_TIMEOUT_S = 2.0
# A non-leader replica shares its signature, then publishes a certified DECIDE, if none
# has arrived after about 2 s (4 sweeps of 10 ticks).
PUBLISH_FALLBACK_SWEEPS = 4
PENDING_REMOTE_MAX = 10_000
# A ledger-chain entry short of a quorum (the other replicas down, or a note lost) keeps
# its signatures for up to an hour, and we send ours again: every second at first, then
# every 5 s. A replica back from a crash that applies the entry then completes the
# quorum. Bounded: at most CHAIN_PENDING_MAX such entries per node.
CHAIN_CERT_SWEEPS_MAX = 7200
CHAIN_PENDING_MAX = 200_000


class DecideError(LocalProtocolError):
    code = "decide_failed"

    def __init__(self, reason: str) -> None:
        super().__init__("decide", reason)


class SubmitError(LocalProtocolError):
    """No outcome: no quorum of the bucket answered in time, or the leader refused the
    command at its door (`code` then says why: bad_signature, wrong_bucket, ...)."""

    code = "submit_failed"


class LedgerHook:
    """What node/ledger_raft.py does with the ledger side of the groups (nothing here)."""

    def applied(self, g: Group, result: LedgerApplied) -> None:
        """A ledger command was applied in `g` (called on every replica)."""

    def certified(self, g: Group, cert: CertifiedEntry) -> None:
        """A quorum of `g`'s replicas signed a chain entry (on each replica that
        collected the quorum)."""

    def frame(self, sender: int, frame: Frame) -> None:
        """A frame carrying certified chain entries or fetch requests."""


@dataclass
class CertState:
    digest: bytes
    term: int
    ts_ms: int
    need_id: bytes
    sigs: dict[bytes, bytes] = field(default_factory=dict)
    done: bool = False
    published: bool = False
    shared: bool = False  # our signature went to every replica (the fallback)
    age_sweeps: int = 0
    chain: bytes = b""  # a ledger-chain entry's encoding (need_id is then empty)
    cosign_scanned: bool = False  # looked for the decision in a compacted log once


@dataclass
class Group:
    bucket: int
    raw: RawNode
    storage: BucketStorage
    machine: BucketMachine
    idle_ticks: int = 0
    certs: dict[int, CertState] = field(default_factory=dict)  # index -> signatures

    @property
    def quiet(self) -> bool:
        return self.idle_ticks >= QUIET_AFTER_TICKS


Publish = Callable[[Decision, dict[str, Any]], Awaitable[None]]


class MultiRaft:
    def __init__(self, identity: Identity, swarm_id: bytes, placement: Placement,
                 store: RaftStore, send: Callable[[int, bytes], None],
                 publish: Publish | None = None, *, seed: int | None = None,
                 announced: Callable[[bytes], bool] = lambda need_id: False,
                 genesis: Genesis | None = None,
                 send_snapshot: Callable[[int, int, Message], None] | None = None,
                 clock_ms: Callable[[], int] | None = None,
                 compaction: tuple[int, int] | None = None) -> None:
        self.identity = identity
        # The time entries are stamped with (the wall clock; the simulation's virtual one).
        self.clock_ms = clock_ms or _wall_ms
        # Snapshot every so many applied entries, keeping so many behind it (the
        # simulation compacts often, so that followers catch up by snapshot). The
        # defaults are read here, not at import, so tests can lower them.
        self.snapshot_every, self.log_tail_keep = compaction or (SNAPSHOT_EVERY, LOG_TAIL_KEEP)
        # The buckets' ledgers start from genesis; without one (tests of DECIDE alone)
        # they start empty under the default parameters.
        self.genesis = genesis
        self.params = dict(genesis.params) if genesis is not None else {
            **DEFAULT_PARAMS, "bucket_count": placement.bucket_count,
            "replicas": placement.replicas_per_bucket}
        self.ledger_hook = LedgerHook()
        self.swarm_id = swarm_id
        self.placement = placement
        self.store = store
        self.send = send
        # SNAP messages leave through `send_snapshot(peer, bucket, message)` when given
        # (streamed apart from the frames: node/raft_snapshots.py), which reports each
        # outcome back through `snapshot_status`; without it they ride in the frames.
        self.send_snapshot = send_snapshot
        self.publish = publish
        self.announced = announced  # has a certified DECIDE for this NEED arrived?
        self.id = placement.node_id(identity.public_key) or NONE
        self.groups: dict[int, Group] = {}
        # Buckets whose machine stopped (`_halt`): out of `groups`, so this node takes no
        # further part in them; kept for reads and status.
        self.halted: dict[int, Group] = {}
        self.now_tick = 0
        self.peer_seen: dict[int, int] = {}  # node id -> tick of its last frame
        self.peer_leads: dict[int, bytes] = {}
        self.peer_down: set[int] = set()
        self.waiters: dict[tuple[int, bytes], list[trio.Event]] = defaultdict(list)
        self.remote_waiters: dict[tuple[int, bytes], list[tuple[int, int]]] = defaultdict(list)
        self.remote_results: dict[int, DecideResponse] = {}
        self.remote_events: dict[int, trio.Event] = {}
        self.next_req = 1
        self.outbox: dict[int, list[tuple[int, Message]]] = defaultdict(list)
        self.out_sigs: dict[int, list[SigNote]] = defaultdict(list)
        self.out_reqs: dict[int, list[DecideRequest]] = defaultdict(list)
        self.out_resps: dict[int, list[DecideResponse]] = defaultdict(list)
        self.out_submits: dict[int, list[SubmitRequest]] = defaultdict(list)
        self.out_results: dict[int, list[SubmitResponse]] = defaultdict(list)
        self.out_chain: dict[int, list[CertifiedEntry]] = defaultdict(list)
        self.out_fetch: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self.out_announce: dict[int, list[Announcement]] = defaultdict(list)
        # Certified decisions other validators sent us to announce (`forward_announcement`).
        self.relayed: Callable[[int, Announcement], None] | None = None
        # Ledger commands: local callers and remote requesters waiting on (bucket, key),
        # and when this node last proposed each (to propose again only after a while).
        self.sub_waiters: dict[tuple[int, bytes], list[trio.Event]] = defaultdict(list)
        self.sub_remote: dict[tuple[int, bytes], list[tuple[int, int]]] = defaultdict(list)
        self.sub_proposed: dict[tuple[int, bytes], int] = {}
        self.sub_results: dict[int, SubmitResponse] = {}
        self.chain_pending = self.chain_pending_last = 0  # chain entries short of a quorum
        self.to_publish: list[tuple[Decision, dict[str, Any]]] = []
        self.stats: dict[str, int] = defaultdict(int)
        self.wake = trio.Event()
        self.dirty: set[int] = set()  # buckets stepped, ticked or proposed to since process()
        self.touched: set[int] = set()  # buckets that received messages since the last tick
        self.with_certs: set[int] = set()
        self.beat_due = False
        self.lazy_due = False  # a tick passed: the round's last flush sends everything
        self.urgent: set[int] = set()  # peers with an urgent Raft message queued
        self.acked: dict[int, tuple[int, int, int]] = {}  # bucket -> last (to, term, index)
        rng_seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        # Request ids start anywhere, so that an answer to a request of this node's
        # previous life (a replica answers once the NEED is decided, which may be after
        # our restart) does not meet a new request that happens to have its id.
        self.next_req = 1 + rng_seed % (1 << 48)
        if self.id != NONE:
            for b in placement.buckets_of(self.id):
                self._open_group(b, rng_seed ^ b)
        # Apply what the logs already hold as committed at once: a bucket whose leader
        # beats and is quiet is not ticked, so it would wait for the bucket's next entry.
        self.dirty.update(self.groups)
        self.wake.set()

    def _open_group(self, bucket: int, seed: int) -> None:
        replicas = self.placement.replicas(bucket)
        storage = self.store.bucket(bucket, replicas)
        snap = storage.snapshot()
        raw = RawNode(Config(self.id, election_tick=ELECTION_TICKS,
                             heartbeat_tick=HEARTBEAT_TICKS, seed=seed,
                             applied=snap.index,
                             snapshot_timeout_tick=SNAPSHOT_BACKSTOP_TICKS
                             if self.send_snapshot is not None else None), storage)
        machine = self._machine(snap.data, bucket)
        self.groups[bucket] = Group(bucket, raw, storage, machine)

    def _machine(self, data: bytes, bucket: int) -> BucketMachine:
        return BucketMachine.restore(data, bucket, self.swarm_id, self.params, self.genesis,
                                     self.placement)

    # -- inputs --

    def tick(self) -> None:
        self.now_tick += 1
        dead = {p for p, seen in self.peer_seen.items()
                if self.now_tick - seen > PEER_DEAD_TICKS} | self.peer_down
        touched, self.touched = self.touched, set()
        for g in self.groups.values():
            r = g.raw.raft
            if r.role == Role.LEADER:
                if g.quiet and g.bucket not in touched:
                    continue  # nothing happened since it went quiet
                # A leader transferring leadership ticks until the transfer is done or
                # given up (after an election timeout, counted in ticks): meanwhile it
                # refuses proposals, so a quiet one with a lost TIMEOUT_NOW refused
                # them for good.
                caught_up = (r.lead_transferee == NONE
                             and r.log.committed == r.log.last_index() and all(
                                 pr.match == r.log.last_index() for pr in r.prs.values()))
                g.idle_ticks = g.idle_ticks + 1 if caught_up else 0
                if g.quiet:
                    continue  # idle and everyone knows everything: go quiet
            elif r.role == Role.FOLLOWER and r.lead != NONE:
                if r.lead in dead:
                    self._take_over(g, dead)
                elif bitmap_has(self.peer_leads.get(r.lead, b""), g.bucket) and \
                        r.lead in self.peer_seen:
                    continue  # the leader's node beats and still leads this bucket
            elif r.role == Role.FOLLOWER and any(
                    bitmap_has(self.peer_leads.get(p, b""), g.bucket)
                    for p in r.voters if p in self.peer_seen and p not in dead):
                # Back from a restart under a quiet leader: it beats, so wait for it
                # rather than campaign against its lease.
                continue
            g.raw.tick()
            self.dirty.add(g.bucket)
        if self.now_tick % CERT_SWEEP_TICKS == 0:
            self.chain_pending_last, self.chain_pending = self.chain_pending, 0
            self.with_certs &= set(self.groups)
            for b in self.with_certs:
                self._age_certs(self.groups[b])
                # Compaction waits for decisions to be certified (`_maybe_compact`);
                # one certified after the bucket's last entry would otherwise wait
                # for the next. Its writes go out with the next round's.
                self._maybe_compact(self.groups[b])
            self.with_certs = {b for b in self.with_certs if self.groups[b].certs}
        self.lazy_due = True
        if self.now_tick % BEAT_TICKS == 0:
            self.beat_due = True
        if self.now_tick % BALANCE_TICKS == 0:
            self._balance(dead)
        self.wake.set()

    def _balance(self, dead: set[int]) -> None:
        mine = [g for b, g in sorted(self.groups.items()) if g.raw.raft.role == Role.LEADER]
        fair = -(-self.placement.bucket_count // len(self.placement.accounts))
        excess = len(mine) - fair - BALANCE_SLACK
        if excess <= 0:
            return
        leads = {p: int.from_bytes(bits, "little").bit_count()
                 for p, bits in self.peer_leads.items() if p not in dead and self._alive(p)}
        moves = 0
        for g in mine:
            r = g.raw.raft
            if moves >= min(excess, BALANCE_MOVES_MAX):
                break
            if not g.quiet or r.lead_transferee != NONE:
                continue  # busy, or already moving
            takers = [p for p in r.voters if p in leads and leads[p] < fair]
            if not takers:
                continue
            target = min(takers, key=lambda p: (leads[p], p))
            g.raw.transfer_leader(target)
            g.idle_ticks = 0  # tick again until the transfer is done or given up
            leads[target] += 1
            moves += 1
            self.dirty.add(g.bucket)
            self.stats["leader_transfers"] += 1

    def _take_over(self, g: Group, dead: set[int]) -> None:
        g.raw.forget_leader()
        live = [n for n in g.raw.raft.voters if n not in dead]
        if live and min(live) == self.id:
            self.stats["takeovers"] += 1
            g.raw.campaign()
        self.dirty.add(g.bucket)

    def peer_lost(self, peer: int) -> None:
        """The transport lost its connection to `peer` (e.g. the process died)."""
        self.peer_down.add(peer)

    def peer_connected(self, peer: int) -> None:
        self.peer_down.discard(peer)

    def _wake_led(self, peer: int) -> None:
        """`peer` is back: each quiet bucket we lead with it sends one heartbeat, or
        the peer would not learn its leader and commit index until the bucket's next
        entry (a replica back from a restart waits for a beating leader rather than
        campaign, and a quiet leader does not tick)."""
        for g in self.groups.values():
            r = g.raw.raft
            if r.role == Role.LEADER and peer in r.voters and g.quiet:
                r.step(Message(MsgType.BEAT, frm=self.id))
                self.dirty.add(g.bucket)

    def receive_snapshot(self, peer: int, bucket: int, m: Message) -> bool:
        """A whole, checked SNAP message from `peer` (as the transport authenticated it),
        streamed apart from the frames. False (and counted) if it is not for us."""
        g = self.groups.get(bucket)
        if g is None or m.type != MsgType.SNAP or m.frm != peer or m.to != self.id:
            self.stats["msgs_misrouted"] += 1
            return False
        g.raw.step(m)
        self.stats["snapshots_in"] += 1
        self.dirty.add(bucket)
        self.touched.add(bucket)
        self.wake.set()
        return True

    def snapshot_status(self, peer: int, bucket: int, ok: bool) -> None:
        """The outcome of the snapshot `send_snapshot` took for `peer` (never called
        from within `send_snapshot`)."""
        g = self.groups.get(bucket)
        if g is None:
            return
        g.raw.report_snapshot(peer, ok)
        g.idle_ticks = 0
        self.dirty.add(bucket)
        self.touched.add(bucket)
        self.wake.set()

    def receive(self, peer: int, data: bytes) -> None:
        """A frame from `peer` (as the transport authenticated it). Garbage, and frames
        claiming another sender, are counted and dropped; nothing raises."""
        try:
            frame = decode_frame(data, buckets=self.placement.bucket_count,
                                 nodes=len(self.placement.accounts))
        except RemoteProtocolError as exc:
            self.stats["frames_rejected"] += 1
            log.debug("raft frame from %d rejected: %s", peer, exc)
            return
        if frame.sender != peer:
            self.stats["frames_rejected"] += 1
            log.warning("raft frame from %d claims to be from %d", peer, frame.sender)
            return
        self.stats["frames_in"] += 1
        sender = frame.sender
        back = not self._alive(sender)  # restarted, or back from a cut
        self.peer_seen[sender] = self.now_tick
        self.peer_down.discard(sender)
        if back:
            self._wake_led(sender)
        if frame.leads:
            self.peer_leads[sender] = frame.leads
        for bucket, m in frame.msgs:
            g = self.groups.get(bucket)
            if g is None or m.frm != sender or m.to != self.id:
                self.stats["msgs_misrouted"] += 1
                continue
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and g.raw.raft.lead in self.peer_down:
                # A replica taking over from a dead leader asks before our next tick
                # has noticed: forget the leader now, or its lease refuses the vote and
                # the takeover waits out an election timeout (1-2 s).
                g.raw.forget_leader()
            g.raw.step(m)
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and g.quiet and \
                    g.raw.raft.role == Role.LEADER:
                # A replica campaigns against our lease (it took us for dead over a
                # broken connection, or restarted): a quiet leader sends nothing that
                # would make it follow again, so it would campaign for good (shell
                # simulation, seed 850). One heartbeat does.
                g.raw.raft.step(Message(MsgType.BEAT, frm=self.id))
            self.dirty.add(bucket)
            self.touched.add(bucket)
        for note in frame.sigs:
            self._add_sig(sender, note)
        for req in frame.requests:
            self._serve_request(sender, req)
        for resp in frame.responses:
            ev = self.remote_events.pop(resp.req_id, None)
            if ev is not None:  # else the asker gave up on it already
                self.remote_results[resp.req_id] = resp
                ev.set()
        for sub in frame.submits:
            self._serve_submit(sender, sub)
        for res in frame.results:
            ev = self.remote_events.pop(res.req_id, None)
            if ev is not None:
                self.sub_results[res.req_id] = res
                ev.set()
        if frame.chain or frame.fetch:
            self.ledger_hook.frame(sender, frame)
        if self.relayed is not None:
            for a in frame.announce:
                self.relayed(sender, a)
        self.wake.set()

    # -- the loop --

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every TICK_MS and run a Ready round whenever an input woke us; publish
        certified decisions. Runs until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker)
            task_status.started()
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                await self.process()
                while self.to_publish:
                    d, cert = self.to_publish.pop(0)
                    if self.publish is not None:
                        nursery.start_soon(self._publish, d, cert)

    async def _ticker(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += TICK_MS / 1000
            await trio.sleep_until(deadline)
            if trio.current_time() - deadline > 5 * TICK_MS / 1000:
                deadline = trio.current_time()  # we were stalled: don't tick in a burst
            self.tick()

    async def _publish(self, d: Decision, cert: dict[str, Any]) -> None:
        publish = self.publish
        if publish is None:  # switched off after this was queued (tests do that)
            return
        try:
            await publish(d, cert)
            self.stats["published"] += 1
        except Exception as exc:  # noqa: BLE001 - a failed announcement is retried by peers
            log.warning("publishing DECIDE for %s failed: %r", d.need_id.hex()[:16], exc)

    # -- the Ready round --

    async def process(self) -> None:
        """One Ready round (`process_ready`); async for the node's loop."""
        self.process_ready()

    def process_ready(self) -> None:
        """One round: take every group's Ready, persist all with one synced write,
        send, apply, advance. Called by the node's raft loop whenever woken.

        Frames that arrive while a round runs make the next round, which is how rounds
        grow into group commits under load.

        The synced write runs inline. rocksdict holds the GIL through a write (measured
        here: a thread doing synced writes stalls the event loop's thread for up to
        9 ms), so a worker thread never let the loop run meanwhile; it only added two
        GIL hand-offs, 3-6 ms under load, to a write that takes 0.12-0.25 ms."""
        readies = []
        must_sync = False
        dirty, self.dirty = sorted(self.dirty), set()
        for b in dirty:
            g = self.groups.get(b)
            if g is None or not g.raw.has_ready():  # a bucket that halted meanwhile
                continue
            rd = g.raw.ready()
            if rd.snapshot is not None:
                g.storage.apply_snapshot(rd.snapshot)
            g.storage.append(rd.entries)
            if rd.hard_state is not None:
                g.storage.set_hard_state(rd.hard_state)
            must_sync |= rd.must_sync
            readies.append((g, rd))
            for m in rd.early_messages:
                self._queue(g.bucket, m)
        self.flush(final=False)  # leaders' appends travel while our own disk write runs
        batch = self.store.take()
        if batch is not None:
            self.store.write(batch, must_sync)
        for g, rd in readies:
            for m in rd.messages:
                self._queue(g.bucket, m)
            if rd.entries or any(m.entries or m.snapshot is not None for m in rd.messages):
                g.idle_ticks = 0
            if rd.snapshot is not None:
                g.machine = self._machine(rd.snapshot.data, g.bucket)
            if not self._apply_committed(g, rd.committed_entries):
                continue  # the bucket halted: it takes no further part
            g.raw.advance(rd)
            if rd.soft_state is not None and rd.soft_state.role != Role.LEADER:
                self._fail_remote(g.bucket, "leadership moved")
            self._maybe_compact(g)
            if g.raw.has_ready():  # e.g. messages from an applied membership change
                self.dirty.add(g.bucket)
                self.wake.set()
        self.flush()

    def _apply_committed(self, g: Group, entries: Sequence[Entry]) -> bool:
        """Apply a Ready's committed entries to `g`'s machine; False if the bucket
        halted (the machine could not apply an entry alike on every replica). A halted
        bucket is left alone from then on, loudly; the node and its other buckets go on."""
        for e in entries:
            if e.kind != EntryKind.NORMAL or e.index <= g.machine.applied:
                continue
            try:
                d = g.machine.apply(e.index, e.term, e.data)
            except Exception as exc:  # noqa: BLE001 - BucketHalted, or a bug outside the rollback
                self._halt(g, e.index, exc)
                return False
            self.stats["applied"] += 1
            if isinstance(d, Decision):
                self._decided(g, d, e.index, e.term, e.data)
            elif isinstance(d, LedgerApplied):
                self._ledger_applied(g, d, e.term)
        return True

    def _halt(self, g: Group, index: int, exc: BaseException) -> None:
        if not isinstance(exc, BucketHalted):
            g.machine.halted = f"entry {index}: {exc!r}"
        log.critical("bucket %d halted at entry %d: its state machine cannot apply it alike "
                     "on every replica (%r); this node no longer serves the bucket until "
                     "it restarts", g.bucket, index, exc, exc_info=exc)
        self.groups.pop(g.bucket, None)
        self.halted[g.bucket] = g
        self.with_certs.discard(g.bucket)
        self.stats["buckets_halted"] += 1
        self._fail_remote(g.bucket, "bucket halted")

    def _queue(self, bucket: int, m: Message) -> None:
        """Queue a Raft message for its peer's next frame, noting whether it is urgent.

        Someone waits on an append carrying entries and on its acknowledgement (the
        commit needs it), and on elections and transfers. Nobody waits on an append that
        only moves the commit index (the leader has answered; a follower applies a
        little later), on an acknowledgement repeating the last one, or on heartbeats:
        those ride the next frame to that peer, or go on the next tick. Each of them used
        to cost a frame of its own: four of the ten frames one DECIDE took."""
        self.outbox[m.to].append((bucket, m))
        if m.type == MsgType.APP:
            urgent = bool(m.entries)
        elif m.type == MsgType.APP_RESP:
            ack = (m.to, m.term, m.index)
            urgent = m.reject or self.acked.get(bucket) != ack
            if not m.reject:
                self.acked[bucket] = ack
        else:
            urgent = m.type not in (MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP)
        if urgent:
            self.urgent.add(m.to)

    def flush(self, final: bool = True) -> None:
        """Send one frame to each peer with something urgent queued, carrying everything
        queued for it. The rest (`_queue`; signature shares for certificates, which are
        announced in batches anyway; certified chain entries) waits for the next such
        frame or the next tick's round, whose last flush sends everything. When a beat
        is due (on a tick), every peer gets a frame, each carrying the bitmap of buckets
        this node leads."""
        if self.send_snapshot is not None:
            self._divert_snapshots(self.send_snapshot)
        queues = (self.outbox, self.out_sigs, self.out_reqs, self.out_resps,
                  self.out_submits, self.out_results, self.out_chain, self.out_fetch,
                  self.out_announce)
        peers: set[int] = set()
        for q in queues:
            peers.update(q)
        for peer in peers & {self.id, NONE}:
            for q in queues:
                q.pop(peer, None)
        peers -= {self.id, NONE}
        leads = b""
        if final and self.lazy_due:
            self.lazy_due = False
            if self.beat_due and self.id != NONE:
                self.beat_due = False
                peers |= set(range(1, len(self.placement.accounts) + 1)) - {self.id}
                leads = leads_bitmap([b for b, g in self.groups.items()
                                      if g.raw.raft.role == Role.LEADER],
                                     self.placement.bucket_count)
        else:
            peers = {p for p in peers if self._urgent(p)}
        for peer in sorted(peers):
            frame = Frame(self.id, tuple(self.outbox.pop(peer, ())), leads,
                          tuple(self.out_sigs.pop(peer, ())), tuple(self.out_reqs.pop(peer, ())),
                          tuple(self.out_resps.pop(peer, ())),
                          tuple(self.out_submits.pop(peer, ())),
                          tuple(self.out_results.pop(peer, ())),
                          tuple(self.out_chain.pop(peer, ())), tuple(self.out_fetch.pop(peer, ())),
                          tuple(self.out_announce.pop(peer, ())))
            self.urgent.discard(peer)
            self.stats["frames_out"] += 1
            self.send(peer, frame.encode())

    def _urgent(self, peer: int) -> bool:
        """Whether a frame should go to `peer` now: an urgent Raft message (`_queue`), a
        DECIDE request or answer, a ledger submission or result, or a fetch is queued."""
        return peer in self.urgent or bool(
            self.out_reqs.get(peer) or self.out_resps.get(peer) or self.out_submits.get(peer)
            or self.out_results.get(peer) or self.out_fetch.get(peer))

    def _divert_snapshots(self, send_snapshot: Callable[[int, int, Message], None]) -> None:
        """Take SNAP messages out of the frames: they go on streams of their own."""
        for peer, msgs in list(self.outbox.items()):
            if any(m.type == MsgType.SNAP for _, m in msgs):
                for bucket, m in msgs:
                    if m.type == MsgType.SNAP:
                        self.stats["snapshots_out"] += 1
                        send_snapshot(peer, bucket, m)
                msgs[:] = [(b, m) for b, m in msgs if m.type != MsgType.SNAP]
                if not msgs:
                    del self.outbox[peer]

    def _maybe_compact(self, g: Group) -> None:
        applied = g.raw.raft.log.applied
        snap = g.storage.snapshot()
        if applied - snap.index < self.snapshot_every or g.machine.applied < snap.index:
            return
        if any(index > snap.index and st.need_id and not self.announced(st.need_id)
               for index, st in g.certs.items()):
            # A decision not yet announced stays in the log: should every replica
            # restart before a quorum signs it (or before the certificate reaches the
            # gossip), re-applying it signs it again; inside a snapshot it would never
            # be (shell simulation, seed 114).
            return
        g.storage.create_snapshot(applied, sorted(g.raw.raft.voters), g.machine.snapshot())
        g.storage.compact(max(applied - self.log_tail_keep, g.storage.first_index() - 1))

    # -- decisions and certificates --

    def _decided(self, g: Group, d: Decision, index: int, term: int, data: bytes) -> None:
        key = (g.bucket, d.need_id)
        for ev in self.waiters.pop(key, []):
            ev.set()
        for peer, req_id in self.remote_waiters.pop(key, []):
            self.out_resps[peer].append(_response(req_id, d))
        if d.index != index:
            return  # a later attempt for a decided NEED: nothing new to certify
        digest = certificate.entry_hash(data)
        # The certificate carries the entry's own stamp, from which a verifier rebuilds
        # the entry and its hash; `d.ts_ms` is the bucket's clock, later than the stamp
        # when a leader with a slower clock followed one with a faster.
        stamp = decode_decide(data)[1]
        note = certificate.sign(self.identity, self.swarm_id, g.bucket, index, term, digest)
        self.with_certs.add(g.bucket)
        state = g.certs.setdefault(index, CertState(digest, term, stamp, d.need_id))
        state.digest, state.term, state.ts_ms, state.need_id = digest, term, stamp, d.need_id
        state.sigs[note.signer] = note.sig
        r = g.raw.raft
        if r.role != Role.LEADER:
            # Only the leader announces, so only it needs a quorum: one signature note,
            # riding with this round's append response, instead of one to every
            # replica (a third of the Raft frames per DECIDE). Should the leader not
            # announce, the replicas share their signatures then (`_age_certs`).
            for peer in [r.lead] if r.lead != NONE else r.voters:
                if peer != self.id:
                    self.out_sigs[peer].append(SigNote(g.bucket, index, term, digest,
                                                       stamp, note.sig))
        self._maybe_certified(g, index)

    def _add_sig(self, sender: int, note: SigNote) -> None:
        g = self.groups.get(note.bucket)
        if g is None or sender not in self.placement.replicas(note.bucket):
            self.stats["sigs_rejected"] += 1
            return
        signer = self.placement.account(sender)
        s = certificate.CertSig(signer, note.sig)
        if not certificate.valid_sig(self.swarm_id, note.bucket, note.index, note.term,
                                     note.digest, s):
            self.stats["sigs_rejected"] += 1
            return
        state = g.certs.get(note.index)
        if state is None:
            # Not applied here yet: keep it; the digest is checked against ours later.
            state = g.certs[note.index] = CertState(note.digest, note.term, note.ts_ms, b"")
            self.with_certs.add(g.bucket)
        if state.digest != note.digest:
            self.stats["sigs_conflicting"] += 1
            log.warning("replica %d signed a different entry at bucket %d index %d",
                        sender, note.bucket, note.index)
            return
        state.sigs[signer] = note.sig
        if (self.identity.public_key not in state.sigs and not state.chain
                and note.index <= g.machine.applied):
            self._cosign(g, sender, note, state)
        self._maybe_certified(g, note.index)

    def _cosign(self, g: Group, sender: int, note: SigNote, state: CertState) -> None:
        """A replica shares its signature over an entry we applied but hold none for
        (we restarted since, or forgot it): sign it too if it is the decision we applied
        there, or a decision whose replicas all restarted would never be certified
        (shell simulation, seed 49)."""
        try:
            ents = g.raw.raft.log.slice(note.index, note.index + 1, 1 << 62)
        except Compacted:
            ents = []
        d: Decision | None = None
        if ents:
            try:
                d = g.machine.get(decode_decide(ents[0].data)[0].need_id)
            except RemoteProtocolError:
                return  # not a DECIDE
        elif not state.cosign_scanned:  # inside our snapshot: look once
            state.cosign_scanned = True
            d = next((x for x in g.machine.decisions.values() if x.index == note.index), None)
        if d is None or d.index != note.index or d.term != note.term:
            return
        cmd = TryDecide(d.need_id, d.proposal_id, d.k_plan, d.epoch)
        if certificate.entry_hash(encode_command(cmd, note.ts_ms)) != note.digest:
            return
        own = certificate.sign(self.identity, self.swarm_id, g.bucket, note.index, note.term,
                               note.digest)
        state.need_id, state.ts_ms = d.need_id, note.ts_ms
        state.sigs[own.signer] = own.sig
        self.stats["sigs_cosigned"] += 1
        self.out_sigs[sender].append(SigNote(g.bucket, note.index, note.term, note.digest,
                                             note.ts_ms, own.sig))

    def _maybe_certified(self, g: Group, index: int) -> None:
        state = g.certs.get(index)
        if state is not None and state.chain and not state.done:
            if len(state.sigs) >= self.placement.quorum(g.bucket):
                state.done = True
                self.stats["chain_certified"] += 1
                self.ledger_hook.certified(g, CertifiedEntry(
                    g.bucket, index, state.term, state.chain, tuple(sorted(state.sigs.items()))))
            return
        if state is None or state.done or not state.need_id:
            return
        if len(state.sigs) < self.placement.quorum(g.bucket):
            return
        d = g.machine.get(state.need_id)
        if d is None or d.index != index:
            return
        state.done = True
        if g.raw.raft.role == Role.LEADER:
            self._queue_publish(g, d, state)

    def _queue_publish(self, g: Group, d: Decision, state: CertState) -> None:
        sigs = [certificate.CertSig(k, v) for k, v in state.sigs.items()]
        cert = certificate.cert_payload(g.bucket, d.index, state.term, state.ts_ms,
                                        state.digest, sigs)
        self.to_publish.append((d, cert))
        state.published = True
        self.stats["certified"] += 1

    def _age_certs(self, g: Group) -> None:
        """Called every CERT_SWEEP_TICKS: publish what the leader did not, forget old
        signature sets."""
        for index in list(g.certs):
            state = g.certs[index]
            state.age_sweeps += 1
            if state.chain:
                self._age_chain_cert(g, index, state)
                continue
            unsettled = bool(state.need_id and not self.announced(state.need_id))
            if unsettled and state.age_sweeps >= PUBLISH_FALLBACK_SWEEPS:
                # The leader died (or lost a note) before its DECIDE went out, or the
                # decision was lost on its way to the announcer: send our signature to
                # every replica, and publish once we hold a quorum, leader or not
                # (should two go out, they state the same decision; harmless). Shares
                # and publications go again, every 2 s and after 10 s every 5 s, until a
                # DECIDE is out: one share lost with a connection left the decision
                # uncertified for good (shell simulation, seed 2).
                d = g.machine.get(state.need_id)
                own = state.sigs.get(self.identity.public_key)
                due = state.age_sweeps % (PUBLISH_FALLBACK_SWEEPS
                                          if state.age_sweeps <= 20 else 10) == 0
                if d is None or d.index != index:
                    pass
                elif state.done:
                    if due or not state.published:
                        self._queue_publish(g, d, state)
                elif own is not None and (due or not state.shared):
                    state.shared = True
                    self.stats["sigs_shared"] += 1
                    for peer in g.raw.raft.voters:
                        if peer != self.id:
                            self.out_sigs[peer].append(SigNote(
                                g.bucket, index, state.term, state.digest, state.ts_ms, own))
            if state.age_sweeps > (CHAIN_CERT_SWEEPS_MAX if unsettled
                                   else 2 * PUBLISH_FALLBACK_SWEEPS):
                del g.certs[index]

    # -- DECIDE --

    def local_decision(self, need_id: bytes) -> Decision | None:
        bucket = bucket_of(need_id, self.placement.bucket_count)
        g = self.groups.get(bucket)
        return g.machine.get(need_id) if g is not None else None

    async def try_decide(self, cmd: TryDecide, *, timeout_s: float = 15.0) -> Decision:
        """Submit a decision for a NEED and return the committed one (which may be
        another proposal's, if one was decided first). Idempotent; retried across
        leaders and replicas until `timeout_s`."""
        bucket = bucket_of(cmd.need_id, self.placement.bucket_count)

        async def ask(target: int) -> tuple[Decision | None, str]:
            return self.answer_for(cmd, await self._ask(target, bucket, cmd))

        d = await self._route(bucket, timeout_s, lambda g: g.machine.get(cmd.need_id),
                              lambda g: self._propose_local(g, cmd), ask)
        if d is None:
            raise DecideError(f"no committed decision within {timeout_s:g} s (bucket "
                              f"{bucket}: is a quorum of its replicas up?)")
        return d

    async def _route(self, bucket: int, timeout_s: float, known: Callable[[Group], T | None],
                     propose: Callable[[Group], Awaitable[T | None]],
                     ask: Callable[[int], Awaitable[tuple[T | None, str]]]) -> T | None:
        """The way a command reaches its bucket, shared by DECIDE and ledger commands:
        answered locally if this replica already applied it, proposed if we lead the
        bucket, else sent to the leader (known from the group, beats or a replica's
        `not_leader:<id>` answer) or to a live replica; retried until `timeout_s`.
        None when nothing came in time."""
        replicas = list(self.placement.replicas(bucket))
        attempt = 0
        hint = NONE
        with trio.move_on_after(timeout_s):
            while True:
                g = self.groups.get(bucket)
                if g is not None:
                    done = known(g)
                    if done is not None:
                        return done
                    if g.raw.raft.role == Role.LEADER:
                        out = await propose(g)
                        if out is not None:
                            return out
                        attempt += 1
                        continue
                target = self.next_hop(bucket, hint, attempt)
                hint = NONE
                attempt += 1
                if target == self.id:
                    await trio.sleep(TICK_MS / 1000)  # a replica without a leader yet
                    continue
                result, reason = await ask(target)
                if result is not None:
                    return result
                hint = leader_named(reason, replicas)
                if not hint:
                    await trio.sleep(min(0.05 * attempt, 0.5))
        return None

    def next_hop(self, bucket: int, hint: int, attempt: int) -> int:
        """Where `_route`'s next attempt for `bucket` goes when this node has no answer
        of its own: our id if we lead the bucket (propose here) or are a replica that
        knows no leader yet (wait a tick); else the leader (`hint`, from a replica's
        `not_leader:<id>` answer, else the group's, else the beats') if alive, or a live
        replica (the `attempt`-th, so retries go round). Synchronous, so the
        simulation (testnet/multiraft_sim.py) routes exactly as the node does."""
        g = self.groups.get(bucket)
        target = hint
        if g is not None:
            r = g.raw.raft
            if r.role == Role.LEADER:
                return self.id
            target = target or r.lead
        if target and not self._alive(target):
            target = NONE
        return (target or self._leader_hint(bucket)
                or self._live_replica(list(self.placement.replicas(bucket)), attempt))

    def propose_decide(self, g: Group, cmd: TryDecide) -> bool:
        """Propose `cmd` in `g` (which we lead), stamped with our clock. False if Raft
        dropped it (e.g. during a leader transfer)."""
        try:
            g.raw.propose(encode_command(cmd, self.clock_ms()))
        except ProposalDropped:
            return False
        g.idle_ticks = 0
        self.dirty.add(g.bucket)
        self.stats["proposals"] += 1
        self.wake.set()
        return True

    async def _propose_local(self, g: Group, cmd: TryDecide) -> Decision | None:
        key = (g.bucket, cmd.need_id)
        ev = trio.Event()
        self.waiters[key].append(ev)
        if not self.propose_decide(g, cmd):
            self.waiters[key].remove(ev)
            await trio.sleep(TICK_MS / 1000)
            return None
        with trio.move_on_after(ATTEMPT_TIMEOUT_S):
            await ev.wait()
        return g.machine.get(cmd.need_id)

    def announcer(self) -> int:
        """The validator that announces certified decisions for the swarm, as this node
        sees it: the lowest-numbered one it takes to be alive (itself included). Nodes
        that disagree for a moment (one just died) both announce; a DECIDE stating a
        decision already known is harmless."""
        return min((p for p in range(1, len(self.placement.accounts) + 1) if self._alive(p)),
                   default=self.id)

    def forward_announcement(self, peer: int, d: Decision, cert: dict[str, Any]) -> None:
        """Send a certified decision to `peer` (the announcer) with the next frame to it
        or the next tick's. Lost with a connection, it is sent again by the replicas'
        fallback (`_age_certs`) until a DECIDE stating it is out."""
        self.out_announce[peer].append(Announcement(
            cert["bucket"], cert["index"], cert["term"], cert["ts_ms"], d.need_id,
            d.proposal_id, d.k_plan, d.epoch,
            tuple((s["signer"], s["sig"]) for s in cert["sigs"])))
        self.stats["announcements_forwarded"] += 1

    def _alive(self, peer: int) -> bool:
        seen = self.peer_seen.get(peer)
        return peer == self.id or (seen is not None and peer not in self.peer_down
                                   and self.now_tick - seen <= PEER_DEAD_TICKS)

    def _leader_hint(self, bucket: int) -> int:
        for peer, leads in self.peer_leads.items():
            if bitmap_has(leads, bucket) and self._alive(peer):
                return peer
        return NONE

    def _live_replica(self, replicas: list[int], attempt: int) -> int:
        live = [r for r in replicas if self._alive(r)] or replicas
        return live[attempt % len(live)]

    async def _ask(self, peer: int, bucket: int, cmd: TryDecide) -> DecideResponse | None:
        req_id = self.ask_decide(peer, bucket, cmd)
        ev = self.remote_events.get(req_id)
        if ev is not None:
            await self._await_answer(peer, ev)
        return self.take_answer(req_id)

    def ask_decide(self, peer: int, bucket: int, cmd: TryDecide) -> int:
        """Send `cmd` to `peer` as a DecideRequest now; returns its request id. The
        answer lands in `remote_results` (and sets `remote_events[id]`) until
        `take_answer` takes it or gives up on it."""
        req_id = self.next_req
        self.next_req += 1
        self.remote_events[req_id] = trio.Event()
        self.out_reqs[peer].append(DecideRequest(req_id, bucket, cmd.need_id,
                                                 cmd.proposal_id, cmd.k_plan, cmd.epoch))
        self.flush()
        return req_id

    def answer_for(self, cmd: TryDecide,
                   resp: DecideResponse | None) -> tuple[Decision | None, str]:
        """What a replica's answer to `cmd` says: the decision, or why there is none.
        An answer stating another NEED's decision is no answer (DecideError if it is
        malformed)."""
        if resp is None:
            return None, ""
        if not resp.ok:
            return None, resp.reason
        d = _decision_of(resp)
        if d.need_id != cmd.need_id:
            self.stats["answers_mismatched"] += 1
            return None, ""
        return d, ""

    def take_answer(self, req_id: int) -> DecideResponse | None:
        """The answer to request `req_id`, if it came; the request is forgotten either
        way (a later answer is dropped)."""
        self.remote_events.pop(req_id, None)
        return self.remote_results.pop(req_id, None)

    async def _await_answer(self, peer: int, ev: trio.Event) -> None:
        """Wait for a peer's answer for up to ATTEMPT_TIMEOUT_S, giving up early on a
        peer that died meanwhile (its connection dropped or its beats stopped)."""
        deadline = trio.current_time() + ATTEMPT_TIMEOUT_S
        while not ev.is_set() and trio.current_time() < deadline and self._alive(peer):
            with trio.move_on_after(TICK_MS / 1000):
                await ev.wait()

    def _serve_request(self, sender: int, req: DecideRequest) -> None:
        g = self.groups.get(req.bucket)
        try:
            cmd = TryDecide(req.need_id, req.proposal_id, req.k_plan, req.epoch)
        except RemoteProtocolError as exc:
            self.out_resps[sender].append(DecideResponse(req.req_id, False, (), exc.reason))
            return
        if g is None or bucket_of(cmd.need_id, self.placement.bucket_count) != req.bucket:
            self.out_resps[sender].append(DecideResponse(req.req_id, False, (), "wrong_bucket"))
            return
        d = g.machine.get(cmd.need_id)
        if d is not None:
            self.out_resps[sender].append(_response(req.req_id, d))
            return
        r = g.raw.raft
        if r.role != Role.LEADER:
            self.out_resps[sender].append(DecideResponse(req.req_id, False, (),
                                                         f"not_leader:{r.lead}"))
            return
        key = (g.bucket, cmd.need_id)
        if sum(len(v) for v in self.remote_waiters.values()) >= PENDING_REMOTE_MAX:
            self.out_resps[sender].append(DecideResponse(req.req_id, False, (), "busy"))
            return
        try:
            g.raw.propose(encode_command(cmd, self.clock_ms()))
        except ProposalDropped as exc:
            self.out_resps[sender].append(DecideResponse(req.req_id, False, (), exc.reason))
            return
        g.idle_ticks = 0
        self.dirty.add(g.bucket)
        self.stats["proposals"] += 1
        self.remote_waiters[key].append((sender, req.req_id))

    def _fail_remote(self, bucket: int, reason: str) -> None:
        for key in [k for k in self.remote_waiters if k[0] == bucket]:
            for peer, req_id in self.remote_waiters.pop(key):
                self.out_resps[peer].append(DecideResponse(req_id, False, (), reason))
        for skey in [k for k in self.sub_remote if k[0] == bucket]:
            for peer, req_id in self.sub_remote.pop(skey):
                self.out_results[peer].append(SubmitResponse(req_id, False, b"", reason))
        for skey in [k for k in self.sub_proposed if k[0] == bucket]:
            del self.sub_proposed[skey]

    # -- ledger commands --

    def _ledger_applied(self, g: Group, res: LedgerApplied, term: int) -> None:
        """Answer whoever waits on the command, and sign its chain entry for the
        bucket's certificate (as `_decided` does for a DECIDE)."""
        key = (g.bucket, res.outcome.key)
        self.sub_proposed.pop(key, None)
        for ev in self.sub_waiters.pop(key, []):
            ev.set()
        remote = self.sub_remote.pop(key, [])
        if remote:
            first = g.machine.outcome(res.outcome.key) or res.outcome
            data = cbor.encode(first.to_value())
            for peer, req_id in remote:
                self.out_results[peer].append(SubmitResponse(req_id, True, data))
        if res.chain is not None:
            index, digest = res.chain.index, res.chain.digest()
            note = certificate.sign(self.identity, self.swarm_id, g.bucket, index, term, digest)
            state = g.certs.get(index)
            if state is None or state.digest != digest:
                if state is not None:
                    self.stats["sigs_conflicting"] += 1
                state = g.certs[index] = CertState(digest, term, res.chain.ts_ms, b"")
            state.term, state.chain = term, res.chain.encode()
            state.sigs[note.signer] = note.sig
            self.with_certs.add(g.bucket)
            for peer in g.raw.raft.voters:
                if peer != self.id:
                    self.out_sigs[peer].append(SigNote(g.bucket, index, term, digest,
                                                       res.chain.ts_ms, note.sig))
            self._maybe_certified(g, index)
        self.ledger_hook.applied(g, res)

    def _age_chain_cert(self, g: Group, index: int, state: CertState) -> None:
        if state.done:
            del g.certs[index]  # the hook has it (persisted, sent on)
            return
        if state.age_sweeps > CHAIN_CERT_SWEEPS_MAX or (
                self.chain_pending_last > CHAIN_PENDING_MAX and state.age_sweeps > 60):
            self.stats["chain_uncertified"] += 1
            del g.certs[index]
            return
        self.chain_pending += 1
        mine = state.sigs.get(self.identity.public_key)
        due = state.age_sweeps % (2 if state.age_sweeps <= 20 else 10) == 0
        if mine is not None and due:
            # A signature note may have been lost with a connection: send ours again.
            for peer in g.raw.raft.voters:
                if peer != self.id:
                    self.out_sigs[peer].append(SigNote(g.bucket, index, state.term,
                                                       state.digest, state.ts_ms, mine))

    async def submit(self, cmd: Command, *, timeout_s: float = 15.0) -> LedgerOutcome:
        """Submit a ledger command to its bucket; return its outcome as applied (a
        refusal by the ledger's rules, e.g. insufficient balance, is an outcome). The
        bucket's leader stamps and proposes it; elsewhere it is forwarded to the leader.
        Idempotent by the command's key (a repeat answers the first outcome); retried
        across leaders and replicas until `timeout_s`. Raises SubmitError when no outcome
        came in time or the leader refused the command at its door."""
        bucket = cmd.bucket

        def known(g: Group) -> LedgerOutcome | None:
            out = g.machine.outcome(cmd.key)
            return out if out is not None and out.kind not in REJECTION_KINDS else None

        async def ask(target: int) -> tuple[LedgerOutcome | None, str]:
            resp = await self._ask_submit(target, cmd)
            if resp is None:
                return None, ""
            if resp.ok:
                try:
                    return LedgerOutcome.from_value(cbor.decode(resp.result)), ""
                except RemoteProtocolError as exc:
                    raise SubmitError("outcome", f"replica {target} answered with a "
                                                 f"malformed outcome ({exc})") from None
            if resp.reason.startswith("refused:"):
                _, code, why = [*resp.reason.split(":", 2), "", ""][:3]
                raise SubmitError("command", why.strip(), code=code or "refused")
            return None, resp.reason

        out = await self._route(bucket, timeout_s, known,
                                lambda g: self._propose_command(g, cmd), ask)
        if out is None:
            raise SubmitError("command", f"no outcome within {timeout_s:g} s (bucket "
                                         f"{bucket}: is a quorum of its replicas up?)")
        return out

    def submit_nowait(self, cmd: Command) -> None:
        """Hand a command to its bucket's leader and do not wait (effect delivery and
        acknowledgements: the sender retries until the source's outbox says done)."""
        g = self.groups.get(cmd.bucket)
        if g is not None and g.raw.raft.role == Role.LEADER:
            self._propose_once(g, cmd)
            return
        target = g.raw.raft.lead if g is not None else NONE
        if not target or not self._alive(target):
            target = self._leader_hint(cmd.bucket)
        if not target:
            target = self._live_replica(list(self.placement.replicas(cmd.bucket)),
                                        self.now_tick)
        if target and target != self.id:
            self.out_submits[target].append(SubmitRequest(0, cmd.bucket, cmd.encode()))
            self.stats["submits_forwarded"] += 1
            self.wake.set()

    def _door(self, g: Group, cmd: Command) -> LedgerOutcome | ProtocolError | None:
        """The leader's checks before a user's command costs a log entry: an operation
        already decided answers its outcome; an envelope that could only be rejected
        (bad signature, another swarm, not a ledger verb, another bucket's signer) is
        refused. The state machine checks all of it again when applying."""
        if cmd.value["op"] != "ledger":
            return None
        if g.machine.ledger.is_decided(cmd.key):
            return g.machine.outcome(cmd.key) or LedgerOutcome(
                cmd.key, "unknown", cmd.key, g.bucket, 0, 0, "duplicate_op",
                f"operation {cmd.key.hex()[:16]} was already decided")
        try:
            env = decode_envelope(cmd.value["env"], swarm=self.swarm_id)
        except RemoteProtocolError as exc:
            return exc
        if env.kind not in LEDGER_VERBS:
            return LocalProtocolError("kind", f"{env.kind} is not a ledger verb",
                                      code="not_ledger_verb")
        home = bucket_of(env.sender, self.placement.bucket_count)
        if home != g.bucket:
            return LocalProtocolError("bucket", f"the signer's account belongs to bucket "
                                                f"{home}, not {g.bucket}", code="wrong_bucket")
        # The bucket's clock when it applies, at the earliest: the stamp we would give.
        now = max(g.machine.clock_ms, self.clock_ms())
        try:
            g.machine.ledger.check_window(cmd.key, env.payload["valid_until_ms"], now)
        except LedgerError as exc:
            return exc
        return None

    def _propose_once(self, g: Group, cmd: Command) -> bool:
        """Propose unless this node proposed the same command within an attempt's time
        (a second caller then waits on the first proposal). False if Raft dropped it."""
        key = (g.bucket, cmd.key)
        last = self.sub_proposed.get(key)
        if last is not None and self.now_tick - last < ATTEMPT_TIMEOUT_S * 1000 / TICK_MS:
            return True
        try:
            g.raw.propose(cmd.stamp(self.clock_ms()))
        except ProposalDropped:
            return False
        self.sub_proposed[key] = self.now_tick
        g.idle_ticks = 0
        self.dirty.add(g.bucket)
        self.stats["ledger_proposals"] += 1
        self.wake.set()
        return True

    async def _propose_command(self, g: Group, cmd: Command) -> LedgerOutcome | None:
        refusal = self._door(g, cmd)
        if isinstance(refusal, LedgerOutcome):
            return refusal
        if refusal is not None:
            raise SubmitError(refusal.field, refusal.reason, code=refusal.code)
        key = (g.bucket, cmd.key)
        ev = trio.Event()
        self.sub_waiters[key].append(ev)
        try:
            if not self._propose_once(g, cmd):
                await trio.sleep(TICK_MS / 1000)
                return None
            with trio.move_on_after(ATTEMPT_TIMEOUT_S):
                await ev.wait()
        finally:
            waiting = self.sub_waiters.get(key)
            if waiting is not None and ev in waiting:
                waiting.remove(ev)
                if not waiting:
                    del self.sub_waiters[key]
        out = g.machine.outcome(cmd.key)
        return out if out is not None and ev.is_set() else None

    async def _ask_submit(self, peer: int, cmd: Command) -> SubmitResponse | None:
        req_id = self.next_req
        self.next_req += 1
        ev = trio.Event()
        self.remote_events[req_id] = ev
        self.out_submits[peer].append(SubmitRequest(req_id, cmd.bucket, cmd.encode()))
        self.flush()
        await self._await_answer(peer, ev)
        self.remote_events.pop(req_id, None)
        return self.sub_results.pop(req_id, None)

    def _serve_submit(self, sender: int, req: SubmitRequest) -> None:
        def answer(ok: bool, result: bytes = b"", reason: str = "") -> None:
            if req.req_id:
                self.out_results[sender].append(SubmitResponse(req.req_id, ok, result, reason))

        g = self.groups.get(req.bucket)
        if g is None:
            answer(False, reason="wrong_bucket")
            return
        try:
            cmd = decode_command(req.bucket, req.command)
        except RemoteProtocolError as exc:
            self.stats["submits_rejected"] += 1
            answer(False, reason=f"refused:{exc.code}:{exc.field}: {exc.reason}")
            return
        known = g.machine.outcome(cmd.key)
        if known is not None and known.kind not in REJECTION_KINDS and \
                cmd.value["op"] == "ledger":
            answer(True, cbor.encode(known.to_value()))
            return
        r = g.raw.raft
        if r.role != Role.LEADER:
            if not req.req_id:
                # Nobody waits for this one (effect delivery): pass it on to our leader.
                if r.lead not in (NONE, sender, self.id):
                    self.out_submits[r.lead].append(req)
                return
            answer(False, reason=f"not_leader:{r.lead}")
            return
        refusal = self._door(g, cmd)
        if isinstance(refusal, LedgerOutcome):
            answer(True, cbor.encode(refusal.to_value()))
            return
        if refusal is not None:
            answer(False, reason=f"refused:{refusal.code}:{refusal.reason}")
            return
        if req.req_id and len(self.sub_remote) >= PENDING_REMOTE_MAX:
            answer(False, reason="busy")
            return
        if not self._propose_once(g, cmd):
            answer(False, reason="proposal dropped")
            return
        if req.req_id:
            self.sub_remote[(g.bucket, cmd.key)].append((sender, req.req_id))

    # -- status --

    def status(self, bucket: int | None = None) -> list[dict[str, Any]]:
        rows = []
        buckets = [bucket] if bucket is not None else range(self.placement.bucket_count)
        for b in buckets:
            g = self.groups.get(b)
            replicas = list(self.placement.replicas(b))
            if b in self.halted:
                rows.append({"bucket": b, "replica": True, "replicas": replicas,
                             "role": "halted", "halted": self.halted[b].machine.halted,
                             "leader": self._leader_hint(b) or None})
                continue
            if g is None:
                rows.append({"bucket": b, "replica": False, "replicas": replicas,
                             "leader": self._leader_hint(b) or None})
                continue
            r = g.raw.raft
            lag = 0
            if r.role == Role.LEADER:
                lag = max((r.log.last_index() - pr.match for pr in r.prs.values()), default=0)
            rows.append({
                "bucket": b, "replica": True, "replicas": replicas,
                "voters": sorted(r.voters), "role": r.role.name.lower(),
                "leader": r.lead or None, "term": r.term, "commit": r.log.committed,
                "applied": r.log.applied, "last_index": r.log.last_index(), "lag": lag,
                "quiet": g.quiet or (r.role == Role.FOLLOWER and r.lead in self.peer_seen
                                     and bitmap_has(self.peer_leads.get(r.lead, b""), b)),
                "decisions": len(g.machine.decisions),
                "ledger_last": g.machine.part.last,
                "snapshot_index": g.storage.snapshot().index,
            })
        return rows


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _response(req_id: int, d: Decision) -> DecideResponse:
    return DecideResponse(req_id, True, (d.need_id, d.proposal_id, d.k_plan, d.epoch,
                                         d.bucket, d.index, d.term, d.ts_ms))


def leader_named(reason: str, replicas: list[int]) -> int:
    """The leader a replica's `not_leader:<id>` answer names, if it is one of the
    bucket's replicas; NONE otherwise (and for any other, or malformed, reason)."""
    head, _, rest = reason.partition(":")
    if head != "not_leader" or not rest.isdigit() or len(rest) > 6:
        return NONE
    hint = int(rest)
    return hint if hint in replicas else NONE


def _decision_of(resp: DecideResponse) -> Decision:
    f = resp.decision
    ok = (len(f) == 8 and isinstance(f[0], bytes) and isinstance(f[1], bytes)
          and all(isinstance(x, int) and not isinstance(x, bool) for x in f[2:]))
    if not ok:
        raise DecideError("a replica answered with a malformed decision")
    return Decision(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7])
