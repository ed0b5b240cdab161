"""mDNS discovery: two nodes with `mdns` on find and dial each other; one without, nobody.

Goal: with the `mdns` config key set (what `swarm-node start --mdns` sets), nodes of the
same swarm connect with no bootstrap list and then converge; a node of the same swarm
with mDNS off is neither advertised nor dialled. Method: three in-process nodes, no
bootstrap entries, real zeroconf on this machine's interfaces. Skipped, saying why, where
multicast does not come back to the sender (no interface for it).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

from swarm.node.home import read_config, write_config
from swarm.testnet.inproc import Swarmlet, make_homes, wait_for

MDNS_GROUP = "224.0.0.251"


def multicast_loops_back() -> bool:
    """Does a datagram sent to the mDNS group on some free port come back to us?"""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("", 0))
            port = rx.getsockname()[1]
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          struct.pack("4s4s", socket.inet_aton(MDNS_GROUP),
                                      socket.inet_aton("0.0.0.0")))
            rx.settimeout(2.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"probe", (MDNS_GROUP, port))
            return rx.recv(16) == b"probe"
    except OSError:
        return False


async def test_nodes_with_mdns_find_each_other(tmp_path: Path) -> None:
    if not multicast_loops_back():
        pytest.skip("multicast to 224.0.0.251 does not loop back on this machine")
    homes, gen = make_homes(tmp_path, 3)
    for home in homes[:2]:
        write_config(home, {**read_config(home), "mdns": True})
    async with trio.open_nursery() as nursery:
        s = Swarmlet(nursery, homes, gen)
        a, b, c = [await s.start(i) for i in range(3)]
        assert a.settings.mdns and b.settings.mdns and not c.settings.mdns

        def connected(x: Any, y: Any) -> bool:
            return y.peer_id in x.host.get_connected_peers()

        # Whoever dials first (our mDNS dialler, or py-libp2p's own connection manager,
        # which also reads the addresses mDNS put in the peerstore), they connect.
        await wait_for(lambda: connected(a, b) and connected(b, a), "mDNS to connect a and b")
        doc = await a.publish("NEED", {"class": "simple", "budget": 3}, "", [])
        await wait_for(lambda: doc["id"] in b.pipeline.replica.plan.task_ids(),
                       "gossip over the discovered connection")
        # c does not advertise and does not listen: nobody dials it, it dials nobody.
        await trio.sleep(2.0)
        assert c.host.get_connected_peers() == []
        nursery.cancel_scope.cancel()
