"""The credit ledger: one bucket's accounts as a deterministic state machine.

Owns the ledger's rules and arithmetic and nothing about Raft, envelopes or the network.
Who may submit an operation (signatures) is checked before it gets here; when it is
applied (the log index and the leader's timestamp) comes in with it. What an operation
is and how it is encoded is protocol/ledger_ops.py's; amounts as text,
protocol/amounts.py's.

Theory of operation
-------------------
Every account is owned by one bucket, `buckets.bucket_of(account, bucket_count)`. A
`BucketLedger` holds the accounts its bucket owns, and the escrows their owners opened,
and applies that bucket's committed entries in log order (`apply`). An entry is an
operation (`Transfer`, `Escrow`, `Bounty`, `Release`, `Cancel`, `Stake`, `Unstake`,
`CompleteUnbonding`, `Slash`) or an `EffectBatch` from another bucket.

* **Debits only at home.** An operation is ordered by the bucket of the account it
  debits (`Op.home`); any other bucket refuses it (`WrongBucket`). Two nodes spending the
  same account concurrently therefore propose into one log, and the second entry sees
  the first's debit: no double spend.
* **Effects for everyone else.** When an entry changes an account another bucket owns
  (a transfer's recipient, a payout's payees, a slashed verifier), the entry emits an
  `EffectBatch` to that bucket: one batch per target bucket per entry, keyed by (source
  bucket, source index) and numbered `seq` 0, 1, 2, ... per (source, target) pair. The
  target applies each batch exactly once, however often and in whatever order it is
  delivered: it keeps, per source bucket, the next `seq` it expects and the set of
  those it applied ahead of a gap. Effects never fail (a credit always fits, a slash
  takes what stake there is), so a debit at the source is never stranded.
* **Time from the log only.** `ts_ms` is the bucket leader's stamp, monotonic per
  bucket; unbonding and escrow holds compare against it. There is no clock here.
* **Rejections are outcomes, not crashes.** A committed operation that breaks a rule
  (insufficient balance, ...) changes nothing but the audit trail, which records the
  typed error; every replica records the same rejection. `check` runs the same
  validation without applying, for a node to refuse a proposal early.
* **Conservation.** Minting happens only in `from_genesis`. Per bucket,
  balances + locked + unbonding + escrowed + burned + credits sent − credits received
  is constant, and summed over all buckets it equals the genesis supply; once every
  batch is delivered, sent = received.

Arithmetic: amounts are integers in the smallest unit (`unit_per_credit` per credit);
percentages are basis points; every product is floored, and the remainder of a split
goes to named accounts (equal splits) or to the burn (challenge splits), never lost.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import cbor
from .amounts import format_credits, format_duration
from .buckets import bucket_of
from .cid import Cid
from .errors import DecodeError, LocalProtocolError, ProtocolError, SchemaError
from .genesis import Genesis
from .ledger_ops import (
    KIND_OF,
    MISSES_MAX,
    NO_EXPIRY,
    SLASH_REASONS,
    TASK_CLASSES,
    Body,
    Bond,
    Bounty,
    Cancel,
    CompleteUnbonding,
    Credit,
    Draw,
    Effect,
    EffectAck,
    EffectBatch,
    Escrow,
    Fund,
    LedgerEntry,
    Op,
    PoolRow,
    PoolView,
    PoolViews,
    PostChallenge,
    PostNeed,
    Release,
    Repute,
    Share,
    Slash,
    SlashOrder,
    Stake,
    TaskStep,
    Tick,
    Transfer,
    Unstake,
    body_from_value,
    body_value,
)
from .schema import INT_MAX
from .task import ChallengeSlash, ChallengeTerms, Step, TaskBook, TaskError, need_of
from .task import restore as restore_tasks

BP = 10_000  # basis points in a whole
TICK_DOMAIN = b"can-swarm/tick/v1\x00"
# A snapshot holds a whole bucket: far beyond an envelope's bounds, still bounded.
SNAPSHOT_LIMITS = cbor.Limits(size_bytes_max=1 << 30, depth_max=8, items_max=1 << 28)
# The audit trail is history, not state: each bucket keeps its entries of the last
# AUDIT_WINDOW_MS of bucket time, and at most AUDIT_RECORDS_MAX of them.
AUDIT_WINDOW_MS = 7 * 24 * 3600 * 1000
AUDIT_RECORDS_MAX = 8192
# Challengers whose recent challenges a bucket remembers for the rate limit.
CHALLENGERS_MAX = 4096


# --- errors -------------------------------------------------------------------------


class LedgerError(LocalProtocolError):
    """An operation breaks a ledger rule. `str()` is the reason alone, for people."""

    code = "ledger"

    def __str__(self) -> str:
        return self.reason


class InvalidOp(LedgerError):
    code = "invalid_op"


class StaleView(LedgerError):
    code = "stale_view"


class InsufficientBalance(LedgerError):
    code = "insufficient_balance"

    def __init__(self, field: str, have: int, need: int, unit: int) -> None:
        self.have, self.need = have, need
        super().__init__(field, f"insufficient balance: have {format_credits(have, unit)}, "
                                f"need {format_credits(need, unit)}")


class InsufficientStake(LedgerError):
    code = "insufficient_stake"

    def __init__(self, field: str, have: int, need: int, unit: int) -> None:
        self.have, self.need = have, need
        super().__init__(field, f"insufficient stake: have {format_credits(have, unit)}, "
                                f"need {format_credits(need, unit)}")


class UnbondingPending(LedgerError):
    code = "unbonding_pending"

    def __init__(self, field: str, remaining_ms: int, amount: int) -> None:
        self.remaining_ms, self.amount = remaining_ms, amount
        # The message is the one users see (`stake complete-unbonding`); the amount that
        # completes first stays on the exception.
        super().__init__(field, f"unbonding completes in {format_duration(remaining_ms)}")


class NothingUnbonding(LedgerError):
    code = "nothing_unbonding"


class UnknownEscrow(LedgerError):
    code = "unknown_escrow"


class EscrowExists(LedgerError):
    code = "escrow_exists"


class EscrowHeld(LedgerError):
    code = "escrow_held"

    def __init__(self, field: str, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        super().__init__(field, f"escrow is held for another {format_duration(remaining_ms)}")


class OverCap(LedgerError):
    code = "over_cap"


class WrongBucket(LedgerError):
    code = "wrong_bucket"


class DuplicateOp(LedgerError):
    code = "duplicate_op"


class OutOfOrder(LedgerError):
    code = "out_of_order"


class DuplicateEffect(LedgerError):
    code = "duplicate_effect"


class Expired(LedgerError):
    """The operation's validity limit is before the bucket's clock."""

    code = "expired"


class RateLimited(LedgerError):
    """The account opened the most challenges a rate window allows."""

    code = "rate_limited"


class ValidityTooLong(LedgerError):
    """The operation's validity limit is further ahead than `op_validity_ms_max`."""

    code = "validity_too_long"


# --- splits (shared with payout.py) -------------------------------------------------


def split_equally(amount: int, accounts: Sequence[bytes]) -> tuple[Share, ...]:
    """`amount` over distinct `accounts`, floor each; the remainder goes one unit each to
    the first accounts in byte order, so nothing is lost and every replica agrees."""
    if not accounts:
        raise LedgerError("accounts", "cannot split among nobody")
    ordered = sorted(set(accounts))
    if len(ordered) != len(accounts):
        raise LedgerError("accounts", "accounts in a split must be distinct")
    each, rest = divmod(amount, len(ordered))
    shares = [Share(a, each + (1 if i < rest else 0)) for i, a in enumerate(ordered)]
    return tuple(s for s in shares if s.amount > 0)


def split_challenge(amount: int, challenger: bytes | None, honest: Sequence[bytes],
                    params: Mapping[str, int]) -> tuple[tuple[Share, ...], int]:
    """The upheld-challenge split of `amount`: payout_challenger_bp to the challenger,
    payout_honest_verifiers_bp shared by the honest verifiers, the rest burned (the
    payout_burn_bp part plus rounding). A part with nobody to take it (no eligible
    challenger, no honest verifier) is burned too, so a slash for missed heartbeats
    or a policy violation burns everything. Returns (shares, burn)."""
    to_challenger = amount * params["payout_challenger_bp"] // BP if challenger else 0
    shares: list[Share] = [Share(challenger, to_challenger)] if challenger and to_challenger else []
    pool = amount * params["payout_honest_verifiers_bp"] // BP if honest else 0
    if pool:
        shares += split_equally(pool, honest)
    burn = amount - to_challenger - pool
    assert burn >= 0
    return tuple(shares), burn


# --- state --------------------------------------------------------------------------


@dataclass(slots=True)
class Unbonding:
    amount: int
    complete_ms: int


@dataclass(slots=True)
class _Account:
    balance: int = 0
    locked: int = 0
    escrowed: int = 0
    unbonding: list[Unbonding] = field(default_factory=list)
    violations: int = 0  # policy violations so far: each slash escalates

    def empty(self) -> bool:
        return not (self.balance or self.locked or self.escrowed or self.unbonding
                    or self.violations)

    @property
    def unbonding_total(self) -> int:
        return sum(u.amount for u in self.unbonding)

    def copy(self) -> _Account:
        return _Account(self.balance, self.locked, self.escrowed,
                        [Unbonding(u.amount, u.complete_ms) for u in self.unbonding],
                        self.violations)


@dataclass(frozen=True, slots=True)
class AccountView:
    """What `ledger balance --json` shows for one account."""

    account: bytes
    balance: int
    locked: int
    unbonding: int
    escrowed: int
    unbonding_entries: tuple[tuple[int, int], ...] = ()  # (amount, complete_ms)
    violations: int = 0


@dataclass(frozen=True, slots=True)
class OpenEscrow:
    escrow_id: bytes
    payer: bytes
    amount: int
    created_ms: int
    release_ms: int
    task_class: str = ""  # "" for a plain escrow


@dataclass(frozen=True, slots=True)
class Change:
    """One field of one account moved by `delta` units ("burned" has account b"")."""

    account: bytes
    field: str
    delta: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One applied entry: its id, its cause, and its effect (or the typed rejection)."""

    index: int
    ts_ms: int
    op_id: bytes
    kind: str
    account: bytes  # the operation's home account; b"" for an effect batch
    cause: str
    changes: tuple[Change, ...]
    emitted: tuple[tuple[int, int], ...] = ()  # (target bucket, seq) of batches sent
    error_code: str = ""
    error: str = ""
    # The other side: a transfer's recipient, or the account credits came from; and the
    # transfer's memo. Empty when there is none.
    counterparty: bytes = b""
    memo: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_code


@dataclass(frozen=True, slots=True)
class SlashRecord:
    """A slash carried out in this bucket (history, like the audit trail): `amount`
    taken from `account`'s stake at entry `index` for `reason`, `evidence` the lease or
    the challenge, `challenger` who shared in it (None: nobody)."""

    index: int
    ts_ms: int
    account: bytes
    reason: str
    evidence: Cid
    amount: int
    challenger: bytes | None = None
    honest: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    record: AuditRecord
    effects: tuple[EffectBatch, ...]
    error: ProtocolError | None = None
    tasks: tuple[Step, ...] = ()  # what the entry did to the bucket's tasks, in order


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over one bucket (or several, added). `in_flight` is credits sent to other
    buckets not yet applied there; conservation: `held` is constant."""

    balances: int = 0
    locked: int = 0
    unbonding: int = 0
    escrowed: int = 0
    burned: int = 0
    credits_out: int = 0
    credits_in: int = 0
    tasks: int = 0  # budgets held by funded tasks, not yet paid out or refunded

    @property
    def in_flight(self) -> int:
        return self.credits_out - self.credits_in

    @property
    def held(self) -> int:
        return (self.balances + self.locked + self.unbonding + self.escrowed + self.burned
                + self.in_flight + self.tasks)

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self._tuple(), other._tuple(), strict=True)))

    def _tuple(self) -> tuple[int, ...]:
        return (self.balances, self.locked, self.unbonding, self.escrowed, self.burned,
                self.credits_out, self.credits_in, self.tasks)

    def supply(self) -> dict[str, int]:
        """`ledger supply --json`: total = circulating + locked + escrowed; total + burned
        is the genesis supply. Credits in flight between buckets count as circulating."""
        circulating = self.balances + self.in_flight
        locked = self.locked + self.unbonding
        escrowed = self.escrowed + self.tasks
        return {"total": circulating + locked + escrowed, "circulating": circulating,
                "locked": locked, "escrowed": escrowed, "burned": self.burned}


def genesis_supply(genesis: Genesis) -> int:
    """Every unit that will ever exist: genesis balances plus validator stakes."""
    v = genesis.value
    total: int = sum(a["balance"] for a in v["accounts"]) + sum(x["stake"] for x in v["validators"])
    return total


_MISSING: Any = object()


class _Tx:
    """The changes one entry makes, recorded as they are made, and what they replaced.

    Handlers validate first and mutate only through this afterwards, so a refused entry
    leaves it empty. Every write to the ledger's state while an entry applies goes
    through it (accounts, escrows, counters, the outbox, the dedupe sets), and the first
    write to each item saves what it held: should applying raise midway (a bug, not a
    rule), `rollback` puts back the state the entry found, so no replica ever keeps half
    an entry."""

    __slots__ = ("_attrs", "_items", "_saved", "changes", "ledger", "outbound", "popped",
                 "slashed", "steps")

    def __init__(self, ledger: BucketLedger) -> None:
        self.ledger = ledger
        self.changes: list[Change] = []
        self.outbound: dict[int, list[Effect]] = {}
        self.steps: list[Step] = []  # what the entry did to the bucket's tasks
        self.slashed: list[SlashRecord] = []  # for the slash log, once the entry applied
        self._saved: dict[bytes, _Account | None] = {}  # account -> before (None: absent)
        self._items: list[tuple[dict[Any, Any], Any, Any]] = []  # (mapping, key, before)
        self._attrs: dict[str, Any] = {}
        self.popped: list[tuple[int, bytes]] = []  # taken off the expiry heap

    # -- the journal

    def acct(self, account: bytes) -> _Account:
        """The account, to be changed (created if absent)."""
        if account not in self._saved:
            before = self.ledger._accounts.get(account)
            self._saved[account] = None if before is None else before.copy()
        return self.ledger._acct(account)

    def save_item(self, mapping: dict[Any, Any], key: Any) -> None:
        """Before `mapping[key]` changes (values that are sets or dicts are copied)."""
        before = mapping.get(key, _MISSING)
        if isinstance(before, set | dict):
            before = before.copy()
        self._items.append((mapping, key, before))

    def save_attr(self, name: str) -> None:
        if name not in self._attrs:
            self._attrs[name] = getattr(self.ledger, name)

    def rollback(self) -> None:
        led = self.ledger
        for name, before in self._attrs.items():
            setattr(led, name, before)
        for mapping, key, old in reversed(self._items):
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        for account, saved in self._saved.items():
            if saved is None:
                led._accounts.pop(account, None)
            else:
                led._accounts[account] = saved
        for item in self.popped:
            heapq.heappush(led._expiries, item)
        led._ops_digest = None
        self.changes.clear()
        self.outbound.clear()

    # -- changes

    def move(self, account: bytes, fld: str, delta: int) -> None:
        if delta == 0:
            return
        acct = self.acct(account)
        value = getattr(acct, fld) + delta
        assert value >= 0, f"{fld} of {account.hex()} would go negative"
        setattr(acct, fld, value)
        self.changes.append(Change(account, fld, delta))

    def burn(self, amount: int) -> None:
        if amount:
            self.save_attr("_burned")
            self.ledger._burned += amount
            self.changes.append(Change(b"", "burned", amount))

    def credit(self, account: bytes, amount: int, kind: str, source: bytes = b"",
               memo: str = "") -> None:
        """Local accounts are credited now; others get an effect."""
        if amount <= 0:
            return
        if self.ledger.owns(account):
            self.move(account, "balance", amount)
        else:
            target = bucket_of(account, self.ledger.bucket_count)
            self.outbound.setdefault(target, []).append(
                Credit(account, amount, kind, source, memo))

    def repute_remote(self, effect: Repute) -> None:
        target = bucket_of(effect.account, self.ledger.bucket_count)
        self.outbound.setdefault(target, []).append(effect)

    def slash_remote(self, order: SlashOrder) -> None:
        target = bucket_of(order.account, self.ledger.bucket_count)
        self.outbound.setdefault(target, []).append(order)

    def held_by_tasks(self, delta: int) -> None:
        if delta:
            self.save_attr("_task_escrow")
            self.ledger._task_escrow += delta
            assert self.ledger._task_escrow >= 0, "tasks paid out more than they held"
            self.changes.append(Change(b"", "tasks", delta))

    def size(self) -> int:
        """How much this entry has changed so far (to tell a rule's refusal from a bug)."""
        return len(self.changes) + sum(len(v) for v in self.outbound.values())


# --- the state machine --------------------------------------------------------------


class BucketLedger:
    """The ledger state of one bucket, changed only by `apply` (and built at genesis)."""

    def __init__(self, params: Mapping[str, int], bucket: int) -> None:
        self.params = dict(params)
        self.bucket_count = self.params["bucket_count"]
        self.unit = self.params["unit_per_credit"]
        if not 0 <= bucket < self.bucket_count:
            raise LocalProtocolError("bucket", f"must be 0..{self.bucket_count - 1}")
        self.bucket = bucket
        self._accounts: dict[bytes, _Account] = {}
        # Keyed by (payer, escrow id): nobody can take an id another payer means to use.
        self._escrows: dict[tuple[bytes, bytes], OpenEscrow] = {}
        self._burned = 0
        self._credits_out = 0
        self._credits_in = 0
        self._out_seq: dict[int, int] = {}  # target bucket -> next seq to send
        self._in_next: dict[int, int] = {}  # source bucket -> next seq expected
        self._in_ahead: dict[int, set[int]] = {}  # source bucket -> seqs applied past a gap
        # Batches sent and not yet acknowledged, target -> seq -> batch. Replicated state,
        # so whichever replica leads the bucket next can send them again.
        self._outbox: dict[int, dict[int, EffectBatch]] = {}
        # Every operation id decided here whose validity limit the bucket's clock has not
        # passed, with that limit. After it the id is forgotten: no operation carrying it
        # can be applied any more (it would be refused as expired), so the set holds only
        # the ids of a window of bucket time (`op_validity_ms_max`) and never lets an old
        # operation apply twice. `_expiries` is the same as a heap, to forget in order.
        self._seen_ops: dict[bytes, int] = {}
        self._expiries: list[tuple[int, bytes]] = []
        self._ops_digest: bytes | None = None  # cache: sorting every id dominates `root`
        self._last_index = 0
        self._last_ts_ms = 0
        self._audit: deque[AuditRecord] = deque(maxlen=AUDIT_RECORDS_MAX)
        self._slash_log: deque[SlashRecord] = deque(maxlen=AUDIT_RECORDS_MAX)
        # The tasks whose NEED this bucket owns (protocol/task.py), and the budgets they
        # hold: credits received by funding and not yet paid out or refunded.
        self.tasks = TaskBook(self.params)
        self._task_escrow = 0
        # Other buckets' verifiers, as the latest certified view of each that reached
        # this bucket left them: bucket -> (chain index, rows). The committees of this
        # bucket's tasks are drawn from these and from the bucket's own pool.
        self._views: dict[int, tuple[int, tuple[PoolRow, ...]]] = {}
        # (bidder, poster, ts) -> (the bidder's reputation then, whether the two are
        # related): answered by the bucket's pool and views (`LedgerPart` sets it).
        self.bid_facts: Callable[[bytes, bytes, int], tuple[int, bool]] = \
            lambda bidder, poster, ts: (self.params["reputation_initial_bp"], False)
        # (member, failed, ts, tx): move a member's reputation in the bucket's pool,
        # journaled in `tx` (`LedgerPart` sets it; a bare ledger has no pool). The
        # Repute effect says which event.
        self.repute: Callable[[Repute, int, _Tx], None] = lambda *_: None
        # Answered by the bucket's pool and views (`LedgerPart` sets them): whether an
        # account is related to any of some others (P8), an account's stake, and a
        # challenge slash as the order to carry out, its related parties dropped.
        self.related_any: Callable[[bytes, Sequence[bytes]], bool] = lambda a, others: False
        self.stake_of: Callable[[bytes], int] = lambda account: 0
        self.slash_order: Callable[[ChallengeSlash], SlashOrder] = lambda c: SlashOrder(
            c.account, "failed_challenge", c.challenge_id, 1, c.challenger, c.honest)
        # Challenger -> the bucket times of its challenges in the last rate window.
        self._challenges: dict[bytes, tuple[int, ...]] = {}

    @classmethod
    def from_genesis(cls, genesis: Genesis, bucket: int) -> BucketLedger:
        """The only mint: genesis balances and validator stakes of accounts this bucket owns."""
        led = cls(genesis.params, bucket)
        for a in genesis.value["accounts"]:
            if led.owns(a["account"]) and a["balance"]:
                led._acct(a["account"]).balance += a["balance"]
        for v in genesis.value["validators"]:
            if led.owns(v["account"]) and v["stake"]:
                led._acct(v["account"]).locked += v["stake"]
        return led

    # -- queries

    def owns(self, account: bytes) -> bool:
        return bucket_of(account, self.bucket_count) == self.bucket

    def account(self, account: bytes) -> AccountView:
        a = self._accounts.get(account) or _Account()
        return AccountView(account, a.balance, a.locked, a.unbonding_total, a.escrowed,
                           tuple((u.amount, u.complete_ms) for u in a.unbonding),
                           a.violations)

    def accounts(self) -> Iterator[AccountView]:
        for key in sorted(self._accounts):
            yield self.account(key)

    def escrow(self, payer: bytes, escrow_id: bytes) -> OpenEscrow | None:
        return self._escrows.get((payer, escrow_id))

    def escrows(self) -> list[OpenEscrow]:
        return [self._escrows[k] for k in sorted(self._escrows)]

    def history(self, account: bytes | None = None) -> list[AuditRecord]:
        """The audit trail, oldest first; with `account`, the entries it submitted (refused
        ones too) and those that changed it. It holds this bucket's entries of the last
        AUDIT_WINDOW_MS of bucket time, at most AUDIT_RECORDS_MAX of them, since this
        replica started or restored a snapshot."""
        if account is None:
            return list(self._audit)
        return [r for r in self._audit
                if r.account == account or any(c.account == account for c in r.changes)]

    def slashes(self, account: bytes | None = None) -> list[SlashRecord]:
        """The slashes carried out here, oldest first (history: at most
        AUDIT_RECORDS_MAX, since this replica started or restored a snapshot)."""
        return [r for r in self._slash_log if account is None or r.account == account]

    @property
    def last_index(self) -> int:
        return self._last_index

    def outbox(self, target_bucket: int | None = None) -> list[EffectBatch]:
        """Batches sent and not yet acknowledged (for one target, or all), in seq order:
        what the shell must (re)send until an `EffectAck` removes them."""
        targets = sorted(self._outbox) if target_bucket is None else [target_bucket]
        return [b for t in targets for _, b in sorted(self._outbox.get(t, {}).items())]

    def outbox_targets(self) -> list[int]:
        """Buckets this one has unacknowledged batches for."""
        return sorted(self._outbox)

    def applied_seq(self, source_bucket: int) -> int:
        """Every batch from `source_bucket` with seq below this has been applied: what an
        `EffectAck` in the source bucket's log reports."""
        return self._in_next.get(source_bucket, 0)

    def has_applied(self, source_bucket: int, seq: int) -> bool:
        return (seq < self._in_next.get(source_bucket, 0)
                or seq in self._in_ahead.get(source_bucket, ()))

    def totals(self) -> Totals:
        bal = locked = unb = esc = 0
        for a in self._accounts.values():
            bal += a.balance
            locked += a.locked
            unb += a.unbonding_total
            esc += a.escrowed
        return Totals(bal, locked, unb, esc, self._burned, self._credits_out, self._credits_in,
                      self._task_escrow)

    def state_value(self) -> dict[str, Any]:
        """Canonical value of the whole state (the audit trail excepted)."""
        if self._ops_digest is None:
            self._ops_digest = hashlib.sha256(b"".join(
                op + exp.to_bytes(8, "big") for op, exp in sorted(self._seen_ops.items()))
            ).digest()
        ops = self._ops_digest
        return {
            "bucket": self.bucket,
            "accounts": [[k, a.balance, a.locked, a.escrowed,
                          [[u.amount, u.complete_ms] for u in a.unbonding], a.violations]
                         for k, a in sorted(self._accounts.items())],
            "escrows": [[e.escrow_id, e.payer, e.amount, e.created_ms, e.release_ms,
                         e.task_class] for e in self.escrows()],
            "burned": self._burned,
            "credits_out": self._credits_out,
            "credits_in": self._credits_in,
            "out_seq": [[t, n] for t, n in sorted(self._out_seq.items())],
            "in": [[s, self._in_next.get(s, 0), sorted(self._in_ahead.get(s, ()))]
                   for s in sorted(set(self._in_next) | set(self._in_ahead))],
            "ops": ops,
            "outbox": [[t, sorted(batches)] for t, batches in sorted(self._outbox.items())],
            "last": [self._last_index, self._last_ts_ms],
            **self._tasks_value(digest=True),
            **self._views_value(),
            **self._challenges_value(),
        }

    def _challenges_value(self) -> dict[str, Any]:
        """Recent challenges per challenger (the rate limit), absent while none."""
        if not self._challenges:
            return {}
        return {"chal": [[a, list(ts)] for a, ts in sorted(self._challenges.items())]}

    def _views_value(self) -> dict[str, Any]:
        """The pool views held, absent while there are none."""
        if not self._views:
            return {}
        return {"views": [[b, i, [r.value() for r in rows]]
                          for b, (i, rows) in sorted(self._views.items())]}

    def _tasks_value(self, *, digest: bool) -> dict[str, Any]:
        """The tasks' part of the state, absent while there are none (so a bucket that
        never held a task keeps the root and snapshot it always had)."""
        if not self.tasks.tasks and not self._task_escrow:
            return {}
        book = self.tasks.root() if digest else self.tasks.state_value()
        return {"tasks": [self._task_escrow, book]}

    def root(self) -> bytes:
        """sha256 over the canonical state: equal on every replica that applied the same log."""
        return hashlib.sha256(b"swarm-ledger-bucket\x00" + cbor.encode(self.state_value())).digest()

    # -- snapshots (Raft log compaction and catching up a lagging replica)

    def snapshot(self) -> bytes:
        """The whole state as canonical DAG-CBOR: `state_value` with the decided op ids and
        the outbox in full. The audit trail is not included (it is history, not state)."""
        value = self.state_value()
        value["v"] = 1
        value["ops"] = [[op, exp] for op, exp in sorted(self._seen_ops.items())]
        value["outbox"] = [body_value(b) for b in self.outbox()]
        value.update(self._tasks_value(digest=False))
        return cbor.encode(value)

    @classmethod
    def restore(cls, params: Mapping[str, int], data: bytes) -> BucketLedger:
        """Rebuild a bucket from `snapshot()` bytes; the result has the same root.
        Raises DecodeError for anything else (a snapshot is input from a peer)."""
        v = cbor.decode(data, SNAPSHOT_LIMITS)
        try:
            led = cls(params, v["bucket"])
            for k, bal, locked, esc, unb, viol in v["accounts"]:
                led._accounts[k] = _Account(bal, locked, esc,
                                            [Unbonding(a, c) for a, c in unb], viol)
            for eid, payer, amount, created, release, task_class in v["escrows"]:
                led._escrows[(payer, eid)] = OpenEscrow(eid, payer, amount, created, release,
                                                        task_class)
            led._burned, led._credits_out, led._credits_in = (
                v["burned"], v["credits_out"], v["credits_in"])
            led._out_seq = {t: n for t, n in v["out_seq"]}
            for source, nxt, ahead in v["in"]:
                led._in_next[source] = nxt
                if ahead:
                    led._in_ahead[source] = set(ahead)
            for op, exp in v["ops"]:
                if not isinstance(op, bytes) or not isinstance(exp, int):
                    raise DecodeError("snapshot.ops", "not an [op id, expiry] pair")
                led._seen_ops[op] = exp
            led._expiries = sorted((exp, op) for op, exp in led._seen_ops.items())
            for raw in v["outbox"]:
                batch = body_from_value(raw, "snapshot.outbox")
                if not isinstance(batch, EffectBatch):
                    raise DecodeError("snapshot.outbox", "holds something else than a batch")
                led._outbox.setdefault(batch.target_bucket, {})[batch.seq] = batch
            led._last_index, led._last_ts_ms = v["last"]
            if "tasks" in v:
                led._task_escrow, book = v["tasks"]
                led.tasks = restore_tasks(params, book, led._last_ts_ms)
            for a, stamps in v.get("chal", ()):
                if not isinstance(a, bytes) or not isinstance(stamps, list) or not stamps:
                    raise DecodeError("snapshot.chal", "not an [account, [ts...]] pair")
                led._challenges[a] = tuple(stamps)
            for b, i, rows in v.get("views", ()):
                view = body_from_value({"op": "pool_view", "bucket": b, "index": i,
                                        "rows": rows}, "snapshot.views")
                assert isinstance(view, PoolView)
                led._views[b] = (i, view.rows)
        except (KeyError, TypeError, ValueError, AttributeError, SchemaError) as exc:
            raise DecodeError("snapshot", f"not a ledger snapshot: {exc}") from None
        if led.snapshot() != bytes(data):
            raise DecodeError("snapshot", "ledger snapshot is not in canonical form")
        return led

    # -- entries ordered here that are not ledger operations (pool registrations)

    def is_decided(self, op_id: bytes) -> bool:
        """Has an operation with this id been applied or refused here?"""
        return op_id in self._seen_ops

    def transaction(self) -> _Tx:
        """A journal for writes another rule makes through this ledger (`record_other`),
        to roll back with the rest of an entry."""
        return _Tx(self)

    def check_window(self, op_id: bytes, expires_ms: int, ts_ms: int) -> None:
        """The rules every operation id meets before anything else: not decided yet
        (DuplicateOp), not expired (Expired), not valid for longer than
        `op_validity_ms_max` from now (ValidityTooLong). Called with the bucket's clock
        after `forget_expired(ts_ms)`."""
        if op_id in self._seen_ops:
            raise DuplicateOp("op_id", f"operation {op_id.hex()[:16]} was already decided")
        if expires_ms < ts_ms:
            raise Expired("valid_until_ms", f"the operation expired "
                                             f"{format_duration(ts_ms - expires_ms)} ago")
        limit = self.params["op_validity_ms_max"]
        if expires_ms != NO_EXPIRY and expires_ms - ts_ms > limit:
            raise ValidityTooLong("valid_until_ms", f"valid for "
                                  f"{format_duration(expires_ms - ts_ms)}; at most "
                                  f"{format_duration(limit)} ahead is allowed")

    def forget_expired(self, ts_ms: int, tx: _Tx) -> None:
        """Forget the decided ids whose validity limit the clock has passed (no operation
        carrying one can be applied any more: it would be refused as expired)."""
        heap = self._expiries
        while heap and heap[0][0] < ts_ms:
            exp, op = heapq.heappop(heap)
            if self._seen_ops.get(op) == exp:  # else superseded (a rolled-back entry)
                tx.save_item(self._seen_ops, op)
                del self._seen_ops[op]
                tx.save_attr("_ops_digest")
                self._ops_digest = None
                tx.popped.append((exp, op))

    def record_other(self, index: int, ts_ms: int, op_id: bytes, expires_ms: int, kind: str,
                     account: bytes, cause: str, error: ProtocolError | None = None,
                     tx: _Tx | None = None) -> AuditRecord:
        """Decide `op_id` for an operation another rule applied in this bucket's log
        (a verifier pool change) and add it to the audit trail, so that every id has one
        outcome across everything the bucket orders; with `error` a DuplicateOp, Expired
        or ValidityTooLong it is only audited. Changes no balance and not `last`."""
        if not isinstance(error, _NOT_DECIDED):  # a repeat keeps the first outcome
            if op_id in self._seen_ops:
                raise LocalProtocolError("op_id", "record_other: check_window first")
            self._decide(op_id, expires_ms, tx if tx is not None else _Tx(self))
        record = AuditRecord(index, ts_ms, op_id, kind, account, cause, (),
                             error_code=error.code if error else "",
                             error=error.reason if error else "")
        self._remember(record)
        return record

    # -- validation without applying

    def check(self, op: Op, ts_ms: int) -> None:
        """Raise the LedgerError that applying `op` at `ts_ms` would record, if any."""
        self._validate(op, ts_ms)

    # -- applying

    def apply(self, entry: LedgerEntry) -> Applied:
        """Apply one committed entry. Rule violations are recorded, not raised."""
        body = entry.body
        if isinstance(body, EffectBatch):
            op_id, home = body.source_op_id, b""
        elif isinstance(body, EffectAck | Tick | PoolView | PoolViews | Draw):
            # What its batches name as their source operation: none of these is an
            # operation of its own, yet timers firing at its stamp may pay, refund or
            # slash (an acknowledgement too).
            op_id, home = hashlib.sha256(TICK_DOMAIN + self.bucket.to_bytes(2, "big")
                                         + entry.index.to_bytes(8, "big")).digest(), b""
        else:
            op_id, home = body.op_id, body.home
        kind = KIND_OF[type(body)]
        try:
            if entry.index <= self._last_index:
                raise OutOfOrder("index", f"entry {entry.index} is not after {self._last_index}")
            if entry.ts_ms < self._last_ts_ms:
                raise OutOfOrder("ts_ms", f"timestamp {entry.ts_ms} is before "
                                          f"{self._last_ts_ms}")
        except OutOfOrder as exc:
            # Not this bucket's next entry at all: a bug in the shell. Record nothing.
            return Applied(AuditRecord(entry.index, entry.ts_ms, op_id, kind, home, "", (),
                                       error_code=exc.code, error=exc.reason), (), exc)
        tx = _Tx(self)
        try:
            with self.tasks.transaction():
                return self._apply(entry, tx, op_id, home, kind)
        except BaseException:
            tx.rollback()  # a bug, not a rule: the entry never happened here
            raise

    def _apply(self, entry: LedgerEntry, tx: _Tx, op_id: bytes, home: bytes,
               kind: str) -> Applied:
        body = entry.body
        tx.save_attr("_last_index")
        tx.save_attr("_last_ts_ms")
        self._last_index = entry.index
        self._last_ts_ms = entry.ts_ms
        self.forget_expired(entry.ts_ms, tx)
        # Task timers due by this entry's stamp fire before the entry is judged.
        self._settle(self.tasks.advance(entry.ts_ms, entry.index), tx)
        before = tx.size()
        cause = _cause(body)
        error: LedgerError | TaskError | None = None
        try:
            if isinstance(body, EffectBatch):
                self._apply_batch(body, entry.index, entry.ts_ms, tx)
            elif isinstance(body, EffectAck):
                self._apply_ack(body, tx)
            elif isinstance(body, Tick):
                pass  # its stamp has fired the timers
            elif isinstance(body, PoolView):
                self._apply_view(body, tx)
            elif isinstance(body, PoolViews):
                for view in body.views:
                    had = self._views.get(view.bucket)
                    if had is None or had[0] < view.index:  # an older one is skipped
                        self._apply_view(view, tx)
            elif isinstance(body, Draw):
                self._settle(self.tasks.draw(body.need, body.committee, entry.ts_ms,
                                             commit_index=body.commit_index,
                                             rule=body.rule, index=entry.index,
                                             stakes={m: self.stake_of(m)
                                                     for m in body.committee}), tx)
            elif isinstance(body, TaskStep):
                self._validate_task(body, entry.ts_ms)
                self._decide(body.op_id, body.expires_ms, tx)
                rep, related = self.params["reputation_initial_bp"], False
                task = self.tasks.get(need_of(body.envelope))
                if body.envelope.kind == "PROPOSE" and task is not None:
                    rep, related = self.bid_facts(body.envelope.sender, task.terms.poster,
                                                  entry.ts_ms)
                self._settle(self.tasks.submit(body.envelope, entry.index, entry.ts_ms,
                                               reputation_bp=rep, related=related), tx)
            else:
                self._validate(body, entry.ts_ms)
                self._decide(body.op_id, body.expires_ms, tx)
                self._mutate(body, entry.index, entry.ts_ms, tx)
        except (LedgerError, TaskError) as exc:
            if tx.size() != before:
                raise AssertionError("rules must be checked before mutating") from exc
            error = exc
            if not isinstance(body, EffectBatch | EffectAck | Tick | PoolView | PoolViews | Draw) \
                    and not isinstance(exc, _NOT_DECIDED):
                self._decide(body.op_id, body.expires_ms, tx)  # decided once: applied or refused
        batches = self._emit(tx, entry.index, op_id)
        self._prune(tx)
        counterparty, memo = _other_side(body)
        record = AuditRecord(entry.index, entry.ts_ms, op_id, kind, home, cause,
                             tuple(tx.changes), tuple((b.target_bucket, b.seq) for b in batches),
                             error.code if error else "", error.reason if error else "",
                             counterparty, memo)
        self._remember(record)
        self._slash_log.extend(tx.slashed)
        return Applied(record, batches, error, tuple(tx.steps))

    # -- pool views

    def view(self, bucket: int) -> tuple[int, tuple[PoolRow, ...]] | None:
        """Another bucket's verifiers as this bucket last saw them: (chain index, rows)."""
        return self._views.get(bucket)

    def views(self) -> dict[int, tuple[int, tuple[PoolRow, ...]]]:
        return dict(self._views)

    def _apply_view(self, view: PoolView, tx: _Tx) -> None:
        if view.bucket == self.bucket:
            raise InvalidOp("bucket", "a bucket's own verifiers are its pool, not a view")
        had = self._views.get(view.bucket)
        if had is not None and had[0] >= view.index:
            raise StaleView("index", f"bucket {view.bucket}'s view at entry {had[0]} is "
                                     f"not older than {view.index}")
        tx.save_item(self._views, view.bucket)
        self._views[view.bucket] = (view.index, view.rows)

    # -- internals

    def _remember(self, record: AuditRecord) -> None:
        audit = self._audit
        audit.append(record)  # the deque drops the oldest past AUDIT_RECORDS_MAX
        horizon = record.ts_ms - AUDIT_WINDOW_MS
        while audit and audit[0].ts_ms < horizon:
            audit.popleft()

    def _decide(self, op_id: bytes, expires_ms: int, tx: _Tx) -> None:
        tx.save_item(self._seen_ops, op_id)
        tx.save_attr("_ops_digest")
        self._seen_ops[op_id] = expires_ms
        self._ops_digest = None
        if expires_ms != NO_EXPIRY:
            heapq.heappush(self._expiries, (expires_ms, op_id))

    def _acct(self, account: bytes) -> _Account:
        a = self._accounts.get(account)
        if a is None:
            a = self._accounts[account] = _Account()
        return a

    def _view(self, account: bytes) -> _Account:
        return self._accounts.get(account) or _Account()

    def _prune(self, tx: _Tx) -> None:
        # An all-zero account is no account: keeps the state (and its root) canonical.
        # Every account in `changes` was saved by the journal when it changed.
        for c in tx.changes:
            a = self._accounts.get(c.account)
            if a is not None and a.empty():
                del self._accounts[c.account]

    def _emit(self, tx: _Tx, index: int, op_id: bytes) -> tuple[EffectBatch, ...]:
        out = []
        for target in sorted(tx.outbound):
            effects = tx.outbound[target]
            # Credits, slashes, funds, reputation: the canonical encoding keeps them apart.
            effects = ([e for e in effects if isinstance(e, Credit)]
                       + [e for e in effects if isinstance(e, SlashOrder)]
                       + [e for e in effects if isinstance(e, Fund)]
                       + [e for e in effects if isinstance(e, Bond)]
                       + [e for e in effects if isinstance(e, Repute)])
            seq = self._out_seq.get(target, 0)
            tx.save_item(self._out_seq, target)
            self._out_seq[target] = seq + 1
            tx.save_attr("_credits_out")
            self._credits_out += sum(e.amount for e in effects
                                     if isinstance(e, Credit | Fund | Bond))
            batch = EffectBatch(self.bucket, index, seq, target, op_id, tuple(effects))
            tx.save_item(self._outbox, target)
            self._outbox.setdefault(target, {})[seq] = batch
            out.append(batch)
        return tuple(out)

    def _require_home(self, account: bytes, fld: str) -> None:
        if not self.owns(account):
            raise WrongBucket(fld, f"account {account.hex()[:16]} belongs to bucket "
                                   f"{bucket_of(account, self.bucket_count)}, not {self.bucket}")

    def _positive(self, amount: int, fld: str = "amount") -> None:
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= INT_MAX:
            raise InvalidOp(fld, f"must be a positive amount (got {amount!r})")

    def _validate(self, op: Op, ts_ms: int) -> None:
        self._require_home(op.home, "account")
        self.check_window(op.op_id, op.expires_ms, ts_ms)
        unit = self.unit
        match op:
            case Transfer():
                self._positive(op.amount)
                have = self._view(op.sender).balance
                if have < op.amount:
                    raise InsufficientBalance("amount", have, op.amount, unit)
            case Escrow() | Bounty():
                self._positive(op.amount)
                if (op.payer, op.escrow_id) in self._escrows:
                    raise EscrowExists("escrow_id", f"escrow {op.escrow_id.hex()[:16]} is open")
                if isinstance(op, Escrow) and op.hold_ms < 0:
                    raise InvalidOp("hold_ms", f"must be >= 0 (got {op.hold_ms})")
                if isinstance(op, Bounty):
                    if op.task_class not in TASK_CLASSES:
                        raise InvalidOp("task_class", f"must be one of {', '.join(TASK_CLASSES)}"
                                                      f" (got {op.task_class!r})")
                    self._within_cap(op.amount, op.task_class, "amount", "bounty")
                have = self._view(op.payer).balance
                if have < op.amount:
                    raise InsufficientBalance("amount", have, op.amount, unit)
            case Release():
                esc = self._open_escrow(op.escrow_id, op.payer)
                if ts_ms < esc.release_ms:
                    raise EscrowHeld("escrow_id", esc.release_ms - ts_ms)
                for i, s in enumerate(op.shares):
                    self._positive(s.amount, f"shares[{i}].amount")
                if len({s.account for s in op.shares}) != len(op.shares):
                    raise InvalidOp("shares", "an account appears twice")
                if op.burn < 0:
                    raise InvalidOp("burn", f"must be >= 0 (got {op.burn})")
                paid = sum(s.amount for s in op.shares) + op.burn
                if paid != esc.amount:
                    raise InvalidOp("shares", f"shares and burn add up to "
                                              f"{format_credits(paid, unit)}, the escrow holds "
                                              f"{format_credits(esc.amount, unit)}")
                for i, order in enumerate(op.slashes):
                    self._check_order(order, f"slashes[{i}]")
            case Cancel():
                self._open_escrow(op.escrow_id, op.payer)
            case Stake():
                self._positive(op.amount)
                have = self._view(op.account).balance
                if have < op.amount:
                    raise InsufficientBalance("amount", have, op.amount, unit)
            case Unstake():
                self._positive(op.amount)
                have = self._view(op.account).locked
                if have < op.amount:
                    raise InsufficientStake("amount", have, op.amount, unit)
            case CompleteUnbonding():
                pending = self._view(op.account).unbonding
                if not pending:
                    raise NothingUnbonding("account", "nothing is unbonding")
                if not any(u.complete_ms <= ts_ms for u in pending):
                    first = min(pending, key=lambda u: u.complete_ms)
                    raise UnbondingPending("account", first.complete_ms - ts_ms, first.amount)
            case Slash():
                self._check_order(op.order, "slash")
            case PostNeed():
                t = op.terms
                self._positive(t.budget, "budget")
                if t.verify_bounty > t.budget:
                    raise InvalidOp("verify_bounty", "the verify bounty is part of the "
                                                     "budget and cannot exceed it")
                self._within_cap(t.verify_bounty, t.task_class, "verify_bounty",
                                 "verify bounty")
                have = self._view(t.poster).balance
                if have < t.budget:
                    raise InsufficientBalance("budget", have, t.budget, unit)
            case PostChallenge():
                ch = op.terms
                base = self.params[f"challenge_bond_{ch.proof_type}"]
                allowed = sorted({base, base * self.params["challenge_complexity_medium"],
                                  base * self.params["challenge_complexity_high"]})
                if ch.bond not in allowed:
                    raise InvalidOp("bond_amount", f"a {ch.proof_type} challenge's bond is one "
                                    f"of {', '.join(format_credits(b, unit) for b in allowed)}"
                                    f" (by complexity)")
                if op.size_bytes > self.params["proof_bytes_max"]:
                    raise InvalidOp("size_bytes", f"a proof is at most "
                                                  f"{self.params['proof_bytes_max']} bytes")
                recent = self._recent_challenges(ch.challenger, ts_ms)
                if len(recent) >= self.params["challenge_rate_max"]:
                    raise RateLimited("sender", f"{len(recent)} challenges in the last "
                                      f"{format_duration(self.params['challenge_rate_window_ms'])}"
                                      f"; at most {self.params['challenge_rate_max']}")
                if ch.challenger not in self._challenges \
                        and len(self._challenges) >= CHALLENGERS_MAX \
                        and all(self._recent_challenges(a, ts_ms) for a in self._challenges):
                    raise RateLimited("sender", "this bucket holds the most recent "
                                                "challengers it may")
                have = self._view(ch.challenger).balance
                if have < ch.bond:
                    raise InsufficientBalance("bond_amount", have, ch.bond, unit)
            case _:
                raise InvalidOp("op", f"not a ledger operation: {type(op).__name__}")

    def _recent_challenges(self, account: bytes, ts_ms: int) -> tuple[int, ...]:
        horizon = ts_ms - self.params["challenge_rate_window_ms"]
        return tuple(t for t in self._challenges.get(account, ()) if t > horizon)

    def _forget_challengers(self, ts_ms: int, tx: _Tx) -> None:
        """Drop the challengers with no challenge in the rate window."""
        for a in [a for a in self._challenges if not self._recent_challenges(a, ts_ms)]:
            tx.save_item(self._challenges, a)
            del self._challenges[a]

    def _open_challenge(self, ct: ChallengeTerms, index: int, ts_ms: int) -> Step:
        task = self.tasks.get(ct.need)
        c = task.commit if task is not None else None
        related = task is not None and c is not None and self.related_any(
            ct.challenger, [c.worker, *c.committee])
        return self.tasks.challenge(ct, index, ts_ms, related=related)

    def _within_cap(self, amount: int, task_class: str, fld: str, what: str) -> None:
        """P6: a bounty stays within its task class's cap (genesis `bounty_cap_*`)."""
        cap = self.params[f"bounty_cap_{task_class}"]
        if amount > cap:
            raise OverCap(fld, f"{what} {format_credits(amount, self.unit)} is over the "
                               f"{task_class} cap of {format_credits(cap, self.unit)}")

    def _validate_task(self, step: TaskStep, ts_ms: int) -> None:
        """A lifecycle envelope belongs to its NEED's bucket, once, within its window."""
        need = need_of(step.envelope)
        home = bucket_of(need.raw, self.bucket_count)
        if home != self.bucket:
            raise WrongBucket("payload", f"NEED {need} belongs to bucket {home}, "
                                         f"not {self.bucket}")
        self.check_window(step.op_id, step.expires_ms, ts_ms)

    def _settle(self, step: Step, tx: _Tx) -> None:
        """Carry out what a task step caused: payments out of the tasks' escrow, and
        missed-heartbeat slashes, here or by effects to other buckets."""
        if not (step.transitions or step.payments or step.slashes or step.outage_ms
                or step.reputation or step.challenge_slashes or step.burned):
            return
        tx.steps.append(step)
        for r in step.reputation:
            effect = Repute(r.account, r.failed, r.challenge)
            if self.owns(r.account):
                self.repute(effect, self._last_ts_ms, tx)
            else:
                tx.repute_remote(effect)
        for p in step.payments:
            tx.held_by_tasks(-p.amount)
            tx.credit(p.account, p.amount, p.kind, p.payer)
        if step.burned:
            tx.held_by_tasks(-step.burned)
            tx.burn(step.burned)
        for cs in step.challenge_slashes:
            order = self.slash_order(cs)
            if self.owns(order.account):
                self._slash(order, tx)
            else:
                tx.slash_remote(order)
        for cause in step.slashes:
            order = SlashOrder(cause.account, "missed_heartbeat", cause.lease_id,
                               min(cause.misses, MISSES_MAX))
            if self.owns(order.account):
                self._slash(order, tx)
            else:
                tx.slash_remote(order)

    def _check_order(self, order: SlashOrder, path: str) -> None:
        if order.reason not in SLASH_REASONS:
            raise InvalidOp(f"{path}.reason", f"must be one of {', '.join(SLASH_REASONS)}"
                                              f" (got {order.reason!r})")
        if not isinstance(order.evidence, Cid):
            raise InvalidOp(f"{path}.evidence", "a slash needs an evidence CID")
        if not 1 <= order.misses <= MISSES_MAX:
            raise InvalidOp(f"{path}.misses", f"must be 1..{MISSES_MAX} (got {order.misses})")
        if order.challenger is not None and order.challenger in order.honest:
            raise InvalidOp(f"{path}.honest", "the challenger is not also an honest verifier")
        if order.account == order.challenger or order.account in order.honest:
            raise InvalidOp(f"{path}.account", "a slashed account cannot share its own slash")
        if len(set(order.honest)) != len(order.honest):
            raise InvalidOp(f"{path}.honest", "an account appears twice")

    def _open_escrow(self, escrow_id: bytes, payer: bytes) -> OpenEscrow:
        esc = self._escrows.get((payer, escrow_id))
        if esc is None:
            raise UnknownEscrow("escrow_id", f"no open escrow {escrow_id.hex()[:16]} "
                                             f"of {payer.hex()[:16]}")
        return esc

    def _mutate(self, op: Op, index: int, ts_ms: int, tx: _Tx) -> None:
        match op:
            case Transfer():
                tx.move(op.sender, "balance", -op.amount)
                tx.credit(op.recipient, op.amount, "transfer", op.sender, op.memo)
            case Escrow() | Bounty():
                if isinstance(op, Bounty):
                    hold = self.params["escrow_hold_factor"] * self.params["challenge_window_ms"]
                    task_class = op.task_class
                else:
                    hold, task_class = op.hold_ms, ""
                tx.move(op.payer, "balance", -op.amount)
                tx.move(op.payer, "escrowed", op.amount)
                tx.save_item(self._escrows, (op.payer, op.escrow_id))
                self._escrows[(op.payer, op.escrow_id)] = OpenEscrow(
                    op.escrow_id, op.payer, op.amount, ts_ms, ts_ms + hold, task_class)
            case Release():
                tx.save_item(self._escrows, (op.payer, op.escrow_id))
                esc = self._escrows.pop((op.payer, op.escrow_id))
                tx.move(op.payer, "escrowed", -esc.amount)
                tx.burn(op.burn)
                for s in op.shares:
                    tx.credit(s.account, s.amount, "payout", op.payer)
                for order in op.slashes:
                    if self.owns(order.account):
                        self._slash(order, tx)
                    else:
                        tx.slash_remote(order)
            case Cancel():
                tx.save_item(self._escrows, (op.payer, op.escrow_id))
                esc = self._escrows.pop((op.payer, op.escrow_id))
                tx.move(op.payer, "escrowed", -esc.amount)
                tx.move(op.payer, "balance", esc.amount)
            case Stake():
                tx.move(op.account, "balance", -op.amount)
                tx.move(op.account, "locked", op.amount)
            case Unstake():
                tx.move(op.account, "locked", -op.amount)
                acct = tx.acct(op.account)
                acct.unbonding.append(Unbonding(op.amount, ts_ms + self.params["unbonding_ms"]))
                tx.changes.append(Change(op.account, "unbonding", op.amount))
            case CompleteUnbonding():
                acct = tx.acct(op.account)
                done = [u for u in acct.unbonding if u.complete_ms <= ts_ms]
                acct.unbonding = [u for u in acct.unbonding if u.complete_ms > ts_ms]
                total = sum(u.amount for u in done)
                tx.changes.append(Change(op.account, "unbonding", -total))
                tx.move(op.account, "balance", total)
            case Slash():
                self._slash(op.order, tx)
            case PostNeed():
                t = op.terms
                tx.move(t.poster, "balance", -t.budget)
                target = bucket_of(t.need.raw, self.bucket_count)
                if target == self.bucket:
                    tx.held_by_tasks(t.budget)
                    self._settle(self.tasks.fund(t, index, ts_ms), tx)
                else:
                    tx.outbound.setdefault(target, []).append(Fund(t))
            case PostChallenge():
                ct = op.terms
                tx.move(ct.challenger, "balance", -ct.bond)
                tx.save_item(self._challenges, ct.challenger)
                self._challenges[ct.challenger] = (
                    *self._recent_challenges(ct.challenger, ts_ms), ts_ms)
                if len(self._challenges) > CHALLENGERS_MAX // 2:
                    self._forget_challengers(ts_ms, tx)
                target = bucket_of(ct.need.raw, self.bucket_count)
                if target == self.bucket:
                    tx.held_by_tasks(ct.bond)
                    self._settle(self._open_challenge(ct, index, ts_ms), tx)
                else:
                    tx.outbound.setdefault(target, []).append(Bond(ct))

    def slash_amount(self, order: SlashOrder) -> int:
        """What `order` would take from its account now (stake and unbonding both count:
        unbonding exists so that stake stays slashable for a while after it is withdrawn)."""
        a = self._view(order.account)
        base = a.locked + a.unbonding_total
        p = self.params
        if order.reason == "failed_challenge":
            rate = p["slash_failed_challenge_bp"]
        elif order.reason == "missed_heartbeat":
            rate = p["slash_missed_heartbeat_bp"] * order.misses
        else:  # policy_violation: the n-th violation costs n times the base rate
            rate = p["slash_policy_violation_bp"] * (a.violations + 1)
        return base * min(rate, BP) // BP

    def _slash(self, order: SlashOrder, tx: _Tx) -> None:
        amount = self.slash_amount(order)
        if order.reason == "policy_violation":
            tx.acct(order.account).violations += 1
            tx.changes.append(Change(order.account, "violations", 1))
        if amount == 0:
            return  # nothing at stake: no account is created just to hold zeros
        acct = tx.acct(order.account)
        take = min(amount, acct.locked)
        tx.move(order.account, "locked", -take)
        rest = amount - take
        # Then from unbonding, latest first: the most recently withdrawn stake goes first.
        for u in sorted(acct.unbonding, key=lambda u: -u.complete_ms):
            if rest == 0:
                break
            cut = min(rest, u.amount)
            u.amount -= cut
            rest -= cut
            tx.changes.append(Change(order.account, "unbonding", -cut))
        acct.unbonding = [u for u in acct.unbonding if u.amount > 0]
        assert rest == 0
        tx.slashed.append(SlashRecord(self._last_index, self._last_ts_ms, order.account,
                                      order.reason, order.evidence, amount,
                                      order.challenger, order.honest))
        shares, burn = split_challenge(amount, order.challenger, order.honest, self.params)
        tx.burn(burn)
        for s in shares:
            tx.credit(s.account, s.amount, "slash_share", order.account)

    def _apply_ack(self, ack: EffectAck, tx: _Tx) -> None:
        sent = self._out_seq.get(ack.target_bucket, 0)
        if not 0 <= ack.applied_seq <= sent:
            raise InvalidOp("applied_seq", f"bucket {ack.target_bucket} cannot have applied "
                                           f"{ack.applied_seq} batches; {sent} were sent")
        tx.save_item(self._outbox, ack.target_bucket)
        pending = self._outbox.get(ack.target_bucket, {})
        for seq in [q for q in pending if q < ack.applied_seq]:
            del pending[seq]
        if not pending:
            self._outbox.pop(ack.target_bucket, None)

    def _apply_batch(self, batch: EffectBatch, index: int, ts_ms: int, tx: _Tx) -> None:
        if batch.target_bucket != self.bucket:
            raise WrongBucket("target_bucket", f"effects for bucket {batch.target_bucket} "
                                               f"delivered to {self.bucket}")
        src, seq = batch.source_bucket, batch.seq
        nxt = self._in_next.get(src, 0)
        ahead = self._in_ahead.get(src, set())
        if seq < nxt or seq in ahead:
            raise DuplicateEffect("seq", f"effects {seq} from bucket {src} (entry "
                                         f"{batch.source_index}) were already applied")
        for i, e in enumerate(batch.effects):
            if isinstance(e, Fund | Bond):
                if bucket_of(e.terms.need.raw, self.bucket_count) != self.bucket:
                    raise WrongBucket(f"effects[{i}].need", f"NEED {e.terms.need} is not "
                                                            f"in bucket {self.bucket}")
                continue
            if not self.owns(e.account):
                raise WrongBucket(f"effects[{i}].account", f"account {e.account.hex()[:16]} "
                                                           f"is not in bucket {self.bucket}")
            if isinstance(e, SlashOrder):
                self._check_order(e, f"effects[{i}]")
            elif isinstance(e, Credit) and e.amount <= 0:
                raise InvalidOp(f"effects[{i}].amount", "a credit must be positive")
        tx.save_item(self._in_next, src)
        tx.save_item(self._in_ahead, src)
        if seq == nxt:
            nxt += 1
            while nxt in ahead:
                ahead.discard(nxt)
                nxt += 1
            self._in_next[src] = nxt
        else:
            ahead.add(seq)
        if ahead:
            self._in_ahead[src] = ahead
        else:
            self._in_ahead.pop(src, None)
        tx.save_attr("_credits_in")
        for e in batch.effects:
            if isinstance(e, Credit):
                self._credits_in += e.amount
                tx.move(e.account, "balance", e.amount)
            elif isinstance(e, SlashOrder):
                self._slash(e, tx)
            elif isinstance(e, Repute):
                self.repute(e, ts_ms, tx)
            elif isinstance(e, Bond):
                self._credits_in += e.amount
                tx.held_by_tasks(e.amount)
                self._settle(self._open_challenge(e.terms, index, ts_ms), tx)
            else:
                self._credits_in += e.amount
                tx.held_by_tasks(e.amount)
                self._settle(self.tasks.fund(e.terms, index, ts_ms), tx)


_NOT_DECIDED = (DuplicateOp, Expired, ValidityTooLong)


def _other_side(body: Body) -> tuple[bytes, str]:
    """(counterparty, memo) for the audit trail."""
    if isinstance(body, Transfer):
        return body.recipient, body.memo
    if isinstance(body, EffectBatch):
        for e in body.effects:
            if isinstance(e, Credit):
                return e.source, e.memo
    return b"", ""


def _cause(body: Body) -> str:
    match body:
        case EffectBatch():
            return (f"effects from bucket {body.source_bucket} entry {body.source_index} "
                    f"(op {body.source_op_id.hex()[:16]}, seq {body.seq})")
        case EffectAck():
            return (f"bucket {body.target_bucket} applied our effects below seq "
                    f"{body.applied_seq}")
        case Slash():
            return f"slash for {body.order.reason}, evidence {body.order.evidence}"
        case PostNeed():
            return (f"NEED {body.terms.need} posted by {body.terms.poster.hex()[:16]} with "
                    f"budget {body.terms.budget}")
        case PostChallenge():
            return (f"CHALLENGE {body.terms.challenge_id} ({body.terms.proof_type}) of task "
                    f"{body.terms.need} by {body.terms.challenger.hex()[:16]}, bond "
                    f"{body.terms.bond}")
        case TaskStep():
            return f"{body.envelope.kind} by {body.envelope.sender.hex()[:16]}"
        case Tick():
            return "timer tick"
        case PoolView():
            return (f"verifiers of bucket {body.bucket} as of its entry {body.index}: "
                    f"{len(body.rows)}")
        case PoolViews():
            return "verifiers of buckets " + ", ".join(
                f"{v.bucket} as of its entry {v.index}: {len(v.rows)}" for v in body.views)
        case Draw():
            return (f"committee for NEED {body.need} ({len(body.committee)} drawn, "
                    f"{body.rule})")
        case Release() if body.slashes:
            reasons = ", ".join(f"{s.reason} of {s.account.hex()[:16]} evidence {s.evidence}"
                                for s in body.slashes)
            return f"release by {body.payer.hex()[:16]}; slashes: {reasons}"
    return f"{KIND_OF[type(body)]} by {body.home.hex()[:16]}"
