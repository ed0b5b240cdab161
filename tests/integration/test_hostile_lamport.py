"""Hostile Lamport times on real nodes: far-future clocks and reversals.

Goal (docs/PROTOCOL.md, section 7): no sender can pin or exhaust a node's Lamport
clock. An envelope above the receiver's ceiling (`lamport_ceiling` of its wall clock) is
ignored (`lamport_future`: not stored, not forwarded, nobody penalised) and accepted
once its time has come; a reversal against known refs is rejected (`lamport_reversal`,
not stored, not forwarded), and one found only when its refs arrive is never applied,
counted on its own and no longer offered. After each attack every node still creates
NEEDs, transfers and decides, with one plan root and one ledger root
(`hostile_kit.swarm_works`). Method: three in-process validators, fully connected; a
stranger (a bare libp2p peer with an unstaked key) publishes signed NEEDs at node 0.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
from gossip_kit import full_mesh, invalid_count, restart, sample, stranger
from hostile_kit import swarm_works

from swarm.node.pipeline import wall_ms
from swarm.node.service import Node
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.lamport import LAMPORT_MAX, LAMPORT_PER_MS, lamport_ceiling
from swarm.testnet.inproc import Swarmlet, wait_for

# The slow climb's step: ten seconds of the ceiling's growth.
CLIMB_STEP = 10_000 * LAMPORT_PER_MS
CLIMB_BELOW = 15  # envelopes below the ceiling when sent; as many again above it
# Climbing NEEDs more than 60 s of the ceiling's growth above it when sent: ignored by a
# receiver unless gossip took over a minute to deliver them.
CLIMB_FAR_ABOVE = sum(1 for k in range(CLIMB_BELOW) if k * CLIMB_STEP > 60_000 * LAMPORT_PER_MS)
OWN_TICKS_MAX = 100  # far more than swarm_works makes a node sign


def late(node: Node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "swarm_envelopes_rejected_late_total", {"reason": reason})
    return value or 0.0


def clocks_under_ceiling_of_node(node: Node, own_ticks: int = 0) -> None:
    """The node's clock is at most the ceiling now plus what it signed itself."""
    ceiling = lamport_ceiling(wall_ms())
    assert node.clock.time <= ceiling + own_ticks, (node.clock.time, ceiling)


def clocks_under_ceiling(s: Swarmlet, own_ticks: int = 0) -> None:
    for node in s.nodes.values():
        clocks_under_ceiling_of_node(node, own_ticks)
        # The replica has seen what the node accepted, and what it signed.
        assert node.pipeline.replica.clock.time <= lamport_ceiling(wall_ms()) + own_ticks


async def test_far_future_and_a_slow_climb_cannot_pin_any_clock(swarmlet: Any) -> None:
    s = await full_mesh(swarmlet, 3)
    target = s.nodes[0]
    async with stranger(target) as mallory:
        far = [mallory.need("max", lamport=LAMPORT_MAX), mallory.need("2^62", lamport=2**62)]
        for env in far:
            await mallory.publish(env)
        await wait_for(lambda: sample(target, "ignore", "lamport_future") >= 2,
                       "the target to ignore both far-future NEEDs")
        # The slow climb: each NEED one step above the last, from well below the
        # ceiling at the moment it is sent to well above it.
        climb = []
        for k in range(2 * CLIMB_BELOW):
            lamport = lamport_ceiling(wall_ms()) + (k - CLIMB_BELOW) * CLIMB_STEP
            climb.append(mallory.need(f"climb {k}", lamport=lamport))
            await mallory.publish(climb[-1])
            await trio.sleep(0.02)
        below = climb[:CLIMB_BELOW]
        await wait_for(lambda: all(e.id in n.pipeline.ids for e in below
                                   for n in s.nodes.values()),
                       "the NEEDs below the ceiling on every node")
        # Those far above it were ignored, and so never forwarded.
        await wait_for(lambda: sample(target, "ignore", "lamport_future")
                       >= 2 + CLIMB_FAR_ABOVE, "the target to ignore the climb's top")
        clocks_under_ceiling(s)
        assert sample(s.nodes[1], "ignore", "lamport_future") == 0
        assert sample(s.nodes[2], "ignore", "lamport_future") == 0
        top = below[-1].lamport
        assert all(n.clock.time >= top for n in s.nodes.values()), "the climb pushed clocks"
        for node in s.nodes.values():
            assert not any(e.id in node.pipeline.ids for e in far)
            assert node.store.get(far[0].id) is None
        # Ignoring is no one's fault: no invalid message counted against the stranger.
        assert invalid_count(target, mallory.peer_id) == 0
    await swarm_works(s)
    clocks_under_ceiling(s, OWN_TICKS_MAX)


async def test_a_faster_forwarder_is_not_penalised_and_catch_up_delivers_in_time(
        swarmlet: Any) -> None:
    """Node 0's wall clock runs 30 s ahead: it accepts a NEED 20 s above the others'
    ceiling and forwards it; node 1 ignores it without penalising node 0, and accepts it
    by catch-up once its own clock has caught up."""
    s = await full_mesh(swarmlet, 3)
    fast, slow = s.nodes[0], s.nodes[1]
    fast.wall_ms = lambda: wall_ms() + 30_000
    async with stranger(fast) as mallory:
        ahead = mallory.need("ahead", lamport=lamport_ceiling(wall_ms()) + 20_000
                             * LAMPORT_PER_MS)
        await mallory.publish(ahead)
        await wait_for(lambda: ahead.id in fast.pipeline.ids, "the fast node to accept it")
        await wait_for(lambda: sample(slow, "ignore", "lamport_future") >= 1,
                       "node 1 to ignore it for now")
        assert invalid_count(slow, fast.peer_id) == 0
        await wait_for(lambda: all(ahead.id in n.pipeline.ids for n in s.nodes.values()),
                       "every node to accept it once its time has come", 90)
        assert ahead.lamport <= lamport_ceiling(wall_ms())
    await swarm_works(s)


async def test_a_known_reversal_is_rejected_and_goes_nowhere(swarmlet: Any) -> None:
    s = await full_mesh(swarmlet, 3)
    target = s.nodes[0]
    async with stranger(target) as mallory:
        ref = mallory.need("ref", lamport=10)
        await mallory.publish(ref)
        await wait_for(lambda: all(ref.id in n.pipeline.replica.applied
                                   for n in s.nodes.values()), "the ref everywhere")
        reversal = mallory.need("reversal", lamport=10, refs=[ref])
        await mallory.publish(reversal)
        await wait_for(lambda: sample(target, "reject", "lamport_reversal") >= 1,
                       "the target to reject the reversal")
        assert invalid_count(target, mallory.peer_id) > 0  # a REJECT costs the sender
        # Not stored, so not offered: once later traffic has reached every node, the
        # reversal has reached none.
        marker = await s.nodes[0].publish("NEED", {"class": "simple", "budget": 1}, "", [])
        await wait_for(lambda: all(marker["id"] in n.pipeline.replica.plan.task_ids()
                                   for n in s.nodes.values()), "a later NEED everywhere")
        for node in s.nodes.values():
            assert node.store.get(reversal.id) is None
        # Not forwarded either: the other nodes never had it to judge.
        assert sample(s.nodes[1], "reject", "lamport_reversal") == 0
        assert sample(s.nodes[2], "reject", "lamport_reversal") == 0
    await swarm_works(s)


async def test_a_relay_that_did_not_know_the_ref_is_not_blamed(
        swarmlet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 1 alone knows the ref (committed there, not gossiped; the others' catch-up
    paused). Node 0 takes the reversal as pending and relays it; node 1 rejects it
    without penalising node 0, and once catch-up brings the ref, nodes 0 and 2 reject it
    too: it is applied nowhere."""
    s = await full_mesh(swarmlet, 3)
    knows = s.nodes[1]

    async def paused(peer: Any) -> int:
        return 0

    for i in (0, 2):
        monkeypatch.setattr(s.nodes[i].catchup, "catch_up_with", paused)
    async with stranger(s.nodes[0]) as mallory:
        ref = mallory.need("ref", lamport=70)
        reversal = mallory.need("reversal", lamport=60, refs=[ref])
        knows.pipeline.commit([ref])
        await mallory.publish(reversal)
        await wait_for(lambda: sample(knows, "reject", "lamport_reversal") >= 1,
                       "node 1 to reject the relayed reversal")
        assert reversal.id in s.nodes[0].pipeline.replica.pending
        assert invalid_count(knows, s.nodes[0].peer_id) == 0
        monkeypatch.undo()
        await wait_for(lambda: all(late(s.nodes[i], "lamport_reversal") >= 1 for i in (0, 2)),
                       "nodes 0 and 2 to reject it once catch-up brought the ref")
        for node in s.nodes.values():
            assert reversal.id not in node.pipeline.replica.applied
            assert reversal.id not in node.pipeline.ids
    await swarm_works(s)


async def test_a_reversal_found_when_its_refs_arrive_is_never_applied(swarmlet: Any) -> None:
    s = await full_mesh(swarmlet, 3)
    async with stranger(s.nodes[0]) as mallory:
        ref = mallory.need("ref", lamport=50)
        reversal = mallory.need("reversal", lamport=40, refs=[ref])
        await mallory.publish(reversal)  # its ref unknown: held as pending everywhere
        await wait_for(lambda: all(reversal.id in n.pipeline.replica.pending
                                   for n in s.nodes.values()), "the reversal pending")
        await mallory.publish(ref)
        await wait_for(lambda: all(late(n, "lamport_reversal") >= 1
                                   for n in s.nodes.values()),
                       "every node to reject it once its ref arrived")
        for node in s.nodes.values():
            assert reversal.id not in node.pipeline.replica.applied
            assert reversal.id not in node.pipeline.replica.pending
            assert reversal.id not in node.pipeline.ids  # no longer offered to peers
            assert str(reversal.id) not in node.pipeline.replica.plan.task_ids()
    # A restart replays it from the store and leaves it out again.
    again = await restart(s, 2)
    assert reversal.id not in again.pipeline.ids
    assert reversal.id not in again.pipeline.replica.applied
    await swarm_works(s)


async def test_a_far_future_time_already_stored_cannot_pin_the_node_clock(
        swarmlet: Any) -> None:
    """A store written under another rule holds a PROPOSE at 2^63-1 (no plan ops, so the
    plan roots still agree): the node replays it, yet its own clock stays under the
    ceiling and it goes on signing; its peers ignore the envelope when it offers it."""
    s = await full_mesh(swarmlet, 3)
    proposal = {"need_id": dag_cbor_cid(b"some need"), "proposal_id": "p", "cost": 1,
                "eta_ms": 1, "ballot": "b"}
    old = make_envelope(Identity(os.urandom(32)), kind="PROPOSE", swarm=s.genesis.swarm_id,
                        lamport=LAMPORT_MAX, ts=0, payload=proposal)
    node = await restart(s, 2, stored=[old])
    assert old.id in node.pipeline.replica.applied
    assert node.pipeline.replica.clock.time == LAMPORT_MAX
    clocks_under_ceiling_of_node(node)
    await node.publish("NEED", {"class": "simple", "budget": 1}, "", [])
    await wait_for(lambda: all(sample(n, "ignore", "lamport_future") >= 1
                               for i, n in s.nodes.items() if i != 2),
                   "the others to ignore it when catch-up offers it")
    await swarm_works(s)
    clocks_under_ceiling_of_node(node, OWN_TICKS_MAX)
