"""The task lifecycle: the state machine a NEED's bucket runs for its task.

Owns every transition of a task and who may cause it: funding, the auction's rounds
and its decision, the lease (claim, heartbeats, yield, release), the commit, the
committee's attestations, finalization and payout, cancellation and refund. It holds no
credits itself: each step answers the payments, slashes and reputation changes it
causes, and the bucket's ledger carries them out (docs/MARKET.md says where each fact
lives). Pure and deterministic: a step depends on the book's state, the step's inputs
and the bucket's clock (`ts_ms`, the committed entry's stamp), never on a wall clock.

A task is its NEED's id (the NEED envelope's CID). Its states::

    OPEN ──close, bids──▶ DECIDED ──CLAIM──▶ CLAIMED ──COMMIT──▶ COMMITTED
      │ ▲                   │                  │                   │ draw, ATTEST×K
      │ └──── reopen ◀──────┴─ claim timeout ──┴─ YIELD, release ──┤
      │        (epoch+1: the next-best bid, else a new auction)     ▼ rejected, late
      └─ no bids after the last round ─▶ CANCELLED (refund)      ATTESTED
                                                                    │ challenge window
                                                                    ▼
                                                                FINALIZED ─ escrow hold ─▶ paid

While a result is ATTESTED anyone not party to it may CHALLENGE it, posting a bond
(`challenge`). Challenges wait in a queue, the largest bond first; the head gets a panel
of staked verifiers drawn like a committee (`draw`), whose ATTESTs naming the challenge
are its votes. A quorum of the panel decides; without one a larger panel is drawn, and
after `challenge_rounds_max` rounds the votes weighted by stake decide. UPHELD
invalidates the result: the members who attested it are slashed, the challenger gets
its bond back and a share of the slash, and the task reopens with a larger committee.
REJECTED forfeits the bond; WITHDRAWN returns it less a fee. No challenge is taken
outside the challenge window (P7), and the window does not close, nor the task pay,
while one is open.

Every reopen bumps the task's epoch, and each epoch has at most one decision (P1 per
round). A bidder whose lease ended without a commit (yield, timeout, missed heartbeats,
or a claim never made) is excluded from the task's later epochs; after
`task_reopens_max` reopens the task is cancelled and refunded.

Time: `advance(ts_ms)` runs before each entry is judged. When the bucket's clock jumps
by more than `outage_gap_ms` (no entry at all: no leader, or a partition) every pending
deadline moves out by the jump, so nobody loses a lease, a bid window or an attest
window because the bucket could not hear them. Lease and heartbeat deadlines also get
`lease_grace_ms`. Then every timer due at `ts_ms` fires, in (deadline, task) order.

Steps are all or nothing: a step stages new task records and commits them only once it
has succeeded; a refusal (`TaskError`) or a bug leaves the book as it was.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from . import cbor, output_schema
from .auction import Bid, Score, ballot_hash, improves, rank
from .cid import Cid, dag_cbor_cid
from .envelope import Envelope
from .errors import DecodeError, LocalProtocolError
from .genesis import BP
from .plan import patch_scope_error

TASK_DOMAIN = b"can-swarm/tasks/v1\x00"
MEMO_DOMAIN = "can-swarm/decision-memo/v1"
SNAPSHOT_LIMITS = cbor.Limits(size_bytes_max=1 << 30, depth_max=10, items_max=1 << 26)
TASK_VERBS = ("PROPOSE", "CLAIM", "HEARTBEAT", "YIELD", "COMMIT", "ATTEST", "WITHDRAW")
# What a task's escrow pays: the worker, the committee, the poster; a challenger's bond
# back ("bond"), a forfeited bond's share to the panel ("bond_share").
PAYMENT_KINDS = ("payout", "bounty", "refund", "bond", "bond_share")
UPHELD, REJECTED, WITHDRAWN, LAPSED, MOOT = "UPHELD", "REJECTED", "WITHDRAWN", "LAPSED", "MOOT"
# A challenge ends: upheld or rejected by its panel, withdrawn by its challenger, lapsed
# (no panel member voted in any round: the bond goes back), or moot (another challenge
# invalidated the same result first: the bond goes back).
OUTCOMES = (UPHELD, REJECTED, WITHDRAWN, LAPSED, MOOT)
PANEL_MAX = 64
HONEST_MAX = 64  # verifiers sharing one slash (ledger_ops: a slash order's `honest`)

OPEN, DECIDED, CLAIMED, COMMITTED = "OPEN", "DECIDED", "CLAIMED", "COMMITTED"
ATTESTED, FINALIZED, CANCELLED = "ATTESTED", "FINALIZED", "CANCELLED"
STATES = (OPEN, DECIDED, CLAIMED, COMMITTED, ATTESTED, FINALIZED, CANCELLED)


class TaskError(LocalProtocolError):
    """A refused lifecycle step; `code` names the rule (`bid_window_closed`, ...)."""

    code = "task_refused"


def _refuse(code: str, fld: str, reason: str) -> TaskError:
    return TaskError(fld, reason, code=code)


# --- records -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terms:
    """What a funded NEED asks for, fixed when its bucket registers it."""

    need: Cid
    poster: bytes
    budget: int  # escrowed here: everything paid out or refunded comes from it
    task_class: str
    verify_bounty: int  # shared by the committee that accepts the result
    bid_window_ms: int
    k_result: int
    capabilities: tuple[str, ...] = ()
    k_plan: int = 0  # approving ATTEST_PLANs the winning patch needs (docs/MARKET.md)
    job: Cid | None = None  # the WebAssembly module to run (its CID), if the NEED names one
    input: Cid | None = None  # the evidence it runs on
    host: str | None = None  # or the host job (a registered Python callable) to run
    check: str | None = None  # the host check that verifies it (None: the job's own)
    output: str | None = None  # the result's output schema (protocol/output_schema.py)
    cites: tuple[Cid, ...] = ()  # CIDs whose text the result must contain
    deny: tuple[str, ...] = ()  # byte strings (UTF-8) the result must not contain


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: Cid  # the CLAIM envelope's id
    worker: bytes
    claimed_ms: int
    expires_ms: int  # without grace
    heartbeat_interval_ms: int
    heartbeat_due_ms: int  # the next heartbeat is due by this (without grace)
    misses: int = 0
    progress: int = 0


@dataclass(frozen=True, slots=True)
class Commit:
    commit_id: Cid  # the COMMIT envelope's id
    worker: bytes
    result: Cid
    index: int  # the entry that committed it
    committee: tuple[bytes, ...] = ()  # sorted; empty until drawn
    attest_by_ms: int = 0
    verdicts: tuple[tuple[bytes, bool], ...] = ()  # (member, valid), sorted


@dataclass(frozen=True, slots=True)
class ChallengeTerms:
    """A CHALLENGE as its bond brings it to the task's bucket: `challenger` says the
    result of `commit_id` is wrong in the way `proof_type` names, and `evidence` (the
    proof, at most `proof_bytes_max`) shows it."""

    challenge_id: Cid  # the CHALLENGE envelope's id
    challenger: bytes
    need: Cid
    commit_id: Cid
    proof_type: str
    evidence: Cid
    bond: int  # held by the task's bucket while the challenge is open


@dataclass(frozen=True, slots=True)
class Challenge:
    """An open challenge. `round` 0 waits in the queue; from 1 it is the one under way:
    awaiting its panel (`draw_index`, the entry whose certificate seeds the draw) or
    voting until `vote_by_ms`."""

    terms: ChallengeTerms
    opened_ms: int
    opened_index: int
    round: int = 0
    draw_index: int = 0
    panel: tuple[tuple[bytes, int], ...] = ()  # (member, stake) seated this round, sorted
    vote_by_ms: int = 0
    votes: tuple[tuple[bytes, bool, int, int], ...] = ()  # (member, uphold, stake, round)
    seated: tuple[bytes, ...] = ()  # every member seated in any round, sorted


@dataclass(frozen=True, slots=True)
class Ruling:
    """How a challenge ended (`OUTCOMES`), at which entry, and the votes it had."""

    challenge_id: Cid
    challenger: bytes
    proof_type: str
    bond: int
    outcome: str
    index: int
    ts_ms: int
    uphold: int = 0
    reject: int = 0
    rounds: int = 0
    weighted: bool = False  # decided by the stake-weighted vote after the last round


@dataclass(frozen=True, slots=True)
class TaskDecision:
    """The one decision of an epoch: `proposal` won, `memo` explains why."""

    need: Cid
    epoch: int
    proposal: Cid
    winner: bytes
    cost: int
    index: int
    ts_ms: int
    memo: Cid


@dataclass(frozen=True, slots=True)
class Task:
    terms: Terms
    state: str
    created_ms: int
    epoch: int = 0
    round: int = 1
    close_ms: int = 0  # OPEN: the round's bids are judged at this time
    bids: tuple[Bid, ...] = ()  # OPEN: this round's; afterwards the closed round's, ranked
    best: tuple[tuple[bytes, int], ...] = ()  # bidder -> its lowest cost on this task
    ballots: tuple[bytes, ...] = ()  # ballot hashes used on this task, sorted
    excluded: tuple[bytes, ...] = ()  # sorted
    reopens: int = 0
    decision: TaskDecision | None = None
    claim_by_ms: int = 0
    lease: Lease | None = None
    commit: Commit | None = None
    finalize_ms: int = 0
    pay_ms: int = 0
    paid: bool = False
    ended_ms: int = 0  # CANCELLED or paid: forgotten `task_retention_ms` after this
    # (entry index, state entered) for every change of state, oldest first: where the
    # bucket's certified chain holds each transition. At most about six entries a
    # reopen, and reopens are bounded (`task_reopens_max`).
    history: tuple[tuple[int, str], ...] = ()
    # Committee members that stayed silent through an attest window of this task,
    # sorted: no later committee of the task seats them.
    silent: tuple[bytes, ...] = ()
    # Open challenges against the current result, the one under way first, then the
    # queue by bond (largest first) and challenge id; and every challenge decided.
    challenges: tuple[Challenge, ...] = ()
    rulings: tuple[Ruling, ...] = ()
    upheld: int = 0  # challenges upheld against this task's results

    @property
    def k_result(self) -> int:
        """The committee size: the NEED's, plus 2 after a first upheld challenge,
        doubled after each later one (at most PANEL_MAX)."""
        k = self.terms.k_result
        for n in range(self.upheld):
            k = k + 2 if n == 0 else 2 * k
            if k >= PANEL_MAX:
                return PANEL_MAX
        return k

    @property
    def active(self) -> Challenge | None:
        """The challenge under way, if any."""
        return self.challenges[0] if self.challenges and self.challenges[0].round else None

    @property
    def draw_index(self) -> int:
        """The entry whose certificate seeds the draw this task awaits (0: none): the
        COMMIT of a result without a committee, or the entry that started a challenge
        round without a panel."""
        if self.state == COMMITTED and self.commit is not None and not self.commit.committee:
            return self.commit.index
        ch = self.active
        return ch.draw_index if self.state == ATTESTED and ch is not None else 0

    def due_ms(self, grace_ms: int) -> int | None:
        """When this task's next timer fires, if it has one."""
        match self.state:
            case "OPEN":
                return self.close_ms
            case "DECIDED":
                return self.claim_by_ms
            case "CLAIMED":
                assert self.lease is not None
                return min(self.lease.expires_ms, self.lease.heartbeat_due_ms) + grace_ms
            case "COMMITTED":
                assert self.commit is not None
                return self.commit.attest_by_ms if self.commit.committee else None
            case "ATTESTED":
                if self.challenges:  # the window waits for them
                    ch = self.active
                    return (ch.vote_by_ms or None) if ch is not None else None
                return self.finalize_ms
            case "FINALIZED":
                return None if self.paid else self.pay_ms
        return None

    def shifted(self, delta: int) -> Task:
        """Every pending deadline `delta` later (an outage)."""
        lease = self.lease and replace(self.lease, expires_ms=self.lease.expires_ms + delta,
                                       heartbeat_due_ms=self.lease.heartbeat_due_ms + delta)
        commit = self.commit and (replace(self.commit, attest_by_ms=self.commit.attest_by_ms
                                          + delta) if self.commit.committee else self.commit)
        def later(ms: int) -> int:
            return ms + delta if ms else 0  # 0: not set in this state

        challenges = tuple(replace(c, vote_by_ms=later(c.vote_by_ms))
                           for c in self.challenges)
        return replace(self, close_ms=later(self.close_ms), claim_by_ms=later(self.claim_by_ms),
                       lease=lease, commit=commit, finalize_ms=later(self.finalize_ms),
                       pay_ms=later(self.pay_ms), challenges=challenges)


# --- what a step causes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payment:
    """Credits out of a task's escrow: to the worker (`payout`), to a committee member
    (`bounty`) or back to the poster (`refund`)."""

    need: Cid
    account: bytes
    amount: int
    kind: str
    payer: bytes  # the poster, whose escrow pays


@dataclass(frozen=True, slots=True)
class SlashCause:
    """Slash `account` for `misses` missed heartbeats on the lease `lease_id` of the
    task `need`."""

    account: bytes
    lease_id: Cid
    misses: int
    need: Cid


@dataclass(frozen=True, slots=True)
class ChallengeSlash:
    """An upheld challenge showed `account` attested a wrong result: slash it
    (`slash_failed_challenge_bp` of its stake), sharing the slash between `challenger`
    and the `honest` verifiers (the bucket drops related parties first, P8)."""

    account: bytes
    need: Cid
    challenge_id: Cid
    challenger: bytes
    honest: tuple[bytes, ...]
    poster: bytes
    worker: bytes


@dataclass(frozen=True, slots=True)
class ReputationCause:
    """A committee or panel member's verdict was wrong or missing (`failed=True`) or
    right; with `challenge`, a challenger's challenge was rejected (`failed`) or upheld."""

    account: bytes
    failed: bool
    challenge: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    need: Cid
    epoch: int
    before: str  # "" when the task is new
    after: str
    cause: str


@dataclass
class Step:
    """What one entry did to the tasks (in order)."""

    transitions: list[Transition] = field(default_factory=list)
    decisions: list[TaskDecision] = field(default_factory=list)
    memos: list[tuple[Cid, bytes]] = field(default_factory=list)  # explanation bytes
    payments: list[Payment] = field(default_factory=list)
    slashes: list[SlashCause] = field(default_factory=list)
    reputation: list[ReputationCause] = field(default_factory=list)
    challenge_slashes: list[ChallengeSlash] = field(default_factory=list)
    burned: int = 0  # out of the tasks' escrow (forfeited bonds, withdrawal fees)
    outage_ms: int = 0  # deadlines moved out by this much (see `TaskBook.advance`)


# --- the book --------------------------------------------------------------------------


def need_of(env: Envelope) -> Cid:
    """The NEED a lifecycle envelope names: PROPOSE by `need_id`, the others by
    `task_id`, the NEED's CID as text."""
    p = env.payload
    if env.kind == "PROPOSE":
        need = p["need_id"]
        assert isinstance(need, Cid)
        return need
    try:
        return Cid.parse(p["task_id"], "payload.task_id")
    except DecodeError as exc:
        raise _refuse("unknown_task", "payload.task_id",
                      f"not a NEED id: {exc.reason}") from None


class TaskBook:
    """The tasks of one bucket, changed only by `fund`, `submit`, `draw` and `advance`,
    each given the committed entry's index and the bucket's clock."""

    def __init__(self, params: Mapping[str, int]) -> None:
        self.params = dict(params)
        self.tasks: dict[Cid, Task] = {}
        self.clock_ms = 0
        self._entry = 0  # the index of the entry being applied (each step sets it)
        self._timers: list[tuple[int, bytes]] = []  # (due, need raw), lazily deleted
        self._ends: list[tuple[int, bytes]] = []  # (ended, need raw), lazily deleted
        # One journal per open transaction (innermost last): what each task held before.
        self._journals: list[dict[Cid, Task | None]] = []

    # -- queries

    def get(self, need: Cid) -> Task | None:
        return self.tasks.get(need)

    def next_due_ms(self) -> int | None:
        """The earliest pending deadline: when the leader should propose a tick."""
        grace = self.params["lease_grace_ms"]
        heap = self._timers
        while heap:
            due, raw = heap[0]
            task = self.tasks.get(Cid(raw))
            if task is not None and task.due_ms(grace) == due:
                return due
            heapq.heappop(heap)
        return None

    # -- steps

    def fund(self, terms: Terms, index: int, ts_ms: int) -> Step:
        """Register a funded NEED and open its auction. Funding is infallible (the
        poster's bucket already took the budget): a NEED already known here, or terms
        this bucket cannot run, get the budget refunded instead."""
        self._entry = index
        step = Step()
        p = self.params
        problem = ""
        if terms.need in self.tasks:
            problem = "already funded"
        elif terms.verify_bounty > terms.budget:
            problem = "the verify bounty is over the budget"
        elif not 1 <= terms.k_result <= 64:
            problem = "k_result out of range"
        elif not 0 <= terms.k_plan <= 64:
            problem = "k_plan out of range"
        elif terms.job is not None and terms.host is not None:
            problem = "a NEED names a WebAssembly job or a host job, not both"
        elif terms.check is not None and terms.host is None:
            problem = "a check is for a host job"
        elif terms.cites:
            problem = output_schema.cites_problem(terms.cites, terms.output) or ""
        if problem:
            step.payments.append(Payment(terms.need, terms.poster, terms.budget, "refund",
                                         terms.poster))
            step.transitions.append(Transition(terms.need, 0, "", CANCELLED, problem))
            return step
        window = terms.bid_window_ms or p["bid_window_ms"]
        with self._atomic():
            self._put(Task(terms, OPEN, ts_ms, close_ms=ts_ms + window))
        step.transitions.append(Transition(terms.need, 0, "", OPEN, f"funded at {index}"))
        return step

    def submit(self, env: Envelope, index: int, ts_ms: int, *,
               reputation_bp: int = 0, related: bool = False) -> Step:
        """Judge one verified lifecycle envelope. Raises TaskError (nothing changed)
        when a rule refuses it. For a PROPOSE, `reputation_bp` is the bidder's
        reputation as its home bucket certified it, and `related` whether it shares an
        org or ASN with the poster (the caller knows both from the pool views)."""
        if env.kind not in TASK_VERBS:
            raise _refuse("not_task_verb", "kind", f"{env.kind} is not a lifecycle verb "
                                                   f"({', '.join(TASK_VERBS)})")
        need = need_of(env)
        self._entry = index
        with self._atomic():
            match env.kind:
                case "PROPOSE":
                    return self._propose(env, need, index, ts_ms, reputation_bp, related)
                case "CLAIM":
                    return self._claim(env, need, ts_ms)
                case "HEARTBEAT":
                    return self._heartbeat(env, need, ts_ms)
                case "YIELD":
                    return self._yield(env, need, index, ts_ms)
                case "COMMIT":
                    return self._commit(env, need, index, ts_ms)
                case "WITHDRAW":
                    return self._withdraw(env, need, index, ts_ms)
                case _:
                    if self._task(need).state == ATTESTED:
                        return self._vote(env, need, index, ts_ms)
                    return self._attest(env, need, index, ts_ms)

    def draw(self, need: Cid, committee: Iterable[bytes], ts_ms: int, *,
             commit_index: int, rule: str = "caps", index: int = 0,
             stakes: Mapping[bytes, int] | None = None) -> Step:
        """Seat the committee drawn for the result committed at `commit_index` (the
        caller drew it from the verifier pool, seeded by the certificate of that COMMIT
        entry; `rule` says how the caps were met) in the entry `index`. An empty
        committee (the pool cannot fill one) cancels the task and refunds the poster.

        For an ATTESTED task it seats the panel of the challenge under way instead:
        `commit_index` is then the entry that started the round, and `stakes` the
        members' stakes (what a stake-weighted vote counts)."""
        self._entry = index
        task = self._task(need)
        if task.state == ATTESTED:
            with self._atomic():
                return self._seat_panel(task, committee, stakes or {}, ts_ms, commit_index,
                                        index)
        if task.state != COMMITTED or task.commit is None or task.commit.committee:
            raise _refuse("wrong_state", "need", f"task is {task.state}, not awaiting "
                                                 f"a committee")
        if task.commit.index != commit_index:
            raise _refuse("wrong_commit", "commit", f"the task's result was committed at "
                                                    f"entry {task.commit.index}, not "
                                                    f"{commit_index}")
        members = tuple(sorted(set(committee)))
        step = Step()
        if task.commit.worker in members or task.terms.poster in members:
            raise _refuse("related_member", "committee", "the worker and the poster "
                                                         "cannot sit on the committee")
        if set(members) & set(task.silent):
            raise _refuse("silent_member", "committee", "a member silent on an earlier "
                                                        "committee of this task cannot sit")
        with self._atomic():
            if not members:
                self._cancel(task, ts_ms, step, "no committee can be drawn")
                return step
            commit = replace(task.commit, committee=members,
                             attest_by_ms=ts_ms + self.params["attest_window_ms"])
            self._put(replace(task, commit=commit))
        how = "" if rule == "caps" else f" ({rule.replace('_', ' ')})"
        if len(members) < task.k_result:
            how += f", {len(members)} of {task.k_result}: no more members left"
        step.transitions.append(Transition(need, task.epoch, COMMITTED, COMMITTED,
                                           f"committee of {len(members)} drawn{how}"))
        return step

    def awaiting_draw(self) -> list[Task]:
        """Tasks awaiting a draw (`Task.draw_index`: a committee for a committed
        result, a panel for a challenge), in NEED order."""
        return [t for _, t in sorted(self.tasks.items(), key=lambda kv: kv[0].raw)
                if t.draw_index]

    def advance(self, ts_ms: int, index: int) -> Step:
        """Move the clock to `ts_ms` (never back) and fire every timer due by then.

        An outage: the first pending deadline (or the last entry, if later) lies more
        than `outage_gap_ms` before `ts_ms`, so the bucket could not act in time. Every
        pending deadline then moves out by the whole gap since the last entry: each
        party gets back the time it had left when the bucket last heard anything. A
        quiet bucket whose leader ticks at the deadline has no such gap."""
        step = Step()
        self._entry = index
        with self._atomic():
            first = self.next_due_ms()
            gap = ts_ms - self.clock_ms
            if first is not None and ts_ms - max(self.clock_ms, first) > \
                    self.params["outage_gap_ms"]:
                for need in sorted(self.tasks, key=lambda c: c.raw):
                    pending = self.tasks[need]
                    if pending.due_ms(0) is not None:
                        self._put(pending.shifted(gap))
                step.outage_ms = gap
            self.clock_ms = max(self.clock_ms, ts_ms)
            grace = self.params["lease_grace_ms"]
            while self._timers and self._timers[0][0] <= ts_ms:
                due, raw = heapq.heappop(self._timers)
                task = self.tasks.get(Cid(raw))
                if task is None or task.due_ms(grace) != due:
                    continue  # superseded
                self._fire(task, ts_ms, index, step)
            self._forget_ended(ts_ms)
        return step

    # -- the auction

    def _propose(self, env: Envelope, need: Cid, index: int, ts_ms: int,
                 reputation_bp: int, related: bool) -> Step:
        task = self._task(need)
        p, bidder = env.payload, env.sender
        if task.state != OPEN or ts_ms >= task.close_ms:
            raise _refuse("bid_window_closed", "payload.need_id",
                          f"task is {task.state}" if task.state != OPEN
                          else "the bid window closed")
        if bidder == task.terms.poster:
            raise _refuse("own_need", "sender", "a poster cannot bid on its own NEED")
        if related:
            raise _refuse("related_party", "sender", "the bidder shares an org or ASN "
                                                     "with the poster")
        if bidder in task.excluded:
            raise _refuse("excluded", "sender", "this bidder's lease on the task ended "
                                                "without a commit")
        cost = p["cost"]
        if cost + task.terms.verify_bounty > task.terms.budget:
            raise _refuse("over_budget", "payload.cost",
                          f"cost {cost} plus the verify bounty {task.terms.verify_bounty} "
                          f"is over the budget {task.terms.budget}")
        if any(b.bidder == bidder for b in task.bids):
            raise _refuse("already_bid", "sender", "one bid per bidder per round")
        ballot = ballot_hash(need.raw, p["ballot"])
        if ballot in task.ballots:
            raise _refuse("ballot_reused", "payload.ballot", "this ballot was used on "
                                                            "this task")
        earlier = dict(task.best).get(bidder)
        if earlier is not None and not improves(cost, earlier, self.params):
            raise _refuse("not_improved", "payload.cost",
                          f"a later bid must lower the earlier cost {earlier} by at "
                          f"least {self.params['bid_improve_bp'] / 100:g}%")
        if "patch" in p:
            problem = patch_scope_error(str(need), p["patch"]["ops"])
            if problem is not None:
                raise _refuse("patch_scope", "payload.patch", problem)
        if len(task.bids) >= self.params["bids_per_round_max"]:
            raise _refuse("bids_full", "payload.need_id", "this round holds the most bids "
                                                         "a round may")
        bid = Bid(env.id.raw, bidder, p["proposal_id"], cost, p["eta_ms"],
                  tuple(p.get("capabilities", ())), p["ballot"],
                  max(0, min(BP, reputation_bp)), task.round, index)
        best = dict(task.best)
        best[bidder] = cost if earlier is None else min(cost, earlier)
        self._put(replace(task, bids=(*task.bids, bid), best=tuple(sorted(best.items())),
                          ballots=tuple(sorted((*task.ballots, ballot)))))
        step = Step()
        step.transitions.append(Transition(need, task.epoch, OPEN, OPEN,
                                           f"bid {cost} by {bidder.hex()[:16]}"))
        return step

    def _close(self, task: Task, ts_ms: int, index: int, step: Step) -> None:
        t = task.terms
        ranked = rank(t.need.raw, task.bids, budget=t.budget, wanted=t.capabilities,
                      params=self.params)
        if ranked:
            self._decide(replace(task, bids=tuple(b for b, _ in ranked)), ranked, ts_ms,
                         index, step, f"round {task.round} closed with {len(ranked)} bids")
        elif task.round < self.params["auction_rounds_max"]:
            self._put(replace(task, round=task.round + 1,
                              close_ms=ts_ms + (t.bid_window_ms or
                                                self.params["bid_window_ms"])))
            step.transitions.append(Transition(t.need, task.epoch, OPEN, OPEN,
                                               f"no bids: round {task.round + 1}"))
        else:
            self._cancel(task, ts_ms, step, f"no bids in {task.round} rounds")

    def _decide(self, task: Task, ranked: list[tuple[Bid, Score]], ts_ms: int, index: int,
                step: Step, why: str) -> None:
        winner = ranked[0][0]
        memo = self._memo(task, ranked, why)
        memo_cid = dag_cbor_cid(memo)
        decision = TaskDecision(task.terms.need, task.epoch, Cid(winner.proposal),
                                winner.bidder, winner.cost, index, ts_ms, memo_cid)
        self._put(replace(task, state=DECIDED, decision=decision,
                          claim_by_ms=ts_ms + self.params["claim_window_ms"]))
        step.decisions.append(decision)
        step.memos.append((memo_cid, memo))
        step.transitions.append(Transition(task.terms.need, task.epoch, task.state,
                                           DECIDED, why))

    def _memo(self, task: Task, ranked: list[tuple[Bid, Score]], why: str) -> bytes:
        """The explanation of a decision: every bid seen with its score and parts, and
        the rule that picked the winner. Canonical bytes, so its CID is the same on
        every replica."""
        p = self.params
        return cbor.encode({
            "v": MEMO_DOMAIN, "need": task.terms.need, "epoch": task.epoch,
            "round": task.round, "why": why, "budget": task.terms.budget,
            "wanted": list(task.terms.capabilities),
            "weights": {k: p[k] for k in ("score_cost_bp", "score_eta_bp",
                                          "score_reputation_bp", "score_capability_bp",
                                          "eta_ref_ms")},
            "rule": "highest score; ties to the higher reputation, then the smaller "
                    "sha256(ballot domain, need, ballot)",
            "bids": [{"proposal": Cid(b.proposal), "bidder": b.bidder, "cost": b.cost,
                      "eta_ms": b.eta_ms, "reputation_bp": s.reputation_bp,
                      "score": s.total, "cost_bp": s.cost_bp, "eta_bp": s.eta_bp,
                      "capability_bp": s.capability_bp, "round": b.round}
                     for b, s in ranked],
        })

    def _reopen(self, task: Task, ts_ms: int, index: int, step: Step, why: str,
                exclude: bytes | None) -> None:
        """Give the task back: a new epoch, the next-best bid of the closed round
        that is still eligible, else a new auction."""
        excluded = task.excluded
        if exclude is not None and exclude not in excluded:
            excluded = tuple(sorted((*excluded, exclude)))
        if task.reopens >= self.params["task_reopens_max"]:
            self._cancel(replace(task, excluded=excluded), ts_ms, step,
                         f"{why}; reopened {task.reopens} times already")
            return
        t = task.terms
        base = replace(task, epoch=task.epoch + 1, reopens=task.reopens + 1,
                       excluded=excluded, lease=None, commit=None, claim_by_ms=0)
        step.transitions.append(Transition(t.need, task.epoch, task.state, OPEN, why))
        left = [b for b in task.bids if b.bidder not in excluded]
        if left:
            ranked = rank(t.need.raw, left, budget=t.budget, wanted=t.capabilities,
                          params=self.params)
            self._decide(replace(base, state=OPEN, bids=tuple(b for b, _ in ranked)),
                         ranked, ts_ms, index, step, f"{why}: the next-best bid")
            return
        self._put(replace(base, state=OPEN, round=1, bids=(), decision=None,
                          close_ms=ts_ms + (t.bid_window_ms or self.params["bid_window_ms"])))

    # -- the lease

    def _claim(self, env: Envelope, need: Cid, ts_ms: int) -> Step:
        task = self._task(need)
        p = self.params
        if task.state != DECIDED or task.decision is None:
            raise _refuse("wrong_state", "payload.task_id", f"task is {task.state}, "
                                                            f"not DECIDED")
        if env.sender != task.decision.winner:
            raise _refuse("not_winner", "sender", "only the winning bidder may claim")
        ttl, hb = env.payload["lease_ttl_ms"], env.payload["heartbeat_interval_ms"]
        if not p["lease_ttl_min_ms"] <= ttl <= p["lease_ttl_max_ms"]:
            raise _refuse("lease_ttl", "payload.lease_ttl_ms",
                          f"must be {p['lease_ttl_min_ms']}..{p['lease_ttl_max_ms']} ms")
        if not p["heartbeat_interval_min_ms"] <= hb <= ttl:
            raise _refuse("heartbeat_interval", "payload.heartbeat_interval_ms",
                          f"must be {p['heartbeat_interval_min_ms']} ms..the lease TTL")
        lease = Lease(env.id, env.sender, ts_ms, ts_ms + ttl, hb, ts_ms + hb)
        self._put(replace(task, state=CLAIMED, lease=lease, claim_by_ms=0))
        step = Step()
        step.transitions.append(Transition(need, task.epoch, DECIDED, CLAIMED,
                                           f"claimed for {ttl} ms"))
        return step

    def _holder(self, env: Envelope, need: Cid) -> tuple[Task, Lease]:
        task = self._task(need)
        if task.state != CLAIMED or task.lease is None:
            raise _refuse("not_lease_holder", "payload.task_id",
                          f"task is {task.state}: nobody holds a lease")
        if env.sender != task.lease.worker:
            raise _refuse("not_lease_holder", "sender", "only the lease holder may")
        lease_id = env.payload.get("lease_id")
        if lease_id is not None and lease_id != task.lease.lease_id:
            raise _refuse("wrong_lease", "payload.lease_id", "not the task's current lease")
        return task, task.lease

    def _heartbeat(self, env: Envelope, need: Cid, ts_ms: int) -> Step:
        task, lease = self._holder(env, need)
        lease = replace(lease, heartbeat_due_ms=ts_ms + lease.heartbeat_interval_ms,
                        progress=env.payload["progress"])
        self._put(replace(task, lease=lease))
        step = Step()
        step.transitions.append(Transition(need, task.epoch, CLAIMED, CLAIMED,
                                           f"heartbeat {lease.progress}%"))
        return step

    def _yield(self, env: Envelope, need: Cid, index: int, ts_ms: int) -> Step:
        task, lease = self._holder(env, need)
        step = Step()
        self._reopen(task, ts_ms, index, step, f"yielded: {env.payload['reason']}",
                     lease.worker)
        return step

    def _commit(self, env: Envelope, need: Cid, index: int, ts_ms: int) -> Step:
        task, lease = self._holder(env, need)
        p = env.payload
        if "lease_id" not in p:
            raise _refuse("wrong_lease", "payload.lease_id", "a commit names its lease")
        bounty = p.get("verify_bounty")
        if bounty is not None and bounty > task.terms.verify_bounty:
            raise _refuse("over_bounty", "payload.verify_bounty",
                          f"the NEED fixes the verify bounty at {task.terms.verify_bounty}")
        commit = Commit(env.id, lease.worker, p["result"], index)
        self._put(replace(task, state=COMMITTED, commit=commit))
        step = Step()
        step.transitions.append(Transition(need, task.epoch, CLAIMED, COMMITTED,
                                           f"result {p['result']}"))
        return step

    # -- the committee

    def _attest(self, env: Envelope, need: Cid, index: int, ts_ms: int) -> Step:
        task = self._task(need)
        c = task.commit
        if task.state != COMMITTED or c is None or not c.committee:
            raise _refuse("wrong_state", "payload.task_id",
                          f"task is {task.state}, no committee is seated")
        if env.payload["commit_id"] != c.commit_id:
            raise _refuse("wrong_commit", "payload.commit_id", "not the task's commit")
        if env.sender not in c.committee:
            raise _refuse("not_in_committee", "sender", "only committee members attest")
        if any(m == env.sender for m, _ in c.verdicts):
            raise _refuse("already_attested", "sender", "one verdict per member")
        if ts_ms > c.attest_by_ms:
            raise _refuse("attest_window_closed", "payload.task_id", "the attest window "
                                                                     "closed")
        valid = env.payload["verdict"] == "valid"
        c = replace(c, verdicts=tuple(sorted((*c.verdicts, (env.sender, valid)))))
        task = replace(task, commit=c)
        step = Step()
        yes = sum(1 for _, v in c.verdicts if v)
        no = len(c.verdicts) - yes
        need_yes = min(task.k_result, len(c.committee))
        if yes >= need_yes:
            self._accept(task, ts_ms, step)
        elif 2 * no > len(c.committee):
            self._judged(task, accepted=False, step=step)
            self._reopen(task, ts_ms, index, step, "the committee rejected the result",
                         c.worker)
        else:
            self._put(task)
            step.transitions.append(Transition(need, task.epoch, COMMITTED, COMMITTED,
                                               f"{'valid' if valid else 'invalid'} by "
                                               f"{env.sender.hex()[:16]}"))
        return step

    def _accept(self, task: Task, ts_ms: int, step: Step) -> None:
        p = self.params
        window = p["challenge_window_ms"]
        self._judged(task, accepted=True, step=step)
        self._put(replace(task, state=ATTESTED, finalize_ms=ts_ms + window,
                          pay_ms=ts_ms + max(window, p["escrow_hold_factor"] * window)))
        step.transitions.append(Transition(task.terms.need, task.epoch, COMMITTED,
                                           ATTESTED, "the committee accepted the result"))

    def _judged(self, task: Task, *, accepted: bool | None, step: Step) -> None:
        """Reputation of each member by its verdict: a silent member fails, and so does
        one on the losing side when the committee decided (`accepted` None: it did
        not, the attest window closed first)."""
        assert task.commit is not None
        said = dict(task.commit.verdicts)
        for m in task.commit.committee:
            failed = m not in said or (accepted is not None and said[m] is not accepted)
            step.reputation.append(ReputationCause(m, failed))

    # -- challenges

    def challenge(self, ct: ChallengeTerms, index: int, ts_ms: int, *,
                  related: bool = False) -> Step:
        """Open a challenge whose bond has reached this bucket (the caller holds it in
        the tasks' escrow already). Infallible, as funding is: a challenge the rules
        refuse gets its bond back. `related`: the challenger shares an org or ASN with
        the worker or a committee member (the caller knows from the pool views)."""
        self._entry = index
        step = Step()
        task = self.tasks.get(ct.need)
        problem = self._challenge_problem(task, ct, ts_ms, related)
        if task is None or problem:
            step.payments.append(Payment(ct.need, ct.challenger, ct.bond, "bond",
                                         ct.challenger))
            if task is not None:
                step.transitions.append(Transition(ct.need, task.epoch, task.state,
                                                   task.state, f"challenge {ct.challenge_id} "
                                                               f"refused: {problem}"))
            return step
        with self._atomic():
            self._put(self._started(replace(task, challenges=_queued(
                (*task.challenges, Challenge(ct, ts_ms, index)))), index))
        step.transitions.append(Transition(
            ct.need, task.epoch, ATTESTED, ATTESTED,
            f"challenge {ct.challenge_id} ({ct.proof_type}, bond {ct.bond}) opened by "
            f"{ct.challenger.hex()[:16]}"))
        return step

    def _challenge_problem(self, task: Task | None, ct: ChallengeTerms, ts_ms: int,
                           related: bool) -> str:
        if task is None:
            return "no such task in this bucket"
        c = task.commit
        if task.state != ATTESTED or c is None:
            return f"the task is {task.state}; only an attested result can be challenged"
        if ts_ms >= task.finalize_ms:
            return "the challenge window closed"  # P7
        if ct.commit_id != c.commit_id:
            return "not the task's current result"
        # The poster may: it is the one a wrong result wrongs.
        if ct.challenger == c.worker or ct.challenger in c.committee:
            return "the worker and the committee cannot challenge their own result"
        if related:
            return "the challenger is related to the worker or the committee"
        if any(o.terms.challenger == ct.challenger for o in task.challenges):
            return "one open challenge per challenger per task"
        if len(task.challenges) + len(task.rulings) >= self.params["challenges_per_task_max"]:
            return "the task has had the most challenges it may"
        return ""

    def _started(self, task: Task, index: int) -> Task:
        """The head of the queue under way, awaiting its first panel, if none is."""
        if not task.challenges or task.challenges[0].round:
            return task
        head = replace(task.challenges[0], round=1, draw_index=index)
        return replace(task, challenges=(head, *task.challenges[1:]))

    def _seat_panel(self, task: Task, members: Iterable[bytes], stakes: Mapping[bytes, int],
                    ts_ms: int, draw_index: int, index: int) -> Step:
        ch = task.active
        if ch is None or not ch.draw_index:
            raise _refuse("wrong_state", "need", "no challenge of this task awaits a panel")
        if ch.draw_index != draw_index:
            raise _refuse("wrong_commit", "commit", f"the challenge's round started at entry "
                                                    f"{ch.draw_index}, not {draw_index}")
        seated = tuple(sorted(set(members)))
        if set(seated) & challenge_barred(task, ch):
            raise _refuse("related_member", "committee", "a party to the result or the "
                                                         "challenge, or a member seated "
                                                         "before, cannot sit on the panel")
        step = Step()
        need = task.terms.need
        if not seated:
            self._settle_votes(task, ch, ts_ms, index, step, "no panel member left to draw")
            return step
        ch = replace(ch, draw_index=0, panel=tuple((m, stakes.get(m, 0)) for m in seated),
                     vote_by_ms=ts_ms + self.params["challenge_vote_window_ms"],
                     seated=tuple(sorted({*ch.seated, *seated})))
        self._put(replace(task, challenges=(ch, *task.challenges[1:])))
        step.transitions.append(Transition(need, task.epoch, ATTESTED, ATTESTED,
                                           f"panel of {len(seated)} for challenge "
                                           f"{ch.terms.challenge_id}, round {ch.round}"))
        return step

    def _vote(self, env: Envelope, need: Cid, index: int, ts_ms: int) -> Step:
        """An ATTEST on an attested result is a panel member's vote on the challenge it
        names (`evidence`): "invalid" upholds it, "valid" rejects it."""
        task = self._task(need)
        ch, p = task.active, env.payload
        if ch is None or not ch.panel:
            raise _refuse("wrong_state", "payload.task_id", "no challenge panel of this task "
                                                            "is voting")
        if p.get("evidence") != ch.terms.challenge_id:
            raise _refuse("wrong_challenge", "payload.evidence", f"a vote names the challenge "
                                                                 f"under way "
                                                                 f"({ch.terms.challenge_id})")
        if p["commit_id"] != ch.terms.commit_id:
            raise _refuse("wrong_commit", "payload.commit_id", "not the challenged result")
        stake = dict(ch.panel).get(env.sender)
        if stake is None:
            raise _refuse("not_in_committee", "sender", "only the panel votes")
        if any(m == env.sender and r == ch.round for m, _, _, r in ch.votes):
            raise _refuse("already_attested", "sender", "one vote per member")
        if ts_ms > ch.vote_by_ms:
            raise _refuse("attest_window_closed", "payload.task_id", "the vote closed")
        uphold = p["verdict"] == "invalid"
        ch = replace(ch, votes=tuple(sorted((*ch.votes, (env.sender, uphold, stake,
                                                         ch.round)))))
        task = replace(task, challenges=(ch, *task.challenges[1:]))
        step = Step()
        n = len(ch.panel)
        up, down = _tally(ch)
        quorum = 2 * n // 3 + 1
        if up >= quorum or down >= quorum or up + down == n or \
                (n - down < quorum and n - up < quorum):
            self._settle_votes(task, ch, ts_ms, index, step, "")
        else:
            self._put(task)
            step.transitions.append(Transition(need, task.epoch, ATTESTED, ATTESTED,
                                               f"{'uphold' if uphold else 'reject'} by "
                                               f"{env.sender.hex()[:16]}"))
        return step

    def _vote_closed(self, task: Task, ts_ms: int, index: int, step: Step) -> None:
        """The panel's vote window closed: its silent members failed their judgement."""
        ch = task.active
        assert ch is not None
        said = {m for m, _, _, r in ch.votes if r == ch.round}
        for m, _ in ch.panel:
            if m not in said:
                step.reputation.append(ReputationCause(m, True))
        self._settle_votes(task, ch, ts_ms, index, step, "the vote closed without a quorum")

    def _settle_votes(self, task: Task, ch: Challenge, ts_ms: int, index: int, step: Step,
                      why: str) -> None:
        """Decide the round: a quorum of the panel decides; otherwise a larger panel,
        and after the last round the votes of every round weighted by stake."""
        n = len(ch.panel)
        up, down = _tally(ch)
        quorum = 2 * n // 3 + 1
        if n and up >= quorum:
            self._uphold(task, ch, ts_ms, index, step, weighted=False)
        elif n and down >= quorum:
            self._forfeit(task, ch, ts_ms, index, step, weighted=False)
        elif ch.round < self.params["challenge_rounds_max"] and n:
            ch = replace(ch, round=ch.round + 1, draw_index=index, panel=(), vote_by_ms=0)
            self._put(replace(task, challenges=(ch, *task.challenges[1:])))
            step.transitions.append(Transition(
                task.terms.need, task.epoch, ATTESTED, ATTESTED,
                f"{why or 'the panel disagreed'}: a panel of "
                f"{panel_size(ch.round, self.params)} for round {ch.round}"))
        else:
            for_, against = (sum(s for _, u, s, _ in ch.votes if u),
                             sum(s for _, u, s, _ in ch.votes if not u))
            if not ch.votes:
                self._end_challenge(task, ch, LAPSED, ts_ms, index, step, refund=ch.terms.bond)
            elif for_ > against:
                self._uphold(task, ch, ts_ms, index, step, weighted=True)
            else:
                self._forfeit(task, ch, ts_ms, index, step, weighted=True)

    def _uphold(self, task: Task, ch: Challenge, ts_ms: int, index: int, step: Step, *,
                weighted: bool) -> None:
        """INVALIDATE: the attesters are slashed, the bond goes back, the result is
        dropped (its payout never happens) and the task reopens with a larger
        committee, without the worker. Other open challenges of the result are moot."""
        c, t = task.commit, ch.terms
        assert c is not None
        need = task.terms.need
        attesters = sorted(m for m, ok in c.verdicts if ok)
        # At most 64 share a slash (what a slash order carries), the first in byte order.
        honest = sorted({m for m, ok in c.verdicts if not ok}
                        | {m for m, up, _, _ in ch.votes if up})[:HONEST_MAX]
        for a in attesters:
            step.challenge_slashes.append(ChallengeSlash(
                a, need, t.challenge_id, t.challenger, tuple(h for h in honest if h != a),
                task.terms.poster, c.worker))
            step.reputation.append(ReputationCause(a, True))
        step.reputation.append(ReputationCause(t.challenger, False, challenge=True))
        self._judge_panel(ch, upheld=True, step=step)
        step.payments.append(Payment(need, t.challenger, t.bond, "bond", t.challenger))
        rulings = [_ruling(ch, UPHELD, index, ts_ms, weighted)]
        for other in task.challenges[1:]:
            step.payments.append(Payment(need, other.terms.challenger, other.terms.bond,
                                         "bond", other.terms.challenger))
            rulings.append(_ruling(other, MOOT, index, ts_ms, False))
        task = replace(task, challenges=(), rulings=(*task.rulings, *rulings),
                       upheld=task.upheld + 1, finalize_ms=0, pay_ms=0)
        step.transitions.append(Transition(need, task.epoch, ATTESTED, ATTESTED,
                                           f"challenge {t.challenge_id} upheld: result "
                                           f"{c.result} invalidated, {len(attesters)} "
                                           f"attesters slashed"))
        self._reopen(task, ts_ms, index, step, "a challenge invalidated the result",
                     c.worker)

    def _forfeit(self, task: Task, ch: Challenge, ts_ms: int, index: int, step: Step, *,
                 weighted: bool) -> None:
        """REJECTED: the bond is forfeit, `payout_honest_verifiers_bp` of it to the panel
        members who voted to reject (split equally), the rest burned."""
        t = ch.terms
        voters = sorted({m for m, up, _, _ in ch.votes if not up})
        share = t.bond * self.params["payout_honest_verifiers_bp"] // BP if voters else 0
        each, rest = divmod(share, len(voters)) if voters else (0, 0)
        for i, m in enumerate(voters):
            amount = each + (1 if i < rest else 0)
            if amount:
                step.payments.append(Payment(t.need, m, amount, "bond_share", t.challenger))
        step.reputation.append(ReputationCause(t.challenger, True, challenge=True))
        self._judge_panel(ch, upheld=False, step=step)
        self._end_challenge(task, ch, REJECTED, ts_ms, index, step, refund=0,
                            weighted=weighted, burn=t.bond - share)

    def _withdraw(self, env: Envelope, need: Cid, index: int, ts_ms: int) -> Step:
        task = self._task(need)
        cid = env.payload["challenge_id"]
        ch = next((c for c in task.challenges if c.terms.challenge_id == cid), None)
        if ch is None:
            raise _refuse("unknown_challenge", "payload.challenge_id",
                          f"no open challenge {cid} on this task")
        if env.sender != ch.terms.challenger:
            raise _refuse("not_challenger", "sender", "only the challenger may withdraw")
        fee = ch.terms.bond * self.params["challenge_withdraw_fee_bp"] // BP
        step = Step()
        self._end_challenge(task, ch, WITHDRAWN, ts_ms, index, step,
                            refund=ch.terms.bond - fee, burn=fee)
        return step

    def _end_challenge(self, task: Task, ch: Challenge, outcome: str, ts_ms: int,
                       index: int, step: Step, *, refund: int, burn: int = 0,
                       weighted: bool = False) -> None:
        """A challenge ends without invalidating the result: it leaves the queue, the
        next one starts, and a decided one keeps the window open a while longer."""
        t = ch.terms
        if refund:
            step.payments.append(Payment(t.need, t.challenger, refund, "bond", t.challenger))
        step.burned += burn
        finalize, pay = task.finalize_ms, task.pay_ms
        if outcome != WITHDRAWN:
            finalize = max(finalize, ts_ms + self.params["challenge_extend_ms"])
            pay = max(pay, finalize)
        rest = tuple(c for c in task.challenges if c.terms.challenge_id != t.challenge_id)
        task = replace(task, challenges=rest, finalize_ms=finalize, pay_ms=pay,
                       rulings=(*task.rulings, _ruling(ch, outcome, index, ts_ms, weighted)))
        self._put(self._started(task, index))
        step.transitions.append(Transition(t.need, task.epoch, ATTESTED, ATTESTED,
                                           f"challenge {t.challenge_id} {outcome.lower()}"))

    def _judge_panel(self, ch: Challenge, *, upheld: bool, step: Step) -> None:
        """Each vote of every round is judged by the outcome."""
        for m, up, _, _ in ch.votes:
            step.reputation.append(ReputationCause(m, up is not upheld))

    # -- timers

    def _fire(self, task: Task, ts_ms: int, index: int, step: Step) -> None:
        p = self.params
        match task.state:
            case "OPEN":
                self._close(task, ts_ms, index, step)
            case "DECIDED":
                assert task.decision is not None
                self._reopen(task, ts_ms, index, step, "the winner did not claim in time",
                             task.decision.winner)
            case "CLAIMED":
                lease = task.lease
                assert lease is not None
                grace = p["lease_grace_ms"]
                if ts_ms >= lease.expires_ms + grace:
                    self._reopen(task, ts_ms, index, step, "released: the lease expired",
                                 lease.worker)
                    return
                # One or more heartbeats missed: each missed interval counts once.
                late = ts_ms - (lease.heartbeat_due_ms + grace)
                misses = lease.misses + 1 + late // lease.heartbeat_interval_ms
                if misses >= p["heartbeat_misses_max"]:
                    step.slashes.append(SlashCause(lease.worker, lease.lease_id, misses,
                                                  task.terms.need))
                    self._reopen(task, ts_ms, index, step,
                                 f"released: {misses} heartbeats missed", lease.worker)
                    return
                due = lease.heartbeat_due_ms + (misses - lease.misses) * \
                    lease.heartbeat_interval_ms
                self._put(replace(task, lease=replace(lease, misses=misses,
                                                      heartbeat_due_ms=due)))
                step.transitions.append(Transition(task.terms.need, task.epoch, CLAIMED,
                                                   CLAIMED, f"{misses} heartbeats missed"))
            case "COMMITTED":
                c = task.commit
                assert c is not None
                self._judged(task, accepted=None, step=step)
                said = {m for m, _ in c.verdicts}
                silent = [m for m in c.committee if m not in said]
                if silent and all(ok for _, ok in c.verdicts) \
                        and task.reopens < p["task_reopens_max"]:
                    self._redraw(task, silent, step)
                else:
                    self._reopen(task, ts_ms, index, step,
                                 "too few verdicts in the attest window", c.worker)
            case "ATTESTED" if task.challenges:
                self._vote_closed(task, ts_ms, index, step)
            case "ATTESTED":
                self._put(replace(task, state=FINALIZED))
                step.transitions.append(Transition(task.terms.need, task.epoch, ATTESTED,
                                                   FINALIZED, "the challenge window passed"))
            case "FINALIZED":
                self._pay(task, ts_ms, step)

    def _redraw(self, task: Task, silent: list[bytes], step: Step) -> None:
        """Members went silent and nobody said invalid: the result waits for a new
        committee, without them (the node draws it as for a new COMMIT). The worker
        keeps its result; the silent failed their judgement. Counts as a reopen."""
        assert task.commit is not None
        self._put(replace(task, reopens=task.reopens + 1,
                          silent=tuple(sorted({*task.silent, *silent})),
                          commit=replace(task.commit, committee=(), verdicts=(),
                                         attest_by_ms=0)))
        step.transitions.append(Transition(
            task.terms.need, task.epoch, COMMITTED, COMMITTED,
            f"{len(silent)} of the committee silent in the attest window: a new "
            f"committee, without them"))

    def _pay(self, task: Task, ts_ms: int, step: Step) -> None:
        """The escrow's end (`payouts`): each unit of the budget goes somewhere, once."""
        step.payments.extend(payouts(task))
        self._put(replace(task, paid=True, ended_ms=ts_ms))
        step.transitions.append(Transition(task.terms.need, task.epoch, FINALIZED, FINALIZED,
                                           "paid"))

    def _cancel(self, task: Task, ts_ms: int, step: Step, why: str) -> None:
        step.payments.append(Payment(task.terms.need, task.terms.poster, task.terms.budget,
                                     "refund", task.terms.poster))
        self._put(replace(task, state=CANCELLED, lease=None, ended_ms=ts_ms))
        step.transitions.append(Transition(task.terms.need, task.epoch, task.state,
                                           CANCELLED, why))

    def _forget_ended(self, ts_ms: int) -> None:
        """Tasks cancelled or paid `task_retention_ms` ago leave the book (a NEED can
        never be funded twice: its poster's bucket refuses the NEED's operation id
        again until it expires, and the fund effect of each is applied once)."""
        horizon = ts_ms - self.params["task_retention_ms"]
        ends = self._ends
        while ends and ends[0][0] < horizon:
            ended, raw = heapq.heappop(ends)
            need = Cid(raw)
            task = self.tasks.get(need)
            if task is None or task.ended_ms != ended:
                continue
            self._save(need)
            del self.tasks[need]

    # -- state

    def _task(self, need: Cid) -> Task:
        task = self.tasks.get(need)
        if task is None:
            raise _refuse("unknown_task", "payload.task_id", f"no funded NEED {need}")
        return task

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: on any exception every task changed inside, and the clock,
        are put back (stale timers need nothing: they are skipped). Nests: an inner
        transaction that fails undoes only its own changes, so a caller can wrap several
        steps of one entry and still have a refused step leave no trace."""
        journal: dict[Cid, Task | None] = {}
        self._journals.append(journal)
        clock = self.clock_ms
        try:
            yield
        except BaseException:
            for need, old in journal.items():
                if old is None:
                    self.tasks.pop(need, None)
                else:
                    self.tasks[need] = old
                    self._push(old)
            self.clock_ms = clock
            raise
        else:
            if len(self._journals) > 1:
                outer = self._journals[-2]
                for need, old in journal.items():
                    outer.setdefault(need, old)
        finally:
            self._journals.pop()

    _atomic = transaction

    def _save(self, need: Cid) -> None:
        if self._journals and need not in self._journals[-1]:
            self._journals[-1][need] = self.tasks.get(need)

    def _push(self, task: Task) -> None:
        due = task.due_ms(self.params["lease_grace_ms"])
        if due is not None:
            heapq.heappush(self._timers, (due, task.terms.need.raw))
        if task.ended_ms:
            heapq.heappush(self._ends, (task.ended_ms, task.terms.need.raw))

    def _put(self, task: Task) -> None:
        need = task.terms.need
        old = self.tasks.get(need)
        if old is None or old.state != task.state:
            task = replace(task, history=(*task.history, (self._entry, task.state)))
        self._save(need)
        self.tasks[need] = task
        self._push(task)

    def root(self) -> bytes:
        return hashlib.sha256(TASK_DOMAIN + cbor.encode(self.state_value())).digest()

    def state_value(self) -> list[Any]:
        return [task_value(self.tasks[n]) for n in sorted(self.tasks, key=lambda c: c.raw)]


# --- challenges: helpers ----------------------------------------------------------------


def panel_size(round_: int, params: Mapping[str, int]) -> int:
    """Seats on a challenge's panel in round `round_` (1-based): `challenge_panel_k`,
    then 2n+1 each escalation, at most PANEL_MAX."""
    n = params["challenge_panel_k"]
    for _ in range(round_ - 1):
        n = 2 * n + 1
    return min(n, PANEL_MAX)


def challenge_barred(task: Task, ch: Challenge) -> set[bytes]:
    """Who may not sit on `ch`'s panel: the worker, the poster, the committee, the
    challenger, and everyone seated on an earlier round."""
    c = task.commit
    assert c is not None
    return {c.worker, task.terms.poster, *c.committee, ch.terms.challenger, *ch.seated}


def _tally(ch: Challenge) -> tuple[int, int]:
    """(uphold, reject) votes of the round under way."""
    up = sum(1 for _, u, _, r in ch.votes if r == ch.round and u)
    down = sum(1 for _, u, _, r in ch.votes if r == ch.round and not u)
    return up, down


def _queued(challenges: Iterable[Challenge]) -> tuple[Challenge, ...]:
    """The one under way first, then by bond (largest first) and id."""
    return tuple(sorted(challenges, key=lambda c: (not c.round, -c.terms.bond,
                                                   c.terms.challenge_id.raw)))


def _ruling(ch: Challenge, outcome: str, index: int, ts_ms: int, weighted: bool) -> Ruling:
    t = ch.terms
    return Ruling(t.challenge_id, t.challenger, t.proof_type, t.bond, outcome, index, ts_ms,
                  sum(1 for v in ch.votes if v[1]), sum(1 for v in ch.votes if not v[1]),
                  ch.round, weighted)


# --- the canonical form of a task (snapshots, roots) ----------------------------------


def task_value(t: Task) -> dict[str, Any]:
    v: dict[str, Any] = {
        "terms": [t.terms.need, t.terms.poster, t.terms.budget, t.terms.task_class,
                  t.terms.verify_bounty, t.terms.bid_window_ms, t.terms.k_result,
                  list(t.terms.capabilities), *_terms_extra(t.terms)],
        "state": t.state, "created": t.created_ms, "epoch": t.epoch, "round": t.round,
        "close": t.close_ms, "reopens": t.reopens, "claim_by": t.claim_by_ms,
        "finalize": t.finalize_ms, "pay": t.pay_ms, "paid": t.paid, "ended": t.ended_ms,
        "bids": [[b.proposal, b.bidder, b.proposal_id, b.cost, b.eta_ms,
                  list(b.capabilities), b.ballot, b.reputation_bp, b.round, b.index]
                 for b in t.bids],
        "best": [[a, c] for a, c in t.best], "ballots": list(t.ballots),
        "excluded": list(t.excluded), "hist": [[i, st] for i, st in t.history],
    }
    if t.silent:
        v["silent"] = list(t.silent)
    # Absent while unused, so a task that never saw a challenge keeps its encoding.
    if t.challenges:
        v["ch"] = [_challenge_value(c) for c in t.challenges]
    if t.rulings:
        v["rul"] = [[r.challenge_id, r.challenger, r.proof_type, r.bond, r.outcome, r.index,
                     r.ts_ms, r.uphold, r.reject, r.rounds, r.weighted] for r in t.rulings]
    if t.upheld:
        v["up"] = t.upheld
    if t.decision is not None:
        d = t.decision
        v["decision"] = [d.epoch, d.proposal, d.winner, d.cost, d.index, d.ts_ms, d.memo]
    if t.lease is not None:
        le = t.lease
        v["lease"] = [le.lease_id, le.worker, le.claimed_ms, le.expires_ms,
                      le.heartbeat_interval_ms, le.heartbeat_due_ms, le.misses, le.progress]
    if t.commit is not None:
        c = t.commit
        v["commit"] = [c.commit_id, c.worker, c.result, c.index, list(c.committee),
                       c.attest_by_ms, [[m, ok] for m, ok in c.verdicts]]
    return v


def _challenge_value(c: Challenge) -> list[Any]:
    t = c.terms
    return [t.challenge_id, t.challenger, t.commit_id, t.proof_type, t.evidence, t.bond,
            c.opened_ms, c.opened_index, c.round, c.draw_index,
            [[m, st] for m, st in c.panel], c.vote_by_ms,
            [[m, up, st, r] for m, up, st, r in c.votes], list(c.seated)]


def _challenge_from(need: Cid, v: Any) -> Challenge:
    (cid, challenger, commit_id, proof_type, evidence, bond, opened_ms, opened_index, rnd,
     draw_index, panel, vote_by, votes, seated) = v
    return Challenge(ChallengeTerms(cid, challenger, need, commit_id, proof_type, evidence,
                                    bond),
                     opened_ms, opened_index, rnd, draw_index,
                     tuple((m, st) for m, st in panel), vote_by,
                     tuple((m, up, st, r) for m, up, st, r in votes), tuple(seated))


def terms_extra(t: Terms) -> dict[str, Any]:
    """The terms' optional parts that are set (`TERMS_EXTRA`): one encoding for the
    task book's snapshots and the ledger's PostNeed and Fund."""
    extra: dict[str, Any] = {}
    if t.k_plan:
        extra["kp"] = t.k_plan
    if t.job is not None:
        extra["job"] = t.job
    if t.input is not None:
        extra["input"] = t.input
    if t.host is not None:
        extra["host"] = t.host
    if t.check is not None:
        extra["check"] = t.check
    if t.output is not None:
        extra["out"] = t.output
    if t.cites:
        extra["cites"] = list(t.cites)
    if t.deny:
        extra["deny"] = list(t.deny)
    return extra


TERMS_EXTRA = frozenset({"kp", "job", "input", "host", "check", "out", "cites", "deny"})


def terms_with_extra(fixed: tuple[Any, ...], extra: Mapping[str, Any]) -> Terms:
    """Terms from their eight fixed parts and the optional ones `terms_extra` wrote."""
    need, poster, budget, task_class, bounty, window, k, caps = fixed
    return Terms(need, poster, budget, task_class, bounty, window, k, caps,
                 extra.get("kp", 0), extra.get("job"), extra.get("input"),
                 extra.get("host"), extra.get("check"), extra.get("out"),
                 tuple(extra.get("cites", ())), tuple(extra.get("deny", ())))


def _terms_extra(t: Terms) -> list[dict[str, Any]]:
    """The optional parts as one map after the fixed ones (absent when none)."""
    extra = terms_extra(t)
    return [extra] if extra else []


def task_from_value(v: Any) -> Task:
    """The inverse of `task_value`; raises DecodeError for anything else."""
    try:
        need, poster, budget, cls, bounty, window, k, caps, *rest = v["terms"]
        extra = rest[0] if rest else {}
        if len(rest) > 1 or not isinstance(extra, dict) or (rest and not extra) or \
                not set(extra) <= TERMS_EXTRA:
            raise ValueError("terms: at most one map of the optional terms")
        terms = terms_with_extra((need, poster, budget, cls, bounty, window, k, tuple(caps)),
                                 extra)
        decision = None
        if "decision" in v:
            ep, prop, winner, cost, idx, ts, memo = v["decision"]
            decision = TaskDecision(need, ep, prop, winner, cost, idx, ts, memo)
        lease = Lease(*v["lease"]) if "lease" in v else None
        commit = None
        if "commit" in v:
            cid, worker, result, idx, committee, by, verdicts = v["commit"]
            commit = Commit(cid, worker, result, idx, tuple(committee), by,
                            tuple((m, ok) for m, ok in verdicts))
        task = Task(
            terms, v["state"], v["created"], v["epoch"], v["round"], v["close"],
            tuple(Bid(p, b, pid, c, e, tuple(cp), bal, r, rd, i)
                  for p, b, pid, c, e, cp, bal, r, rd, i in v["bids"]),
            tuple((a, c) for a, c in v["best"]), tuple(v["ballots"]), tuple(v["excluded"]),
            v["reopens"], decision, v["claim_by"], lease, commit, v["finalize"], v["pay"],
            v["paid"], v["ended"], tuple((i, st) for i, st in v.get("hist", ())),
            tuple(v.get("silent", ())),
            tuple(_challenge_from(need, c) for c in v.get("ch", ())),
            tuple(Ruling(*r) for r in v.get("rul", ())), v.get("up", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError("tasks", f"not a task: {exc}") from None
    if task.state not in STATES or cbor.encode(task_value(task)) != cbor.encode(v):
        raise DecodeError("tasks", "not a task in canonical form")
    return task


def restore(params: Mapping[str, int], value: Any, clock_ms: int) -> TaskBook:
    """A book from `TaskBook.state_value()`; DecodeError for anything else."""
    if not isinstance(value, list):
        raise DecodeError("tasks", "must be an array of tasks")
    book = TaskBook(params)
    book.clock_ms = clock_ms
    for raw in value:
        task = task_from_value(raw)
        if task.terms.need in book.tasks:
            raise DecodeError("tasks", "a task appears twice")
        book.tasks[task.terms.need] = task
        book._push(task)
    return book


def payouts(task: Task) -> list[Payment]:
    """What a finalized task's escrow pays: the winner its bid, the members who attested
    valid the verify bounty (split equally, the remainder to the first in byte order),
    the poster the rest."""
    t, d, c = task.terms, task.decision, task.commit
    assert d is not None and c is not None
    attesters = sorted(m for m, v in c.verdicts if v)
    pays: list[Payment] = []
    if d.cost:
        pays.append(Payment(t.need, d.winner, d.cost, "payout", t.poster))
    if t.verify_bounty and attesters:
        each, rest = divmod(t.verify_bounty, len(attesters))
        for i, m in enumerate(attesters):
            amount = each + (1 if i < rest else 0)
            if amount:
                pays.append(Payment(t.need, m, amount, "bounty", t.poster))
    refund = t.budget - sum(x.amount for x in pays)
    assert refund >= 0, "a bid plus the bounty never exceeds the budget"
    if refund:
        pays.append(Payment(t.need, t.poster, refund, "refund", t.poster))
    return pays


def task_json(t: Task, *, brief: bool = False) -> dict[str, Any]:
    """A task as JSON (bytes as hex, CIDs as text): what the control API answers."""
    d, le, c = t.decision, t.lease, t.commit
    out: dict[str, Any] = {
        # A task's id is its NEED's: both names, for scripts that say either.
        "need_id": str(t.terms.need), "task_id": str(t.terms.need), "state": t.state,
        "epoch": t.epoch,
        "poster": t.terms.poster.hex(), "budget": t.terms.budget,
        "task_class": t.terms.task_class, "winner": d.winner.hex() if d else None,
        "paid": t.paid, "created_ms": t.created_ms}
    if brief:
        return out
    out.update({
        "verify_bounty": t.terms.verify_bounty, "k_result": t.terms.k_result,
        "k_plan": t.terms.k_plan,
        "job": str(t.terms.job) if t.terms.job else None,
        "input": str(t.terms.input) if t.terms.input else None,
        "host": t.terms.host, "check": t.terms.check, "output": t.terms.output,
        "cites": [str(c) for c in t.terms.cites], "deny": list(t.terms.deny),
        "capabilities": list(t.terms.capabilities), "round": t.round,
        "close_ms": t.close_ms if t.state == OPEN else None, "reopens": t.reopens,
        "excluded": [x.hex() for x in t.excluded], "silent": [x.hex() for x in t.silent],
        "bids": [{"proposal": str(Cid(b.proposal)), "bidder": b.bidder.hex(),
                  "proposal_id": b.proposal_id, "cost": b.cost, "eta_ms": b.eta_ms,
                  "round": b.round} for b in t.bids],
        "decision": None if d is None else {
            "epoch": d.epoch, "proposal": str(d.proposal), "winner": d.winner.hex(),
            "cost": d.cost, "index": d.index, "ts_ms": d.ts_ms, "memo": str(d.memo)},
        "claim_by_ms": t.claim_by_ms or None,
        "lease": None if le is None else {
            "lease_id": str(le.lease_id), "worker": le.worker.hex(),
            "claimed_ms": le.claimed_ms, "expires_ms": le.expires_ms,
            "heartbeat_interval_ms": le.heartbeat_interval_ms,
            "heartbeat_due_ms": le.heartbeat_due_ms, "misses": le.misses,
            "progress": le.progress},
        "commit": None if c is None else {
            "commit_id": str(c.commit_id), "worker": c.worker.hex(), "result": str(c.result),
            "committee": [m.hex() for m in c.committee], "attest_by_ms": c.attest_by_ms or None,
            "verdicts": [{"member": m.hex(), "valid": ok} for m, ok in c.verdicts]},
        "finalize_ms": t.finalize_ms or None, "pay_ms": t.pay_ms or None,
        "k_now": t.k_result, "upheld": t.upheld,
        "challenges": [challenge_json(t, c) for c in t.challenges],
        "rulings": [ruling_json(r) for r in t.rulings],
        "ended_ms": t.ended_ms or None, "payouts": [
            {"account": p.account.hex(), "amount": p.amount, "kind": p.kind}
            for p in (payouts(t) if t.paid else [Payment(
                t.terms.need, t.terms.poster, t.terms.budget, "refund", t.terms.poster)]
                if t.state == CANCELLED else [])]})
    return out


def challenge_json(task: Task, c: Challenge) -> dict[str, Any]:
    """An open challenge as JSON (bytes as hex, CIDs as text)."""
    t = c.terms
    state = ("queued" if not c.round else "awaiting_panel" if c.draw_index
             else "voting")
    return {"challenge_id": str(t.challenge_id), "task_id": str(t.need),
            "challenger": t.challenger.hex(), "commit_id": str(t.commit_id),
            "proof_type": t.proof_type, "evidence": str(t.evidence), "bond": t.bond,
            "state": state, "opened_ms": c.opened_ms, "round": c.round,
            "panel": [{"member": m.hex(), "stake": st} for m, st in c.panel],
            "vote_by_ms": c.vote_by_ms or None,
            "votes": [{"member": m.hex(), "uphold": up, "stake": st, "round": r}
                      for m, up, st, r in c.votes],
            "window_ends_ms": task.finalize_ms or None}


def ruling_json(r: Ruling) -> dict[str, Any]:
    return {"challenge_id": str(r.challenge_id), "challenger": r.challenger.hex(),
            "proof_type": r.proof_type, "bond": r.bond, "state": r.outcome,
            "outcome": r.outcome, "index": r.index, "ts_ms": r.ts_ms, "uphold": r.uphold,
            "reject": r.reject, "rounds": r.rounds, "weighted": r.weighted}
