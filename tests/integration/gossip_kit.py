"""What the hostile gossip tests share: a stranger on the mesh, a full mesh, counters.

The stranger is a bare py-libp2p peer with its own (unstaked) key. It runs gossipsub
with our settings but none of our validators, joins a topic, dials one node and
publishes whatever bytes a test gives it; it signs valid envelopes with an account
nobody staked, and it can ask a node's catch-up protocol for envelopes by id.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.node import catchup, p2p
from swarm.node.home import STORE_DIR
from swarm.node.service import Node, sync_protocol
from swarm.node.store import Store
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.testnet.inproc import Swarmlet, wait_for


async def full_mesh(swarmlet: Any, n: int) -> Swarmlet:
    """`n` in-process validators, each connected to every other: Raft (ledger, DECIDE)
    needs every validator to reach every other, as on a testnet."""
    s: Swarmlet = await swarmlet(n)
    await s.connect_mesh()
    return s


async def restart(s: Swarmlet, i: int, stored: list[Envelope] | None = None) -> Node:
    """Stop node `i`, start it again from its home, reconnect it to every other node and
    wait until Raft reaches it again (as `full_mesh` left the swarm). `stored` are
    written into its store while it is stopped, as an older version might have kept
    them."""
    await s.stop(i)
    if stored:
        store = Store(s.homes[i] / STORE_DIR)
        try:
            store.append([(e.id, e.wire) for e in stored])
        finally:
            store.close()
    node = await s.start(i)
    for j, other in sorted(s.nodes.items()):
        if j != i:
            await node.connect(other.addrs()[0])
    await wait_for(s.raft_connected, "Raft to reach every validator again")
    return node


def sample(node: Node, verdict: str, reason: str) -> float:
    """swarm_envelopes_total{verdict, reason} of one node."""
    value = node.metrics.registry.get_sample_value(
        "swarm_envelopes_total", {"verdict": verdict, "reason": reason})
    return value or 0.0


def invalid_count(node: Node, peer: ID) -> float:
    """Invalid messages `node`'s gossipsub scorer holds against `peer` (P4)."""
    scorer = node.router.scorer
    assert scorer is not None
    return float(sum(scorer.invalid_messages.get(peer, {}).values()))


class Stranger:
    def __init__(self, node: Node, pubsub: Any, host: Any, peer_id: ID, topic: str) -> None:
        self.node = node  # the node it is connected to
        self.pubsub = pubsub
        self.host = host
        self.peer_id = peer_id
        self.topic = topic
        self.identity = Identity(os.urandom(32))

    def envelope(self, kind: str, payload: dict[str, Any], *, lamport: int,
                 refs: list[Envelope] | None = None) -> Envelope:
        return make_envelope(self.identity, kind=kind, swarm=self.node.genesis.swarm_id,
                             lamport=lamport, ts=0, payload=payload,
                             refs=[r.id for r in refs or ()])

    def need(self, title: str, *, lamport: int, refs: list[Envelope] | None = None
             ) -> Envelope:
        return self.envelope("NEED", {"class": "simple", "budget": 1, "title": title},
                             lamport=lamport, refs=refs)

    async def publish(self, data: bytes | Envelope, topic: str | None = None) -> None:
        wire = data.wire if isinstance(data, Envelope) else data
        await self.pubsub.publish(topic or self.topic, wire)

    async def fetch(self, ids: list[Cid]) -> list[bytes]:
        """Ask the node's catch-up protocol for envelopes by id, as any peer may."""
        stream = await self.host.new_stream(self.node.peer_id,
                                            [sync_protocol(self.node.genesis)])
        try:
            request = {"op": "get", "ids": [c.raw for c in ids]}
            await stream.write(encode_varint_prefixed(catchup.encode(request)))
            reply = await read_varint_prefixed_bytes_limited(stream, catchup.REPLY_BYTES_MAX)
        finally:
            await stream.close()
        return catchup.envelopes_of(catchup.decode(reply))


@asynccontextmanager
async def stranger(node: Node, topic_name: str = "plan") -> AsyncIterator[Stranger]:
    """A stranger joined to `node`'s `topic_name` topic, in its mesh."""
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host, peer_id = p2p.make_host(os.urandom(32), listen)
    router = p2p.make_router()
    pubsub = p2p.make_pubsub(host, router)
    topic = node.topics[topic_name]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs=listen))
        await stack.enter_async_context(background_trio_service(pubsub))
        await stack.enter_async_context(background_trio_service(router))
        await pubsub.wait_until_ready()
        await pubsub.subscribe(topic)
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0])))
        await wait_for(lambda: len(router.mesh.get(topic, ())) > 0,
                       "the stranger to join the mesh")
        yield Stranger(node, pubsub, host, peer_id, topic)
