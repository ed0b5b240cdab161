"""A running swarm-node: libp2p host, gossip, the inbound pipeline, catch-up, control API.

Owns the node's tasks and their lifetimes; every rule it applies lives in `protocol/`
(through `pipeline`). Structure (trio): one exit stack holds, in order, the libp2p host,
the pubsub service, the gossipsub router and one nursery for our own tasks (subscription
drains, the control API, catch-up, bootstrap dials). `stop()` cancels that nursery; the
stack then closes the rest in reverse order, which py-libp2p requires.

Resource handling: the store is opened before the host and closed after it, so nothing
the host accepted can be acknowledged without being on disk. Error handling: a peer's
bytes can only produce a verdict; a storage failure stops the node (`fatal`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.protocol import genesis as genesis_mod
from swarm.protocol import verbs
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.lamport import LamportClock
from swarm.protocol.sync import differing_buckets

from . import catchup, p2p
from .api import build_app
from .bitswap import Bitswap
from .blockstore import BLOCKS_DIR, Blockstore, BlockstoreError
from .decide_service import DecideService
from .durability import WalSyncer
from .evidence_store import open_evidence_store
from .home import (
    API_FILE,
    GENESIS_FILE,
    STORE_DIR,
    HomeError,
    ensure_token,
    load_identity,
    read_config,
    write_atomic,
)
from .ledger_service import LedgerService
from .mdns import MdnsDiscovery
from .metrics import Metrics
from .pipeline import Outcome, Pipeline, Verdict
from .policy import WasmPolicy
from .store import Store, StoreError
from .streamlimits import Slots

log = logging.getLogger("swarm.node")

# A handful of topics, chosen by verb; never one per bucket.
TOPIC_OF_KIND = {
    **{k: "plan" for k in ("NEED", "PROPOSE", "DECIDE", "UPDATE_PLAN", "ATTEST_PLAN")},
    **{k: "work" for k in ("CLAIM", "HEARTBEAT", "COMMIT", "ATTEST", "FINALIZE", "YIELD",
                           "RELEASE", "CHALLENGE", "INVALIDATE")},
    **{k: "ledger" for k in ("TRANSFER", "STAKE", "UNSTAKE", "COMPLETE_UNBONDING",
                             "POOL_REGISTER", "POOL_LEAVE")},
}
assert set(TOPIC_OF_KIND) == set(verbs.KINDS), "every verb needs a topic"
TOPIC_NAMES = ("plan", "work", "ledger")
CATCHUP_INTERVAL_S = 2.0
# Recent publishes and acceptances with nanosecond times, for `GET /debug/deliveries`:
# benchmarks join them across nodes to get exact publish-to-delivery latencies.
DELIVERY_LOG_MAX = 20_000
REQUEST_TIMEOUT_S = 10.0
# Catch-up requests served at once: a node asks its peers one request at a time, and
# each reply being built holds up to catchup.REPLY_BYTES_MAX of memory.
CATCHUP_PER_PEER_MAX = 4
CATCHUP_TOTAL_MAX = 32


def topic(genesis: Genesis, name: str) -> str:
    return f"/can-swarm/{genesis.short_id}/{name}/1"


def sync_protocol(genesis: Genesis) -> TProtocol:
    return TProtocol(f"/can-swarm/{genesis.short_id}/sync/1.0.0")


@dataclass
class NodeSettings:
    home: Path
    listen: list[str]
    bootstrap: list[str]
    api: str  # host:port
    ipfs_api: str | None = None  # the user's IPFS daemon for evidence (node/evidence_store.py)
    mdns: bool = False  # find and dial nodes of the same swarm on the LAN (node/mdns.py)

    @classmethod
    def from_home(cls, home: Path, *, listen: list[str] | None = None,
                  bootstrap: list[str] | None = None, api: str | None = None,
                  mdns: bool | None = None) -> NodeSettings:
        config = read_config(home)
        return cls(
            home=home,
            listen=listen or list(config.get("listen", ["/ip4/127.0.0.1/tcp/0"])),
            bootstrap=(bootstrap if bootstrap is not None
                       else list(config.get("bootstrap", []))),
            api=api or str(config.get("api", "127.0.0.1:0")),
            ipfs_api=config.get("ipfs_api") or None,
            mdns=bool(config.get("mdns", False)) if mdns is None else mdns,
        )


def load_genesis(home: Path) -> Genesis:
    path = home / GENESIS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HomeError(f"no genesis at {path}; run `swarm-node init --home {home} "
                        "--genesis FILE`") from None
    return genesis_mod.from_json(text)


@dataclass
class Node:
    settings: NodeSettings
    genesis: Genesis
    identity: Identity
    metrics: Metrics = field(default_factory=Metrics)
    fatal: BaseException | None = None

    def __post_init__(self) -> None:
        self.clock = LamportClock()
        self.started_at = time.monotonic()
        self.delivery_log: deque[tuple[Cid, int, str]] = deque(maxlen=DELIVERY_LOG_MAX)
        self._stop = trio.Event()
        self.api_url = ""
        self.catchup_slots = Slots(CATCHUP_PER_PEER_MAX, CATCHUP_TOTAL_MAX)
        # The message `_prepare` decoded, handed to the `_validate` that runs right after.
        self._prepared: tuple[rpc_pb2.Message, Envelope | Outcome] | None = None
        # Loaded here, so a module that genesis does not pin stops the node before it
        # opens anything (PolicyLoadError).
        self.policy = WasmPolicy.for_genesis(self.genesis, self.metrics)
        self.topics = {name: topic(self.genesis, name) for name in TOPIC_NAMES}
        self.sync_peers = catchup.SyncPeers(sync_protocol(self.genesis))

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
            self.decider = DecideService(self)
            self.ledger = LedgerService(self)
        except StoreError:
            self.blockstore.close()
            self.store.close()
            raise
        try:
            self.pipeline = Pipeline.open(self.genesis.swarm_id, self.store, self.policy,
                                          replayed=self.decider.accepted)
            self.pipeline.certify = self.decider.check_envelope
            self.pipeline.on_accept.append(self._accepted)
            self.pipeline.on_accept.append(self.decider.accepted)
            self.wal = WalSyncer(self.store, self._storage_failed)
            self.clock.observe(self.pipeline.replica.clock.time)
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
            self.host.set_stream_handler(sync_protocol(self.genesis), self._serve_catchup)
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self.wal.run)
            for sub in subs:
                nursery.start_soon(self._drain, sub)
            await nursery.start(self.decider.run)
            await nursery.start(self.ledger.run)
            self.bitswap = Bitswap(self.host, self.blockstore, self.metrics.registry,
                                   on_bad_peer=self._bad_bitswap_peer,
                                   remote=None if self.evidence is self.blockstore
                                   else self.evidence)
            await nursery.start(self.bitswap.run)
            await self._start_api(nursery)
            nursery.start_soon(self._bootstrap)
            if self.settings.mdns:
                self.mdns = MdnsDiscovery(self.host, self.genesis.swarm_id, self.host.connect)
                await nursery.start(self.mdns.run)
            nursery.start_soon(self._catchup_loop)
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
        config = HypercornConfig()
        config.bind = [self.settings.api]
        config.accesslog = None
        config.errorlog = logging.getLogger("swarm.api")
        app = build_app(self, token)
        binds = await nursery.start(
            lambda task_status: serve(app, config,  # type: ignore[arg-type]
                                      shutdown_trigger=trio.sleep_forever,
                                      task_status=task_status))
        self.api_url = binds[0]
        write_atomic(self.settings.home / API_FILE, json.dumps(
            {"url": self.api_url, "pid": os.getpid(), "peer_id": self.peer_id.to_base58()}
        ).encode() + b"\n")

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
                and decoded.id not in self.pipeline.ids \
                and not await self.decider.precheck(decoded):
            raise p2p.Ignore("duplicate")  # a copy of it was judged meanwhile
        self._prepared = (msg, decoded)

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The gossipsub validator: our pipeline's verdict as gossipsub's outcome.

        ACCEPT returns True (delivered and forwarded). REJECT returns False: dropped, and
        counted as an invalid message against the forwarder. A duplicate (valid, already
        stored, e.g. by catch-up) returns True: others may lack it, and gossipsub's seen
        cache stops it here. Any other IGNORE (the policy's `rate_limited`, a module that
        cannot run) raises `p2p.Ignore`: dropped, not forwarded, nobody penalised (see
        `p2p.IgnoringPubsub` and docs/NETWORK.md, "Floods").
        """
        if forwarder == self.peer_id:
            return True  # our own publish, stored before it was published
        prepared, self._prepared = self._prepared, None
        try:
            decoded = prepared[1] if prepared is not None and prepared[0] is msg \
                else self.pipeline.decode(msg.data)
            outcome = decoded if isinstance(decoded, Outcome) \
                else self.pipeline.judge_envelope(decoded)
            self.metrics.envelopes.labels(outcome.verdict.value, outcome.reason).inc()
            if outcome.verdict is Verdict.ACCEPT and outcome.envelope is not None:
                # Written through to the OS before we return (and so before gossipsub
                # forwards it); the fsync follows in a group (node/durability.py).
                self.pipeline.commit([outcome.envelope], sync=False)
                self.wal.note_write()
                return True
            if outcome.verdict is Verdict.REJECT:
                return False
        except Exception as exc:  # noqa: BLE001 - a raising validator would crash pubsub
            self._storage_failed(exc)
            return False
        if outcome.reason == "duplicate":
            return True
        raise p2p.Ignore(outcome.reason)

    def _storage_failed(self, exc: BaseException) -> None:
        log.critical("cannot persist accepted envelopes; stopping error=%r", exc)
        if self.fatal is None:
            self.fatal = exc
        self.stop()

    def _accepted(self, env: Envelope) -> None:
        self.clock.observe(env.lamport)
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
        return await self.publish_value(kind, verbs.payload_from_json(kind, payload), thread,
                                        [Cid.parse(r, "refs") for r in refs])

    async def publish_value(self, kind: str, value: Any, thread: str,
                            ref_ids: list[Cid]) -> dict[str, Any]:
        """`publish` for a payload already in protocol values (links as Cid, bytes as
        bytes): the node's own announcements skip the JSON round trip."""
        started_ns = time.time_ns()
        for r in ref_ids:
            lamport = self.pipeline.replica.applied.get(r)
            if lamport is not None:
                self.clock.observe(lamport)
        env = make_envelope(self.identity, kind=kind, swarm=self.genesis.swarm_id,
                            lamport=self.clock.tick(), ts=time.time_ns() // 1_000_000,
                            payload=value, thread=thread, refs=ref_ids)
        with self.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = self.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {kind}: "
                                     f"{checked.reason}", code=checked.reason)
        self.pipeline.commit([env], sync=False)
        ticket = self.wal.note_write()
        self.delivery_log.append((env.id, started_ns, "published"))
        self.metrics.published.inc()
        await self.pubsub.publish(self.topics[TOPIC_OF_KIND[kind]], env.wire)
        await self.wal.wait_synced(ticket)  # the API acknowledges only what is on disk
        return {"id": str(env.id), "kind": kind, "lamport": env.lamport}

    async def connect(self, addr: str) -> dict[str, Any]:
        try:
            maddr = multiaddr.Multiaddr(addr)
            info = info_from_p2p_addr(maddr)
        except Exception as exc:  # noqa: BLE001 - the multiaddr library raises many types
            raise ValueError(f"not a dialable multiaddr with /p2p/<peer id>: {addr} ({exc})")\
                from None
        with trio.fail_after(REQUEST_TIMEOUT_S):
            await self.host.connect(info)
        return {"peer_id": info.peer_id.to_base58(), "connected": True}

    # --- catch-up -------------------------------------------------------------------

    async def _serve_catchup(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if not self.catchup_slots.take(peer):
            await stream.reset()
            return
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                request = catchup.decode(await read_varint_prefixed_bytes_limited(
                    stream, catchup.REQUEST_BYTES_MAX))
                reply = catchup.answer(request, self.pipeline.ids, self.store.get)
                await stream.write(encode_varint_prefixed(catchup.encode(reply)))
                await stream.close()
        except Exception as exc:  # noqa: BLE001 - a peer's bad request ends its stream only
            log.debug("catch-up request failed peer=%s error=%r", peer, exc)
            await stream.reset()
        finally:
            self.catchup_slots.give(peer)

    async def _request(self, peer: ID, message: dict[str, Any]) -> dict[str, Any]:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            stream = await self.host.new_stream(peer, [sync_protocol(self.genesis)])
            try:
                await stream.write(encode_varint_prefixed(catchup.encode(message)))
                reply = await read_varint_prefixed_bytes_limited(stream,
                                                                 catchup.REPLY_BYTES_MAX)
            finally:
                await stream.close()
        return catchup.decode(reply)

    async def catch_up_with(self, peer: ID) -> int:
        """Fetch what `peer` has and we lack; returns how many envelopes were accepted."""
        theirs = catchup.digests_of(await self._request(peer, {"op": "summary"}))
        buckets = differing_buckets(self.pipeline.ids.summary(), theirs)
        if not buckets:
            return 0
        ids = catchup.ids_of(await self._request(peer, {"op": "ids", "buckets": buckets}))
        missing = self.pipeline.ids.missing_from(ids)
        accepted = 0
        for start in range(0, len(missing), catchup.FETCH_BATCH):
            chunk = missing[start:start + catchup.FETCH_BATCH]
            reply = await self._request(peer, {"op": "get", "ids": [c.raw for c in chunk]})
            good = []
            for wire in catchup.envelopes_of(reply):
                with self.policy.rate_exempt():  # a pull we pace ourselves
                    outcome = self.pipeline.judge(wire)
                self.metrics.envelopes.labels(outcome.verdict.value, outcome.reason).inc()
                if outcome.verdict is Verdict.ACCEPT and outcome.envelope is not None:
                    good.append(outcome.envelope)
                elif outcome.verdict is Verdict.REJECT:
                    self.router.scorer.penalize_behavior(peer, 1.0)  # type: ignore[union-attr]
            fresh = self.pipeline.commit(good, sync=False)
            if fresh:
                self.wal.note_write()
            accepted += len(fresh)
            # Counted with the commit, not after the loop: anyone who sees the plan
            # move (the yield below lets them) sees the count too.
            self.metrics.synced.inc(len(fresh))
            await trio.sleep(0)
        if accepted:
            log.info("caught up peer=%s accepted=%d", peer.to_base58(), accepted)
        return accepted

    def _protocols_of(self, peer: ID) -> list[str] | None:
        """What identify reported for `peer`, or None if it has not answered yet."""
        try:
            protocols = self.host.get_peerstore().get_protocols(peer)
        except KeyError:  # PeerStoreError: an unknown peer
            return None
        return [str(p) for p in protocols] or None

    async def _catchup_loop(self) -> None:
        rng = random.Random()
        while True:
            connected = self.host.get_connected_peers()
            self.sync_peers.forget(connected)
            peers = self.sync_peers.candidates(connected, self._protocols_of)
            if peers:
                peer = rng.choice(peers)
                try:
                    await self.catch_up_with(peer)
                    self.sync_peers.succeeded(peer)
                except Exception as exc:  # noqa: BLE001 - a peer's failure costs only this round
                    backoff = self.sync_peers.failed(peer)
                    log.debug("catch-up failed peer=%s error=%r; not asked for %.0f s",
                              peer, exc, backoff)
            await trio.sleep(CATCHUP_INTERVAL_S * (0.5 + rng.random()))

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
        plan = replica.plan
        self.metrics.peers.set(len(self.host.get_connected_peers()))
        self.metrics.lamport.set(self.clock.time)
        return {
            "peer_id": self.peer_id.to_base58(),
            "addrs": self.addrs(),
            "account": self.identity.public_key.hex(),
            "peers": len(self.host.get_connected_peers()),
            "topics": sorted(self.topics.values()),
            "lamport": self.clock.time,
            "plan_root": plan.root().hex(),
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
            "tasks": len(plan.task_ids()),
            "links": len(plan.links()),
            "swarm": self.genesis.swarm_id.hex(),
            "genesis": self.genesis.value["name"],
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "api": self.api_url,
            "pid": os.getpid(),
        }

    def deliveries(self) -> list[dict[str, Any]]:
        return [{"id": str(cid), "t_ns": t_ns, "event": event}
                for cid, t_ns, event in self.delivery_log]

    def plan_root(self) -> dict[str, Any]:
        plan = self.pipeline.replica.plan
        return {"plan_root": plan.root().hex(), "lamport": self.clock.time,
                "tasks": len(plan.task_ids()), "links": len(plan.links())}

    def plan_thread(self, thread: str) -> dict[str, Any]:
        plan = self.pipeline.replica.plan
        edges: dict[str, list[str]] = {}
        for src, dst in plan.links():
            edges.setdefault(src, []).append(dst)
        order, seen, frontier = [], {thread}, [thread]
        while frontier:
            node = frontier.pop(0)
            order.append(node)
            for nxt in edges.get(node, []):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        tasks = []
        for task_id in order:
            view = plan.task(task_id)
            tasks.append({"task_id": task_id, "known": view is not None,
                          "title": view.title if view else "",
                          "class": view.task_class if view else "",
                          "state": view.state if view else None,
                          "depends_on": sorted(edges.get(task_id, []))})
        return {"thread": thread, "tasks": tasks}

    def metrics_text(self) -> bytes:
        plan = self.pipeline.replica.plan
        self.metrics.plan_tasks.set(len(plan.task_ids()))
        self.metrics.plan_links.set(len(plan.links()))
        self.metrics.stored.set(self.store.count)
        self.metrics.peers.set(len(self.host.get_connected_peers()))
        self.metrics.lamport.set(self.clock.time)
        return self.metrics.render()


def open_node(home: Path, *, listen: list[str] | None = None,
              bootstrap: Iterable[str] | None = None, api: str | None = None,
              mdns: bool | None = None) -> Node:
    settings = NodeSettings.from_home(home, listen=listen,
                                      bootstrap=list(bootstrap) if bootstrap is not None
                                      else None, api=api, mdns=mdns)
    genesis = load_genesis(home)
    identity = load_identity(home)
    return Node(settings, genesis, identity)


__all__ = ["LocalProtocolError", "Node", "NodeSettings", "open_node", "topic"]
