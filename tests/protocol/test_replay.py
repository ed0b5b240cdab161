"""Replicas fed with envelopes: verbs become plan ops, causal delivery, duplicates,
rejections (reported through `on_reject`, faults of ours included), the Lamport check
against known refs, and P2 (same log, same bytes, same root)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from swarm.protocol import verbs
from swarm.protocol.envelope import Envelope, make_envelope
from swarm.protocol.errors import LamportReversal, RemoteProtocolError
from swarm.protocol.logformat import encode_log, iter_log
from swarm.protocol.replay import Outcome, Replica, plan_ops, replay
from swarm.testnet.workload import TEST_SWARM, Agent, example_payloads, generate


def _stake() -> dict[str, Any]:
    """A valid STAKE payload (a verb with no plan ops), whatever fields it needs."""
    return verbs.payload_from_json("STAKE", example_payloads()["STAKE"])


def test_a_need_adds_its_task_and_lifecycle_verbs_leave_the_plan_alone(agent: Agent) -> None:
    r = Replica(swarm=TEST_SWARM)
    need = agent.make("NEED", {"class": "simple", "budget": 5, "title": "x"})
    assert r.receive(need.wire)[0] is Outcome.ACCEPTED
    view = r.plan.task(str(need.id))
    assert view is not None and view.title == "x" and view.task_class == "simple"
    before = r.plan.snapshot()
    decide = agent.make("DECIDE", {"need_id": need.id, "proposal_id": "p", "k_plan": 1,
                                   "epoch": 0}, [need])
    claim = agent.make("CLAIM", {"task_id": str(need.id), "lease_ttl_ms": 1000,
                                 "heartbeat_interval_ms": 100}, [decide])
    for env in (decide, claim):
        assert r.receive(env.wire)[0] is Outcome.ACCEPTED
    assert r.plan.snapshot() == before  # a task's state is its bucket's, not the plan's
    assert r.clock.time == claim.lamport


def test_state_is_not_a_plan_op(agent: Agent) -> None:
    with pytest.raises(RemoteProtocolError):
        verbs.validate_payload("UPDATE_PLAN", {"base_lamport": 0, "ops": [
            {"op": "STATE", "task_id": "t", "state": "FINALIZED"}]})


def _bid(agent: Agent, need: Envelope, ops: list[dict[str, Any]], pid: str = "p1") -> Envelope:
    return agent.make("PROPOSE", {"need_id": need.id, "proposal_id": pid, "cost": 1,
                                  "eta_ms": 10, "ballot": pid,
                                  "patch": {"base_lamport": need.lamport, "ops": ops}},
                      [need])


def _vote(agent: Agent, need: Envelope, pid: str = "p1", verdict: str = "approve") -> Envelope:
    return agent.make("ATTEST_PLAN", {"need_id": need.id, "proposal_id": pid,
                                      "verdict": verdict}, [need])


def _sub(need: Envelope) -> str:
    return f"{need.id}/sub"


def _sub_patch(need: Envelope) -> list[dict[str, Any]]:
    return [{"op": "ADD_TASK", "task_id": _sub(need), "parent": str(need.id), "title": "s"},
            {"op": "LINK", "from": str(need.id), "to": _sub(need)}]


def test_a_bids_patch_joins_the_plan_only_once_its_bucket_decided_for_it(
        agent: Agent) -> None:
    need = agent.make("NEED", {"class": "simple", "budget": 5})
    bid = _bid(agent, need, _sub_patch(need))
    r = Replica()
    for env in (need, bid):
        assert r.receive(env.wire)[0] is Outcome.ACCEPTED
    assert r.plan.task_ids() == [str(need.id)]  # a bid alone changes no plan
    assert r.admit(bid.id, need.id, 0)
    assert r.plan.task_ids() == sorted([str(need.id), _sub(need)])
    assert r.plan.links() == [(str(need.id), _sub(need))]
    assert r.admit(bid.id, need.id, 0)  # again: nothing more
    # The decision first, the bid later: the same plan.
    q = Replica()
    q.receive(need.wire)
    assert not q.admit(bid.id, need.id, 0)
    q.receive(bid.wire)
    assert q.plan.snapshot() == r.plan.snapshot()


def test_k_plan_approvals_from_distinct_others_admit_a_patch(agent: Agent) -> None:
    rng = random.Random(5)
    need = agent.make("NEED", {"class": "simple", "budget": 5})
    proposer, v1, v2 = (Agent(type(agent.identity)(rng.randbytes(32)), agent.swarm)
                        for _ in range(3))
    bid = _bid(proposer, need, _sub_patch(need))
    own = _vote(proposer, need)  # the proposer's own approval does not count
    twice = [_vote(v1, need), _vote(v1, need)]  # one sender counts once
    reject = _vote(v2, need, verdict="reject")
    other = _vote(v2, need, pid="p2")  # approves another proposal
    approve = _vote(v2, need)
    events = [need, bid, own, *twice, reject, other, approve]
    snapshots = set()
    for seed in range(6):
        order = events[1:]
        random.Random(seed).shuffle(order)
        r = Replica()
        r.receive(need.wire)
        r.admit(bid.id, need.id, 2)
        for env in order:
            r.receive(env.wire)
        assert _sub(need) in r.plan.task_ids()
        snapshots.add(r.plan.snapshot())
    assert len(snapshots) == 1
    short = Replica()
    for env in (need, bid, own, *twice, reject, other):
        short.receive(env.wire)
    short.admit(bid.id, need.id, 2)
    assert short.plan.task_ids() == [str(need.id)]  # one approval of two


def test_a_patch_outside_its_need_or_for_another_need_never_joins(agent: Agent) -> None:
    need = agent.make("NEED", {"class": "simple", "budget": 5})
    other = agent.make("NEED", {"class": "simple", "budget": 5})
    wide = _bid(agent, need, [{"op": "ADD_TASK", "task_id": _sub(need),
                               "parent": str(other.id)}])
    r = Replica()
    for env in (need, other, wide):
        r.receive(env.wire)
    assert not r.admit(wide.id, need.id, 0) and r.patches_refused == 1
    fine = _bid(agent, need, _sub_patch(need), pid="p2")
    r.receive(fine.wire)
    assert not r.admit(fine.id, other.id, 0)  # a decision of another NEED names it
    assert sorted(r.plan.task_ids()) == sorted([str(need.id), str(other.id)])


def test_duplicates_are_ignored(agent: Agent) -> None:
    r = Replica()
    env = agent.make("STAKE", _stake())
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
                        ts=0, payload=_stake(), refs=[a.id])
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
    assert r.receive(agent.make("STAKE", _stake()).wire)[0] is Outcome.REJECTED
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


def _reversal(agent: Agent, ref: Envelope) -> Envelope:
    """A NEED that names `ref` in its refs yet is not after it."""
    return make_envelope(agent.identity, kind="NEED", swarm=TEST_SWARM, lamport=ref.lamport,
                         ts=0, payload={"class": "simple", "budget": 1}, refs=[ref.id])


def test_known_refs_are_checked_applied_or_pending(agent: Agent) -> None:
    """`check_known_refs` judges against what the replica knows: applied refs and
    pending ones alike; unknown refs are left for later."""
    r = Replica(swarm=TEST_SWARM)
    a = agent.make("NEED", {"class": "simple", "budget": 1})
    r.receive_envelope(a)
    with pytest.raises(LamportReversal):
        r.check_known_refs(_reversal(agent, a))
    r.check_known_refs(agent.make("NEED", {"class": "simple", "budget": 1}, [a]))
    missing = agent.make("NEED", {"class": "simple", "budget": 2})
    waiting = agent.make("UPDATE_PLAN", {"base_lamport": 1, "ops": [
        {"op": "ADD_TASK", "task_id": "sub"}]}, [missing])
    assert r.receive_envelope(waiting)[0] is Outcome.PENDING
    with pytest.raises(LamportReversal):
        r.check_known_refs(_reversal(agent, waiting))  # a pending ref's time is known
    r.check_known_refs(_reversal(agent, missing))  # an unknown ref: nothing to say yet
    assert r.ref_lamports(_reversal(agent, missing)) == []


def test_a_pending_envelope_rejected_when_its_refs_arrive_is_reported(agent: Agent) -> None:
    rejected: list[tuple[Envelope, Exception]] = []
    r = Replica(swarm=TEST_SWARM, on_reject=lambda e, x: rejected.append((e, x)))
    a = agent.make("NEED", {"class": "simple", "budget": 1})
    bad = _reversal(agent, a)
    assert r.receive_envelope(bad)[0] is Outcome.PENDING
    assert r.receive_envelope(a)[0] is Outcome.ACCEPTED
    assert [(e.id, x.code) for e, x in rejected  # type: ignore[attr-defined]
            ] == [(bad.id, "lamport_reversal")]
    assert bad.id not in r.applied and bad.id not in r.pending


def test_a_fault_while_applying_costs_that_envelope_only(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception turning one envelope into plan ops rejects it as
    `internal`, reported; the replica applies everything else, also what the faulty
    envelope's arrival released."""
    from swarm.protocol import replay as replay_mod

    real = replay_mod.plan_ops

    def faulty(env: Envelope) -> list[Any]:
        if env.kind == "NEED" and env.payload.get("title") == "boom":
            raise RuntimeError("injected")
        return real(env)

    monkeypatch.setattr(replay_mod, "plan_ops", faulty)
    rejected: list[tuple[Envelope, Exception]] = []
    r = Replica(swarm=TEST_SWARM, on_reject=lambda e, x: rejected.append((e, x)))
    first = agent.make("NEED", {"class": "simple", "budget": 1})
    boom = agent.make("NEED", {"class": "simple", "budget": 1, "title": "boom"}, [first])
    after = agent.make("NEED", {"class": "simple", "budget": 1, "title": "after"}, [first])
    assert r.receive_envelope(boom)[0] is Outcome.PENDING
    assert r.receive_envelope(after)[0] is Outcome.PENDING
    assert r.receive_envelope(first)[0] is Outcome.ACCEPTED  # releases both
    assert [e.id for e, x in rejected if isinstance(x, RuntimeError)] == [boom.id]
    assert r.rejected == {"internal": 1}
    assert set(r.applied) == {first.id, after.id}
    assert r.plan.task(str(after.id)) is not None and r.plan.task(str(boom.id)) is None
