"""A malformed gossipsub RPC costs the sender its stream, not the node its life.

Found by `swarm-testnet soak` (docs/SOAK.md): py-libp2p's pubsub stream handler catches
a stream's read errors but not protobuf's `DecodeError`, so one RPC that does not parse
ended the whole node process (exit code 1, "Error parsing message with type
'pubsub.pb.RPC'"), in the 10-minute run with seed 4. Any connected peer could send one.
Method: two in-process nodes and a bare py-libp2p host connected to node 0 that sends
framed junk on both gossipsub protocols; then node 0 must still gossip a NEED to node 1.
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
from libp2p.utils import encode_varint_prefixed

from swarm.node import p2p
from swarm.testnet.inproc import wait_for


async def test_a_malformed_pubsub_rpc_does_not_stop_the_node(swarmlet: Any) -> None:
    s = await swarmlet(2)
    target = s.nodes[0]
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host, _ = p2p.make_host(os.urandom(32), listen)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs=listen))
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(target.addrs()[0])))
        for protocol in (PROTOCOL_ID_V11, PROTOCOL_ID):
            for junk in (b"\xff" * 32, b"\x0a\x05ab"):  # not protobuf; a truncated field
                with trio.fail_after(15):
                    stream = await host.new_stream(target.peer_id, [TProtocol(protocol)])
                    await stream.write(encode_varint_prefixed(junk))
                    await trio.sleep(0.2)
                    with contextlib.suppress(Exception):  # the node may have reset it
                        await stream.close()
        with trio.fail_after(60):
            need = await target.publish("NEED", {"class": "simple", "budget": 3}, "", [])
            await wait_for(lambda: need["id"] in s.nodes[1].pipeline.replica.plan.task_ids(),
                           "the NEED to reach node 1")
