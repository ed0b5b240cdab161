"""mDNS discovery (optional, off by default): find nodes of the same swarm on the local
network and dial them.

Owns the use of py-libp2p 0.8.1's mDNS (`libp2p.discovery.mdns`, on zeroconf) and
nothing else; what a dialled peer then does goes through the usual paths.

* The service is `_p2p-G._udp.local.` with `G` the first 11 hex digits of the swarm id
  (py-libp2p's "private network" form of the libp2p mDNS spec; DNS-SD allows 15 bytes
  for `p2p-G`), not the spec's shared `_p2p._udp`: a node dials only nodes of its own
  swarm, never every IPFS node on the LAN.
* py-libp2p's `MDNSDiscovery.start()` blocks for the zeroconf probe (1.6 s measured
  here) and `stop()` for the goodbye (0.25 s), so both run in a worker thread; the
  stale-entry sweep py-libp2p would spawn as a trio system task runs in our nursery.
* Discoveries arrive on zeroconf's thread through a process-wide singleton
  (`peerDiscovery`), so the handler only hands the peer to this node's trio loop, which
  keeps those its own listener found, skips itself and peers already connected, and
  dials the rest one at a time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import create_mdns_discovery
from libp2p.peer.peerinfo import PeerInfo

log = logging.getLogger("swarm.mdns")

ADDR_TTL_S = 120
SWEEP_INTERVAL_S = 60.0
DIAL_TIMEOUT_S = 10.0
QUEUE_MAX = 256
SERVICE_ID_DIGITS = 11  # DNS-SD: the service name `p2p-<digits>` is at most 15 bytes


class MdnsDiscovery:
    """Advertises this node and dials the nodes of the same swarm it hears about."""

    def __init__(self, host: IHost, swarm_id: bytes,
                 dial: Callable[[PeerInfo], Awaitable[Any]]) -> None:
        self.host = host
        self.fingerprint = swarm_id.hex()[:SERVICE_ID_DIGITS]
        self._dial = dial
        self.dialled: set[Any] = set()  # peer ids this node dialled because of mDNS

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[PeerInfo](QUEUE_MAX)

        def on_discovered(info: PeerInfo) -> None:  # on zeroconf's thread
            with contextlib.suppress(trio.RunFinishedError):  # the node has stopped
                token.run_sync_soon(_offer, info)

        def _offer(info: PeerInfo) -> None:
            # Full: a burst of announcements; the next one brings it back.
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                send.send_nowait(info)

        discovery = create_mdns_discovery(
            self.host.get_network(), private_network_fingerprint=self.fingerprint,
            ttl=ADDR_TTL_S, host=self.host)
        peerDiscovery.register_peer_discovered_handler(on_discovered)
        try:
            await trio.to_thread.run_sync(discovery.broadcaster.register)
            log.info("mdns started service=%s", discovery.service_type)
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep, discovery)
                async for info in receive:
                    if self._wanted(discovery, info):
                        await self._dial_one(info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_discovered)
            send.close()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_stop, discovery)

    def _wanted(self, discovery: Any, info: PeerInfo) -> bool:
        if info.peer_id == self.host.get_id():
            return False
        if info.peer_id in self.host.get_connected_peers():
            return False
        # The singleton also carries what other nodes' listeners in this process heard.
        return any(pid == info.peer_id
                   for pid, _ in list(discovery.listener.discovered_services.values()))

    async def _dial_one(self, info: PeerInfo) -> None:
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self._dial(info)
            self.dialled.add(info.peer_id)
            log.info("mdns dialled peer=%s", info.peer_id)
        except Exception as exc:  # noqa: BLE001 - a stale announcement costs one dial
            log.debug("mdns dial failed peer=%s error=%r", info.peer_id, exc)

    async def _sweep(self, discovery: Any) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL_S)
            discovery.listener.cleanup_stale_entries(max_age=ADDR_TTL_S * 2)


def _stop(discovery: Any) -> None:
    try:
        discovery.broadcaster.unregister()
    finally:
        discovery.listener.stop()
        discovery.zeroconf.close()
