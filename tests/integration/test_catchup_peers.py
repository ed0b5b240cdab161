"""Catch-up with a foreign peer connected: it is never asked, and catch-up still works.

Goal: a libp2p peer that does not speak our sync protocol (as a Kubo node dialled for
evidence) is left out of catch-up once identify has shown its protocols, so it can never
make a node's catch-up wait on it; the node still catches up from the peer that does.
Method: two in-process nodes and a bare py-libp2p host (identify and nothing else) dialled
by the restarted node, which missed twenty NEEDs while it was down.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any

import multiaddr
from libp2p.peer.peerinfo import info_from_p2p_addr

from swarm.node import p2p
from swarm.node.service import sync_protocol
from swarm.testnet.inproc import wait_for


async def test_a_foreign_peer_is_never_asked_for_catch_up(swarmlet: Any) -> None:
    s = await swarmlet(2)
    await s.stop(1)
    for k in range(20):
        await s.nodes[0].publish("NEED", {"class": "simple", "budget": k + 1}, "", [])
    # Gossip would hand the NEEDs over itself when node 1 returns (py-libp2p keeps
    # messages for a peer that went away, 30 s, and its message cache answers IWANT):
    # restart node 0 too, so that only catch-up can bring them.
    await s.stop(0)
    await s.start(0)
    node = await s.start(1)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    foreign, foreign_id = p2p.make_host(os.urandom(32), listen)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(foreign.run(listen_addrs=listen))
        await foreign.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0])))
        await wait_for(lambda: node.catchup.protocols_of(foreign_id) is not None,
                       "identify to tell the node what the foreign peer speaks")
        assert str(sync_protocol(s.genesis)) not in (node.catchup.protocols_of(foreign_id) or [])
        assert node.catchup.peers.candidates(node.host.get_connected_peers(),
                                          node.catchup.protocols_of) == []
        await node.connect(s.nodes[0].addrs()[0])
        await wait_for(lambda: node.catchup.protocols_of(s.nodes[0].peer_id) is not None,
                       "identify of the honest node")
        assert node.catchup.peers.candidates(node.host.get_connected_peers(),
                                          node.catchup.protocols_of) == [s.nodes[0].peer_id]
        await wait_for(lambda: s.converged(20), "the restarted node to catch up")
        assert node.metrics.synced._value.get() >= 1
        # No round was ever tried with the foreign peer, so none failed.
        assert foreign_id in node.host.get_connected_peers()
        assert node.catchup.peers.set_aside() == set()
