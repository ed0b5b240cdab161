"""A hostile peer that nobody here wrote the validator for.

Goal: garbage, forged signatures, envelopes for another swarm, oversize documents and
replays from a separate libp2p peer are each rejected or ignored and counted by reason,
the honest nodes keep serving, and honest traffic keeps flowing. Method: a bare
py-libp2p host with gossipsub (StrictSign, no validator of ours) joins the topics,
publishes that traffic at one node, then an honest node publishes a NEED.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import trio
from gossip_kit import sample, stranger

from swarm.node.service import Node
from swarm.protocol.envelope import Identity, make_envelope
from swarm.testnet.inproc import wait_for


async def test_hostile_peer_is_rejected_and_honest_traffic_flows(swarmlet: Any) -> None:
    s = await swarmlet(3)
    target: Node = s.nodes[0]
    swarm_id = s.genesis.swarm_id
    mallory = Identity(os.urandom(32))
    honest_old = await s.nodes[1].publish("NEED", {"class": "simple", "budget": 3}, "", [])
    await wait_for(lambda: s.converged(1), "the first NEED everywhere")
    old_wire = s.nodes[1].store.get(
        next(c for c, _ in s.nodes[1].store.log() if str(c) == honest_old["id"]))
    assert old_wire is not None

    def hostile_round(k: int) -> list[bytes]:
        """One of each kind, fresh bytes every round: gossipsub drops a message id it has
        seen (the publisher's own cache included), so repeats would never arrive."""
        need = {"class": "simple", "budget": 5}
        good = make_envelope(mallory, kind="NEED", swarm=swarm_id, lamport=k + 1, ts=0,
                             payload=need)
        forged = bytearray(good.wire)
        forged[20] ^= 0x55
        other_swarm = make_envelope(mallory, kind="NEED", swarm=hashlib.sha256(b"x").digest(),
                                    lamport=k + 1, ts=0, payload=need)
        return [os.urandom(200), bytes(forged), other_swarm.wire,
                b"\xa1" + os.urandom(70_000), old_wire]

    async with stranger(target) as mallory_peer:
        pubsub, topic = mallory_peer.pubsub, mallory_peer.topic

        def all_kinds_rejected() -> bool:
            return (sample(target, "reject", "bad_signature") >= 1
                    and sample(target, "reject", "wrong_swarm") >= 1
                    and sample(target, "reject", "too_large") >= 1
                    and sample(target, "reject", "decode") + sample(target, "reject",
                                                                    "truncated") >= 1)

        # A flood: rounds of every kind until the target has seen (and rejected) each.
        with trio.move_on_after(60):
            k = 0
            while not all_kinds_rejected():
                for data in hostile_round(k):
                    await pubsub.publish(topic, data)
                k += 1
                await trio.sleep(0.1)
        assert all_kinds_rejected(), "the target never rejected every kind of hostile input"
        # Honest traffic still flows through the node mallory targeted.
        fresh = await s.nodes[2].publish("NEED", {"class": "simple", "budget": 4}, "", [])
        await wait_for(lambda: s.converged(2), "honest traffic to converge")
        assert fresh["id"] in target.pipeline.replica.plan.task_ids()
        # Nothing mallory sent was stored or applied.
        assert target.store.count == 2
        assert all(n.store.count == 2 for n in s.nodes.values())
        text = target.metrics_text().decode()
        assert 'swarm_envelopes_total{reason="bad_signature",verdict="reject"}' in text


async def test_duplicate_copies_are_dropped_before_judging(swarmlet: Any) -> None:
    """In a full mesh of three, a receiver gets each envelope from its publisher and
    again from the other receiver (unless that copy comes while the first is still being
    judged); the second copy is dropped as it is read (counted),
    and every envelope is still delivered once."""
    s = await swarmlet(3)
    await s.nodes[2].connect(s.nodes[0].addrs()[0])  # a triangle: two paths to each node
    topic = s.nodes[0].topics["plan"]
    await wait_for(lambda: all(len(n.router.mesh.get(topic, ())) == 2
                               for n in s.nodes.values()), "full meshes of three")
    for k in range(20):
        await s.nodes[0].publish("NEED", {"class": "simple", "budget": k + 1}, "", [])
    await wait_for(lambda: s.converged(20), "20 NEEDs everywhere")
    assert all(n.store.count == 20 for n in s.nodes.values())
    dropped = [n.status()["gossip_duplicates_dropped"] for n in s.nodes.values()]
    assert sum(dropped) > 0, dropped
