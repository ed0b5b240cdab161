"""A flood of valid envelopes from one sender: ignored over the rate, never forwarded.

Goal: envelopes the policy ignores because their sender is over its rate
(`sender_rate_per_s`) are not stored, not forwarded (so the flood stops at the first
honest node), and cost the forwarding peer nothing (it is not at fault for a sender's
pace); honest traffic keeps flowing. Method: a bare py-libp2p host publishes a burst of
correctly signed NEEDs from one account at a node; the node's router is watched for what
it forwards.
"""

from __future__ import annotations

import os
from typing import Any

import trio
from gossip_kit import sample, stranger
from libp2p.pubsub.pb import rpc_pb2

from swarm.node.service import Node
from swarm.protocol.envelope import Identity, make_envelope
from swarm.testnet.inproc import wait_for

FLOOD = 400


async def test_a_flood_is_ignored_not_forwarded_and_costs_the_forwarder_nothing(
        swarmlet: Any) -> None:
    s = await swarmlet(3)
    target: Node = s.nodes[0]
    limit = s.genesis.params["sender_rate_per_s"]
    assert 2 * limit < FLOOD
    flooder = Identity(os.urandom(32))
    wires = [make_envelope(flooder, kind="NEED", swarm=s.genesis.swarm_id, lamport=k + 1,
                           ts=0, payload={"class": "simple", "budget": k + 1}).wire
             for k in range(FLOOD)]
    sent = set(wires)
    forwarded: list[bytes] = []
    publish = target.router.publish

    async def watch(forwarder: Any, msg: rpc_pb2.Message) -> None:
        forwarded.append(msg.data)
        await publish(forwarder, msg)

    target.router.publish = watch  # type: ignore[method-assign]

    async with stranger(target) as flooding:
        mallory, pubsub, topic = flooding.peer_id, flooding.pubsub, flooding.topic
        for wire in wires:
            await pubsub.publish(topic, wire)
        await wait_for(lambda: sample(target, "accept", "ok")
                       + sample(target, "ignore", "rate_limited") >= FLOOD,
                       "the target to judge the whole flood")
        stored = {target.store.get(c) for c, _ in target.store.log()}
        ignored = sent - stored
        assert sample(target, "ignore", "rate_limited") == len(ignored) > 0
        # Forwarded: what it stored, and nothing it ignored.
        flood_forwarded = {d for d in forwarded if d in sent}
        assert flood_forwarded <= stored and not flood_forwarded & ignored
        # Ignoring is not the forwarder's fault: no invalid-message count against it.
        assert target.router.scorer is not None
        assert sum(target.router.scorer.invalid_messages.get(mallory, {}).values()) == 0
        # The rest of the swarm never saw the ignored ones by gossip (node 1 hears only
        # the target; catch-up can only copy what the target stored).
        await trio.sleep(1.0)
        for node in (s.nodes[1], s.nodes[2]):
            assert sample(node, "ignore", "rate_limited") + sample(node, "accept", "ok") \
                <= len(stored)
        # Honest traffic still flows through the node the flood hit.
        fresh = await s.nodes[2].publish("NEED", {"class": "simple", "budget": 7}, "", [])
        await wait_for(lambda: fresh["id"] in target.pipeline.replica.plan.task_ids(),
                       "honest traffic to reach the target")
