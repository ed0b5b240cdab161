"""The deterministic simulation of the multi-raft shell (testnet/multiraft_sim.py) as a
test: seeded fault schedules of five `MultiRaft` nodes on real stores, each checked after
every step; a failing seed is named in the failure and replays exactly with
`swarm-testnet sim --shell --start SEED --seeds 1`. MULTIRAFT_SIM_SEEDS raises the count
(`make sim` runs 500)."""

from __future__ import annotations

import os

import pytest
from sim_harness import caught, passing, totals

from swarm.node import raft_certs, raft_kinds
from swarm.node.raft_kinds import DECIDE
from swarm.protocol import raftlog
from swarm.protocol.decide import Decision, TryDecide
from swarm.protocol.raftwire import DecideResponse
from swarm.testnet.multiraft_sim import ShellSim, ShellSimConfig, run_seed
from swarm.testnet.simkit import Violation, regression_seeds

SEEDS = int(os.environ.get("MULTIRAFT_SIM_SEEDS", "80"))


def test_schedules_keep_every_safety_property_and_certify_every_decision() -> None:
    """Seeds 0..SEEDS-1, less the regression seeds (test_regression_seeds.py runs them)."""
    seeds = [s for s in range(SEEDS) if s not in regression_seeds("shell")]
    results = passing(run_seed, seeds)
    for r in results:
        assert r.decided == r.needs == r.certified > 0
    assert sum(r.decided for r in results) > len(seeds) * 10


def test_a_seed_replays_exactly() -> None:
    assert run_seed(17) == run_seed(17)


def test_faults_really_happen() -> None:
    """The schedules are not calm by accident: across seeds nodes crash (inside Ready
    rounds too), partitions come and go, connections break, leaders change, dead
    leaders' buckets are taken over, leadership is balanced by transfer, followers
    catch up by snapshot, DECIDEs are answered both by forwarding and locally, replicas
    share signatures the leader did not announce, garbage frames arrive, and clocks
    far ahead get their entries refused and their nodes shunned."""
    keys = ("crashes", "crashes_in_round", "partitions", "breaks", "dropped", "takeovers",
            "transfers", "snapshots", "answers_remote", "answers_local", "garbage",
            "sigs_shared", "clocks_far_ahead", "stamps_refused")
    results = [run_seed(seed) for seed in range(10)]
    counts = totals(results, keys)
    assert all(v > 0 for v in counts.values()), counts
    buckets = sum(ShellSimConfig.for_seed(seed).buckets for seed in range(10))
    assert sum(r.elections for r in results) > buckets, \
        "leaders changed beyond the first election per bucket"


def test_the_checkers_catch_a_certificate_over_the_wrong_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: replicas that certify an entry with a stamp off by one (as the
    shell did with the bucket's clock in place of the entry's stamp) sign a hash no
    verifier can rebuild; the certificate check must say so."""
    decode = raft_certs.decode_decide

    def off_by_one(data: bytes) -> tuple[object, int]:
        cmd, ts = decode(data)
        return cmd, ts + 1

    monkeypatch.setattr(raft_certs, "decode_decide", off_by_one)
    with pytest.raises(Violation, match="certificate"):
        run_seed(0)


def test_the_checkers_catch_a_broken_vote_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: replicas that grant votes to any log elect leaders missing
    committed entries, which then overwrite them; state machine safety or P1 must fail
    within a few seeds."""
    monkeypatch.setattr(raftlog.RaftLog, "is_up_to_date", lambda self, i, t: True)
    assert caught(run_seed, range(10)) > 0


def test_answers_are_taken_only_for_the_need_asked() -> None:
    """Routing helpers the simulation shares with `try_decide`: a `not_leader:` hint
    names a replica or nobody, and an answer stating another NEED's decision (one sent
    to this node's previous life, say) is no answer, and counted."""
    def named(text: str) -> int:
        return raft_kinds.leader_named(raft_kinds.parse_reason(text), [1, 2, 3])

    assert named("not_leader:2") == 2
    assert named("not_leader:7") == 0
    assert named("not_leader:x9") == 0
    assert named("not_leader:") == 0
    assert named("busy") == 0
    sim = ShellSim(ShellSimConfig(seed=3))
    try:
        mr = sim.nodes[1].mr
        assert mr is not None
        read = mr.router.read
        cmd = TryDecide(b"need-a", b"p")
        mine = DecideResponse(5, True, (b"need-a", b"q", 0, 0, 1, 7, 2, 1000))
        other = DecideResponse(5, True, (b"need-b", b"q", 0, 0, 1, 7, 2, 1000))
        d = read(DECIDE, cmd, mine)
        assert isinstance(d, Decision) and d.proposal_id == b"q"
        mismatched = mr.stats["answers_mismatched"]
        assert read(DECIDE, cmd, other) == raft_kinds.NoAnswer("answers_mismatched")
        assert mr.stats["answers_mismatched"] == mismatched + 1
        assert read(DECIDE, cmd, DecideResponse(5, False, (), "busy")) == \
            raft_kinds.NoAnswer("busy")
        assert read(DECIDE, cmd, None) == raft_kinds.NoAnswer("")
        with pytest.raises(raft_kinds.DecideError):
            read(DECIDE, cmd, DecideResponse(5, True, (1, 2, 3)))
    finally:
        sim.close()
