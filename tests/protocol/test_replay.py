"""Replicas fed with envelopes: verbs become plan ops, causal delivery, duplicates,
rejections, and P2 (same log, same bytes, same root)."""

from __future__ import annotations

import random

from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.logformat import encode_log, iter_log
from swarm.protocol.replay import Outcome, Replica, plan_ops, replay
from swarm.testnet.workload import TEST_SWARM, Agent, generate


def test_need_and_lifecycle_verbs_drive_task_state(agent: Agent) -> None:
    r = Replica(swarm=TEST_SWARM)
    need = agent.make("NEED", {"class": "simple", "budget": 5, "title": "x"})
    decide = agent.make("DECIDE", {"need_id": need.id, "proposal_id": "p", "k_plan": 1,
                                   "epoch": 0}, [need])
    claim = agent.make("CLAIM", {"task_id": str(need.id), "lease_ttl_ms": 1000,
                                 "heartbeat_interval_ms": 100}, [decide])
    for env in (need, decide, claim):
        assert r.receive(env.wire)[0] is Outcome.ACCEPTED
    view = r.plan.task(str(need.id))
    assert view is not None and view.title == "x" and view.state == "CLAIMED"
    assert r.clock.time == claim.lamport


def test_duplicates_are_ignored(agent: Agent) -> None:
    r = Replica()
    env = agent.make("STAKE", {"amount": 5})
    assert r.receive(env.wire)[0] is Outcome.ACCEPTED
    assert r.receive(env.wire)[0] is Outcome.DUPLICATE
    assert r.duplicates == 1 and plan_ops(env) == []


def test_envelope_waits_for_its_refs(agent: Agent) -> None:
    r = Replica()
    a = agent.make("NEED", {"class": "simple", "budget": 1})
    b = agent.make("UPDATE_PLAN", {"base_lamport": 1, "ops": [
        {"op": "ADD_TASK", "task_id": "sub"}, {"op": "LINK", "from": str(a.id), "to": "sub"}]},
        [a])
    assert r.receive(b.wire)[0] is Outcome.PENDING
    assert r.plan.task_ids() == []
    assert r.receive(a.wire)[0] is Outcome.ACCEPTED
    assert r.pending == {} and r.plan.links() == [(str(a.id), "sub")]


def test_lamport_reversal_rejected_in_every_order(agent: Agent) -> None:
    a = agent.make("NEED", {"class": "simple", "budget": 1})
    # A forged reference: lamport not after the envelope it names.
    from swarm.protocol.envelope import make_envelope

    bad = make_envelope(agent.identity, kind="STAKE", swarm=TEST_SWARM, lamport=a.lamport,
                        ts=0, payload={"amount": 1}, refs=[a.id])
    for order in ([a, bad], [bad, a]):
        r = Replica()
        for env in order:
            r.receive(env.wire)
        assert r.rejected == {"lamport_reversal": 1}
        assert bad.id not in r.applied


def test_invalid_bytes_are_counted_not_raised() -> None:
    r = Replica(swarm=TEST_SWARM)
    for junk in (b"", b"\xff", b"\xa2" + b"\x00" * 80):
        outcome, err = r.receive(junk)
        assert outcome is Outcome.REJECTED and isinstance(err, RemoteProtocolError)
    assert sum(r.rejected.values()) == 3


def test_wrong_swarm_rejected(agent: Agent) -> None:
    r = Replica(swarm=b"\x00" * 32)
    assert r.receive(agent.make("STAKE", {"amount": 1}).wire)[0] is Outcome.REJECTED
    assert r.rejected == {"wrong_swarm": 1}


def test_replay_is_byte_identical_and_order_independent() -> None:
    wires = [e.wire for e in generate(400, seed=5)]
    log = encode_log(wires)
    first = replay(iter_log(log), swarm=TEST_SWARM)
    second = replay(iter_log(log), swarm=TEST_SWARM)
    assert first.plan.snapshot() == second.plan.snapshot()
    assert first.summary() == second.summary()
    shuffled = wires + wires[:50]
    random.Random(9).shuffle(shuffled)
    third = replay(shuffled, swarm=TEST_SWARM)
    assert third.plan.snapshot() == first.plan.snapshot()
    assert third.pending == {} and third.duplicates == 50
    summary = first.summary()
    assert summary["accepted"] == 400 and summary["rejected"] == {}
    assert summary["links"] > 0 and summary["tasks"] > 0
