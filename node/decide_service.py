"""DECIDE in the node: multi-raft on its store and transport, certified announcements,
and the certified-decision read replica every node keeps.

Owns the wiring between `MultiRaft` (node/multiraft.py), its libp2p transport
(node/raft_transport.py) and the rest of the node: committed, certified decisions are
announced as DECIDE envelopes on gossip (so they reach every node, and catch-up brings
them to nodes that were away); every node checks a DECIDE envelope's certificates before
it is stored or applied (`check_envelope`, run by the pipeline), and records each
certified decision in `certified` -- the read replica that non-replica nodes answer from
without trusting any single peer.

Announcements are batched, and one validator makes them for the whole swarm: the
lowest-numbered one this node takes to be alive (`Peers.announcer`). Other bucket
leaders send it their certified decisions in their next Raft frame to it; it checks
each certificate and queues them. It publishes a DECIDE envelope stating up to
1 + DECIDE_ALSO_MAX decisions as soon as one is full, else at most one per
ANNOUNCE_WINDOW_S; the first decision after a quiet spell goes out at once. A gossiped
envelope costs every node about 2.5 ms of CPU whatever it carries, so five announcers
with small envelopes cost several times the CPU of one with full ones, and that CPU
came in bursts on every node at once that delayed the DECIDEs in flight (docs/RAFT.md).
A decision lost on its way is announced by the replicas' fallback (`MultiRaft`).
Receivers check a gossiped DECIDE's certificates a decision at a time, pausing between
them (`precheck`), for the same reason. Callers never wait for announcements: they get
the committed decision from Raft.

Only NEEDs are decided: a decision asked through the control API, or relayed by a node
that is not a validator, names the id of a NEED envelope this node has applied
(`require_need`), else it is refused -- after waiting up to NEED_WAIT_S for it, since a
NEED posted on another node a moment ago may still be on its way by gossip. A node whose
config sets `decide_unknown_needs` skips the check (benchmarks and Raft tests decide
made-up ids chosen to land in given buckets).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from swarm.policy_wasm import abi
from swarm.protocol import cbor, certificate
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid
from swarm.protocol.decide import (
    SUBMISSION_BYTES_MAX,
    SUBMISSION_TIMEOUT_MS_MAX,
    Decision,
    TryDecide,
    decode_answer,
    decode_submission,
    encode_answer,
    encode_submission,
    request_payload,
)
from swarm.protocol.envelope import Envelope, Identity
from swarm.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.placement import Placement
from swarm.protocol.raft import NONE, Message
from swarm.protocol.raftwire import Announcement
from swarm.protocol.verbs import DECIDE_ALSO_MAX

from . import relay
from .client import OUTCOME_WAIT_S_DEFAULT
from .multiraft import MultiRaft
from .pipeline import Verdict
from .policy import WasmPolicy
from .raft_group import TICK_MS
from .raft_kinds import DecideError
from .raft_snapshots import SnapshotReceiver, SnapshotStreams, snapshot_protocol
from .raft_transport import RaftTransport, raft_protocol
from .raftstore import RaftStore

log = logging.getLogger("swarm.decide")

RAFT_DIR = "raft"
CERTIFIED_MAX = 1_000_000
ANNOUNCE_WINDOW_S = 1.0
ANNOUNCE_FULL = 1 + DECIDE_ALSO_MAX  # decisions that fill an envelope
# Between two decisions' certificate checks, a gossiped DECIDE lets the node's other work
# run for this long: checking all of a full one at once took every node 5-8 ms of CPU
# at the same moment, and the DECIDEs in flight then waited (docs/RAFT.md).
PRECHECK_PACE_S = 0.002
PRECHECKED_MAX = 1024
ALSO_KEY_BYTES = 5  # the `also` key in DAG-CBOR
LIST_HEAD_BYTES_MAX = 3  # a list's head, for up to 65535 items
ANNOUNCE_QUEUE_MAX = 100_000  # beyond it the oldest wait for the replicas' fallback
# How long a decision waits for its NEED to arrive here before it is refused, and how
# often it looks: gossip brings a NEED in well under a second on a healthy swarm.
NEED_WAIT_S = 10.0
NEED_POLL_S = 0.05


class UnknownNeed(LocalProtocolError):
    """No NEED with this id is applied here (yet)."""

    code = "unknown_need"


class Certified(NamedTuple):
    """A certified decision in the read replica (keyed by its NEED's CID bytes)."""

    proposal_id: str
    k_plan: int
    epoch: int
    bucket: int
    log_index: int  # where the bucket committed it ("index" in the API)
    term: int
    ts_ms: int
    signers: int
    envelope: bytes  # the CID bytes of the DECIDE that stated it


class RaftCollector(Collector):
    """Raft figures read at scrape time from the running multi-raft."""

    def __init__(self, service: DecideService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        raft = self.service.raft
        groups = raft.groups.values()
        g = GaugeMetricFamily("swarm_raft_buckets", "Buckets this node replicates, by role",
                              labels=["role"])
        for role in ("leader", "follower", "pre_candidate", "candidate"):
            g.add_metric([role], sum(1 for x in groups if x.raw.raft.role.name.lower() == role))
        yield g
        yield GaugeMetricFamily("swarm_raft_quiet_buckets",
                                "Buckets led here that went quiet (idle, caught up)",
                                value=sum(1 for x in groups if x.quiet))
        c = CounterMetricFamily("swarm_raft_events", "Raft shell events by kind",
                                labels=["kind"])
        snaps = self.service.snapshots
        events = dict(raft.stats)
        if snaps is not None:
            events.update({**snaps.stats, **snaps.receiver.stats})
        for kind, value in sorted(events.items()):
            c.add_metric([kind], value)
        yield c
        yield CounterMetricFamily("swarm_raft_synced_writes",
                                  "Synced RocksDB writes of Raft state (one per round)",
                                  value=self.service.store.synced_writes)
        yield CounterMetricFamily("swarm_decide_announcements",
                                  "DECIDE envelopes this node published (each states up to "
                                  f"{1 + DECIDE_ALSO_MAX} certified decisions)",
                                  value=self.service.announcements)
        yield GaugeMetricFamily("swarm_decisions_certified",
                                "Certified decisions in this node's read replica",
                                value=len(self.service.certified))
        refused = CounterMetricFamily(
            "swarm_ledger_rejected", "Bucket entries refused without deciding anything, by "
            "code (a broken envelope, an unauthenticated effect or acknowledgement, an "
            "entry rolled back as internal), summed over the buckets replicated here",
            labels=["code"])
        codes: dict[str, int] = {}
        for x in [*groups, *raft.halted.values()]:
            for code, n in x.machine.refused.items():
                codes[code] = codes.get(code, 0) + n
        for code, n in sorted(codes.items()):
            refused.add_metric([code], n)
        yield refused
        kinds = CounterMetricFamily(
            "swarm_bucket_entries", "Bucket entries applied here as a replica, by what "
            "they carried (a lifecycle verb, or a ledger body's type), summed over the "
            "buckets replicated here", labels=["kind"])
        counted: dict[str, int] = {}
        for x in groups:
            for kind, n in x.machine.entry_kinds.items():
                counted[kind] = counted.get(kind, 0) + n
        for kind, n in sorted(counted.items()):
            kinds.add_metric([kind], n)
        yield kinds
        yield GaugeMetricFamily("swarm_raft_halted_buckets",
                                "Buckets this node stopped serving because their state "
                                "machine could not apply an entry alike on every replica",
                                value=len(raft.halted))


# The node's other parts, as the service uses them.
Sign = Callable[[str, dict[str, Any], int], Envelope]  # kind, payload, ts_ms: signed by us
Publish = Callable[[str, Any, str, list[Cid]], Awaitable[Any]]  # kind, payload, thread, refs


class DecideService:
    """`genesis`, `identity`: the swarm's and this node's. `home`: the node's home, whose
    RAFT_DIR holds the Raft store. `policy` judges DECIDE requests relayed by other
    nodes; `sign` makes this node's own envelopes and `publish` gossips one.
    `is_applied(cid)` and `applied_kind(cid)` read the plan's replica (whether an
    envelope is applied here, and of which kind). The libp2p host comes to `run`."""

    def __init__(self, genesis: Genesis, identity: Identity, home: Path, policy: WasmPolicy,
                 registry: CollectorRegistry, *, sign: Sign, publish: Publish,
                 is_applied: Callable[[Cid], bool],
                 applied_kind: Callable[[Cid], str | None],
                 decide_unknown_needs: bool = False) -> None:
        self.genesis = genesis
        self.policy = policy
        self.sign = sign
        self.publish = publish
        self.is_applied = is_applied
        self.applied_kind = applied_kind
        self.decide_unknown_needs = decide_unknown_needs
        self.host: IHost | None = None
        self.placement = Placement.from_genesis(genesis)
        self.store = RaftStore(home / RAFT_DIR)
        # The read replica. Plain tuples of numbers, strings and bytes: a full envelope's
        # 64 decisions stored as dicts of strings cost 0.58 ms, on every node at the same
        # moment, and a million of them would be garbage-collector work for good.
        self.certified: dict[bytes, Certified] = {}
        self.raft = MultiRaft(identity, genesis.swarm_id, self.placement,
                              self.store, self._send, self._publish,
                              announced=self._announced,
                              genesis=genesis, send_snapshot=self._send_snapshot)
        self.transport: RaftTransport | None = None
        self.snapshots: SnapshotStreams | None = None
        self.submission_protocol = TProtocol(f"/can-swarm/{genesis.short_id}/decide/1.0.0")
        self.submissions = relay.Server(SUBMISSION_BYTES_MAX, self._serve_submission)
        self.announce_queue: deque[tuple[Decision, dict[str, Any]]] = deque()
        # What the policy allows a DECIDE (None: it allows none, so one per envelope and
        # the denial is logged).
        self.decide_rule = policy.host.rules().get("DECIDE")
        self.announce_ready = trio.Event()
        self.announcements = 0  # envelopes published
        # Gossiped DECIDEs whose certificates `precheck` is checking, and those it passed
        # (the pipeline judges each right after, so this stays small).
        self._prechecking: dict[bytes, trio.Event] = {}
        self._queued: set[bytes] = set()  # NEEDs in announce_queue
        self._to_check: deque[Announcement] = deque()  # relayed, not checked yet
        self._check_ready = trio.Event()
        self.raft.relayed = self._relayed
        self._prechecked: dict[bytes, None] = {}
        registry.register(RaftCollector(self))
        self.decide_seconds = Histogram(
            "swarm_decide_seconds", "DECIDE submitted through this node's API, to the "
            "committed answer", buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5, 1, 2.5, 5, 10), registry=registry)
        self.write_seconds = Histogram(
            "swarm_raft_write_seconds", "Synced writes of Raft state (one per round), which "
            "hold the event loop", buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005,
                                            0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=registry)
        self.store.observe_write = self.write_seconds.observe

    def close(self) -> None:
        self.store.close()

    def _announced(self, need_id: bytes) -> bool:
        """Whether a DECIDE stating this NEED's decision is out (MultiRaft stops
        re-sending it and may compact past it). With the read replica full, the node can
        no longer tell, and takes every decision for announced rather than re-send each
        for an hour and never compact again."""
        return need_id in self.certified or len(self.certified) >= CERTIFIED_MAX

    def _send(self, peer: int, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.send(peer, frame)

    def _send_snapshot(self, peer: int, bucket: int, m: Message) -> None:
        if self.snapshots is not None:
            self.snapshots.send(peer, bucket, m)

    def _addrs_of(self, node_id: int) -> list[str]:
        v = self.genesis.value["validators"][node_id - 1]
        return [a for a in v.get("addrs", []) if "/p2p/" not in a] + [
            a.split("/p2p/", 1)[0] for a in v.get("addrs", []) if "/p2p/" in a]

    async def run(self, host: IHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host = host
        short_id = self.genesis.short_id
        self.transport = RaftTransport(
            host, raft_protocol(short_id), self.placement, self.raft.id,
            self._addrs_of, self.raft.receive, self.raft.peer_lost, self.raft.peer_connected)
        self.snapshots = SnapshotStreams(
            host, snapshot_protocol(short_id), self.placement, self.raft.id,
            SnapshotReceiver(self.placement.bucket_count, len(self.placement.accounts),
                             self.raft.receive_snapshot), self.raft.snapshot_status)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            await nursery.start(self.snapshots.run)
            await nursery.start(self.raft.run)
            nursery.start_soon(self._announcer)
            nursery.start_soon(self._checker)
            if self.raft.id != NONE:
                host.set_stream_handler(self.submission_protocol, self.submissions)
            log.info("raft started id=%d buckets=%d", self.raft.id, len(self.raft.groups))
            task_status.started()

    # -- announcements and the read replica --

    async def _publish(self, d: Decision, cert: dict[str, Any]) -> None:
        """MultiRaft's announcement callback: a certified decision this node holds. One
        validator announces for the whole swarm (`Peers.announcer`, node/raft_peers.py); the others
        send theirs to it in their next Raft frame to it. Every gossiped envelope costs
        every node about 2.5 ms of CPU whatever it carries, so five announcers sent
        several times the envelopes one does."""
        target = self.raft.peers.announcer()
        if target != self.raft.id:
            self.raft.certs.forward_announcement(target, d, cert)
        else:
            self._enqueue(d, cert)

    def _enqueue(self, d: Decision, cert: dict[str, Any]) -> None:
        if d.need_id in self.certified or d.need_id in self._queued \
                or len(self.announce_queue) >= ANNOUNCE_QUEUE_MAX:
            return  # known, queued already, or left to the replicas' fallback
        self._queued.add(d.need_id)
        self.announce_queue.append((d, cert))
        self.announce_ready.set()

    def _relayed(self, sender: int, a: Announcement) -> None:
        """A certified decision validator `sender` sent us to announce; `_checker` checks
        it before it is queued."""
        if len(self._to_check) < ANNOUNCE_QUEUE_MAX:
            self._to_check.append(a)
            self._check_ready.set()

    async def _checker(self) -> None:
        """Check relayed decisions' certificates before they join the announcement
        queue: one bad certificate gets the whole DECIDE rejected by every node and its
        sender penalised. The event loop runs between decisions."""
        while True:
            await self._check_ready.wait()
            self._check_ready = trio.Event()
            while self._to_check:
                a = self._to_check.popleft()
                if a.need_id not in self.certified and a.need_id not in self._queued:
                    item = self._certify_relayed(a)
                    if item is not None:
                        self._enqueue(*item)
                    await trio.lowlevel.checkpoint()

    def _certify_relayed(self, a: Announcement) -> tuple[Decision, dict[str, Any]] | None:
        try:
            cert = certificate.check_relayed(a, self.genesis.swarm_id, self.placement)
        except RemoteProtocolError as exc:
            self.raft.stats["announcements_rejected"] += 1
            log.warning("a relayed decision for %s does not verify: %s",
                        a.need_id.hex()[:16], exc)
            return None
        self.raft.stats["announcements_relayed"] += 1
        return Decision(a.need_id, a.proposal_id, a.k_plan, a.epoch, a.bucket, a.index,
                        a.term, a.ts_ms), cert

    async def _announcer(self) -> None:
        last = -ANNOUNCE_WINDOW_S
        async with trio.open_nursery() as nursery:
            while True:
                await self.announce_ready.wait()
                self.announce_ready = trio.Event()
                # A full envelope goes out at once: waiting out the window would only
                # make the next one bigger than an envelope may be.
                with trio.move_on_at(last + ANNOUNCE_WINDOW_S):
                    while len(self.announce_queue) < ANNOUNCE_FULL:
                        await self.announce_ready.wait()
                        self.announce_ready = trio.Event()
                last = trio.current_time()
                while self.announce_queue:
                    payload = pack_decisions(self.announce_queue, self.decide_rule)
                    for p in certificate.announced(payload):
                        self._queued.discard(p["need_id"].raw)
                    # Not awaited here: publishing waits for the node's grouped fsync.
                    nursery.start_soon(self._announce, payload)

    async def _announce(self, payload: dict[str, Any]) -> None:
        needs = [d["need_id"] for d in certificate.announced(payload)]
        refs = [n for n in dict.fromkeys(needs) if self.is_applied(n)]
        try:
            await self.publish("DECIDE", payload, "decide", refs)
            self.announcements += 1
        except Exception as exc:  # noqa: BLE001 - the replicas' fallback announces them
            log.warning("announcing %d decisions failed: %r", len(needs), exc)

    async def precheck(self, env: Envelope) -> bool:
        """Check a gossiped DECIDE's certificates ahead of the pipeline, letting the
        event loop run between decisions: a full DECIDE is about 130 signature checks,
        8 ms of CPU, which every node spent at the same moment while the DECIDEs in
        flight waited. Passed, the pipeline's certificate stage skips it; failed, that stage
        checks it again and rejects it with the reason. False: another copy of it was
        being checked, and this one waited for that copy to be judged."""
        key = env.id.raw
        running = self._prechecking.get(key)
        if running is not None:
            await running.wait()
            return False
        done = self._prechecking[key] = trio.Event()
        try:
            for _ in certificate.checking_announcement(
                    env.payload, self.genesis.swarm_id, self.placement):
                await trio.sleep(PRECHECK_PACE_S)
            self._prechecked[key] = None
            while len(self._prechecked) > PRECHECKED_MAX:
                del self._prechecked[next(iter(self._prechecked))]
        except RemoteProtocolError:
            pass
        finally:
            del self._prechecking[key]
            done.set()
        return True

    def check_envelope(self, env: Envelope) -> None:
        """The pipeline's certificate stage: every decision a DECIDE states must carry a
        certificate by a quorum of its NEED's bucket's replicas over exactly it."""
        if env.kind != "DECIDE":
            return
        if env.id.raw in self._prechecked:
            del self._prechecked[env.id.raw]
            return
        certificate.check_announcement(env.payload, self.genesis.swarm_id,
                                       self.placement)

    def accepted(self, env: Envelope) -> None:
        """A stored DECIDE (its certificates checked): record its decisions in the read
        replica."""
        if env.kind != "DECIDE":
            return
        for p in certificate.announced(env.payload):
            need: Cid = p["need_id"]
            if need.raw in self.certified or len(self.certified) >= CERTIFIED_MAX:
                continue
            c = p["cert"]
            self.certified[need.raw] = Certified(
                p["proposal_id"], p["k_plan"], p["epoch"], c["bucket"], c["index"],
                c["term"], c["ts_ms"], len(c["sigs"]), env.id.raw)

    def certified_json(self, need_id: bytes) -> dict[str, Any] | None:
        """A decision of the read replica as the API shows it."""
        c = self.certified.get(need_id)
        if c is None:
            return None
        return {"need_id": str(Cid(need_id)), "proposal_id": c.proposal_id,
                "k_plan": c.k_plan, "epoch": c.epoch, "bucket": c.bucket, "index": c.log_index,
                "term": c.term, "ts_ms": c.ts_ms, "signers": c.signers,
                "envelope": str(Cid(c.envelope))}

    # -- the API's operations --

    async def try_decide(self, need_id: str, proposal_id: str, k_plan: int = 0,
                         epoch: int = 0,
                         timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        need = Cid.parse(need_id, "need_id")
        try:
            cmd = TryDecide(need.raw, proposal_id.encode(), k_plan, epoch)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.field, exc.reason) from None
        started = time.monotonic()
        if self.raft.id == NONE:
            d = await self._submit_through_validator(cmd, timeout_s)
        else:
            d = await self.raft.try_decide(cmd, timeout_s=timeout_s)
        self.decide_seconds.observe(time.monotonic() - started)
        return decision_json(d)

    async def require_need(self, need: Cid, wait_s: float) -> float:
        """Refuse to decide `need` unless it is a NEED applied here, waiting up to
        `wait_s` for it to arrive. Returns the seconds waited; raises UnknownNeed, or
        LocalProtocolError (code not_a_need) for the id of another kind of envelope."""
        if self.decide_unknown_needs:
            return 0.0
        started = trio.current_time()
        deadline = started + wait_s
        while (kind := self.applied_kind(need)) is None and trio.current_time() < deadline:
            await trio.sleep(NEED_POLL_S)
        if kind is None:
            raise UnknownNeed("need_id", f"no NEED {need} is known to this node (waited "
                                         f"{wait_s:g} s for it to arrive)")
        if kind != "NEED":
            raise LocalProtocolError("need_id", f"{need} is a {kind} envelope, not a NEED",
                                     code="not_a_need")
        return trio.current_time() - started

    # -- submissions of nodes that are not validators --

    async def _submit_through_validator(self, cmd: TryDecide, timeout_s: float) -> Decision:
        """Ask connected validators, one after another until one answers the committed
        decision or `timeout_s` passes. The answer is one validator's word; the certified
        DECIDE that follows is what this node's read replica trusts."""

        def parse(data: bytes) -> Decision:
            d = decode_answer(data)
            if (d.need_id, d.k_plan, d.epoch) != (cmd.need_id, cmd.k_plan, cmd.epoch) or \
                    d.bucket != bucket_of(cmd.need_id, self.placement.bucket_count):
                raise RemoteProtocolError("answer", "states another NEED or bucket")
            return d

        request = self.sign("DECIDE", request_payload(cmd), time.time_ns() // 1_000_000)
        assert self.host is not None, "run() gives the host"
        try:
            return await relay.ask_validators(
                self.host, self.placement, self.submission_protocol,
                lambda ms: encode_submission(request.wire, ms), SUBMISSION_BYTES_MAX, parse,
                timeout_s, SUBMISSION_TIMEOUT_MS_MAX)
        except relay.NoValidator:
            raise DecideError("this node is not a validator and is connected to none; "
                              "connect to a validator (swarm-node peers connect) or submit "
                              "through a validator's control API") from None
        except TimeoutError as exc:
            raise DecideError(f"no validator answered a decision within {timeout_s:g} s "
                              f"({exc})") from None

    async def _serve_submission(self, data: bytes) -> bytes:
        """A node that is not a validator asks us to submit a DECIDE for it. Here the
        request enters Raft: the swarm's policy judges the asker's signed request as it
        judges gossip (per-sender rate, the DECIDE rule), counted like any other."""
        try:
            request, cmd, timeout_ms = decode_submission(data, self.genesis.swarm_id)
            decision = self.policy.evaluate(request)
            if decision.verdict is not Verdict.ACCEPT:
                return encode_answer(None, f"policy: the swarm's policy denies this DECIDE: "
                                           f"{decision.reason}")
            timeout_s = timeout_ms / 1000
            timeout_s -= await self.require_need(Cid.from_bytes(cmd.need_id, "need_id"),
                                                 min(timeout_s, NEED_WAIT_S))
        except ProtocolError as exc:
            return encode_answer(None, f"{exc.field}: {exc.reason}")
        try:
            return encode_answer(await self.raft.try_decide(cmd, timeout_s=max(timeout_s,
                                                                               0.001)))
        except DecideError as exc:
            return encode_answer(None, exc.reason)

    def decision(self, need_id: str) -> dict[str, Any] | None:
        need = Cid.parse(need_id, "need_id")
        certified = self.certified_json(need.raw)
        if certified is not None:
            return {**certified, "certified": True}
        d = self.raft.local_decision(need.raw)
        return {**decision_json(d), "certified": False} if d is not None else None

    def status(self, bucket: int | None = None) -> dict[str, Any]:
        rows = self.raft.status(bucket)
        mine = [r for r in rows if r.get("replica")]
        return {
            "node_id": self.raft.id, "bucket_count": self.placement.bucket_count,
            "replicas_per_bucket": self.placement.replicas_per_bucket,
            "tick_ms": TICK_MS,
            "replicated": len(self.raft.groups),
            "leading": sum(1 for r in mine if r.get("role") == "leader"),
            "quiet": sum(1 for r in mine if r.get("quiet")),
            "certified_decisions": len(self.certified),
            "announcements": self.announcements,
            "synced_writes": self.store.synced_writes,
            "stats": dict(self.raft.stats),
            "transport": dict(self.transport.stats) if self.transport else {},
            "buckets": rows,
        }


def decision_json(d: Decision) -> dict[str, Any]:
    return {"need_id": str(Cid(d.need_id)), "proposal_id": d.proposal_id.decode(
        errors="replace"), "k_plan": d.k_plan, "epoch": d.epoch, "bucket": d.bucket,
        "index": d.index, "term": d.term, "ts_ms": d.ts_ms}


def pack_decisions(queue: deque[tuple[Decision, dict[str, Any]]],
                   rule: abi.Rule | None) -> dict[str, Any]:
    """Take the next DECIDE payload off `queue` (certified decisions, oldest first): as
    many decisions as the policy's limits for a DECIDE (`rule`: payload bytes, list
    items) and DECIDE_ALSO_MAX allow, and at least one.

    Sizes add up entry by entry (encoding the grown payload each time made a full
    envelope cost 2.2 ms to pack): the payload is the first decision's map plus an
    `also` key (5 bytes) and a list head (at most 3), then each entry's encoding."""
    if not queue:
        return {}
    first = _announced_entry(*queue.popleft())
    if rule is None:
        return first
    size = len(cbor.encode(first)) + ALSO_KEY_BYTES + LIST_HEAD_BYTES_MAX
    items = abi.list_items(first)
    also: list[dict[str, Any]] = []
    while queue and len(also) < DECIDE_ALSO_MAX:
        entry = _announced_entry(*queue[0])
        entry_size, entry_items = len(cbor.encode(entry)), 1 + abi.list_items(entry)
        if size + entry_size > rule.payload_bytes_max or items + entry_items > rule.items_max:
            break
        size, items = size + entry_size, items + entry_items
        also.append(entry)
        queue.popleft()
    return {**first, "also": also} if also else first


def _announced_entry(d: Decision, cert: dict[str, Any]) -> dict[str, Any]:
    return {"need_id": Cid(d.need_id), "proposal_id": d.proposal_id.decode(),
            "k_plan": d.k_plan, "epoch": d.epoch, "cert": cert}
