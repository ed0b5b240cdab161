"""The Raft core: one replica of one Raft group as a pure state machine.

Owns elections (with PreVote and CheckQuorum), log replication and commitment,
snapshots sent to lagging followers, leader transfer, and one-at-a-time membership
change. It owns no sockets, timers or disk: time is `tick()`, input is `step(message)`,
and everything the shell must do comes out of `RawNode.ready()` (the shape of
etcd-io/raft's `rawnode.go`). The only randomness, the election timeout, is drawn from
a `random.Random` seeded by the caller, so a simulation replays exactly.

Theory of operation
-------------------
A replica is a FOLLOWER, PRE_CANDIDATE, CANDIDATE or LEADER. Each role has its own
step function (`_step_leader`, `_step_candidate`, `_step_follower`) swapped in by
`_become_*`, after `step()` has handled what every role shares: term comparison, votes.

PreVote (Raft thesis §9.6): before bumping its term a would-be candidate asks whether
it could win; a partitioned node therefore never disrupts a healthy leader when it
rejoins. CheckQuorum (§6.2): a leader that has not heard from a quorum within an
election timeout steps down, and a follower that has heard from a leader within an
election timeout refuses votes ("leader lease"), except for a leader transfer.

Membership changes one voter at a time (thesis §4.1): a CONF entry takes effect when
the shell has applied it (`advance`), a leader accepts a new one only when the previous
one is applied, and a new leader first commits an entry of its own term (the fix for
the single-server-change bug in the thesis' errata) because `pending_conf_index` starts
at its last index.

The shell's contract (see `Ready`): persist the snapshot, entries and hard state
(synced when `must_sync`), then send the messages, then apply committed entries, then
call `advance()`. Messages never leave before the state they rely on is on disk.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from . import cbor
from .errors import LocalProtocolError, RemoteProtocolError
from .raftlog import (
    Compacted,
    Entry,
    EntryKind,
    HardState,
    RaftLog,
    Snapshot,
    Storage,
    Unavailable,
)

NONE = 0  # no node: node ids are positive integers
CAMPAIGN_TRANSFER = b"transfer"


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class MsgType(enum.IntEnum):
    # Local messages (term 0): never cross the network.
    HUP = 0
    BEAT = 1
    PROP = 2  # may be forwarded to the leader, then it crosses the network
    CHECK_QUORUM = 3
    TRANSFER_LEADER = 4  # may be forwarded to the leader
    UNREACHABLE = 5
    SNAP_STATUS = 6  # the shell's report on a snapshot it sent (RawNode.report_snapshot)
    # Network messages.
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    HEARTBEAT = 16
    HEARTBEAT_RESP = 17
    SNAP = 18
    TIMEOUT_NOW = 19


LOCAL_TYPES = frozenset({MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM, MsgType.UNREACHABLE,
                         MsgType.SNAP_STATUS})
_VOTE_RESP = {MsgType.VOTE: MsgType.VOTE_RESP, MsgType.PRE_VOTE: MsgType.PRE_VOTE_RESP}


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class ProposalDropped(LocalProtocolError):
    """The proposal was not appended (no leader, a transfer in progress, a pending
    membership change, too much uncommitted data); the caller may retry later."""

    code = "raft_proposal_dropped"

    def __init__(self, reason: str) -> None:
        super().__init__("raft.propose", reason)


# -- membership changes --

class ConfOp(enum.IntEnum):
    ADD_VOTER = 0
    REMOVE_VOTER = 1


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfOp
    node: int

    def encode(self) -> bytes:
        return cbor.encode({"op": int(self.op), "node": self.node})

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        value = cbor.decode(data)
        if (not isinstance(value, dict) or set(value) != {"op", "node"}
                or value["op"] not in (0, 1) or not isinstance(value["node"], int)
                or value["node"] <= 0):
            raise RemoteProtocolError("raft.conf_change", "malformed conf change")
        return ConfChange(ConfOp(value["op"]), value["node"])


# -- follower progress, as the leader tracks it --

class ProgressState(enum.IntEnum):
    PROBE = 0  # one append in flight until we learn where the follower's log matches
    REPLICATE = 1  # optimistic streaming, bounded by the inflight window
    SNAPSHOT = 2  # a snapshot is in flight; appends wait


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    snapshot_ticks: int = 0
    recent_active: bool = False
    inflight: deque[int] = field(default_factory=deque)

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.state = state
        self.inflight.clear()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self.reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def maybe_update(self, n: int) -> bool:
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    seed: int = 0
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 64
    max_uncommitted_size: int = 1 << 26
    # How many leader ticks a follower stays in SNAPSHOT state with no answer before the
    # snapshot is taken as lost and sent again; None: an election timeout. A shell that
    # reports every snapshot's outcome (`RawNode.report_snapshot`, as a streaming
    # transport does) sets it far longer than a large snapshot can take to send, so the
    # timeout is only a backstop and never restarts a transfer still under way.
    snapshot_timeout_tick: int | None = None

    def validate(self) -> None:
        if self.id <= NONE:
            raise LocalProtocolError("raft.config.id", "must be a positive integer")
        if self.heartbeat_tick <= 0:
            raise LocalProtocolError("raft.config.heartbeat_tick", "must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise LocalProtocolError("raft.config.election_tick",
                                     "must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise LocalProtocolError("raft.config.max_inflight_msgs", "must be > 0")
        if self.snapshot_timeout_tick is not None and self.snapshot_timeout_tick <= 0:
            raise LocalProtocolError("raft.config.snapshot_timeout_tick", "must be > 0")


@dataclass(frozen=True, slots=True)
class SoftState:
    lead: int
    role: Role


class Raft:
    """One replica's protocol state. Use it through `RawNode`."""

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.log = RaftLog(storage)
        hs, voters = storage.initial_state()
        self.rng = random.Random(config.seed)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.voters: set[int] = set(voters)
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self._step: Callable[[Message], None] = self._step_follower
        if hs != HardState():
            if not self.log.committed <= hs.commit <= self.log.last_index():
                raise LocalProtocolError(
                    "raft.hard_state.commit",
                    f"{hs.commit} is outside [{self.log.committed}, {self.log.last_index()}]")
            self.log.committed = hs.commit
            self.term = hs.term
            self.vote = hs.vote
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self._become_follower(self.term, NONE)

    # -- small helpers --

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def promotable(self) -> bool:
        return self.id in self.voters

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def _send(self, m: Message) -> None:
        if m.type in (MsgType.VOTE, MsgType.VOTE_RESP, MsgType.PRE_VOTE,
                      MsgType.PRE_VOTE_RESP):
            if m.term == 0:
                raise AssertionError(f"{m.type.name} must carry a term")
        elif m.type != MsgType.PROP and m.type != MsgType.TRANSFER_LEADER:
            # Forwarded proposals and transfer requests keep term 0: the leader
            # handles them like local ones.
            m = replace(m, term=self.term)
        if m.frm == NONE:
            m = replace(m, frm=self.id)
        self.msgs.append(m)

    def _reset_randomized_election_timeout(self) -> None:
        et = self.config.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        self.prs = {}
        for v in self.voters:
            pr = Progress(next=last + 1)
            if v == self.id:
                # Only what is on our disk counts towards a quorum (see advance()).
                pr.match = self.log.stable_last_index()
            self.prs[v] = pr
        self.pending_conf_index = 0
        self.uncommitted_size = 0

    # -- role changes --

    def _become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("leader cannot become pre-candidate")
        # Neither the term nor the vote changes: that is the point of PreVote.
        self._step = self._step_candidate
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("leader cannot become candidate")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise AssertionError("follower cannot become leader")
        self._step = self._step_leader
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        me = self.prs[self.id]
        me.become_replicate()
        me.recent_active = True
        # Conf changes wait until this term's first entry is committed and applied
        # (the fix for the single-server-change bug in the Raft thesis' errata).
        self._append_entries([Entry(0, 0)])
        self.pending_conf_index = self.log.last_index()

    # -- ticks --

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MsgType.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        timeout = self.config.snapshot_timeout_tick or self.config.election_tick
        for v, pr in self.prs.items():
            if v != self.id and pr.state == ProgressState.SNAPSHOT:
                # A lost snapshot would otherwise stall the follower forever.
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= timeout:
                    pr.become_probe()
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MsgType.CHECK_QUORUM, frm=self.id))
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self._abort_leader_transfer()
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MsgType.BEAT, frm=self.id))

    # -- elections --

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        try:
            entries = self.log.slice(max(self.log.applied + 1, self.log.first_index()),
                                     self.log.committed + 1, 1 << 62)
        except Compacted:
            return False
        return any(e.kind == EntryKind.CONF for e in entries)

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # campaigning now could act on a stale configuration
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MsgType.VOTE, self.term
        won, _ = self._poll(self.id, True)
        if won:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.voters):
            if v == self.id:
                continue
            self._send(Message(vote_type, to=v, term=term, index=self.log.last_index(),
                               log_term=self.log.last_term(), context=ctx))

    def _poll(self, voter: int, granted: bool) -> tuple[bool, bool]:
        """Record a vote; return (won, lost)."""
        if voter in self.voters:
            self.votes.setdefault(voter, granted)
        yes = sum(1 for v, g in self.votes.items() if g and v in self.voters)
        no = sum(1 for v, g in self.votes.items() if not g and v in self.voters)
        q = self.quorum()
        return yes >= q, no > len(self.voters) - q

    # -- step --

    def step(self, m: Message) -> None:
        """Feed one message (from the network or local). Never raises on a peer's
        message, however stale; raises ProposalDropped for a refused local proposal."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.config.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.config.election_tick)
                if not force and in_lease:
                    return  # we heard from a live leader recently: keep it
            if m.type == MsgType.PRE_VOTE:
                pass  # never change term for a pre-vote
            elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
                pass  # granted pre-votes carry the term we would campaign at
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                    MsgType.HEARTBEAT, MsgType.APP):
                # A stale leader (e.g. back from a partition during which we moved on)
                # learns our term from this and steps down.
                self._send(Message(MsgType.APP_RESP, to=m.frm))
            elif m.type == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, to=m.frm, term=self.term,
                                   reject=True))
            return

        if m.type == MsgType.HUP:
            self._hup(transfer=False)
        elif m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            can_vote = (self.vote == m.frm
                        or (self.vote == NONE and self.lead == NONE)
                        or (m.type == MsgType.PRE_VOTE and m.term > self.term))
            if can_vote and self.log.is_up_to_date(m.index, m.log_term):
                self._send(Message(_VOTE_RESP[m.type], to=m.frm, term=m.term))
                if m.type == MsgType.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.frm
            else:
                self._send(Message(_VOTE_RESP[m.type], to=m.frm, term=self.term,
                                   reject=True))
        else:
            self._step(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MsgType.BEAT:
            self._bcast_heartbeat()
            return
        if t == MsgType.CHECK_QUORUM:
            active = sum(1 for v, p in self.prs.items()
                         if v in self.voters and (v == self.id or p.recent_active))
            if active < self.quorum():
                self._become_follower(self.term, NONE)
                return
            for v, p in self.prs.items():
                if v != self.id:
                    p.recent_active = False
            return
        if t == MsgType.PROP:
            self._propose(m)
            return
        if t == MsgType.TRANSFER_LEADER:
            self._transfer(m.frm)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MsgType.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and \
                    len(pr.inflight) >= self.config.max_inflight_msgs:
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
        elif t == MsgType.UNREACHABLE and pr.state == ProgressState.REPLICATE:
            pr.become_probe()
        elif t == MsgType.SNAP_STATUS and pr.state == ProgressState.SNAPSHOT:
            # etcd-io/raft's MsgSnapStatus. Delivered: probe from the snapshot's index on
            # and wait for the follower's answer to it (it then replicates). Failed:
            # probe from what the follower is known to hold; the next heartbeat's answer
            # unpauses it, which sends the snapshot again (at heartbeat pace, no sooner).
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True

    def _propose(self, m: Message) -> None:
        if not m.entries:
            raise ProposalDropped("empty proposal")
        if self.id not in self.prs:
            raise ProposalDropped("this replica was removed from the group")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")
        entries = list(m.entries)
        for i, e in enumerate(entries):
            if e.kind != EntryKind.CONF:
                continue
            if self.pending_conf_index > self.log.applied:
                raise ProposalDropped("a membership change is still pending")
            cc = ConfChange.decode(e.data)
            if cc.op == ConfOp.REMOVE_VOTER and len(self.voters) == 1:
                raise ProposalDropped("cannot remove the last voter")
            self.pending_conf_index = self.log.last_index() + i + 1
        self._append_entries(entries)
        self._bcast_append()

    def _append_entries(self, entries: Sequence[Entry]) -> None:
        li = self.log.last_index()
        size = sum(len(e.data) for e in entries)
        if self.uncommitted_size and self.uncommitted_size + size > \
                self.config.max_uncommitted_size:
            raise ProposalDropped("too much uncommitted data; retry later")
        self.uncommitted_size += size
        stamped = [Entry(self.term, li + 1 + i, e.kind, e.data) for i, e in enumerate(entries)]
        self.log.append(stamped)
        # The leader's own copy counts towards the commit quorum only once the shell has
        # persisted it (RawNode.advance), which lets the shell send these entries to the
        # followers before its own disk write finishes (Raft thesis §10.2.1).

    def self_persisted(self, index: int, term: int) -> None:
        """The shell has synced our log up to (index, term): as leader, count it."""
        if self.role != Role.LEADER or self.log.term_or_zero(index) != term:
            return
        me = self.prs.get(self.id)
        if me is not None and me.maybe_update(index) and self._maybe_commit():
            if self.log.committed >= self.log.last_index():
                self.uncommitted_size = 0
            self._bcast_append()

    def _maybe_commit(self) -> bool:
        matches = sorted((pr.match for v, pr in self.prs.items() if v in self.voters),
                         reverse=True)
        if not matches:
            return False
        return self.log.maybe_commit(matches[self.quorum() - 1], self.term)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused(self.config.max_inflight_msgs)
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            while pr.inflight and pr.inflight[0] <= m.index:
                pr.inflight.popleft()
        if self._maybe_commit():
            if self.log.committed >= self.log.last_index():
                self.uncommitted_size = 0
            self._bcast_append()
        elif old_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, to=m.frm))

    def _transfer(self, target: int) -> None:
        if target == self.id or target not in self.voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        if self.prs[target].match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, to=target))
        else:
            self._send_append(target)

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused(self.config.max_inflight_msgs):
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            entries = self.log.entries_from(pr.next, self.config.max_size_per_msg)
        except Compacted:
            return self._send_snapshot(to, pr)
        except Unavailable:
            # A follower ack beyond our log cannot happen; reset to probing from match.
            pr.become_probe()
            return False
        if not entries and not send_if_empty:
            return False
        self._send(Message(MsgType.APP, to=to, index=prev, log_term=prev_term,
                           entries=tuple(entries), commit=self.log.committed))
        if pr.state == ProgressState.REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflight.append(last)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't ship a snapshot to a peer we haven't heard from
        snap = self.log.snapshot()
        if snap.index == 0:
            return False
        pr.become_snapshot(snap.index)
        self._send(Message(MsgType.SNAP, to=to, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        for v in sorted(self.prs):
            if v != self.id:
                self._send_append(v)

    def _bcast_heartbeat(self) -> None:
        for v in sorted(self.prs):
            if v == self.id:
                continue
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(self.prs[v].match, self.log.committed)
            self._send(Message(MsgType.HEARTBEAT, to=v, commit=commit))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else \
            MsgType.VOTE_RESP
        if t == MsgType.PROP:
            raise ProposalDropped("no leader (election in progress)")
        if t == MsgType.APP:
            self._become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == MsgType.HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MsgType.SNAP:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            won, lost = self._poll(m.frm, not m.reject)
            if won:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif lost:
                self._become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MsgType.PROP:
            if self.lead == NONE:
                raise ProposalDropped("no leader known")
            self._send(replace(m, to=self.lead))
        elif t == MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MsgType.TRANSFER_LEADER:
            if self.lead != NONE:
                self._send(replace(m, to=self.lead))
        elif t == MsgType.TIMEOUT_NOW:
            # Leader transfer: campaign at once, skipping PreVote and the lease.
            self._hup(transfer=True)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MsgType.APP_RESP, to=m.frm, index=last_new))
            return
        hint = min(m.index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self._send(Message(MsgType.APP_RESP, to=m.frm, index=m.index, reject=True,
                           reject_hint=hint, log_term=hint_term))

    def _handle_heartbeat(self, m: Message) -> None:
        if m.commit <= self.log.last_index():
            self.log.commit_to(m.commit)
        self._send(Message(MsgType.HEARTBEAT_RESP, to=m.frm))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if self._restore(snap):
            self._send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.last_index()))
        else:
            self._send(Message(MsgType.APP_RESP, to=m.frm, index=self.log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        if snap.index <= self.log.committed:
            return False
        if self.log.match_term(snap.index, snap.term):
            # We already hold the snapshot's last entry: just move the commit mark.
            self.log.commit_to(snap.index)
            return False
        self.log.restore(snap)
        self.voters = set(snap.voters)
        self._reset_progress()
        return True

    def _reset_progress(self) -> None:
        last = self.log.last_index()
        old = self.prs
        self.prs = {}
        for v in self.voters:
            pr = old.get(v) or Progress(next=last + 1, recent_active=True)
            if v == self.id:
                pr.match = last
            self.prs[v] = pr

    # -- membership --

    def apply_conf_change(self, cc: ConfChange) -> None:
        if cc.op == ConfOp.ADD_VOTER:
            if cc.node in self.voters:
                return
            self.voters.add(cc.node)
            # recent_active so CheckQuorum does not count a fresh member as dead.
            self.prs[cc.node] = Progress(next=self.log.last_index() + 1, recent_active=True)
            if self.role == Role.LEADER:
                self._send_append(cc.node)  # probe the newcomer now, not at the next beat
        else:
            if cc.node not in self.voters:
                return
            self.voters.discard(cc.node)
            self.prs.pop(cc.node, None)
            if cc.node == self.id and self.role == Role.LEADER:
                # A removed leader hands over to the most caught-up voter (which
                # campaigns at once, past the others' leases) and steps down.
                heir = max(sorted(self.prs), key=lambda v: self.prs[v].match, default=NONE)
                if heir != NONE:
                    self._send(Message(MsgType.TIMEOUT_NOW, to=heir))
                self._become_follower(self.term, NONE)
                return
        if self.lead_transferee not in self.voters:
            self._abort_leader_transfer()
        if self.role == Role.LEADER and self.voters:
            if self._maybe_commit():
                self._bcast_append()
            else:
                for v in sorted(self.prs):
                    if v != self.id:
                        self._send_append(v, send_if_empty=False)


@dataclass(frozen=True, slots=True)
class Ready:
    """What the shell must do, in this order:

    0. `early_messages` may be sent at once, before or while step 1 runs: they are a
       leader's appends and heartbeats in a term whose hard state is already on disk,
       and the leader counts its own entries only after step 4 reports them synced;
    1. persist `snapshot` (if any), then `entries` (replacing any suffix they conflict
       with), then `hard_state` (if any) -- as one synced write when `must_sync`;
    2. send `messages` (only now: they may promise what step 1 wrote);
    3. apply `snapshot` data to the state machine, then `committed_entries` in order;
    4. call `RawNode.advance(ready)`.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    must_sync: bool
    early_messages: tuple[Message, ...] = ()

    def empty(self) -> bool:
        return (self.soft_state is None and self.hard_state is None and not self.entries
                and self.snapshot is None and not self.committed_entries
                and not self.messages and not self.early_messages)


class RawNode:
    """The core behind a Ready/Advance loop (etcd-io/raft's RawNode)."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = storage.initial_state()[0]
        self._pending: Ready | None = None

    @property
    def id(self) -> int:
        return self.raft.id

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MsgType.HUP, frm=self.raft.id))

    def propose(self, data: bytes) -> None:
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id,
                               entries=(Entry(0, 0, EntryKind.NORMAL, data),)))

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id,
                               entries=(Entry(0, 0, EntryKind.CONF, cc.encode()),)))

    def transfer_leader(self, target: int) -> None:
        self.raft.step(Message(MsgType.TRANSFER_LEADER, frm=target))

    def forget_leader(self) -> None:
        """Forget a follower's leader (known to be gone) so that it grants pre-votes at
        once instead of waiting out the lease (etcd-io/raft's ForgetLeader)."""
        if self.raft.role == Role.FOLLOWER:
            self.raft.lead = NONE

    def report_unreachable(self, peer: int) -> None:
        self.raft.step(Message(MsgType.UNREACHABLE, frm=peer))

    def report_snapshot(self, peer: int, ok: bool) -> None:
        """The shell's outcome of the snapshot it last sent `peer` (etcd-io/raft's
        ReportSnapshot): `ok` when the follower received it whole, else False. Ignored
        unless the leader still waits on a snapshot for `peer`."""
        self.raft.step(Message(MsgType.SNAP_STATUS, frm=peer, reject=not ok))

    def step(self, m: Message) -> None:
        """A message from the network. Local-only types and strays are ignored."""
        if m.type in LOCAL_TYPES or m.frm == NONE:
            return
        # A forwarded proposal we cannot take is dropped; its proposer times out and retries.
        with contextlib.suppress(ProposalDropped):
            self.raft.step(m)

    def has_ready(self) -> bool:
        r = self.raft
        return bool(r.soft_state() != self._prev_soft
                    or (r.hard_state() != self._prev_hard and r.hard_state() != HardState())
                    or r.log.unstable.entries or r.log.unstable.snapshot is not None
                    or r.msgs or r.log.has_next_committed_entries())

    def ready(self) -> Ready:
        if self._pending is not None:
            raise AssertionError("advance() the previous Ready first")
        r = self.raft
        soft = r.soft_state()
        hard = r.hard_state()
        entries = tuple(r.log.unstable.entries)
        snap = r.log.unstable.snapshot
        vote_on_disk = (hard.term, hard.vote) == (self._prev_hard.term, self._prev_hard.vote)
        msgs = tuple(r.msgs)
        early = r.role == Role.LEADER and vote_on_disk and snap is None
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=entries,
            snapshot=snap,
            committed_entries=tuple(r.log.next_committed_entries()),
            messages=() if early else msgs,
            must_sync=bool(entries) or snap is not None or not vote_on_disk,
            early_messages=msgs if early else (),
        )
        r.msgs = []
        self._pending = rd
        return rd

    def advance(self, rd: Ready) -> None:
        if rd is not self._pending:
            raise AssertionError("advance() takes the Ready last returned")
        self._pending = None
        r = self.raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.index)
            r.log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.self_persisted(last.index, last.term)
        for e in rd.committed_entries:
            if e.kind == EntryKind.CONF:
                try:
                    cc = ConfChange.decode(e.data)
                except RemoteProtocolError:
                    continue  # a malformed change is a no-op everywhere alike
                r.apply_conf_change(cc)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)

    def status(self) -> dict[str, object]:
        r = self.raft
        return {
            "id": r.id, "term": r.term, "vote": r.vote, "lead": r.lead,
            "role": r.role.name.lower(), "commit": r.log.committed, "applied": r.log.applied,
            "last_index": r.log.last_index(), "voters": sorted(r.voters),
            "progress": {v: {"match": pr.match, "next": pr.next, "state": pr.state.name.lower()}
                         for v, pr in sorted(r.prs.items())} if r.role == Role.LEADER else {},
        }
