"""The kinds of bucket command, and the reasons a replica gives when it has no answer.

Owns, for each kind -- a DECIDE (`DECIDE`) and a ledger command (`LEDGER`); another kind
plugs in as one more `Kind` -- what its command is and how it travels: its bucket and
key, what a replica already knows of it, the leader's checks before a log entry is
spent on it (its "door"), the Raft entry it proposes, and its request and answer in the
frames (protocol/raftwire.py: DECIDE as `q`/`r`, ledger commands as `u`/`v`). Also the
typed reasons a replica gives when it has no answer (`NotLeader`, `Refused`,
`NoAnswer`), which travel as text in the frames (`encode_reason`, `parse_reason`: the
only place that text is written or read), and the errors a caller sees (`DecideError`,
`SubmitError`). The road every kind takes is node/raft_routing.py's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import trio

from swarm.protocol import cbor
from swarm.protocol.bucket_machine import (
    REJECTION_KINDS,
    SUBMITTED_KINDS,
    Command,
    LedgerOutcome,
    bucket_for,
    expiry_of,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid
from swarm.protocol.decide import Decision, TryDecide, encode_command
from swarm.protocol.envelope import decode_envelope
from swarm.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from swarm.protocol.ledger import LedgerError
from swarm.protocol.placement import Placement
from swarm.protocol.raft import NONE
from swarm.protocol.raftwire import (
    DecideRequest,
    DecideResponse,
    SubmitRequest,
    SubmitResponse,
)
from swarm.protocol.task import TASK_VERBS

from .raft_group import Group
from .raft_outbox import Outbox, PeerQueue

C = TypeVar("C")  # a kind's command
T = TypeVar("T")  # a kind's answer: what applying the command gave


class DecideError(LocalProtocolError):
    code = "decide_failed"

    def __init__(self, reason: str) -> None:
        super().__init__("decide", reason)


class SubmitError(LocalProtocolError):
    """No outcome: no quorum of the bucket answered in time, or the leader refused the
    command at its door (`code` then says why: bad_signature, wrong_bucket, ...)."""

    code = "submit_failed"


# -- why a replica has no answer --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotLeader:
    """This replica does not lead the bucket; `leader` does, as far as it knows (or
    NONE)."""

    leader: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The leader refused the command at its door: it could only be rejected. `field`
    names what is at fault for a caller here (it does not travel)."""

    code: str
    reason: str
    field: str = "command"


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Nothing to say now (busy, a proposal dropped, leadership moved, not this
    bucket's replica, a malformed command, ...): ask again, or elsewhere."""

    why: str


Reason = NotLeader | Refused | NoAnswer
_NOT_LEADER, _REFUSED = "not_leader", "refused"
_LEADER_DIGITS_MAX = 6


def encode_reason(r: Reason) -> str:
    match r:
        case NotLeader():
            return f"{_NOT_LEADER}:{r.leader}"
        case Refused():
            return f"{_REFUSED}:{r.code}:{r.reason}"
    return r.why


def parse_reason(text: str) -> Reason:
    """A replica's reason, as `encode_reason` wrote it (anything else is a `NoAnswer`)."""
    head, _, rest = text.partition(":")
    if head == _NOT_LEADER and rest.isdigit() and len(rest) <= _LEADER_DIGITS_MAX:
        return NotLeader(int(rest))
    if head == _REFUSED:
        code, _, why = rest.partition(":")
        return Refused(code or _REFUSED, why.strip())
    return NoAnswer(text)


def leader_named(answer: object, replicas: list[int]) -> int:
    """The leader a replica's answer names (`NotLeader`), if it is one of the bucket's
    replicas; NONE otherwise (any other answer or reason)."""
    return answer.leader if isinstance(answer, NotLeader) and answer.leader in replicas \
        else NONE


# -- what routing needs of the shell -------------------------------------------------------


class Shell(Protocol):
    """The few things of `MultiRaft` routing uses."""

    id: int
    placement: Placement
    groups: dict[int, Group]
    outbox: Outbox
    stats: dict[str, int]
    wake: trio.Event

    @property
    def now_tick(self) -> int: ...
    def clock_ms(self) -> int: ...
    def flush(self, final: bool = True) -> None: ...
    def alive(self, peer: int) -> bool: ...
    def leader_hint(self, bucket: int) -> int: ...
    def propose(self, g: Group, data: bytes) -> bool: ...


# -- kinds of command ---------------------------------------------------------------------


class Kind(ABC, Generic[C, T]):
    """What one kind of bucket command is and how it travels (see the module docstring).
    `once`: a leader proposes a given command at most once an attempt (a second caller
    waits on the first proposal). Each kind says what the abstract methods are."""

    name = ""
    once = False
    stat = ""  # the stats counter of proposals

    @abstractmethod
    def bucket(self, cmd: C, placement: Placement) -> int:
        """The bucket that orders `cmd`."""

    @abstractmethod
    def key(self, cmd: C) -> bytes:
        """What makes `cmd` one command however often it is sent (its dedupe key)."""

    @abstractmethod
    def known(self, g: Group, cmd: C) -> T | None:
        """What this replica can answer without proposing (it applied the command)."""

    def known_to_peer(self, g: Group, cmd: C) -> T | None:
        """What this replica answers a peer's request with at once."""
        return self.known(g, cmd)

    def applied(self, g: Group, cmd: C) -> T | None:
        """What applying the command gave, once the caller's proposal applied."""
        return self.known(g, cmd)

    def door(self, shell: Shell, g: Group, cmd: C) -> T | Refused | None:
        """The leader's checks before a log entry is spent on the command: an answer
        already, a refusal, or None to propose."""
        return None

    @abstractmethod
    def entry(self, cmd: C, ts_ms: int) -> bytes:
        """The Raft entry's data: the command stamped with the leader's clock."""

    @abstractmethod
    def request(self, q: PeerQueue, req_id: int, bucket: int, cmd: C) -> None:
        """Queue `cmd` for a peer (the leader we know) in the next frame to it."""

    @abstractmethod
    def answer(self, q: PeerQueue, req_id: int, answer: T | Reason) -> None:
        """Queue the answer to a peer's request `req_id` in the next frame to it."""

    @abstractmethod
    def read(self, cmd: C, resp: Any) -> T | Reason:
        """A replica's answer to `cmd`: the outcome, or why there is none."""

    def refusal(self, r: Refused) -> Exception:
        """The caller's error for a refusal at the door."""
        return LocalProtocolError("command", r.reason, code=r.code)


class DecideKind(Kind[TryDecide, Decision]):
    name, stat = "decide", "proposals"

    def bucket(self, cmd: TryDecide, placement: Placement) -> int:
        return bucket_of(cmd.need_id, placement.bucket_count)

    def key(self, cmd: TryDecide) -> bytes:
        return cmd.need_id

    def known(self, g: Group, cmd: TryDecide) -> Decision | None:
        return g.machine.get(cmd.need_id)

    def door(self, shell: Shell, g: Group, cmd: TryDecide) -> Decision | Refused | None:
        """A NEED funded as a market task is decided by its auction in the task book,
        never by a proposal: refused, so that no NEED has two decisions of two kinds."""
        if g.machine.ledger.tasks.get(Cid(cmd.need_id)) is not None:
            return Refused("market_task", "this NEED is a funded task: its auction "
                                          "decides it (bid on it instead)", "need_id")
        return None

    def entry(self, cmd: TryDecide, ts_ms: int) -> bytes:
        return encode_command(cmd, ts_ms)

    def request(self, q: PeerQueue, req_id: int, bucket: int, cmd: TryDecide) -> None:
        q.requests.append(DecideRequest(req_id, bucket, cmd.need_id, cmd.proposal_id,
                                        cmd.k_plan, cmd.epoch))

    def answer(self, q: PeerQueue, req_id: int, answer: Decision | Reason) -> None:
        if isinstance(answer, Decision):
            d = answer
            q.responses.append(DecideResponse(req_id, True, (
                d.need_id, d.proposal_id, d.k_plan, d.epoch, d.bucket, d.index, d.term,
                d.ts_ms)))
        else:
            q.responses.append(DecideResponse(req_id, False, (), encode_reason(answer)))

    def read(self, cmd: TryDecide, resp: Any) -> Decision | Reason:
        """An answer stating another NEED's decision is no answer (DecideError if the
        decision is malformed)."""
        if not isinstance(resp, DecideResponse):
            return NoAnswer("not an answer to a DECIDE")  # a peer's confusion or malice
        if not resp.ok:
            return parse_reason(resp.reason)
        d = _decision_of(resp)
        if d.need_id != cmd.need_id:
            return NoAnswer("answers_mismatched")
        return d

    def refusal(self, r: Refused) -> Exception:
        return DecideError(r.reason)


# Entries a bucket's leader proposes itself: ticks, pool views, committee draws. A
# draw's seed takes the quorum of signatures its proposer picks; from the leader only,
# no other peer can race it with another choice.
LEADER_OPS = frozenset({"tick", "pool_view", "pool_views", "draw"})


class LedgerKind(Kind[Command, LedgerOutcome]):
    name, once, stat = "ledger", True, "ledger_proposals"

    def bucket(self, cmd: Command, placement: Placement) -> int:
        return cmd.bucket

    def key(self, cmd: Command) -> bytes:
        return cmd.key

    def known(self, g: Group, cmd: Command) -> LedgerOutcome | None:
        """A rejection that decided nothing is not an answer: a real one may follow."""
        out = g.machine.outcome(cmd.key)
        return out if out is not None and out.kind not in REJECTION_KINDS else None

    def applied(self, g: Group, cmd: Command) -> LedgerOutcome | None:
        return g.machine.outcome(cmd.key)

    def known_to_peer(self, g: Group, cmd: Command) -> LedgerOutcome | None:
        """A user's command only: an effect batch or acknowledgement is proposed again
        (it is applied once anyway), so that its sender's retry gets it through."""
        return self.known(g, cmd) if cmd.value["op"] == "ledger" else None

    def door(self, shell: Shell, g: Group, cmd: Command) -> LedgerOutcome | Refused | None:
        """A user's command: an operation already decided answers its outcome; an
        envelope that could only be rejected (bad signature, another swarm, not a ledger
        verb, another bucket's signer, a validity limit passed or too far ahead) is
        refused. The state machine checks all of it again when applying."""
        if cmd.value["op"] in LEADER_OPS:  # the leader's own entries, never a request
            return Refused("not_requestable", f"only a bucket's leader proposes "
                                              f"{cmd.value['op']} entries", "op")
        if cmd.value["op"] != "ledger":
            return None
        if g.machine.ledger.is_decided(cmd.key):
            return g.machine.outcome(cmd.key) or LedgerOutcome(
                cmd.key, "unknown", cmd.key, g.bucket, 0, 0, "duplicate_op",
                f"operation {cmd.key.hex()[:16]} was already decided")
        refusal = _door_envelope(shell, g, cmd)
        return None if refusal is None else Refused(refusal.code, refusal.reason,
                                                    refusal.field)

    def entry(self, cmd: Command, ts_ms: int) -> bytes:
        return cmd.stamp(ts_ms)

    def request(self, q: PeerQueue, req_id: int, bucket: int, cmd: Command) -> None:
        q.submits.append(SubmitRequest(req_id, bucket, cmd.encode()))

    def answer(self, q: PeerQueue, req_id: int, answer: LedgerOutcome | Reason) -> None:
        if not req_id:
            return  # nobody waits (effect delivery)
        if isinstance(answer, LedgerOutcome):
            q.results.append(SubmitResponse(req_id, True, cbor.encode(answer.to_value())))
        else:
            q.results.append(SubmitResponse(req_id, False, b"", encode_reason(answer)))

    def read(self, cmd: Command, resp: Any) -> LedgerOutcome | Reason:
        if not isinstance(resp, SubmitResponse):
            return NoAnswer("not an answer to a ledger command")
        if not resp.ok:
            return parse_reason(resp.reason)
        try:
            return LedgerOutcome.from_value(cbor.decode(resp.result))
        except RemoteProtocolError as exc:
            raise SubmitError("outcome", f"a replica answered with a malformed outcome "
                                         f"({exc})") from None

    def refusal(self, r: Refused) -> Exception:
        return SubmitError(r.field, r.reason, code=r.code)


def _door_envelope(shell: Shell, g: Group, cmd: Command) -> ProtocolError | None:
    try:
        env = decode_envelope(cmd.value["env"], swarm=g.machine.swarm_id)
    except RemoteProtocolError as exc:
        return exc
    if env.kind not in SUBMITTED_KINDS:
        return LocalProtocolError("kind", f"{env.kind} is not a ledger or market verb",
                                  code="not_ledger_verb")
    try:
        home = bucket_for(env, shell.placement.bucket_count)
    except ProtocolError as exc:
        return exc
    if home != g.bucket:
        whose = "its NEED" if env.kind in TASK_VERBS else "the signer's account"
        return LocalProtocolError("bucket", f"{whose} belongs to bucket {home}, not "
                                            f"{g.bucket}", code="wrong_bucket")
    # The bucket's clock when it applies, at the earliest: the stamp we would give.
    now = max(g.machine.clock_ms, shell.clock_ms())
    try:
        g.machine.ledger.check_window(cmd.key, expiry_of(env, g.machine.params), now)
    except LedgerError as exc:
        return exc
    return None


def _decision_of(resp: DecideResponse) -> Decision:
    f = resp.decision
    ok = (len(f) == 8 and isinstance(f[0], bytes) and isinstance(f[1], bytes)
          and all(isinstance(x, int) and not isinstance(x, bool) for x in f[2:]))
    if not ok:
        raise DecideError("a replica answered with a malformed decision")
    return Decision(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7])


DECIDE = DecideKind()
LEDGER = LedgerKind()
