"""A bug met on one envelope costs that envelope, never the node, on real nodes.

Goal (docs/NETWORK.md, "The inbound pipeline"): an unexpected exception while judging
or applying one envelope is counted as REJECT `internal`, logged once with the envelope
id and the traceback, and the node goes on: other envelopes keep flowing, a restart
with the bug still there starts and skips the same envelope, and afterwards every node
still creates NEEDs, transfers and decides with one plan root and one ledger root
(`hostile_kit.swarm_works`). Method: three in-process validators, fully connected; one
function of the pipeline's stages (the policy, the replica's plan ops, an accept hook)
is monkeypatched to raise for the NEED titled "boom", which a stranger publishes.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from gossip_kit import full_mesh, invalid_count, restart, sample, stranger
from hostile_kit import swarm_works

from swarm.node.decide_service import DecideService
from swarm.node.pipeline import PolicyDecision
from swarm.protocol import replay as replay_mod
from swarm.protocol.envelope import Envelope
from swarm.testnet.inproc import Swarmlet, wait_for

BOOM = "boom"


class Injected(RuntimeError):
    """The bug the test plants."""


def is_boom(env: Envelope) -> bool:
    return env.kind == "NEED" and env.payload.get("title") == BOOM


def fault_logs(caplog: pytest.LogCaptureFixture, env: Envelope) -> int:
    """Error records naming `env` and carrying the planted exception's traceback."""
    return sum(1 for r in caplog.records if str(env.id) in r.getMessage()
               and r.levelno == logging.ERROR and r.exc_info is not None
               and isinstance(r.exc_info[1], Injected))


async def flows(s: Swarmlet, title: str) -> None:
    """An honest NEED from node 2 reaches every node."""
    need = await s.nodes[2].publish("NEED", {"class": "simple", "budget": 1, "title": title},
                                    "", [])
    await wait_for(lambda: all(need["id"] in n.pipeline.replica.plan.task_ids()
                               for n in s.nodes.values()), f"{title!r} on every node")


def running(s: Swarmlet) -> None:
    for i, node in s.nodes.items():
        assert node.fatal is None, f"node{i} stopped: {node.fatal!r}"


async def test_a_fault_while_judging_rejects_that_envelope_only(
        swarmlet: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Node 1's policy stage raises on "boom": node 1 rejects it as `internal` each time
    gossip or catch-up brings it (logged once), stores nothing, blames no forwarder;
    fixed, it catches up."""
    caplog.set_level(logging.ERROR, logger="swarm.node")
    s = await full_mesh(swarmlet, 3)
    victim = s.nodes[1]
    evaluate = victim.policy.evaluate

    def faulty(env: Envelope) -> PolicyDecision:
        if is_boom(env):
            raise Injected("planted in the policy stage")
        return evaluate(env)

    monkeypatch.setattr(victim.policy, "evaluate", faulty)
    async with stranger(s.nodes[0]) as mallory:
        boom = mallory.need(BOOM, lamport=1)
        await mallory.publish(boom)
        await wait_for(lambda: all(boom.id in n.pipeline.ids for i, n in s.nodes.items()
                                   if i != 1), "the others to accept it")
        # Gossip once, then every catch-up round offers it again.
        await wait_for(lambda: sample(victim, "reject", "internal") >= 3,
                       "node 1 to meet the fault three times")
        assert boom.id not in victim.pipeline.ids and victim.store.get(boom.id) is None
        assert fault_logs(caplog, boom) == 1
        for other in (s.nodes[0], s.nodes[2]):
            assert invalid_count(victim, other.peer_id) == 0  # our bug, not theirs
        await flows(s, "after a judging fault")
        running(s)
    monkeypatch.undo()
    await wait_for(lambda: boom.id in victim.pipeline.replica.applied,
                   "node 1, fixed, to catch it up")
    await swarm_works(s)


async def test_a_fault_while_applying_keeps_the_envelope_stored_and_skips_it(
        swarmlet: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The replica's plan ops raise on "boom" on every node: each stores it, applies
    nothing of it, counts and logs it once; a restart with the bug still there starts,
    skips it the same way and agrees on the plan root."""
    caplog.set_level(logging.ERROR, logger="swarm.node")
    plan_ops = replay_mod.plan_ops

    def faulty(env: Envelope) -> list[Any]:
        if is_boom(env):
            raise Injected("planted in the replica")
        return plan_ops(env)

    monkeypatch.setattr(replay_mod, "plan_ops", faulty)
    s = await full_mesh(swarmlet, 3)
    async with stranger(s.nodes[0]) as mallory:
        boom = mallory.need(BOOM, lamport=1)
        await mallory.publish(boom)
        await wait_for(lambda: all(boom.id in n.pipeline.ids for n in s.nodes.values()),
                       "every node to store it")
        await wait_for(lambda: all(sample(n, "reject", "internal") >= 1
                                   for n in s.nodes.values()), "every node to count it")
        for node in s.nodes.values():
            assert boom.id not in node.pipeline.replica.applied
            assert str(boom.id) not in node.pipeline.replica.plan.task_ids()
        assert fault_logs(caplog, boom) == 3  # once on each node
        await flows(s, "after an apply fault")
        running(s)
    again = await restart(s, 2)
    assert boom.id in again.pipeline.ids and boom.id not in again.pipeline.replica.applied
    assert sample(again, "reject", "internal") == 1  # replay met it, and went on
    assert fault_logs(caplog, boom) == 4
    assert len(s.roots()) == 1
    await swarm_works(s)
    running(s)


async def test_a_faulty_accept_hook_costs_only_its_own_work(
        swarmlet: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The DECIDE read model's hook raises on "boom" (live and in replay): the plan still
    applies it, the node counts and logs the fault and goes on; a restart starts."""
    caplog.set_level(logging.ERROR, logger="swarm.node")
    accepted = DecideService.accepted

    def faulty(self: DecideService, env: Envelope) -> None:
        if is_boom(env):
            raise Injected("planted in an accept hook")
        accepted(self, env)

    monkeypatch.setattr(DecideService, "accepted", faulty)  # bound when a node starts
    s = await full_mesh(swarmlet, 3)
    async with stranger(s.nodes[0]) as mallory:
        boom = mallory.need(BOOM, lamport=1)
        await mallory.publish(boom)
        await wait_for(lambda: all(boom.id in n.pipeline.replica.applied
                                   for n in s.nodes.values()), "every node to apply it")
        await wait_for(lambda: all(sample(n, "reject", "internal") >= 1
                                   for n in s.nodes.values()), "every node to count it")
        assert fault_logs(caplog, boom) == 3
        await flows(s, "after a hook fault")
    again = await restart(s, 1)
    assert boom.id in again.pipeline.replica.applied
    assert fault_logs(caplog, boom) == 4
    await swarm_works(s)
    running(s)
