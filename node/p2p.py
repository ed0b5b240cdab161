"""libp2p plumbing: the host, gossipsub with every parameter chosen, and framing.

Owns how we configure py-libp2p 0.8.1 and nothing about what flows over it. Each
setting below was measured against that version (see docs/NETWORK.md for the figures):

* Noise only and Yamux only: `new_host` otherwise also offers TLS, secio and plaintext,
  and mplex.
* One connection per peer: the default of three makes every dial wait a 250 ms
  happy-eyeballs delay.
* A 0.7 s heartbeat with adaptive gossip off (left on, it moves a small mesh's heartbeat
  to 30-60 s), spam protection off (it drops everything over 10 messages per topic per
  second per forwarder, our own publishes included), peer scoring on with weights on
  invalid messages and behaviour penalties.
* Outbound RPC queues and subscription channels 4096 deep instead of 32: both limits are
  module constants in py-libp2p, so they are patched once, before any host starts.
* StrictSign and content-addressed message ids (SHA-256 of the data), so the same
  envelope re-published by catch-up or by another node is one message. StrictSign, the
  default, stays although envelopes carry our own signature: js-libp2p and Kubo
  interoperate only so, and py-libp2p's unsigned mode drops every message after the
  first.
* Dials asked for by a user (`connect`, `dial`) try exactly the address given and leave
  nothing behind when they fail (py-libp2p would keep dialling a wrong address, and
  refuse the peer for a minute); `connect` says why a dial failed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ValidationError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from swarm.protocol.errors import LocalProtocolError

from . import p2p_fastpath

QUEUE_DEPTH = 4096
HEARTBEAT_S = 0.7
ADDR_TTL_S = 120  # what host.connect gives the addresses it is handed


def _patch_queue_depths() -> None:
    # py-libp2p 0.8.1 hard-codes both at 32 and drops silently beyond (rpc_queue.py:39,
    # pubsub.py:124); they are module globals read when a peer or subscription appears.
    pubsub_module.RpcQueue = functools.partial(  # type: ignore[attr-defined,assignment]
        RpcQueue, max_size=QUEUE_DEPTH)
    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_DEPTH


_patch_queue_depths()
p2p_fastpath.apply()  # per-message work py-libp2p repeats needlessly (see that module)


def peer_id_of(public_key_or_seed: Any) -> ID:
    return ID.from_pubkey(public_key_or_seed)


def peer_id_of_account(account: bytes) -> ID:
    """The libp2p peer id of an account (its 32-byte Ed25519 public key)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(account))


def key_pair(seed: bytes) -> Any:
    """The libp2p key pair for our Ed25519 seed: the node's peer id and account share it."""
    return ed25519_key_pair(seed)


def make_host(seed: bytes, listen: list[multiaddr.Multiaddr]) -> tuple[IHost, ID]:
    kp = key_pair(seed)
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp,
                                                   noise_privkey=x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=listen,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    return host, ID.from_pubkey(kp.public_key)


DNS_FAMILIES = {"dns": 0, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


async def resolve(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    """`addr` with a leading /dns, /dns4 or /dns6 name replaced by the first address it
    resolves to: py-libp2p's TCP transport dials IP addresses only. Raises OSError if
    the name does not resolve."""
    parts = str(addr).split("/")
    if len(parts) < 3 or parts[1] not in DNS_FAMILIES:
        return addr
    infos = await trio.socket.getaddrinfo(parts[2], None, DNS_FAMILIES[parts[1]],
                                          socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{parts[2]} has no address")
    ip = str(infos[0][4][0])
    return multiaddr.Multiaddr("/".join(["", "ip6" if ":" in ip else "ip4", ip, *parts[3:]]))


def can_dial(host: IHost, addr: multiaddr.Multiaddr) -> bool:
    """Whether one of the host's transports dials `addr` (TCP only, here)."""
    manager = host.get_network().transport_manager  # type: ignore[attr-defined]
    return manager.transport_for_dialing(addr) is not None


async def dial(host: IHost, info: PeerInfo, timeout_s: float) -> None:
    """Connect to `info.peer_id` at exactly `info.addrs`; raise what the dial raised.

    py-libp2p's `host.connect` adds the addresses to the peerstore (for ADDR_TTL_S) and
    dials one address per transport out of all the peerstore holds for the peer, oldest
    first; after a failed dial it refuses to dial that peer at all for a minute (its
    negative cache). A wrong address would then be dialled instead of a corrected one,
    and the corrected one not at all. So during this dial the peerstore holds only the
    given addresses, and after a failure it gets back what it held before, and the
    negative cache forgets the peer.
    """
    network = host.get_network()
    store = host.get_peerstore()
    peer = info.peer_id
    if network.get_connections(peer):
        return
    try:
        before = store.addrs(peer)
    except PeerStoreError:
        before = []
    network.unblock_peer(peer)  # type: ignore[attr-defined]
    store.clear_addrs(peer)
    try:
        with trio.fail_after(timeout_s):
            await host.connect(info)
    except BaseException:
        store.clear_addrs(peer)
        if before:
            store.add_addrs(peer, before, ADDR_TTL_S)
        network.unblock_peer(peer)  # type: ignore[attr-defined]
        raise


async def connect(host: IHost, own: ID, addr: str, timeout_s: float) -> ID:
    """Dial a peer at exactly `addr` (a multiaddr ending in /p2p/<peer id>) for a user.
    LocalProtocolError (field `multiaddr`) says what is wrong with the address, or why
    the dial failed; a failed dial leaves nothing that would spoil the next."""
    def refuse(reason: str, code: str) -> LocalProtocolError:
        return LocalProtocolError("multiaddr", reason, code=code)

    try:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # noqa: BLE001 - the multiaddr library raises many types
        raise refuse(f"not a multiaddr ending in /p2p/<peer id> ({_clip(exc)})",
                     "bad_multiaddr") from None
    if info.peer_id == own:
        raise refuse("names this node's own peer id", "own_peer")
    try:
        with trio.fail_after(timeout_s):
            info.addrs = [await resolve(a) for a in info.addrs]
    except (OSError, TimeoutError) as exc:
        raise refuse(f"cannot resolve {info.addrs[0]} ({_clip(exc) or 'no answer'})",
                     "unresolvable") from None
    for a in info.addrs:
        if not str(a) or not can_dial(host, a):
            raise refuse(f"this node cannot dial {str(a) or 'an empty address'}: it "
                         "dials /ip4, /ip6, /dns, /dns4 or /dns6 addresses with /tcp",
                         "unsupported_transport")
    try:
        await dial(host, info, timeout_s)
    except TimeoutError:
        raise refuse(f"no answer from {info.peer_id} at {info.addrs[0]} within "
                     f"{timeout_s:g} s", "unreachable") from None
    except Exception as exc:  # noqa: BLE001 - py-libp2p's dials raise many types
        raise refuse(f"cannot connect to {info.peer_id} at {info.addrs[0]} "
                     f"({_clip(_root_cause(exc))})", "unreachable") from None
    return info.peer_id


def _clip(exc: BaseException | None, chars: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= chars else text[:chars] + "..."


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error under py-libp2p's wrappers (a failed dial of all addresses
    wraps a MultiError of each address's failure, which wraps the socket's)."""
    for _ in range(8):  # bounded: a cycle of causes is not impossible
        inner = exc.__cause__ or next(iter(getattr(exc, "errors", None) or []), None) \
            or exc.__context__
        if inner is None:
            return exc
        exc = inner
    return exc


def make_router() -> GossipSub:
    return GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        direct_peers=None,
        time_to_live=30,
        gossip_window=3,
        gossip_history=5,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=HEARTBEAT_S,  # type: ignore[arg-type]  # annotated int; float works
        direct_connect_initial_delay=0.1,
        direct_connect_interval=300,
        do_px=False,
        px_peers_count=16,
        prune_back_off=60,
        unsubscribe_back_off=10,
        score_params=ScoreParams(
            p4_invalid_messages=TopicScoreParams(weight=10.0, cap=100.0, decay=0.9),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_decay=0.9,
            publish_threshold=-50.0,
            gossip_threshold=-100.0,
            graylist_threshold=-400.0,
            accept_px_threshold=10.0,
        ),
        max_idontwant_messages=10,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        max_messages_per_topic_per_second=10.0,
        eclipse_protection_enabled=False,
        min_mesh_diversity_ips=1,
        max_pending_messages_per_peer=100,
        pending_messages_ttl=30.0,
    )


def content_message_id(msg: rpc_pb2.Message) -> bytes:
    return hashlib.sha256(msg.data).digest()


class Ignore(Exception):
    """Raised by a topic validator for gossipsub's third outcome, IGNORE."""


class IgnoringPubsub(Pubsub):
    """py-libp2p's Pubsub with go-libp2p-pubsub's ValidationIgnore.

    py-libp2p 0.8.1 validators return a bool: True delivers and forwards, False drops and
    counts an invalid message against the forwarding peer. A validator here may also raise
    `Ignore`: the message is then neither delivered nor forwarded, the forwarder is not
    penalised (the fault, such as a sender over its rate, is not the forwarder's), and
    the message id is marked seen, so later copies are dropped as duplicates instead of
    being judged again.

    A copy already seen is dropped as it is read, before py-libp2p spawns a managed task
    for it (`_is_subscribed_to_msg` is asked first, at py-libp2p's only call site; the
    task would only find the message seen and return). In a full mesh most copies are
    duplicates: each receiver of a 5-node swarm reads about three per envelope.
    """

    def __init__(self, host: IHost, router: GossipSub, **kwargs: Any) -> None:
        super().__init__(host, router, **kwargs)
        self.duplicates_dropped = 0
        # An asynchronous first stage, run before the topic validators (which run without
        # a checkpoint: py-libp2p's synchronous validators): it may raise `Ignore`, and it
        # may take its time without holding up the node's other work.
        self.prepare: Callable[[ID, rpc_pb2.Message], Awaitable[None]] | None = None
        # (forwarder, topics) of the message being ignored right now: push_msg penalises
        # each of its topics synchronously after validate_msg raises, then returns.
        self._pardon: tuple[ID, set[str]] | None = None
        scorer = router.scorer
        if scorer is not None:
            penalise = scorer.on_invalid_message

            def on_invalid_message(peer: ID, topic: str) -> None:
                pardon = self._pardon
                if pardon is not None and pardon[0] == peer and topic in pardon[1]:
                    pardon[1].discard(topic)
                    if not pardon[1]:
                        self._pardon = None
                    return
                penalise(peer, topic)

            scorer.on_invalid_message = on_invalid_message  # type: ignore[method-assign]

    async def stream_handler(self, stream: INetStream) -> None:
        """py-libp2p's handler ends a peer's stream on read errors but lets protobuf's
        DecodeError through, and one RPC that does not parse then ended the whole node
        (found by `swarm-testnet soak`; any connected peer could send one). Treat it like
        a broken stream: reset it and forget the peer, as py-libp2p does for those."""
        try:
            await super().stream_handler(stream)
        except DecodeError:
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(stream.muxed_conn.peer_id)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        if not super()._is_subscribed_to_msg(msg):
            return False
        if self._is_msg_seen(msg):
            self.duplicates_dropped += 1
            return False
        return True

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        self._pardon = None
        try:
            if self.prepare is not None:
                await self.prepare(msg_forwarder, msg)
            await super().validate_msg(msg_forwarder, msg)
        except Ignore:
            self._mark_msg_seen(msg)
            self._pardon = (msg_forwarder, set(msg.topicIDs))
            raise ValidationError("ignored") from None


def make_pubsub(host: IHost, router: GossipSub) -> IgnoringPubsub:
    return IgnoringPubsub(host, router, cache_size=None, seen_ttl=120, sweep_interval=60,
                          strict_signing=True, msg_id_constructor=content_message_id)
