"""Multi-raft: every bucket this node replicates, driven by one loop, on one store.

Owns the groups (node/raft_group.py) and their driving: ticks, the Ready loop with its
group commit (one synced RocksDB write per round, whatever the number of buckets that
moved), applying committed entries to each group's `BucketMachine` (a bucket whose
machine cannot apply an entry alike on every replica halts alone), quiescence of idle
buckets and compaction. The jobs it hands on each have a module: which peers are alive
and who leads what, with failover and leadership balance (node/raft_peers.py); what
goes to each peer in a frame and when (node/raft_outbox.py); commit certificates
(node/raft_certs.py); how a command reaches its bucket and a replica answers one
(node/raft_routing.py, for each kind of node/raft_kinds.py: `try_decide`, `submit`,
`submit_nowait` come through here). What the ledger does with applied entries beyond
answering callers (delivering effects, the certified read replica) is
node/ledger_raft.py's, through `ledger_hook`.

Transport-agnostic: frames leave through `send(peer_id, bytes)` and arrive through
`receive(bytes)`; node/raft_transport.py carries them over libp2p, tests over memory.

Time: `tick()` is called every `TICK_MS` by the node. A bucket whose leader is idle and
whose followers are caught up stops ticking ("goes quiet"); its followers stay quiet for
as long as the leader's node keeps beating (a frame to every peer every BEAT_TICKS,
carrying the bitmap of buckets the sender leads: CockroachDB's coalesced heartbeats).
When a peer's frames stop or its connection drops, each bucket it led is taken over: its
lowest-id live replica campaigns at once (after forgetting the old leader), which makes
failover a fraction of a second rather than an election timeout.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from swarm.protocol.bucket_machine import (
    BucketHalted,
    BucketMachine,
    Command,
    LedgerApplied,
    LedgerOutcome,
    entry_stamp,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import Decision, TryDecide
from swarm.protocol.envelope import Identity
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.genesis import DEFAULT_PARAMS, Genesis
from swarm.protocol.placement import Placement
from swarm.protocol.raft import NONE, Config, Message, MsgType, ProposalDropped, RawNode, Role
from swarm.protocol.raftlog import Entry, EntryKind
from swarm.protocol.raftwire import Announcement, CertifiedEntry, Frame, decode_frame, leads_bitmap

from .raft_certs import CERT_SWEEP_TICKS, Certifier
from .raft_group import TICK_MS, Group
from .raft_kinds import DECIDE, LEDGER, DecideError, SubmitError
from .raft_outbox import Outbox
from .raft_peers import BALANCE_TICKS, Peers
from .raft_routing import ROUTE_TIMEOUT_S_DEFAULT, Router
from .raftstore import RaftStore

log = logging.getLogger("swarm.raft")

ELECTION_TICKS = 20  # 1-2 s randomized
HEARTBEAT_TICKS = 2
# A liveness beat to every peer every 500 ms (on a frame going anyway). Beats are most of
# an idle node's work (one frame per peer each, through Noise and Yamux in Python): 16
# idle nodes took 1.5 of the 2 cores here with 100 ms beats, 0.8 with 250 ms. A killed
# peer is noticed at once anyway (its connection drops); beats only catch a hung or
# cut-off one.
BEAT_TICKS = 10
# A node whose entries came stamped too far ahead of this node's clock is not followed,
# voted for or listened to as a leader for this long (20 s): several election timeouts,
# for the bucket to elect another leader and commit under it; short, because a
# follower that shuns the leader of a bucket lags it meanwhile.
SHUN_TICKS = 20_000 // TICK_MS
# Messages a leader or a candidate sends; a shunned node's are dropped. Its answers
# (APP_RESP, VOTE_RESP, ...) are not: it may still follow a leader here.
_LEADING_TYPES = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.VOTE,
                            MsgType.PRE_VOTE, MsgType.TIMEOUT_NOW})
SNAPSHOT_EVERY = 1000
# With streamed snapshots every transfer's outcome is reported (`snapshot_status`), so
# the core's snapshot timeout is only a backstop against a report that never comes; a
# repeat it causes while a transfer runs is dropped by the transport.
SNAPSHOT_BACKSTOP_TICKS = 60_000 // TICK_MS
LOG_TAIL_KEEP = 100
# After stalling, a ticker ticks once and starts counting again rather than catch up in a
# burst of more than this many ticks.
TICK_BURST_MAX = 5
REQ_ID_BITS = 48  # request ids start at a random point of this range

__all__ = ["LedgerHook", "MultiRaft"]


class LedgerHook:
    """What node/ledger_raft.py does with the ledger side of the groups (nothing here)."""

    def applied(self, g: Group, result: LedgerApplied) -> None:
        """A ledger command was applied in `g` (called on every replica)."""

    def certified(self, g: Group, cert: CertifiedEntry) -> None:
        """A quorum of `g`'s replicas signed a chain entry (on each replica that
        collected the quorum)."""

    def frame(self, sender: int, frame: Frame) -> None:
        """A frame carrying certified chain entries or fetch requests."""


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
        # The bound on a leader's stamps (docs/RAFT.md, "Stamps"): 0 switches it off.
        self.stamp_ahead_max_ms = int(self.params.get("stamp_ahead_max_ms", 0))
        self.shunned: dict[int, int] = {}  # node id -> the tick its shunning ends
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
        self.peers = Peers(self.id, len(placement.accounts))
        self.stats: dict[str, int] = defaultdict(int)
        self.outbox = Outbox()  # what the next frame to each peer carries
        self.certs = Certifier(identity, swarm_id, placement, self.id, self.outbox,
                               self.stats, announced,
                               lambda g, cert: self.ledger_hook.certified(g, cert),
                               store)
        rng_seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        # Request ids start anywhere, so that an answer to a request of this node's
        # previous life (a replica answers once the NEED is decided, which may be after
        # our restart) does not meet a new request that happens to have its id.
        self.router = Router(self, 1 + rng_seed % (1 << REQ_ID_BITS))
        # Certified decisions other validators sent us to announce
        # (`Certifier.forward_announcement`).
        self.relayed: Callable[[int, Announcement], None] | None = None
        self.wake = trio.Event()
        self.dirty: set[int] = set()  # buckets stepped, ticked or proposed to since process()
        self.touched: set[int] = set()  # buckets that received messages since the last tick
        self.beat_due = False
        self.lazy_due = False  # a tick passed: the round's last flush sends everything
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
        self.certs.reload_signed(self.groups[bucket])

    def _machine(self, data: bytes, bucket: int) -> BucketMachine:
        return BucketMachine.restore(data, bucket, self.swarm_id, self.params, self.genesis,
                                     self.placement)

    # -- inputs --

    @property
    def now_tick(self) -> int:
        return self.peers.now

    def tick(self) -> None:
        peers = self.peers
        dead = peers.tick()
        if self.shunned:
            self.shunned = {n: end for n, end in self.shunned.items() if end > self.now_tick}
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
                    if peers.take_over(g, dead):
                        self.stats["takeovers"] += 1
                    self.dirty.add(g.bucket)
                elif peers.beats_as_leader(r.lead, g.bucket) and r.lead not in self.shunned \
                        and r.log.committed >= r.log.last_index():
                    continue  # the leader's node beats, still leads this bucket, and
                    # we know all it committed. Holding entries past our commit index,
                    # we tick: the append that carried the new index was lost and a
                    # quiet leader sends no other, so in an election timeout we ask
                    # (a pre-vote), and the leader answers with a heartbeat.
            elif r.role == Role.FOLLOWER and any(
                    peers.beats_as_leader(p, g.bucket) for p in r.voters
                    if p not in dead and p not in self.shunned):
                # Back from a restart under a quiet leader: it beats, so wait for it
                # rather than campaign against its lease.
                continue
            g.raw.tick()
            self.dirty.add(g.bucket)
        if self.now_tick % CERT_SWEEP_TICKS == 0:
            certs = self.certs
            certs.start_sweep()
            certs.with_certs &= set(self.groups)
            for b in certs.with_certs:
                certs.sweep(self.groups[b])
                # Compaction waits for decisions to be certified (`_maybe_compact`);
                # one certified after the bucket's last entry would otherwise wait
                # for the next. Its writes go out with the next round's.
                self._maybe_compact(self.groups[b])
            certs.with_certs = {b for b in certs.with_certs if self.groups[b].certs}
        self.lazy_due = True
        if self.now_tick % BEAT_TICKS == 0:
            self.beat_due = True
        if self.now_tick % BALANCE_TICKS == 0:
            for g in peers.balance((g for _, g in sorted(self.groups.items())),
                                   self.placement.bucket_count, dead):
                self.dirty.add(g.bucket)
                self.stats["leader_transfers"] += 1
        self.wake.set()

    def peer_lost(self, peer: int) -> None:
        """The transport lost its connection to `peer` (e.g. the process died)."""
        self.peers.lost(peer)

    def peer_connected(self, peer: int) -> None:
        self.peers.connected(peer)

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
        if self.peers.heard(sender, frame.leads):  # restarted, or back from a cut
            self._wake_led(sender)
        for bucket, m in frame.msgs:
            g = self.groups.get(bucket)
            if g is None or m.frm != sender or m.to != self.id:
                self.stats["msgs_misrouted"] += 1
                continue
            if m.type in _LEADING_TYPES and (sender in self.shunned
                                             or self._stamped_ahead(sender, bucket, m)):
                self.stats["msgs_from_shunned"] += 1
                continue
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and (
                    g.raw.raft.lead in self.peers.down or g.raw.raft.lead in self.shunned):
                # A replica taking over from a dead leader asks before our next tick
                # has noticed: forget the leader now, or its lease refuses the vote and
                # the takeover waits out an election timeout (1-2 s).
                g.raw.forget_leader()
            g.raw.step(m)
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and g.quiet and \
                    g.raw.raft.role == Role.LEADER:
                # A replica campaigns against our lease (it took us for dead over a
                # broken connection, or restarted): a quiet leader sends nothing that
                # would make it follow again, so it would campaign for good (a
                # regression seed of the shell simulation, testnet/simkit.py). One
                # heartbeat does.
                g.raw.raft.step(Message(MsgType.BEAT, frm=self.id))
            self.dirty.add(bucket)
            self.touched.add(bucket)
        for note in frame.sigs:
            self.certs.add_sig(self.groups.get(note.bucket), sender, note)
        for req in frame.requests:
            self.router.serve_decide(sender, req)
        for sub in frame.submits:
            self.router.serve_submit(sender, sub)
        for resp in frame.responses:
            self.router.answered(resp.req_id, resp)
        for res in frame.results:
            self.router.answered(res.req_id, res)
        if frame.chain or frame.fetch:
            self.ledger_hook.frame(sender, frame)
        if self.relayed is not None:
            for a in frame.announce:
                self.relayed(sender, a)
        self.wake.set()

    def _stamped_ahead(self, sender: int, bucket: int, m: Message) -> bool:
        """Whether `m` appends an entry stamped more than `stamp_ahead_max_ms` past this
        node's clock; then `sender` is shunned. Its entries would commit with its
        clock as the bucket's, expiring every honest envelope and lease early, so a
        quorum with sane clocks refuses them, stops hearing that leader and elects
        another (a leader hears no quorum and steps down: CheckQuorum)."""
        if m.type != MsgType.APP or not m.entries or not self.stamp_ahead_max_ms:
            return False
        stamps = [t for t in (entry_stamp(e.data) for e in m.entries if e.data)
                  if t is not None]
        if not stamps:
            return False
        ahead = max(stamps) - self.clock_ms()
        if ahead <= self.stamp_ahead_max_ms:
            return False
        self.shunned[sender] = self.now_tick + SHUN_TICKS
        self.stats["appends_stamped_ahead"] += 1
        log.warning("node %d leads bucket %d with entries stamped %d ms ahead of this "
                    "node's clock (at most %d): not following it for %d s. One of the "
                    "two clocks is wrong; fix it (NTP)", sender, bucket, ahead,
                    self.stamp_ahead_max_ms, SHUN_TICKS * TICK_MS // 1000)
        return True

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
                while self.certs.to_publish:
                    d, cert = self.certs.to_publish.pop(0)
                    if self.publish is not None:
                        nursery.start_soon(self._publish, d, cert)

    async def _ticker(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += TICK_MS / 1000
            await trio.sleep_until(deadline)
            if trio.current_time() - deadline > TICK_BURST_MAX * TICK_MS / 1000:
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
                self.outbox.raft(g.bucket, m)
        self.flush(final=False)  # leaders' appends travel while our own disk write runs
        batch = self.store.take()
        if batch is not None:
            self.store.write(batch, must_sync)
        for g, rd in readies:
            for m in rd.messages:
                self.outbox.raft(g.bucket, m)
            if rd.entries or any(m.entries or m.snapshot is not None for m in rd.messages):
                g.idle_ticks = 0
            if rd.snapshot is not None:
                g.machine = self._machine(rd.snapshot.data, g.bucket)
            if not self._apply_committed(g, rd.committed_entries):
                continue  # the bucket halted: it takes no further part
            g.raw.advance(rd)
            if rd.soft_state is not None and rd.soft_state.role != Role.LEADER:
                self.router.fail_remote(g.bucket, "leadership moved")
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
                self.router.applied(g.bucket, d.need_id, d)
                self.certs.decided(g, d, e.index, e.term, e.data)
            elif isinstance(d, LedgerApplied):
                # A repeat answers what the first of its key gave.
                self.router.applied(g.bucket, d.outcome.key,
                                    g.machine.outcome(d.outcome.key) or d.outcome)
                if d.chain is not None:
                    self.certs.chain_applied(g, d.chain, e.term)
                self.ledger_hook.applied(g, d)
        return True

    def _halt(self, g: Group, index: int, exc: BaseException) -> None:
        if not isinstance(exc, BucketHalted):
            g.machine.halted = f"entry {index}: {exc!r}"
        log.critical("bucket %d halted at entry %d: its state machine cannot apply it alike "
                     "on every replica (%r); this node no longer serves the bucket until "
                     "it restarts", g.bucket, index, exc, exc_info=exc)
        self.groups.pop(g.bucket, None)
        self.halted[g.bucket] = g
        self.certs.with_certs.discard(g.bucket)
        self.stats["buckets_halted"] += 1
        self.router.fail_remote(g.bucket, "bucket halted")

    def flush(self, final: bool = True) -> None:
        """Send one frame to each peer with something urgent queued, carrying everything
        queued for it (`raft_outbox`: what is urgent). The rest waits for the next such
        frame or the next tick's round, whose last flush sends everything. When a beat
        is due (on a tick), every peer gets a frame, each carrying the bitmap of buckets
        this node leads."""
        if self.send_snapshot is not None:
            self.stats["snapshots_out"] += self.outbox.divert_snapshots(self.send_snapshot)
        for nobody in (self.id, NONE):
            self.outbox.drop(nobody)
        leads = b""
        if final and self.lazy_due:
            self.lazy_due = False
            peers = self.outbox.peers()
            if self.beat_due and self.id != NONE:
                self.beat_due = False
                peers |= set(self.peers.validators()) - {self.id}
                leads = leads_bitmap([b for b, g in self.groups.items()
                                      if g.raw.raft.role == Role.LEADER],
                                     self.placement.bucket_count)
        else:
            peers = self.outbox.urgent()
        for peer, frame in self.outbox.take(peers, self.id, leads):
            self.stats["frames_out"] += 1
            self.send(peer, frame.encode())

    def _maybe_compact(self, g: Group) -> None:
        applied = g.raw.raft.log.applied
        snap = g.storage.snapshot()
        if applied - snap.index < self.snapshot_every or g.machine.applied < snap.index:
            return
        if self.certs.uncertified_above(g, snap.index):
            return  # re-applying a decision signs it again; inside a snapshot, never
        g.storage.create_snapshot(applied, sorted(g.raw.raft.voters), g.machine.snapshot())
        g.storage.compact(max(applied - self.log_tail_keep, g.storage.first_index() - 1))

    def propose(self, g: Group, data: bytes) -> bool:
        """Propose `data` in `g` (which we lead). False if Raft dropped it (e.g. during
        a leader transfer)."""
        try:
            g.raw.propose(data)
        except ProposalDropped:
            return False
        g.idle_ticks = 0
        self.dirty.add(g.bucket)
        self.wake.set()
        return True

    # -- commands: DECIDE and the ledger's (node/raft_routing.py) --

    async def try_decide(self, cmd: TryDecide, *,
                         timeout_s: float = ROUTE_TIMEOUT_S_DEFAULT) -> Decision:
        """Submit a decision for a NEED and return the committed one (which may be
        another proposal's, if one was decided first). Idempotent; retried across
        leaders and replicas until `timeout_s`."""
        d = await self.router.route(DECIDE, cmd, timeout_s)
        if d is None:
            bucket = bucket_of(cmd.need_id, self.placement.bucket_count)
            raise DecideError(f"no committed decision within {timeout_s:g} s (bucket "
                              f"{bucket}: is a quorum of its replicas up?)")
        return d

    async def submit(self, cmd: Command, *,
                     timeout_s: float = ROUTE_TIMEOUT_S_DEFAULT) -> LedgerOutcome:
        """Submit a ledger command to its bucket; return its outcome as applied (a
        refusal by the ledger's rules, e.g. insufficient balance, is an outcome). The
        bucket's leader stamps and proposes it; elsewhere it is forwarded to the leader.
        Idempotent by the command's key (a repeat answers the first outcome); retried
        across leaders and replicas until `timeout_s`. Raises SubmitError when no outcome
        came in time or the leader refused the command at its door."""
        out = await self.router.route(LEDGER, cmd, timeout_s)
        if out is None:
            raise SubmitError("command", f"no outcome within {timeout_s:g} s (bucket "
                                         f"{cmd.bucket}: is a quorum of its replicas up?)")
        return out

    def submit_nowait(self, cmd: Command) -> None:
        """Hand a ledger command to its bucket's leader and do not wait (effect delivery
        and acknowledgements: the sender retries until the source's outbox says done)."""
        self.router.send_nowait(LEDGER, cmd)

    def local_decision(self, need_id: bytes) -> Decision | None:
        bucket = bucket_of(need_id, self.placement.bucket_count)
        g = self.groups.get(bucket)
        return g.machine.get(need_id) if g is not None else None

    # -- peers --

    def alive(self, peer: int) -> bool:
        return self.peers.alive(peer)

    def leader_hint(self, bucket: int) -> int:
        """The live peer whose beats say it leads `bucket`, or NONE."""
        return self.peers.leader_hint(bucket)

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
                             "leader": self.leader_hint(b) or None})
                continue
            if g is None:
                rows.append({"bucket": b, "replica": False, "replicas": replicas,
                             "leader": self.leader_hint(b) or None})
                continue
            rows.append(g.status(replicas, g.raw.raft.role == Role.FOLLOWER
                                 and self.peers.beats_as_leader(g.raw.raft.lead, b)))
        return rows



def _wall_ms() -> int:
    return int(time.time() * 1000)
