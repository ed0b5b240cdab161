"""The deterministic simulation of the multi-raft shell (testnet/multiraft_sim.py) as a
test: seeded fault schedules of five `MultiRaft` nodes on real stores, each checked after
every step; a failing seed is named in the failure and replays exactly with
`swarm-testnet sim --shell --start SEED --seeds 1`. MULTIRAFT_SIM_SEEDS raises the count
(`make sim` runs 500)."""

from __future__ import annotations

import os

import pytest

from swarm.node import multiraft
from swarm.protocol import raftlog
from swarm.protocol.decide import TryDecide
from swarm.protocol.raftwire import DecideResponse
from swarm.testnet.multiraft_sim import ShellSim, ShellSimConfig, Violation, run_seed

SEEDS = int(os.environ.get("MULTIRAFT_SIM_SEEDS", "80"))


def test_schedules_keep_every_safety_property_and_certify_every_decision() -> None:
    failures = []
    decided = 0
    for seed in range(SEEDS):
        try:
            result = run_seed(seed)
        except Violation as exc:
            failures.append(str(exc))
            continue
        assert result.decided == result.needs == result.certified > 0
        decided += result.decided
    assert not failures, "\n".join(failures[:5])
    assert decided > SEEDS * 10


def test_a_seed_replays_exactly() -> None:
    assert run_seed(17) == run_seed(17)


def test_faults_really_happen() -> None:
    """The schedules are not calm by accident: across seeds nodes crash (inside Ready
    rounds too), partitions come and go, connections break, leaders change, dead
    leaders' buckets are taken over, leadership is balanced by transfer, followers
    catch up by snapshot, DECIDEs are answered both by forwarding and locally, replicas
    share signatures the leader did not announce, and garbage frames arrive."""
    keys = ("crashes", "crashes_in_round", "partitions", "breaks", "dropped", "takeovers",
            "transfers", "snapshots", "answers_remote", "answers_local", "garbage",
            "sigs_shared")
    totals = dict.fromkeys(keys, 0)
    elections = buckets = 0
    for seed in range(10):
        r = run_seed(seed)
        for k in keys:
            totals[k] += getattr(r, k)
        elections += r.elections
        buckets += ShellSimConfig.for_seed(seed).buckets
    assert all(v > 0 for v in totals.values()), totals
    assert elections > buckets, "leaders changed beyond the first election per bucket"


def test_the_checkers_catch_a_certificate_over_the_wrong_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: replicas that certify an entry with a stamp off by one (as the
    shell did with the bucket's clock in place of the entry's stamp) sign a hash no
    verifier can rebuild; the certificate check must say so."""
    decode = multiraft.decode_decide

    def off_by_one(data: bytes) -> tuple[object, int]:
        cmd, ts = decode(data)
        return cmd, ts + 1

    monkeypatch.setattr(multiraft, "decode_decide", off_by_one)
    with pytest.raises(Violation, match="certificate"):
        run_seed(0)


def test_the_checkers_catch_a_broken_vote_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: replicas that grant votes to any log elect leaders missing
    committed entries, which then overwrite them; state machine safety or P1 must fail
    within a few seeds."""
    monkeypatch.setattr(raftlog.RaftLog, "is_up_to_date", lambda self, i, t: True)
    caught = 0
    for seed in range(10):
        try:
            ShellSim(ShellSimConfig.for_seed(seed)).run()
        except Violation:
            caught += 1
    assert caught > 0


def test_answers_are_taken_only_for_the_need_asked() -> None:
    """Routing helpers the simulation shares with `try_decide`: a `not_leader:` hint
    names a replica or nobody, and an answer stating another NEED's decision (one sent
    to this node's previous life, say) is no answer."""
    assert multiraft.leader_named("not_leader:2", [1, 2, 3]) == 2
    assert multiraft.leader_named("not_leader:7", [1, 2, 3]) == 0
    assert multiraft.leader_named("not_leader:x9", [1, 2, 3]) == 0
    assert multiraft.leader_named("not_leader:", [1, 2, 3]) == 0
    assert multiraft.leader_named("busy", [1, 2, 3]) == 0
    sim = ShellSim(ShellSimConfig(seed=3))
    try:
        mr = sim.nodes[1].mr
        assert mr is not None
        cmd = TryDecide(b"need-a", b"p")
        mine = DecideResponse(5, True, (b"need-a", b"q", 0, 0, 1, 7, 2, 1000))
        other = DecideResponse(5, True, (b"need-b", b"q", 0, 0, 1, 7, 2, 1000))
        d, _ = mr.answer_for(cmd, mine)
        assert d is not None and d.proposal_id == b"q"
        assert mr.answer_for(cmd, other) == (None, "")
        assert mr.answer_for(cmd, DecideResponse(5, False, (), "busy")) == (None, "busy")
        with pytest.raises(multiraft.DecideError):
            mr.answer_for(cmd, DecideResponse(5, True, (1, 2, 3)))
    finally:
        sim.close()
