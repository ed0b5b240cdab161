"""Whom catch-up asks: only peers that speak the sync protocol, and not a failing one.

Goal: a connected peer that identify shows without our sync protocol is never chosen; a
peer not identified yet is, until a round with it fails, after which it is set aside for
a backoff that doubles and is capped, and cleared by a success or a disconnection.
Method: `SyncPeers` with real libp2p peer ids and a clock the test advances.
"""

from __future__ import annotations

import os

from swarm.node import catchup, p2p
from swarm.node.catchup import SyncPeers

SYNC = "/can-swarm/0123456789abcdef/sync/1.0.0"


def peer() -> object:
    return p2p.peer_id_of(p2p.key_pair(os.urandom(32)).public_key)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_identified_peers_without_the_protocol_are_never_chosen() -> None:
    ours, kubo, fresh = peer(), peer(), peer()
    protocols = {ours: ["/ipfs/id/1.0.0", SYNC, "/meshsub/1.1.0"],
                 kubo: ["/ipfs/id/1.0.0", "/ipfs/bitswap/1.2.0", "/meshsub/1.1.0"]}
    chooser = SyncPeers(SYNC, Clock())
    # `fresh` has not answered identify yet: worth a try.
    assert chooser.candidates([ours, kubo, fresh], protocols.get) == [ours, fresh]
    assert chooser.candidates([kubo], protocols.get) == []


def test_a_failed_peer_is_set_aside_with_a_doubling_capped_backoff() -> None:
    clock = Clock()
    chooser = SyncPeers(SYNC, clock)
    good, flaky = peer(), peer()
    unknown: dict[object, list[str]] = {}
    waits = [chooser.failed(flaky) for _ in range(7)]
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert waits[0] == catchup.FAILURE_BACKOFF_S and waits[-1] == catchup.FAILURE_BACKOFF_S_MAX
    assert chooser.set_aside() == {flaky}
    assert chooser.candidates([good, flaky], unknown.get) == [good]
    clock.t += 299.0
    assert chooser.candidates([good, flaky], unknown.get) == [good]
    clock.t += 1.0
    assert chooser.candidates([good, flaky], unknown.get) == [good, flaky]
    # The next failure continues the series; a success clears it.
    assert chooser.failed(flaky) == 300.0
    chooser.succeeded(flaky)
    assert chooser.set_aside() == set()
    assert chooser.failed(flaky) == 10.0


def test_a_disconnected_peer_is_forgotten() -> None:
    chooser = SyncPeers(SYNC, Clock())
    gone, stays = peer(), peer()
    chooser.failed(gone)
    chooser.failed(stays)
    chooser.forget([stays])
    assert chooser.set_aside() == {stays}
    # Reconnected, it starts afresh.
    assert chooser.candidates([gone], {}.get) == [gone]
