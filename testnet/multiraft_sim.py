"""Deterministic simulation of the multi-raft shell (node/multiraft.py) under seeded faults.

Owns a simulated world of N validators, each running the real `MultiRaft` on a real
`RaftStore` (RocksDB in a temporary directory, /dev/shm when there is one), joined by a
simulated network of frames. Where testnet/raftsim.py drives one group of bare
`RawNode`s, this drives the shell itself: every bucket a node replicates, the Ready
round with its one write, batching of every message for a peer into one frame, the
liveness beats and quiet buckets, failover when a peer is lost or its beats stop,
leadership balance by transfer, DECIDE requests routed as `try_decide` routes them
(`MultiRaft.next_hop`, `propose_decide`, `ask_decide`, `take_answer`), and commit
certificates, including the replicas' fallback when the leader does not announce.

Faults, all drawn from one `random.Random(seed)` so that a failing seed replays
exactly: frame loss, delay (per link in order, as the real one-stream-per-pair
transport delivers; one profile also reorders and duplicates), partitions that heal
(stalled links: no one is told, beats stop), crashes like kill -9 between rounds or
inside one (while sending the early messages, before the write: the round's writes are
lost; or while sending after it) with the disk kept and the store reopened on restart,
clock skew (nodes tick every 1, 2 or 3 steps; each boot's entry clock runs at the true
rate but up to 3 s off, so timestamps also go backwards across restarts, and leaders
more than the genesis' `stamp_ahead_max_ms` ahead of a follower get shunned), and
garbage frames.
Time is virtual: the simulation calls `tick()`, `receive()` and `process_ready()`
itself; there is no trio run loop and no wall clock.

Checked after every step: election safety per bucket (one leader per term), state
machine safety per bucket (every replica applied the same entry at an index), P1 (one
decision per NEED, identical -- proposal, index, term, timestamp -- on every node that
applied it, and in every answer a client got), every certificate the shell queues for
announcement verifies against the placement (`protocol/certificate.py`) and states the
applied decision, and no exception escapes the shell. At the end the world heals and
every NEED submitted must be decided on every replica of its bucket (on a quorum of
them when frames were reordered, which TCP does not do: see `_unsettled`), with a
certificate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from swarm.node.multiraft import LOG_TAIL_KEEP, SNAPSHOT_EVERY, MultiRaft
from swarm.node.raft_group import TICK_MS
from swarm.node.raft_kinds import DECIDE, DecideError, leader_named
from swarm.node.raft_routing import ATTEMPT_TIMEOUT_S
from swarm.node.raft_snapshots import FAILURE_BACKOFF_S
from swarm.node.raftstore import RaftStore
from swarm.protocol import certificate, genesis
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import Decision, TryDecide, encode_command
from swarm.protocol.envelope import Identity
from swarm.protocol.placement import Placement
from swarm.protocol.raft import NONE, Message, Role
from swarm.protocol.raftlog import Compacted
from swarm.protocol.raftwire import DecideResponse, Frame, SigNote

from .simkit import (
    PROFILES,
    TICK_EVERY_CHOICES,
    Violation,
    crashes_and_restarts,
    heal_steps,
    need_ids,
    next_partition,
    run_then_heal,
    take_due,
)

ATTEMPT_TICKS = int(ATTEMPT_TIMEOUT_S * 1000 / TICK_MS)
FAILURE_TICKS = int(FAILURE_BACKOFF_S * 1000 / TICK_MS)
CLIENT_TIMEOUT_TICKS = 15_000 // TICK_MS  # try_decide's default timeout_s
FAR_AHEAD_P = 0.1  # a boot's clock is FAR_AHEAD_MS ahead with this chance
FAR_AHEAD_MS = 20_000


@dataclass(frozen=True)
class ShellSimConfig:
    seed: int = 1
    nodes: int = 5
    replicas: int = 3
    buckets: int = 8
    steps: int = 900  # one step is one tick of a node at full rate (50 ms)
    heal_steps: int = 2000
    needs: int = 24
    submit_p: float = 0.12
    loss: float = 0.02
    duplicate: float = 0.0
    delay_max: int = 2
    reorder: bool = False
    crash_p: float = 0.002  # per node and step
    restart_p: float = 0.03
    partition_p: float = 0.003
    heal_p: float = 0.02
    garbage_p: float = 0.02
    snapshot_every: int = 0  # compact every so many applied entries (0: the node's 1000)

    @classmethod
    def for_seed(cls, seed: int) -> ShellSimConfig:
        """The schedule a seed stands for: its fault profile is part of the seed."""
        profile = seed % PROFILES
        if profile == 0:
            return cls(seed=seed)
        if profile == 1:  # storm of crashes and partitions
            return cls(seed=seed, crash_p=0.006, restart_p=0.05, partition_p=0.01,
                       heal_p=0.03, snapshot_every=6)
        if profile == 2:  # lossy, slow links
            return cls(seed=seed, loss=0.2, delay_max=6)
        if profile == 3:  # frames reordered and duplicated (beyond what TCP does)
            return cls(seed=seed, loss=0.05, duplicate=0.05, delay_max=5, reorder=True,
                       snapshot_every=5)
        return cls(seed=seed, buckets=16, crash_p=0.004, partition_p=0.006,  # more groups
                   snapshot_every=3)


class _Crash(Exception):
    """Raised from a node's `send` to crash it in the middle of a Ready round."""


@dataclass
class Client:
    """One `try_decide` call in flight on a node, stepped as `MultiRaft._route` loops."""

    cmd: TryDecide
    bucket: int
    started: int  # the node's tick
    hint: int = NONE
    attempt: int = 0
    state: str = "idle"  # idle | local (proposed here) | remote (asked a peer) | sleep
    until: int = 0
    req: int = 0
    peer: int = NONE


@dataclass
class SimNode:
    id: int
    identity: Identity
    path: Path
    tick_every: int
    mr: MultiRaft | None = None
    store: RaftStore | None = None
    boots: int = 0
    clock_base: int = 0  # the entry clock at `booted_at`
    booted_at: int = 0  # the step of its last boot
    far_ahead: bool = False  # this boot's clock is FAR_AHEAD_MS ahead
    crash_armed: bool = False
    heard: set[bytes] = field(default_factory=set)  # certified DECIDEs that reached it
    checked: dict[int, int] = field(default_factory=dict)  # bucket -> applied index checked
    sending: set[tuple[int, int]] = field(default_factory=set)  # snapshots: (peer, bucket)
    clients: list[Client] = field(default_factory=list)


@dataclass
class ShellSimResult:
    seed: int
    steps: int
    needs: int
    decided: int
    certified: int
    crashes: int
    crashes_in_round: int
    partitions: int
    frames: int
    dropped: int
    breaks: int  # connections broken (a lost frame, a partition's heal)
    snapshots: int  # snapshot transfers started
    snapshots_failed: int
    garbage: int
    elections: int
    takeovers: int
    transfers: int
    answers_remote: int
    answers_local: int
    client_timeouts: int
    sigs_shared: int
    clocks_far_ahead: int  # boots whose clock was FAR_AHEAD_MS ahead
    stamps_refused: int  # appends refused as stamped too far ahead (their leader shunned)
    digest: str  # over every decision: two runs of a seed must agree on it


class ShellSim:
    def __init__(self, config: ShellSimConfig, root: Path | None = None) -> None:
        self.cfg = c = config
        self.rng = random.Random(c.seed)
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="mrsim-", dir=_tmp_base()))
        ids = [Identity(bytes([i + 1]) * 32) for i in range(c.nodes)]
        self.genesis = self._make_genesis(ids)
        self.swarm_id = self.genesis.swarm_id
        self.placement = Placement.from_genesis(self.genesis)
        self.nodes: dict[int, SimNode] = {}
        for k in range(1, c.nodes + 1):
            ident = next(i for i in ids if i.public_key == self.placement.account(k))
            self.nodes[k] = SimNode(k, ident, self.root / f"n{k}",
                                    self.rng.choice(TICK_EVERY_CHOICES))
        self.now = 0
        self.seq = 0
        self.inflight: list[tuple[int, int, int, int, int, bytes]] = []  # due, seq, src,
        self.link_due: dict[tuple[int, int], int] = {}                   # dst, boot, data
        self.blocked: set[frozenset[int]] = set()
        # Snapshot transfers: (due, seq, src, src boot, dst, dst boot, bucket, message,
        # outcome); outcome None is a transfer arriving, a bool its report to the sender.
        self.snaps: list[tuple[int, int, int, int, int, int, int, Message, bool | None]] = []
        self.healing = False
        self.sample, self.sample_src = b"", NONE  # a recent frame, to make garbage from
        self.need_ids = need_ids(c.needs)
        # Checker state.
        self.leader_of: dict[tuple[int, int], int] = {}  # (bucket, term) -> node
        self.entry_at: dict[tuple[int, int], tuple[int, bytes]] = {}  # (bucket, index)
        self.decision: dict[bytes, Decision] = {}
        self.certified: dict[bytes, Decision] = {}
        self.submitted: set[bytes] = set()
        self.stats: dict[str, int] = {k: 0 for k in (
            "crashes", "crashes_in_round", "partitions", "frames", "dropped", "breaks",
            "snapshots", "snapshots_failed", "garbage", "answers_remote", "answers_local",
            "client_timeouts", "client_errors", "clocks_far_ahead")}
        self.shell_stats: dict[str, int] = {}
        for n in self.nodes.values():
            self._boot(n)

    def _make_genesis(self, ids: list[Identity]) -> genesis.Genesis:
        c = self.cfg
        return genesis.new(
            name="mrsim", created_ms=0,
            validators=[{"account": i.public_key, "org": f"o{k}", "asn": k, "region": "r",
                         "stake": 1} for k, i in enumerate(ids)],
            params={"bucket_count": c.buckets, "replicas": c.replicas})

    def _booted(self, n: SimNode) -> None:
        """Called once a node's shell is up (a subclass adds its own parts)."""

    # -- the world --

    def _boot(self, n: SimNode) -> None:
        n.store = RaftStore(n.path)
        n.boots += 1
        # Each boot's clock is up to 3 s off the true time (real clocks drift apart by
        # far less than the node tick rates do): entry timestamps are skewed and may go
        # backwards across a restart.
        n.clock_base = self.now * TICK_MS + self.rng.randint(-3000, 3000)
        n.booted_at = self.now
        # Now and then a boot's clock is far ahead (a bad NTP step): its entries are
        # refused and the node shunned while it leads. Its own generator, so the rest
        # of the schedule is what the seed always gave.
        n.far_ahead = not self.healing and random.Random(
            f"{self.cfg.seed}/clock/{n.id}/{n.boots}").random() < FAR_AHEAD_P
        if n.far_ahead:
            n.clock_base += FAR_AHEAD_MS
            self.stats["clocks_far_ahead"] += 1
        n.checked = {}
        n.sending = set()
        n.crash_armed = False
        c = self.cfg
        n.mr = MultiRaft(n.identity, self.swarm_id, self.placement, n.store,
                         self._sender(n), None, seed=self.rng.getrandbits(64),
                         announced=n.heard.__contains__, clock_ms=self._clock(n),
                         send_snapshot=self._snapshot_sender(n),
                         compaction=(c.snapshot_every, 1) if c.snapshot_every else
                         (SNAPSHOT_EVERY, LOG_TAIL_KEEP), **self._shell_kwargs())
        self._booted(n)

    def _shell_kwargs(self) -> dict[str, Any]:
        """More arguments for `MultiRaft` (none: DECIDE alone, its ledgers empty)."""
        return {}

    def _clock(self, n: SimNode) -> Callable[[], int]:
        def clock_ms() -> int:
            return n.clock_base + (self.now - n.booted_at) * TICK_MS
        return clock_ms

    def _crash(self, n: SimNode) -> None:
        """Like kill -9: the process is gone, only what the store wrote remains."""
        assert n.mr is not None and n.store is not None
        for k, v in n.mr.stats.items():
            self.shell_stats[k] = self.shell_stats.get(k, 0) + v
        n.mr = None
        n.store.close()  # a batch taken but not written is lost with the process
        n.store = None
        n.clients.clear()
        n.crash_armed = False
        self.stats["crashes"] += 1
        for other in self._live():
            if self._linked(n.id, other.id):
                # The connection drops (a cut one stalls): the peer reads what was in
                # flight before the end of the stream, so nothing arrives after it.
                self._break(n.id, other.id)

    def _live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.mr is not None]

    def _linked(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self.blocked

    def _sender(self, n: SimNode) -> Callable[[int, bytes], None]:
        def send(peer: int, data: bytes) -> None:
            if n.crash_armed and self.rng.random() < 0.3:
                raise _Crash
            self._send(n.id, peer, data)
        return send

    def _send(self, src: int, dst: int, data: bytes) -> None:
        c, rng = self.cfg, self.rng
        self.stats["frames"] += 1
        if rng.random() < 0.05:
            self.sample, self.sample_src = data, src
        if not self._linked(src, dst):
            self.stats["dropped"] += 1
            return
        if not self.healing and rng.random() < c.loss:
            self.stats["dropped"] += 1
            self._break(src, dst)
            return
        boot = self.nodes[dst].boots
        for _ in range(2 if rng.random() < c.duplicate else 1):
            due = self.now + rng.randint(1, c.delay_max)
            if not c.reorder:  # one stream per pair: frames arrive in order
                due = max(due, self.link_due.get((src, dst), 0))
                self.link_due[(src, dst)] = due
            self.seq += 1
            self.inflight.append((due, self.seq, src, dst, boot, data))

    def _break(self, a: int, b: int) -> None:
        """The connection between a and b broke: what was in flight on it is lost and
        both ends are told (the transport's `on_peer_lost`); the next frame reconnects.
        Frames are lost only this way, as over one TCP stream per pair."""
        self.stats["breaks"] += 1
        pair = {a, b}
        self.inflight = [x for x in self.inflight if {x[2], x[3]} != pair]
        for x, y in ((a, b), (b, a)):
            self.link_due.pop((x, y), None)
            mr = self.nodes[x].mr
            if mr is not None:
                mr.peer_lost(y)

    def _set_blocked(self, blocked: set[frozenset[int]]) -> None:
        """A partition (stalled links: nobody is told) or its heal. A healed link
        either got its frames through late (TCP retransmits) or was closed as stalled
        and redialled; the simulation drops them, so it breaks the link at the heal."""
        for pair in self.blocked - blocked:
            a, b = sorted(pair)
            self._break(a, b)
        self.blocked = blocked

    def _snapshot_sender(self, n: SimNode) -> Callable[[int, int, Message], None]:
        """The node's `send_snapshot`, as node/raft_snapshots.py behaves: one transfer
        per (peer, bucket) at a time (a repeat meanwhile is dropped), taking a few
        steps, its outcome reported later, a failure after FAILURE_BACKOFF_S."""
        def send_snapshot(peer: int, bucket: int, m: Message) -> None:
            if (peer, bucket) in n.sending or peer not in self.nodes:
                return
            n.sending.add((peer, bucket))
            self.stats["snapshots"] += 1
            self.seq += 1
            self.snaps.append((self.now + self.rng.randint(2, 10), self.seq, n.id, n.boots,
                               peer, self.nodes[peer].boots, bucket, m, None))
        return send_snapshot

    def _snapshots_due(self) -> None:
        due, self.snaps = take_due(self.snaps, self.now)
        due.sort()
        for _, _, src, src_boot, dst, dst_boot, bucket, m, outcome in due:
            sender, receiver = self.nodes[src], self.nodes[dst]
            if outcome is not None:  # the report reaches the leader's core
                if sender.mr is not None and sender.boots == src_boot:
                    sender.sending.discard((dst, bucket))
                    self._call(sender, "snapshot_status", MultiRaft.snapshot_status,
                               dst, bucket, outcome)
                continue
            ok = False
            if (receiver.mr is not None and receiver.boots == dst_boot
                    and self._linked(src, dst)
                    and (self.healing or self.rng.random() >= self.cfg.loss)):
                ok = bool(self._call(receiver, "receive_snapshot",
                                     MultiRaft.receive_snapshot, src, bucket, m))
            if not ok:
                self.stats["snapshots_failed"] += 1
            self.seq += 1
            self.snaps.append((self.now + (1 if ok else FAILURE_TICKS), self.seq, src,
                               src_boot, dst, dst_boot, bucket, m, ok))

    def _deliver_due(self) -> None:
        due, self.inflight = take_due(self.inflight, self.now)
        due.sort()
        if self.cfg.reorder:
            self.rng.shuffle(due)
        for _, _, src, dst, boot, data in due:
            n = self.nodes[dst]
            # A frame for an earlier boot went down with that process's connection.
            if n.mr is None or n.boots != boot or not self._linked(src, dst):
                continue
            self._call(n, "receive", MultiRaft.receive, src, data)

    def _call(self, n: SimNode, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into a node's shell: a crash armed for it may land inside; anything
        else that escapes the shell is a violation."""
        assert n.mr is not None
        try:
            return fn(n.mr, *args)
        except _Crash:
            self.stats["crashes_in_round"] += 1
            self._crash(n)
            return None
        except Violation:
            raise
        except Exception as exc:  # that is what is checked
            raise Violation(f"node {n.id}: {exc!r} escaped MultiRaft.{what}") from exc

    def _faults(self) -> None:
        c = self.cfg
        crashes_and_restarts(self.rng, self.nodes.values(), lambda n: n.mr is not None,
                             self._crash_now_or_in_round, self._boot, c.crash_p, c.restart_p)
        blocked = next_partition(self.rng, self.nodes, self.blocked, c.partition_p, c.heal_p)
        if blocked is not None:
            self._set_blocked(blocked)
            if blocked:  # a new cut, not a heal
                self.stats["partitions"] += 1

    def _crash_now_or_in_round(self, n: SimNode) -> None:
        if self.rng.random() < 0.5:
            self._crash(n)
        else:
            n.crash_armed = True  # inside its next round (or after it)

    def _garbage(self) -> None:
        """Frames no honest peer sends: bytes, truncated or padded frames, a frame
        under another peer's name, signatures that do not verify, odd answers."""
        live = self._live()
        if not live:
            return
        n = self.rng.choice(live)
        peer = self.rng.choice([p for p in self.nodes if p != n.id])
        kind = self.rng.randrange(6)
        sample = self.sample or Frame(peer).encode()
        if kind == 0:
            data = self.rng.randbytes(self.rng.randint(0, 64))
        elif kind == 1:
            data = sample[:self.rng.randint(0, max(0, len(sample) - 1))]
        elif kind == 2:
            data = sample + self.rng.randbytes(self.rng.randint(1, 8))
        elif kind == 3:
            data = sample  # under another peer's name
            peer = next(p for p in self.nodes if p not in (n.id, self.sample_src))
        elif kind == 4:
            b = self.rng.randrange(self.cfg.buckets)
            data = Frame(peer, sigs=(SigNote(b, self.rng.randint(1, 50), 1, bytes(32), 0,
                                             bytes(64)),)).encode()
        else:  # answers to a request in flight, when there is one: malformed, odd
            assert n.mr is not None
            req = min((r for r, a in n.mr.router.asked.items() if not a.event.is_set()),
                      default=1)
            data = Frame(peer, responses=(
                DecideResponse(req, self.rng.random() < 0.5, (1, 2, 3), "not_leader:x9"),
            )).encode()
        self.stats["garbage"] += 1
        self._call(n, "receive", MultiRaft.receive, peer, data)

    # -- clients --

    def _submit(self, need: bytes | None = None, at: SimNode | None = None) -> None:
        live = self._live()
        if not live:
            return
        n = at or self.rng.choice(live)
        assert n.mr is not None
        need = need or self.rng.choice(self.need_ids)
        cmd = TryDecide(need, b"p%d-%d" % (n.id, self.rng.getrandbits(32)))
        n.clients.append(Client(cmd, bucket_of(need, self.cfg.buckets), n.mr.now_tick))
        self.submitted.add(need)

    def _step_clients(self, n: SimNode) -> None:
        for client in list(n.clients):
            if n.mr is None:
                return
            done = self._call(n, "try_decide", self._client_step, client)
            if done is not None and n.mr is not None:
                n.clients.remove(client)
                if isinstance(done, Decision):
                    self._record(done, f"answer to node {n.id}'s client")

    def _client_step(self, mr: MultiRaft, c: Client) -> Decision | bool | None:
        """One pass of `MultiRaft._route` for a DECIDE, as far as it can go in this step:
        a Decision when answered, False when the call timed out, None to go on."""
        now = mr.now_tick
        if now - c.started > CLIENT_TIMEOUT_TICKS:
            if c.state == "remote":
                mr.router.take(c.req)
            self.stats["client_timeouts"] += 1
            return False
        g = mr.groups.get(c.bucket)
        if c.state == "local":
            d = g.machine.get(c.cmd.need_id) if g is not None else None
            if d is not None:
                self.stats["answers_local"] += 1
                return d
            if now < c.until:
                return None
            c.attempt += 1
        elif c.state == "remote":
            if not mr.router.has_answer(c.req) and now < c.until and mr.alive(c.peer):
                return None
            try:
                answer = mr.router.read(DECIDE, c.cmd, mr.router.take(c.req))
            except DecideError:
                self.stats["client_errors"] += 1  # try_decide raises it to its caller
                return False
            if isinstance(answer, Decision):
                self.stats["answers_remote"] += 1
                return answer
            c.hint = leader_named(answer, list(self.placement.replicas(c.bucket)))
            if not c.hint:
                c.state, c.until = "sleep", now + min(c.attempt, 10)
                return None
        elif c.state == "sleep" and now < c.until:
            return None
        c.state = "idle"
        if g is not None:
            d = g.machine.get(c.cmd.need_id)
            if d is not None:
                self.stats["answers_local"] += 1
                return d
            if g.raw.raft.role == Role.LEADER:
                if mr.router.propose(DECIDE, g, c.cmd):
                    c.state, c.until = "local", now + ATTEMPT_TICKS
                else:
                    c.state, c.until, c.attempt = "sleep", now + 1, c.attempt + 1
                return None
        target = mr.router.next_hop(c.bucket, c.hint, c.attempt)
        c.hint = NONE
        c.attempt += 1
        if target == mr.id:
            c.state, c.until = "sleep", now + 1  # a replica without a leader yet
            return None
        c.req, c.peer = mr.router.ask(DECIDE, target, c.cmd), target
        c.state, c.until = "remote", now + ATTEMPT_TICKS
        return None

    # -- the rounds --

    def _round(self, n: SimNode) -> None:
        """What `MultiRaft.run` does when woken: Ready rounds until nothing is left,
        then announce what was certified."""
        for _ in range(8):
            if n.mr is None or not n.mr.wake.is_set():
                break
            n.mr.wake = trio.Event()
            self._call(n, "process_ready", MultiRaft.process_ready)
        if n.crash_armed and n.mr is not None:
            self.stats["crashes_in_round"] += 1
            self._crash(n)  # after the round's sends
        if n.mr is not None:
            while n.mr.certs.to_publish:
                d, cert = n.mr.certs.to_publish.pop(0)
                self._announce(n, d, cert)

    def _announce(self, n: SimNode, d: Decision, cert: dict[str, Any]) -> None:
        """A certified DECIDE going out: it must verify as every node's pipeline checks
        it, and state the decision the replicas applied."""
        b = bucket_of(d.need_id, self.cfg.buckets)
        cmd = TryDecide(d.need_id, d.proposal_id, d.k_plan, d.epoch)
        digest = certificate.entry_hash(encode_command(cmd, cert["ts_ms"]))
        try:
            certificate.check(cert, self.swarm_id, self.placement, b, digest)
        except certificate.CertificateError as exc:
            raise Violation(f"certificate: node {n.id} announced need "
                            f"{d.need_id.hex()[:8]} with a certificate that does not "
                            f"verify: {exc}") from exc
        if (cert["index"], cert["term"]) != (d.index, d.term) or cert["ts_ms"] > d.ts_ms:
            raise Violation(f"certificate: node {n.id} certified index {cert['index']} "
                            f"term {cert['term']} stamp {cert['ts_ms']} for a decision at "
                            f"{d.index}/{d.term} ts {d.ts_ms}")
        applied = self.entry_at.get((b, d.index))
        if applied is not None and applied != (d.term, digest):
            raise Violation(f"certificate: node {n.id} certified need {d.need_id.hex()[:8]} "
                            f"at bucket {b} index {d.index}, which holds another entry")
        self._record(d, f"node {n.id}'s certificate")
        self.certified[d.need_id] = d
        for other in self.nodes.values():
            if other.mr is not None and self._linked(n.id, other.id):
                other.heard.add(d.need_id)

    # -- checkers --

    def _record(self, d: Decision, where: str) -> None:
        first = self.decision.setdefault(d.need_id, d)
        if first != d:
            raise Violation(f"P1: need {d.need_id.hex()[:8]}: {where} says {_fmt(d)}, "
                            f"earlier {_fmt(first)}")

    def _check(self) -> None:
        for n in self._live():
            mr = n.mr
            assert mr is not None
            for b, g in mr.groups.items():
                r = g.raw.raft
                if r.role == Role.LEADER:
                    other = self.leader_of.setdefault((b, r.term), n.id)
                    if other != n.id:
                        raise Violation(f"election safety: nodes {other} and {n.id} both "
                                        f"lead bucket {b} in term {r.term}")
                applied = r.log.applied
                lo = n.checked.get(b, 0) + 1
                if applied < lo:
                    continue
                n.checked[b] = applied
                try:
                    entries = r.log.slice(max(lo, r.log.first_index()), applied + 1, 1 << 40)
                except Compacted:
                    entries = []
                for e in entries:
                    digest = certificate.entry_hash(bytes([e.kind]) + e.data
                                                    if e.kind else e.data)
                    seen = self.entry_at.setdefault((b, e.index), (e.term, digest))
                    if seen != (e.term, digest):
                        raise Violation(f"state machine safety: node {n.id} applied a "
                                        f"different entry at bucket {b} index {e.index} "
                                        f"(term {e.term}, first seen term {seen[0]})")
                for d in g.machine.decisions.values():
                    self._record(d, f"node {n.id}'s state machine")

    # -- the run --

    def step(self, faults: bool) -> None:
        self.now += 1
        rng = self.rng
        if faults:
            self._faults()
            if rng.random() < self.cfg.garbage_p:
                self._garbage()
            if rng.random() < self.cfg.submit_p:
                self._submit()
        self._deliver_due()
        self._snapshots_due()
        for n in self._live():
            if self.now % n.tick_every == 0:
                self._call(n, "tick", MultiRaft.tick)
        for n in self._live():
            self._step_clients(n)
        for n in self._live():
            self._round(n)
        self._check()

    def run(self, progress: Callable[[int], None] | None = None) -> ShellSimResult:
        c = self.cfg
        quiet = logging.getLogger("swarm.raft")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # garbage frames are logged; that is expected here
        try:
            run_then_heal(c.seed, lambda: self.now, self.step, c.steps, self._heal, progress)
        finally:
            quiet.setLevel(level)
            self.close()
        stats = dict(self.shell_stats)
        return ShellSimResult(
            seed=c.seed, steps=self.now, needs=len(self.submitted), decided=len(self.decision),
            certified=len(self.certified), crashes=self.stats["crashes"],
            crashes_in_round=self.stats["crashes_in_round"],
            partitions=self.stats["partitions"], frames=self.stats["frames"],
            dropped=self.stats["dropped"], breaks=self.stats["breaks"],
            snapshots=self.stats["snapshots"], snapshots_failed=self.stats["snapshots_failed"],
            garbage=self.stats["garbage"],
            elections=len(self.leader_of), takeovers=stats.get("takeovers", 0),
            transfers=stats.get("leader_transfers", 0),
            answers_remote=self.stats["answers_remote"],
            answers_local=self.stats["answers_local"],
            client_timeouts=self.stats["client_timeouts"],
            sigs_shared=stats.get("sigs_shared", 0),
            clocks_far_ahead=self.stats["clocks_far_ahead"],
            stamps_refused=stats.get("appends_stamped_ahead", 0), digest=self._digest())

    def _heal(self) -> None:
        """No more faults: every node up, the network whole and lossless. Every NEED
        submitted must be decided on every replica of its bucket, and certified."""
        self._set_blocked(set())
        self.healing = True
        for n in self.nodes.values():
            if n.mr is None:
                self._boot(n)
            elif n.far_ahead:  # its operator fixes the clock
                n.clock_base -= FAR_AHEAD_MS
                n.far_ahead = False
        if not heal_steps(self.step, self._settled, self._retry, self.cfg.heal_steps,
                          retry_every=50, retry_at=0):
            raise Violation(f"liveness: after healing for {self.cfg.heal_steps} steps: "
                            f"{self._unsettled()}")
        # Every replica rejoins its group: one left campaigning (under a quiet leader
        # that never heartbeats it) is a fault less tolerated until the bucket's next
        # entry, and the soak once found such replicas (docs/SOAK.md).
        for _ in range(self.cfg.heal_steps):
            if not self._campaigning():
                break
            self.step(faults=False)
        else:
            raise Violation(f"liveness: after healing, replicas still campaigning: "
                            f"{self._campaigning()[:5]}")
        for n in self.nodes.values():  # fold the survivors' counters in
            assert n.mr is not None
            for k, v in n.mr.stats.items():
                self.shell_stats[k] = self.shell_stats.get(k, 0) + v

    def _retry(self) -> None:
        """Callers retry what is still undecided, each from some node."""
        for need in sorted(self.submitted - set(self.decision)):
            self._submit(need)

    def _campaigning(self) -> list[str]:
        return [f"node{i}/bucket{b}:{g.raw.raft.role.name.lower()}"
                for i, n in sorted(self.nodes.items()) if n.mr is not None
                for b, g in sorted(n.mr.groups.items())
                if g.raw.raft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)]

    def _settled(self) -> bool:
        return not self._unsettled()

    def _unsettled(self) -> str:
        undecided = sorted(self.submitted - set(self.decision))
        if undecided:
            return f"undecided needs {[x.hex()[:8] for x in undecided[:5]]}"
        for need in sorted(self.decision):
            d = self.decision[need]
            behind = [n for n in self.placement.replicas(d.bucket)
                      if (mr := self.nodes[n].mr) is None
                      or mr.groups[d.bucket].machine.get(need) != d]
            # With frames reordered (beyond TCP), a follower may take the append that
            # carries the last commit index before the entry it commits, and a quiet
            # leader sends no other: there, a quorum of replicas must have applied it.
            allowed = (len(self.placement.replicas(d.bucket))
                       - self.placement.quorum(d.bucket)) if self.cfg.reorder else 0
            if len(behind) > allowed:
                return (f"need {need.hex()[:8]} (bucket {d.bucket}) not applied on "
                        f"replicas {behind}")
            if need not in self.certified:
                return f"need {need.hex()[:8]} (bucket {d.bucket}) has no certificate"
        return ""

    def _digest(self) -> str:
        h = hashlib.sha256()
        for need in sorted(self.decision):
            h.update(repr(self.decision[need]).encode())
        return h.hexdigest()[:16]

    def close(self) -> None:
        for n in self.nodes.values():
            if n.store is not None:
                n.store.close()
                n.store = None
            n.mr = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _fmt(d: Decision) -> str:
    return (f"proposal {d.proposal_id!r} at index {d.index} term {d.term} "
            f"ts {d.ts_ms}")


def _tmp_base() -> str | None:
    """Where the stores go: RAFT_SIM_TMP, else /dev/shm (a synced write there costs
    15 us instead of 240 us on this machine's disk), else the default."""
    base = os.environ.get("RAFT_SIM_TMP")
    if base:
        return base
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def run_seed(seed: int) -> ShellSimResult:
    """Run one seed's schedule; raises Violation naming the seed and step on a failure."""
    return ShellSim(ShellSimConfig.for_seed(seed)).run()


__all__ = ["ShellSim", "ShellSimConfig", "ShellSimResult", "Violation", "run_seed"]
