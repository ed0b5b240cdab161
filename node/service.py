"""A running swarm-node: libp2p host, gossip, the inbound pipeline, catch-up, control API.

Owns the node's tasks and their lifetimes; every rule it applies lives in `protocol/`
(through `pipeline`). Structure (trio): one exit stack holds, in order, the libp2p host,
the pubsub service, the gossipsub router and one nursery for our own tasks (subscription
drains, the control API, catch-up, bootstrap dials). `stop()` cancels that nursery; the
stack then closes the rest in reverse order, which py-libp2p requires.

Resource handling: the store is opened before the host and closed after it, so nothing
the host accepted can be acknowledged without being on disk. Error handling: a peer's
bytes can only produce a verdict; a storage failure stops the node (`fatal`); any other
exception met on one envelope (a bug of ours) costs that envelope alone: it is counted
as `internal`, logged once with its id and traceback (`_fault`), and the node goes on
(node/pipeline.py says where it then stands).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

from swarm.protocol import verbs
from swarm.protocol.bucket_machine import LEDGER_VERBS
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope, Identity, decode_envelope, make_envelope
from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.lamport import LamportClock, lamport_ceiling
from swarm.protocol.plan import PlanVersion, thread_view
from swarm.protocol.task import TASK_VERBS

from . import p2p
from .api import build_app, serve_api
from .bitswap import Bitswap
from .blockstore import BLOCKS_DIR, Blockstore, BlockstoreError
from .catchup import CatchUp
from .client import OUTCOME_WAIT_S_DEFAULT
from .decide_service import DecideService
from .durability import WalSyncer
from .evidence_store import open_evidence_store
from .home import (
    API_FILE,
    STORE_DIR,
    NodeSettings,
    api_is_loopback,
    ensure_token,
    load_genesis,
    load_identity,
    write_atomic,
)
from .job_service import JobService
from .judge import Judge
from .ledger_service import LedgerService
from .market_service import MarketService
from .mdns import MdnsDiscovery
from .metrics import Metrics
from .pipeline import (
    INTERNAL,
    KNOWLEDGE_DEPENDENT,
    NOT_GOSSIPED,
    Committed,
    Outcome,
    Pipeline,
    Verdict,
    fault_key,
    wall_ms,
)
from .plan_admissions import PlanAdmissions
from .policy import WasmPolicy
from .store import Store, StoreError

log = logging.getLogger("swarm.node")

# A handful of topics, chosen by verb; never one per bucket. The ledger verbs have none:
# they go to their account's Raft bucket (`swarm-node ledger`, `stake`, `pool`), and the
# pipeline rejects them from gossip (`not_gossiped`).
TOPIC_OF_KIND = {
    **{k: "plan" for k in ("NEED", "PROPOSE", "DECIDE", "UPDATE_PLAN", "ATTEST_PLAN")},
    **{k: "work" for k in ("CLAIM", "HEARTBEAT", "COMMIT", "ATTEST", "FINALIZE", "YIELD",
                           "RELEASE", "CHALLENGE", "INVALIDATE", "WITHDRAW")},
}
assert set(TOPIC_OF_KIND) | set(LEDGER_VERBS) == set(verbs.KINDS), "every verb needs a road"
assert not set(TOPIC_OF_KIND) & set(LEDGER_VERBS), "ledger verbs are never gossiped"
TOPIC_NAMES = ("plan", "work")
# Recent publishes and acceptances with nanosecond times, for `GET /debug/deliveries`:
# benchmarks join them across nodes to get exact publish-to-delivery latencies.
DELIVERY_LOG_MAX = 20_000
REQUEST_TIMEOUT_S = 10.0
# Envelope ids whose fault was logged (with its traceback), remembered so each is logged
# once; the oldest is forgotten past this many.
FAULTS_LOGGED_MAX = 4096


def topic(genesis: Genesis, name: str) -> str:
    return f"/can-swarm/{genesis.short_id}/{name}/1"


def sync_protocol(genesis: Genesis) -> TProtocol:
    return TProtocol(f"/can-swarm/{genesis.short_id}/sync/1.0.0")


@dataclass
class Node:
    settings: NodeSettings
    genesis: Genesis
    identity: Identity
    metrics: Metrics = field(default_factory=Metrics)
    fatal: BaseException | None = None

    def __post_init__(self) -> None:
        self.clock = LamportClock()
        # The wall clock the Lamport ceiling is read against (tests may skew one node's).
        self.wall_ms: Callable[[], int] = wall_ms
        self._faults_logged: OrderedDict[str, None] = OrderedDict()
        self.started_at = time.monotonic()
        self.delivery_log: deque[tuple[Cid, int, str]] = deque(maxlen=DELIVERY_LOG_MAX)
        self._stop = trio.Event()
        self.api_url = ""
        # The message `_prepare` decoded, handed to the `_validate` that runs right after.
        self._prepared: tuple[rpc_pb2.Message, Envelope | Outcome] | None = None
        # Loaded here, so a module that genesis does not pin stops the node before it
        # opens anything (PolicyLoadError).
        self.policy = WasmPolicy.for_genesis(self.genesis, self.metrics)
        self.topics = {name: topic(self.genesis, name) for name in TOPIC_NAMES}

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        home = self.settings.home
        self.store = Store(home / STORE_DIR)
        try:
            self.blockstore = Blockstore(home / BLOCKS_DIR, self.genesis.params)
            self.evidence = open_evidence_store(home, self.settings.ipfs_api,
                                                self.genesis.params, self.blockstore)
        except BlockstoreError:
            self.store.close()
            raise
        try:
            self.decider = DecideService(
                self.genesis, self.identity, home, self.policy, self.metrics.registry,
                sign=self.sign, publish=self.publish_value,
                is_applied=lambda cid: cid in self.pipeline.replica.applied,
                applied_kind=self.applied_kind,
                decide_unknown_needs=self.settings.decide_unknown_needs)
            self.ledger = LedgerService(self.decider.raft, self.decider.store, self.genesis,
                                        self.identity.public_key, self.policy, self.sign)
            self.jobs = JobService(self.evidence, dict(self.genesis.params),
                                   lambda: getattr(self, "bitswap", None))
            self.market = MarketService(self.ledger, self.genesis, self.sign,
                                        self.gossip_wire, self.metrics.registry,
                                        self.evidence)
            self.judge = Judge(self.market, self.jobs, self.genesis.params,
                               self.genesis.value.get("proof_verifiers"))
        except StoreError:
            self.blockstore.close()
            self.store.close()
            raise
        try:
            self.pipeline = Pipeline.open(self.genesis.swarm_id, self.store, self.policy,
                                          replayed=self.decider.accepted,
                                          on_fault=self._fault)
            self.pipeline.certify = self.decider.check_envelope
            self.pipeline.on_accept.append(self._accepted)
            self.pipeline.on_accept.append(self.decider.accepted)
            self.pipeline.on_late_reject = self._rejected_late
            self.admissions = PlanAdmissions(
                self.pipeline.replica, self.store, self.market.task_in,
                self.market.all_tasks)
            self.admissions.restore()
            self.ledger.net.listeners.append(self.admissions.applied)
            self.wal = WalSyncer(self.store, self._storage_failed)
            self._observe(self.pipeline.replica.clock.time)
            await self._run_network(task_status)
        finally:
            (home / API_FILE).unlink(missing_ok=True)
            self.decider.close()
            self.blockstore.close()
            self.store.close()
        if self.fatal is not None:
            raise self.fatal

    async def _run_network(self, task_status: Any) -> None:
        listen = [multiaddr.Multiaddr(a) for a in self.settings.listen]
        self.host, self.peer_id = p2p.make_host(self.identity.seed, listen)
        self.router = p2p.make_router()
        self.pubsub = p2p.make_pubsub(self.host, self.router)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.host.run(listen_addrs=listen))
            await stack.enter_async_context(background_trio_service(self.pubsub))
            await stack.enter_async_context(background_trio_service(self.router))
            await self.pubsub.wait_until_ready()
            subs = []
            self.pubsub.prepare = self._prepare
            for name in TOPIC_NAMES:
                self.pubsub.set_topic_validator(self.topics[name], self._validate, False)
                subs.append(await self.pubsub.subscribe(self.topics[name]))
            self.catchup = CatchUp(self.host, sync_protocol(self.genesis), self.pipeline.ids,
                                   self._offered, self._take_pulled, self._storage_failed)
            self.host.set_stream_handler(sync_protocol(self.genesis), self.catchup.serve)
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self.wal.run)
            for sub in subs:
                nursery.start_soon(self._drain, sub)
            await nursery.start(self.decider.run, self.host)
            await nursery.start(self.ledger.run, self.host)
            self.bitswap = Bitswap(self.host, self.blockstore, self.metrics.registry,
                                   on_bad_peer=self._bad_bitswap_peer,
                                   remote=None if self.evidence is self.blockstore
                                   else self.evidence)
            await nursery.start(self.bitswap.run)
            await nursery.start(self.market.run, self.bitswap)
            await self._start_api(nursery)
            if self.settings.roles is not None and self.settings.roles.roles:
                nursery.start_soon(self._run_roles)
            nursery.start_soon(self._bootstrap)
            if self.settings.mdns:
                self.mdns = MdnsDiscovery(self.host, self.genesis.swarm_id, self.host.connect)
                await nursery.start(self.mdns.run)
            nursery.start_soon(self.catchup.run)
            log.info("node started peer_id=%s addrs=%s api=%s envelopes=%d plan_root=%s",
                     self.peer_id.to_base58(), self.addrs(), self.api_url,
                     self.store.count, self.pipeline.replica.plan.root().hex())
            task_status.started(self)
            await self._stop.wait()
            log.info("node stopping")
            nursery.cancel_scope.cancel()

    def _bad_bitswap_peer(self, peer: ID) -> None:
        self.router.scorer.penalize_behavior(peer, 1.0)  # type: ignore[union-attr]

    async def _start_api(self, nursery: trio.Nursery) -> None:
        token = ensure_token(self.settings.home)
        if not api_is_loopback(self.settings.api):
            log.warning("the control API listens on %s, reachable from other machines "
                        "(api_public); anyone who learns the token controls this node",
                        self.settings.api)
        self.api_url = await serve_api(nursery, build_app(self, token, self.peer_id.to_base58()),
                                       self.settings.api)
        write_atomic(self.settings.home / API_FILE, json.dumps(
            {"url": self.api_url, "pid": os.getpid(), "peer_id": self.peer_id.to_base58()}
        ).encode() + b"\n")

    async def _run_roles(self) -> None:
        """The built-in agents (swarm/agent/roles.py), on this node's account, through
        its own control API: the rules and bounds of any agent hold them."""
        from swarm.agent.roles import run_roles
        from swarm.agent.sdk import Agent

        agent = Agent(self.api_url, ensure_token(self.settings.home), self.peer_id.to_base58())
        try:
            await agent.connect()
            await run_roles(agent, self.settings.roles, self.metrics.registry)
        except Exception:  # the roles are agents: their failure never stops the node
            log.exception("the built-in roles stopped; the node goes on without them")
        finally:
            await agent.aclose()

    async def _drain(self, sub: Any) -> None:
        # Validation did the work; the subscription only has to be emptied.
        while True:
            await sub.get()

    async def _bootstrap(self) -> None:
        for addr in self.settings.bootstrap:
            try:
                await self.connect(addr)
            except Exception as exc:  # noqa: BLE001 - one bad bootstrap entry is not fatal
                log.warning("bootstrap dial failed addr=%s error=%s", addr, exc)

    # --- inbound --------------------------------------------------------------------

    async def _prepare(self, forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Gossip's first stage, the only one that may wait: decode the envelope and
        check a DECIDE's certificates with the event loop let go between decisions
        (`DecideService.precheck`), so a full DECIDE does not stall Raft's frames for
        milliseconds. The verdict is still `_validate`'s, which runs right after."""
        self._prepared = None
        if forwarder == self.peer_id:
            return
        decoded = self.pipeline.decode(msg.data)
        if isinstance(decoded, Envelope) and decoded.kind == "DECIDE" \
                and decoded.id not in self.pipeline.ids:
            try:
                fresh = await self.decider.precheck(decoded)
            except Exception:  # noqa: BLE001 - judging meets it again, and reports it
                fresh = True
            if not fresh:
                raise p2p.Ignore("duplicate")  # a copy of it was judged meanwhile
        self._prepared = (msg, decoded)

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The gossipsub validator: our pipeline's verdict as gossipsub's outcome.

        ACCEPT returns True (delivered and forwarded). REJECT returns False: dropped, and
        counted as an invalid message against the forwarder. A duplicate (valid, already
        stored, e.g. by catch-up) returns True: others may lack it, and gossipsub's seen
        cache stops it here. Any other IGNORE (the policy's `rate_limited`, a module that
        cannot run, `lamport_future`) raises `p2p.Ignore`: dropped, not forwarded, nobody
        penalised (see `p2p.IgnoringPubsub` and docs/NETWORK.md, "Floods"). So does
        REJECT `internal` (the fault is ours, not the forwarder's), and REJECT
        `lamport_reversal` relayed by a peer that did not publish it (it may not have
        known the ref it breaks). An envelope whose apply faulted after it was stored is
        forwarded like any stored one.

        A validator that raises anything else would crash pubsub: a storage failure stops
        the node (`_storage_failed`) and returns False; any other exception is a fault.
        """
        if forwarder == self.peer_id:
            return True  # our own publish, stored before it was published
        prepared, self._prepared = self._prepared, None
        decoded: Envelope | Outcome | None = None
        try:
            decoded = prepared[1] if prepared is not None and prepared[0] is msg \
                else self.pipeline.decode(msg.data)
            outcome = decoded if isinstance(decoded, Outcome) \
                else self.pipeline.judge_envelope(decoded, self.wall_ms())
            if outcome.verdict is Verdict.ACCEPT and outcome.envelope is not None:
                # Written through to the OS before we return (and so before gossipsub
                # forwards it); the fsync follows in a group (node/durability.py).
                self._count_committed(self.pipeline.commit([outcome.envelope], sync=False))
                self.wal.note_write()
                return True
            self.metrics.envelopes.labels(outcome.verdict.value, outcome.reason).inc()
            if outcome.verdict is Verdict.REJECT and self._blames(outcome.reason, forwarder,
                                                                  msg):
                return False
        except StoreError as exc:
            self._storage_failed(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a raising validator would crash pubsub
            self._fault(str(decoded.id) if isinstance(decoded, Envelope)
                        else fault_key(msg.data), exc, True)
            raise p2p.Ignore(INTERNAL) from None
        if outcome.reason == "duplicate":
            return True
        raise p2p.Ignore(outcome.reason)

    @staticmethod
    def _blames(reason: str, forwarder: ID | None, msg: rpc_pb2.Message | None) -> bool:
        """Whether a REJECT is held against the peer that brought the envelope (gossip's
        forwarder, or catch-up's peer when `msg` is None). Not for a fault of ours; not
        for a reason that depends on what this node knows, unless that peer published
        the message itself."""
        if reason == INTERNAL:
            return False
        if reason in KNOWLEDGE_DEPENDENT:
            return msg is not None and forwarder is not None \
                and ID(msg.from_id) == forwarder
        return True

    def _count_committed(self, committed: Committed) -> None:
        """Count ACCEPT for each committed inbound envelope that applied cleanly; one
        whose apply faulted was counted as REJECT `internal` by `_fault`."""
        clean = len(committed.fresh) - len(committed.faulted)
        if clean:
            self.metrics.envelopes.labels(Verdict.ACCEPT.value, "ok").inc(clean)

    def _fault(self, key: str, exc: BaseException, count: bool) -> None:
        """A fault of ours on one envelope (`Pipeline.on_fault`): logged once per
        envelope id, with the traceback; counted as REJECT `internal` here when `count`
        (a fault after the verdict), by the caller with the other verdicts otherwise."""
        if count:
            self.metrics.envelopes.labels(Verdict.REJECT.value, INTERNAL).inc()
        if key in self._faults_logged:
            return
        self._faults_logged[key] = None
        while len(self._faults_logged) > FAULTS_LOGGED_MAX:
            self._faults_logged.popitem(last=False)
        log.error("internal error on envelope %s; the envelope is rejected as `internal` "
                  "and the node goes on", key, exc_info=exc)

    def _rejected_late(self, env: Envelope, exc: RemoteProtocolError) -> None:
        # Counted, and logged at debug only: a sender can make many of these.
        self.metrics.rejected_late.labels(exc.code).inc()
        log.debug("stored envelope rejected once its refs arrived id=%s code=%s reason=%s",
                  env.id, exc.code, exc.reason)

    def _storage_failed(self, exc: BaseException) -> None:
        log.critical("cannot persist accepted envelopes; stopping error=%r", exc)
        if self.fatal is None:
            self.fatal = exc
        self.stop()

    def _observe(self, lamport: int) -> None:
        """Merge a Lamport time into this node's clock, never past the ceiling: the
        pipeline already refuses envelopes above it, and what the store holds from
        before (another rule, another wall clock) cannot pin the clock either."""
        self.clock.observe(min(lamport, lamport_ceiling(self.wall_ms())))

    def _accepted(self, env: Envelope) -> None:
        self._observe(env.lamport)
        now_ns = time.time_ns()
        self.delivery_log.append((env.id, now_ns, "accepted"))
        # `ts` is whole milliseconds, truncated: this reads 0-1 ms high, never low.
        age_ms = now_ns / 1e6 - env.ts
        if 0 <= age_ms < 3_600_000:
            self.metrics.delivery.observe(age_ms / 1000)

    # --- outbound -------------------------------------------------------------------

    async def publish(self, kind: str, payload: dict[str, Any], thread: str,
                      refs: list[str]) -> dict[str, Any]:
        kind = kind.upper()
        refuse_ledger_verb(kind)
        return await self.publish_value(kind, verbs.payload_from_json(kind, payload), thread,
                                        [Cid.parse(r, "refs") for r in refs])

    def sign(self, kind: str, payload: Any, ts_ms: int, thread: str = "",
             refs: Sequence[Cid] = ()) -> Envelope:
        """An envelope signed by this node, stamped with its next Lamport time (not
        checked against the policy, not published)."""
        return make_envelope(self.identity, kind=kind, swarm=self.genesis.swarm_id,
                             lamport=self.clock.tick(), ts=ts_ms, payload=payload,
                             thread=thread, refs=refs)

    def applied_kind(self, cid: Cid) -> str | None:
        """The kind of the envelope applied here whose id is `cid`; None if none is."""
        if cid not in self.pipeline.replica.applied:
            return None
        wire = self.store.get(cid)
        return decode_envelope(wire, verify=False).kind if wire is not None else None

    async def publish_value(self, kind: str, value: Any, thread: str,
                            ref_ids: list[Cid]) -> dict[str, Any]:
        """`publish` for a payload already in protocol values (links as Cid, bytes as
        bytes): the node's own announcements skip the JSON round trip."""
        refuse_ledger_verb(kind)
        started_ns = time.time_ns()
        for r in ref_ids:  # applied or pending: an envelope must come after each
            lamport = self.pipeline.replica.known_lamport(r)
            if lamport is not None:
                self._observe(lamport)
        env = self.sign(kind, value, time.time_ns() // 1_000_000, thread, ref_ids)
        with self.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = self.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {kind}: "
                                     f"{checked.reason}", code=checked.reason)
        try:
            self.pipeline.commit([env], sync=False)
        except StoreError as exc:
            self._storage_failed(exc)
            raise
        ticket = self.wal.note_write()
        self.delivery_log.append((env.id, started_ns, "published"))
        self.metrics.published.inc()
        await self.pubsub.publish(self.topics[TOPIC_OF_KIND[kind]], env.wire)
        await self.wal.wait_synced(ticket)  # the API acknowledges only what is on disk
        return {"id": str(env.id), "kind": kind, "lamport": env.lamport}

    async def submit_wire(self, data: bytes,
                          timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """An envelope someone signed elsewhere, as its wire bytes: the road a client
        without a libp2p stack of its own takes into the swarm. It is judged exactly as
        one arriving by gossip (decode, signature, Lamport rules, certificate, the
        policy counted against its sender's rate); a ledger envelope or a task's
        lifecycle step goes to the bucket that orders it instead
        (`LedgerService.submit_signed`), and a NEED or a bid with a plan patch to its
        bucket first, then to gossip. Answers the verdict (`verdict`, `code`, `field`,
        `reason`) and, once accepted, what became of it: a gossiped envelope is stored
        (synced) and published; a bucket's outcome as the bucket applied it
        (LedgerRefused when the bucket refused it)."""
        decoded = self.pipeline.decode(data)
        if isinstance(decoded, Outcome):
            self.metrics.envelopes.labels(decoded.verdict.value, decoded.reason).inc()
            return _verdict_json(decoded)
        if decoded.kind in (*LEDGER_VERBS, "CHALLENGE") or (
                decoded.kind in TASK_VERBS and not _also_gossiped(decoded)):
            outcome = await self.ledger.submit_signed(decoded, timeout_s)
            return {"verdict": Verdict.ACCEPT.value, "code": "ok", "field": "",
                    "reason": "", "id": str(decoded.id), "kind": decoded.kind,
                    "outcome": outcome}
        judged = self.pipeline.judge_envelope(decoded, self.wall_ms())
        if _also_gossiped(decoded) and (judged.verdict is Verdict.ACCEPT
                                        or judged.reason == "duplicate"):
            # A NEED (posted and funded by its signer) or a bid with a plan patch: its
            # bucket orders it first, as `task post` and `bid` do; it is gossiped only
            # once the bucket took it, so a refused NEED never reaches the plan.
            outcome = await self.ledger.submit_judged(decoded, timeout_s)
            if judged.verdict is Verdict.ACCEPT:
                await self._commit_and_publish(decoded)
            return {"verdict": Verdict.ACCEPT.value, "code": "ok", "field": "",
                    "reason": "", "id": str(decoded.id), "kind": decoded.kind,
                    "lamport": decoded.lamport, "outcome": outcome}
        return await self._gossip_judged(decoded, judged)

    async def gossip_wire(self, data: bytes) -> dict[str, Any]:
        """Gossip an envelope its bucket already took (a NEED this node posted, a bid
        with a patch), judged as gossip is: what `MarketService` publishes for the
        plan's DAG. Answers the verdict."""
        decoded = self.pipeline.decode(data)
        if isinstance(decoded, Outcome):
            return _verdict_json(decoded)
        return await self._gossip_judged(decoded,
                                         self.pipeline.judge_envelope(decoded, self.wall_ms()))

    async def _gossip_judged(self, decoded: Envelope, judged: Outcome) -> dict[str, Any]:
        if judged.verdict is not Verdict.ACCEPT:
            self.metrics.envelopes.labels(judged.verdict.value, judged.reason).inc()
            return _verdict_json(judged)
        await self._commit_and_publish(decoded)
        return {**_verdict_json(judged), "lamport": decoded.lamport}

    async def _commit_and_publish(self, decoded: Envelope) -> None:
        try:
            self._count_committed(self.pipeline.commit([decoded], sync=False))
        except StoreError as exc:
            self._storage_failed(exc)
            raise
        ticket = self.wal.note_write()
        self.metrics.published.inc()
        await self.pubsub.publish(self.topics[TOPIC_OF_KIND[decoded.kind]], decoded.wire)
        await self.wal.wait_synced(ticket)

    async def connect(self, addr: str) -> dict[str, Any]:
        """Dial a peer at exactly `addr` (`p2p.connect`)."""
        peer = await p2p.connect(self.host, self.peer_id, addr, REQUEST_TIMEOUT_S)
        return {"peer_id": peer.to_base58(), "connected": True}

    # --- catch-up -------------------------------------------------------------------

    def _offered(self, envelope_id: Cid) -> bytes | None:
        """An envelope as catch-up serves it: only those in the id set. The store also
        keeps what the node no longer offers (a ledger verb an older node stored, an
        envelope rejected once its refs arrived)."""
        return self.store.get(envelope_id) if envelope_id in self.pipeline.ids else None

    async def _take_pulled(self, peer: ID, wires: list[bytes]) -> int:
        """Envelopes catch-up brought from `peer`: judged like gossip (the pull's pace is
        ours, so exempt from the rate limit), committed together; a rejection that
        blames the peer penalises it. Returns how many were new here."""
        good = []
        for wire in wires:
            with self.policy.rate_exempt():
                outcome = self.pipeline.judge(wire, self.wall_ms())
            if outcome.verdict is Verdict.ACCEPT and outcome.envelope is not None:
                good.append(outcome.envelope)
                continue
            self.metrics.envelopes.labels(outcome.verdict.value, outcome.reason).inc()
            if outcome.verdict is Verdict.REJECT and self._blames(outcome.reason, peer, None):
                self.router.scorer.penalize_behavior(peer, 1.0)  # type: ignore[union-attr]
        committed = self.pipeline.commit(good, sync=False)
        self._count_committed(committed)
        fresh = committed.fresh
        if fresh:
            self.wal.note_write()
        # Counted with the commit: anyone who sees the plan move (catch-up yields next)
        # sees the count too.
        self.metrics.synced.inc(len(fresh))
        return len(fresh)

    # --- views (the control API calls these) ------------------------------------------

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def peers(self) -> list[dict[str, Any]]:
        out = []
        store = self.host.get_peerstore()
        for pid in self.host.get_connected_peers():
            try:
                addrs = [str(a) for a in store.addrs(pid)]
            except Exception:  # noqa: BLE001 - peerstore raises when it has no addrs
                addrs = []
            out.append({"peer_id": pid.to_base58(), "addrs": addrs})
        return out

    def status(self) -> dict[str, Any]:
        replica = self.pipeline.replica
        version = PlanVersion.of(replica.plan, self.clock.time)
        self.metrics.peers.set(len(self.host.get_connected_peers()))
        self.metrics.lamport.set(self.clock.time)
        return {
            "peer_id": self.peer_id.to_base58(),
            "addrs": self.addrs(),
            "account": self.identity.public_key.hex(),
            "peers": len(self.host.get_connected_peers()),
            "topics": sorted(self.topics.values()),
            "lamport": self.clock.time,
            "plan_root": version.root.hex(),
            "ledger_root": self.ledger.root_hex(),
            "policy_cid": self.policy.cid,
            "raft": {"node_id": self.decider.raft.id,
                     "buckets": len(self.decider.raft.groups),
                     "leading": sum(1 for g in self.decider.raft.groups.values()
                                    if g.raw.raft.lead == self.decider.raft.id),
                     "certified_decisions": len(self.decider.certified)},
            "envelopes": self.store.count,
            "gossip_duplicates_dropped": getattr(self.pubsub, "duplicates_dropped", 0),
            "pending": len(replica.pending),
            "tasks": version.tasks,
            "links": version.links,
            "swarm": self.genesis.swarm_id.hex(),
            "genesis": self.genesis.value["name"],
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "api": self.api_url,
            "pid": os.getpid(),
            "roles": sorted(self.settings.roles.roles) if self.settings.roles else [],
        }

    def deliveries(self) -> list[dict[str, Any]]:
        return [{"id": str(cid), "t_ns": t_ns, "event": event}
                for cid, t_ns, event in self.delivery_log]

    def plan_root(self) -> dict[str, Any]:
        return PlanVersion.of(self.pipeline.replica.plan, self.clock.time).to_json()

    def plan_thread(self, thread: str) -> dict[str, Any]:
        """The plan's thread, each task with its lifecycle state as its bucket has it
        (None: no funded task of that id is known here)."""
        view = thread_view(self.pipeline.replica.plan, thread)
        for t in view["tasks"]:
            task = self.market.task_named(t["task_id"])
            t["state"] = task.state if task is not None else None
        return view

    def metrics_text(self) -> bytes:
        version = PlanVersion.of(self.pipeline.replica.plan, self.clock.time)
        self.metrics.plan_tasks.set(version.tasks)
        self.metrics.plan_links.set(version.links)
        self.metrics.stored.set(self.store.count)
        self.metrics.peers.set(len(self.host.get_connected_peers()))
        self.metrics.lamport.set(self.clock.time)
        return self.metrics.render()


def _also_gossiped(env: Envelope) -> bool:
    """A market envelope that the plan's DAG needs too: a NEED, a bid with a patch."""
    return env.kind == "NEED" or (env.kind == "PROPOSE" and "patch" in env.payload)


def _verdict_json(outcome: Outcome) -> dict[str, Any]:
    env = outcome.envelope
    return {"verdict": outcome.verdict.value, "code": outcome.reason, "field": outcome.field,
            "reason": outcome.detail, "id": str(env.id) if env is not None else None,
            "kind": env.kind if env is not None else None}


def refuse_ledger_verb(kind: str) -> None:
    """Ledger verbs are applied only through their account's Raft bucket; signed and
    gossiped they would change nothing, and anyone could replay them."""
    if kind in LEDGER_VERBS:
        raise LocalProtocolError(
            "kind", f"{kind} is a ledger verb: it is applied through its account's Raft "
                    "bucket, never gossiped; use the ledger routes (`swarm-node ledger "
                    "transfer`, `swarm-node stake ...`, `swarm-node pool ...`)",
            code=NOT_GOSSIPED)


def open_node(home: Path, *, listen: list[str] | None = None,
              bootstrap: Iterable[str] | None = None, api: str | None = None,
              mdns: bool | None = None, api_public: bool | None = None,
              roles: str | None = None) -> Node:
    settings = NodeSettings.from_home(home, listen=listen,
                                      bootstrap=list(bootstrap) if bootstrap is not None
                                      else None, api=api, mdns=mdns, api_public=api_public,
                                      roles=roles)
    genesis = load_genesis(home)
    identity = load_identity(home)
    ensure_token(home)  # refused here (HomeError), before anything starts
    return Node(settings, genesis, identity)


__all__ = ["LocalProtocolError", "Node", "open_node", "topic"]
