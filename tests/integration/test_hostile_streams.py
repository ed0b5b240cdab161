"""A hostile peer on every stream protocol a node serves.

Goal: a peer that opens the node's request/response and stream protocols (catch-up,
DECIDE and ledger submissions, the Raft transport, bitswap, gossipsub) and sends garbage, lies
about lengths, stops halfway, holds streams open without writing, or floods one protocol
with requests, costs the node only those streams, and only as many at once as
`node/streamlimits.py` allows one peer: it keeps serving every honest caller (gossip
converges, DECIDEs commit, a plain node decides through it, catch-up answers).
Method: three in-process nodes on loopback in a line (validators 0 and 1, plain node 2
connected to 1 only), and a bare py-libp2p host (mallory) connected to node 1.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AsyncExitStack
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.node import catchup, p2p
from swarm.node.service import Node, sync_protocol
from swarm.protocol import bitswap as bs
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.logformat import uvarint
from swarm.testnet.inproc import wait_for

JUNK = [
    os.urandom(1024),  # not even a length prefix that makes sense
    uvarint(1 << 40) + os.urandom(64),  # a length far over every limit
    uvarint(100) + os.urandom(10),  # a length, then the stream ends early
    encode_varint_prefixed(b"\xa1\x61x\x01"),  # well framed, but {"x": 1}
    encode_varint_prefixed(b"\xff" * 32),  # well framed, not CBOR
    b"",  # nothing at all
]


async def _poke(host: Any, target: Node, protocol: TProtocol, data: bytes) -> str:
    """Open a stream, write `data`, close our side, read whatever comes back."""
    try:
        with trio.fail_after(15):
            stream = await host.new_stream(target.peer_id, [protocol])
            if data:
                await stream.write(data)
            await stream.close()
            with trio.move_on_after(2):  # gossipsub keeps a peer's stream open: fine
                try:
                    await stream.read(65536)
                except Exception:  # noqa: BLE001 - a reset is the expected answer to garbage
                    return "reset"
                return "answered"
            return "open"
    except Exception as exc:  # noqa: BLE001 - refusing the protocol is fine too
        return type(exc).__name__


async def test_garbage_on_every_stream_protocol_costs_only_those_streams(
        swarmlet: Any) -> None:
    s = await swarmlet(3, validators=2)
    target: Node = s.nodes[1]
    outsider: Node = s.nodes[2]
    assert target.decider.raft.id != 0 and outsider.decider.raft.id == 0
    transport = target.decider.transport
    assert transport is not None
    protocols = [sync_protocol(s.genesis), target.decider.submission_protocol,
                 target.ledger.submission_protocol, transport.protocol,
                 *(TProtocol(p) for p in bs.PROTOCOLS),
                 PROTOCOL_ID, PROTOCOL_ID_V11]  # gossipsub (tests/.../test_pubsub_garbage)

    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host, _ = p2p.make_host(os.urandom(32), listen)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs=listen))
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(target.addrs()[0])))

        # 1. Every kind of junk on every protocol, one stream each.
        outcomes = [await _poke(host, target, p, junk) for p in protocols for junk in JUNK]
        assert len(outcomes) == len(protocols) * len(JUNK)

        # 2. Streams held open without a byte, and a flood of honest-looking catch-up
        #    requests, both still running while honest callers use the node.
        held = []
        for p in protocols[:3]:
            for _ in range(40):  # more than the submission protocols allow one peer
                try:
                    with trio.fail_after(15):
                        held.append(await host.new_stream(target.peer_id, [p]))
                except Exception:  # noqa: BLE001 - refused: the node bounds them
                    pass

        async def flood() -> None:
            async def one() -> None:
                try:
                    stream = await host.new_stream(target.peer_id, [protocols[0]])
                    await stream.write(encode_varint_prefixed(
                        catchup.encode({"op": "summary"})))
                    await read_varint_prefixed_bytes_limited(stream, catchup.REPLY_BYTES_MAX)
                    await stream.close()
                except Exception:  # noqa: BLE001 - the node may refuse some of a flood
                    pass
            async with trio.open_nursery() as n:
                for _ in range(200):
                    n.start_soon(one)

        async with trio.open_nursery() as mallory:
            mallory.start_soon(flood)
            # 3. Honest traffic through the node mallory targets.
            with trio.fail_after(90):
                need = await s.nodes[0].publish("NEED", {"class": "simple", "budget": 3},
                                                "", [])
                await wait_for(lambda: s.converged(1), "a NEED to reach every node")
                assert need["id"] in target.pipeline.replica.plan.task_ids()
                own = await target.decider.try_decide(str(dag_cbor_cid(b"hostile-1")), "p1")
                assert own["proposal_id"] == "p1"
                relayed = await outsider.decider.try_decide(need["id"], "p2")
                assert relayed["proposal_id"] == "p2"
                assert await outsider.catchup.catch_up_with(target.peer_id) == 0  # nothing missing
        # What mallory may hold at once is bounded, and every slot comes back.
        assert target.catchup.slots.refused > 0
        assert target.decider.submissions.slots.refused > 0
        assert target.ledger.submissions.slots.refused > 0
        for stream in held:
            with trio.move_on_after(5), contextlib.suppress(Exception):
                await stream.reset()  # the node may have reset it already
        servers = [target.catchup.slots, target.decider.submissions.slots,
                   target.ledger.submissions.slots]
        await wait_for(lambda: all(x.in_use == 0 for x in servers), "every slot back")
    # Mallory is not a validator: its Raft streams were refused, never read.
    assert transport.stats["streams_refused"] >= len(JUNK)
