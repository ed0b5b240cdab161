"""Unit tests of the Raft core's rules (protocol/raft.py, protocol/raftlog.py)."""

from __future__ import annotations

import pytest

from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.raft import (
    ConfChange,
    Config,
    ConfOp,
    Message,
    MsgType,
    ProposalDropped,
    Raft,
    RawNode,
    Role,
)
from swarm.protocol.raftlog import (
    Compacted,
    Entry,
    HardState,
    LogInvariant,
    MemoryStorage,
    RaftLog,
    Snapshot,
    Unavailable,
)


def storage_with(entries: list[tuple[int, int]], voters: tuple[int, ...] = (1, 2, 3),
                 term: int = 0) -> MemoryStorage:
    s = MemoryStorage(voters)
    s.append([Entry(t, i) for i, t in entries])
    if term:
        s.set_hard_state(HardState(term=term))
    return s


def cfg(i: int = 1, **kw: object) -> Config:
    return Config(i, election_tick=10, seed=i, **kw)  # type: ignore[arg-type]


# -- the log --

def test_memory_storage_append_replaces_conflicting_suffix() -> None:
    s = storage_with([(1, 1), (2, 1), (3, 1)])
    s.append([Entry(2, 2), Entry(2, 3), Entry(2, 4)])
    assert [(e.index, e.term) for e in s.entries(1, 5, 1 << 20)] == [
        (1, 1), (2, 2), (3, 2), (4, 2)]
    with pytest.raises(LogInvariant):
        s.append([Entry(2, 9)])  # a gap


def test_memory_storage_compaction_and_errors() -> None:
    s = storage_with([(i, 1) for i in range(1, 11)])
    s.create_snapshot(6, (1, 2, 3), b"state")
    s.compact(6)
    assert s.first_index() == 7 and s.last_index() == 10
    assert s.term(6) == 1
    with pytest.raises(Compacted):
        s.term(5)
    with pytest.raises(Compacted):
        s.entries(6, 8, 100)
    with pytest.raises(Unavailable):
        s.term(11)
    with pytest.raises(LogInvariant):
        s.compact(9)  # beyond the snapshot


def test_entries_are_cut_by_size_but_never_to_nothing() -> None:
    s = MemoryStorage((1,))
    s.append([Entry(1, i, data=b"x" * 100) for i in range(1, 6)])
    assert len(s.entries(1, 6, 0)) == 1
    assert len(s.entries(1, 6, 250)) == 2


def test_maybe_append_truncates_uncommitted_conflicts_only() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 1), (3, 1)]))
    log.commit_to(1)
    assert log.maybe_append(1, 1, 3, [Entry(2, 2), Entry(2, 3)]) == 3
    assert log.term(2) == 2 and log.committed == 3
    assert log.maybe_append(3, 9, 3, [Entry(9, 4)]) is None  # no match at (3, 9)
    with pytest.raises(LogInvariant):
        log.maybe_append(0, 0, 3, [Entry(5, 1)])  # would rewrite committed entry 1


def test_find_conflict_by_term_skips_a_whole_term() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 2), (3, 2), (4, 2), (5, 3)]))
    assert log.find_conflict_by_term(5, 1) == (1, 1)
    assert log.find_conflict_by_term(5, 2) == (4, 2)
    assert log.find_conflict_by_term(0, 1) == (0, 0)


def test_is_up_to_date_compares_last_term_then_length() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 2)]))
    assert log.is_up_to_date(1, 3)
    assert log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(1, 2)
    assert not log.is_up_to_date(9, 1)


# -- elections --

def elect(r: Raft, voters: tuple[int, ...] = (2, 3)) -> None:
    r.step(Message(MsgType.HUP, frm=r.id))
    if r.role == Role.PRE_CANDIDATE:
        for v in voters:
            r.step(Message(MsgType.PRE_VOTE_RESP, frm=v, to=r.id, term=r.term + 1))
    for v in voters:
        r.step(Message(MsgType.VOTE_RESP, frm=v, to=r.id, term=r.term))
    assert r.role == Role.LEADER


def test_pre_vote_does_not_bump_the_term() -> None:
    r = Raft(cfg(), MemoryStorage((1, 2, 3)))
    r.step(Message(MsgType.HUP, frm=1))
    assert r.role == Role.PRE_CANDIDATE and r.term == 0
    assert {m.type for m in r.msgs} == {MsgType.PRE_VOTE}
    assert all(m.term == 1 for m in r.msgs)


def test_pre_vote_rejections_from_a_majority_end_the_campaign() -> None:
    r = Raft(cfg(), MemoryStorage((1, 2, 3)))
    r.step(Message(MsgType.HUP, frm=1))
    # A rejection carries the voter's own term (here still 0).
    r.step(Message(MsgType.PRE_VOTE_RESP, frm=2, to=1, term=0, reject=True))
    assert r.role == Role.PRE_CANDIDATE
    r.step(Message(MsgType.PRE_VOTE_RESP, frm=3, to=1, term=0, reject=True))
    assert r.role == Role.FOLLOWER and r.term == 0


def test_pre_vote_rejection_from_a_later_term_adopts_it() -> None:
    r = Raft(cfg(), MemoryStorage((1, 2, 3)))
    r.step(Message(MsgType.HUP, frm=1))
    r.step(Message(MsgType.PRE_VOTE_RESP, frm=2, to=1, term=4, reject=True))
    assert r.role == Role.FOLLOWER and r.term == 4


def test_vote_granted_once_per_term_and_only_to_up_to_date_logs() -> None:
    r = Raft(cfg(1), storage_with([(1, 1), (2, 2)]))
    r.step(Message(MsgType.VOTE, frm=2, to=1, term=3, index=1, log_term=2))
    assert r.msgs[-1].reject  # shorter log in the same last term
    r.step(Message(MsgType.VOTE, frm=2, to=1, term=3, index=2, log_term=2))
    assert not r.msgs[-1].reject and r.vote == 2
    r.step(Message(MsgType.VOTE, frm=3, to=1, term=3, index=5, log_term=3))
    assert r.msgs[-1].reject  # already voted for 2 in term 3


def test_lease_ignores_votes_while_a_leader_is_heard() -> None:
    r = Raft(cfg(1), MemoryStorage((1, 2, 3)))
    r.step(Message(MsgType.HEARTBEAT, frm=2, to=1, term=1))
    r.msgs.clear()
    r.step(Message(MsgType.VOTE, frm=3, to=1, term=2, index=0, log_term=0))
    assert r.term == 1 and not r.msgs
    r.step(Message(MsgType.VOTE, frm=3, to=1, term=2, context=b"transfer"))
    assert r.term == 2 and r.vote == 3


def test_stale_messages_are_answered_or_dropped_never_raise() -> None:
    r = Raft(cfg(1), storage_with([(1, 1)], term=5))
    for t in MsgType:
        if t in (MsgType.HUP, MsgType.PROP, MsgType.BEAT, MsgType.CHECK_QUORUM):
            continue
        r.step(Message(t, frm=2, to=1, term=3))
    assert r.term == 5
    assert {m.type for m in r.msgs} <= {MsgType.APP_RESP, MsgType.PRE_VOTE_RESP}


def test_leader_never_commits_an_older_term_entry_by_counting() -> None:
    """Raft §5.4.2 / figure 8: entry 2 (term 2) is on a majority, but it commits only
    once an entry of the leader's own term (the no-op at 3) is."""
    s = storage_with([(1, 1), (2, 2)], term=2)
    s.set_hard_state(HardState(term=2, commit=1))
    r = Raft(cfg(1, pre_vote=False), s)
    elect(r)
    assert r.term == 3 and r.log.last_index() == 3
    r.self_persisted(3, 3)  # the leader's own no-op is on its disk
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=2))
    assert r.log.committed == 1
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=3))
    assert r.log.committed == 3


def test_leader_counts_its_own_entries_only_once_persisted() -> None:
    """Appends may leave before the leader's own write (thesis §10.2.1), so its copy
    must not count towards the quorum until the shell reports it synced."""
    r = Raft(cfg(1, pre_vote=False), MemoryStorage((1, 2, 3)))
    elect(r)
    r.self_persisted(1, 1)
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=1, index=1))
    assert r.log.committed == 1
    r.step(Message(MsgType.PROP, frm=1, entries=(Entry(0, 0, data=b"x"),)))
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=1, index=2))
    assert r.log.committed == 1  # node 2 alone is not a quorum of three
    r.self_persisted(2, 1)
    assert r.log.committed == 2  # node 2 and the leader's own synced copy are



def test_check_quorum_steps_down_without_a_quorum() -> None:
    r = Raft(cfg(1), MemoryStorage((1, 2, 3)))
    elect(r)
    for _ in range(2 * r.config.election_tick):
        r.tick()
    assert r.role == Role.FOLLOWER


def test_follower_proposals_go_to_the_leader_or_are_dropped() -> None:
    r = Raft(cfg(2), MemoryStorage((1, 2, 3)))
    with pytest.raises(ProposalDropped):
        r.step(Message(MsgType.PROP, frm=2, entries=(Entry(0, 0, data=b"x"),)))
    r.step(Message(MsgType.HEARTBEAT, frm=1, to=2, term=1))
    r.msgs.clear()
    r.step(Message(MsgType.PROP, frm=2, entries=(Entry(0, 0, data=b"x"),)))
    (fwd,) = r.msgs
    assert fwd.type == MsgType.PROP and fwd.to == 1 and fwd.term == 0


def test_rejected_append_walks_back_by_term_hint() -> None:
    r = Raft(cfg(1, pre_vote=False), storage_with([(1, 1), (2, 1), (3, 2)], term=2))
    elect(r)
    r.msgs.clear()
    # Follower 2 holds only (1, 1) and says so.
    r.step(Message(MsgType.APP_RESP, frm=2, to=1, term=3, index=3, reject=True,
                   reject_hint=1, log_term=1))
    app = [m for m in r.msgs if m.to == 2 and m.type == MsgType.APP][-1]
    assert (app.index, app.log_term) == (1, 1)
    assert [e.index for e in app.entries] == [2, 3, 4]


# -- membership, transfer, snapshots --

def test_conf_change_round_trip_and_garbage() -> None:
    cc = ConfChange(ConfOp.REMOVE_VOTER, 7)
    assert ConfChange.decode(cc.encode()) == cc
    for bad in (b"", b"\xa0", ConfChange(ConfOp.ADD_VOTER, 1).encode()[:-1]):
        with pytest.raises(RemoteProtocolError):
            ConfChange.decode(bad)


def test_last_voter_cannot_be_removed() -> None:
    disk = MemoryStorage((1,))
    node = RawNode(cfg(1), disk)
    node.campaign()
    assert node.raft.role == Role.LEADER  # a group of one elects itself
    with pytest.raises(ProposalDropped, match="pending"):
        # Not before this term's no-op is applied (the thesis errata rule).
        node.propose_conf_change(ConfChange(ConfOp.ADD_VOTER, 2))
    for _ in range(2):  # persist the no-op, then apply it once committed
        rd = node.ready()
        disk.append(rd.entries)
        node.advance(rd)
    with pytest.raises(ProposalDropped, match="last voter"):
        node.propose_conf_change(ConfChange(ConfOp.REMOVE_VOTER, 1))


def test_transfer_blocks_proposals_until_done() -> None:
    r = Raft(cfg(1), MemoryStorage((1, 2, 3)))
    elect(r)
    r.step(Message(MsgType.TRANSFER_LEADER, frm=2))
    with pytest.raises(ProposalDropped, match="moving to 2"):
        r.step(Message(MsgType.PROP, frm=1, entries=(Entry(0, 0, data=b"x"),)))


def test_snapshot_restores_follower_log_and_voters() -> None:
    r = Raft(cfg(3), MemoryStorage((1, 2, 3)))
    snap = Snapshot(index=10, term=2, voters=(1, 2, 3, 4), data=b"s")
    r.step(Message(MsgType.SNAP, frm=1, to=3, term=2, snapshot=snap))
    assert r.log.committed == 10 and r.log.last_index() == 10
    assert r.voters == {1, 2, 3, 4}
    assert r.msgs[-1].type == MsgType.APP_RESP and r.msgs[-1].index == 10


# -- the Ready contract --

def test_ready_advance_contract() -> None:
    disk = MemoryStorage((1,))
    node = RawNode(cfg(1), disk)
    node.campaign()
    rd = node.ready()
    assert rd.must_sync and rd.entries and rd.hard_state is not None
    with pytest.raises(AssertionError):
        node.ready()  # previous Ready not advanced
    disk.append(rd.entries)
    disk.set_hard_state(rd.hard_state)
    node.advance(rd)
    node.propose(b"a")
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"] or rd.entries
    disk.append(rd.entries)
    node.advance(rd)
    assert node.raft.log.applied >= 1


def test_restart_from_disk_keeps_term_vote_and_commit() -> None:
    disk = MemoryStorage((1, 2, 3))
    node = RawNode(cfg(1, pre_vote=False), disk)
    node.campaign()
    rd = node.ready()
    disk.append(rd.entries)
    assert rd.hard_state is not None
    disk.set_hard_state(rd.hard_state)
    node.advance(rd)
    again = RawNode(cfg(1), disk)
    assert again.raft.term == 1 and again.raft.vote == 1


def test_bad_config_and_hard_state_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Config(0).validate()
    with pytest.raises(LocalProtocolError):
        Config(1, election_tick=1, heartbeat_tick=1).validate()
    disk = MemoryStorage((1,))
    disk.set_hard_state(HardState(term=1, commit=5))
    with pytest.raises(LocalProtocolError, match="commit"):
        RawNode(cfg(1), disk)
