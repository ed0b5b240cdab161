"""Verifier pools, reputation and committee selection: who verifies a result.

Owns: pool membership (register / deregister with capabilities, org, ASN, region),
reputation and its decay, and the committee draw. It does not own stake: a verifier's
stake is the `locked` amount of its account in the ledger, passed in by the caller
(`stakes`), so the ledger stays the one source of truth for credits.

Every decision is integer arithmetic, so every node computes the same committee:

* **Active** (P5): registered and staking at least `min_verifier_stake` *now*. A
  verifier slashed or unstaked below the minimum drops out of `active` at once, without
  any pool operation.
* **Reputation** is in basis points, 0..10000 (0..1). It decays by
  `reputation_decay_weekly_bp` for every whole `reputation_decay_period_ms` since the
  verifier's last reputation event (floored at each step), rises by
  `reputation_upheld_challenge_bp` for an upheld challenge, falls by
  `reputation_failed_attestation_bp` for a failed attestation, clamped to 0..10000.
* **Recency** is 10000 for a verifier active at the draw's time and falls linearly to
  `recency_floor_bp` over `recency_window_ms` of inactivity.
* **Weight** = isqrt(stake) x reputation_bp x recency_bp, an exact integer.
* **Draw**: the candidates (active, not excluded, having the capability, unrelated to
  the judged parties) are put in a seeded weighted random order: the r-th pick takes
  `sha256("swarm-committee" || seed || r) mod weight left` over the rest in account
  order. Seats go to the first candidates in that order that keep every org / ASN /
  region within its cap (at most max(1, k x cap / 10000) members sharing one), which
  is a weighted draw among the eligible at every seat; if that leaves a seat empty, a
  bounded depth-first search over the same order finds the first choice that fits.
  The seed is the hash of the certificate of the COMMIT entry the committee judges.
* **Pool views**: a bucket draws from every bucket's verifiers, but owns only its own.
  The others enter as `PoolRow`s (verifier and stake) proven by their bucket's
  certified chain entry, whose `pv` is `view_digest` of that bucket's rows after it
  (`pool_rows`). `draw` relaxes the caps in `DRAW_RULES` order when a committee cannot
  be filled within them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import cbor
from .amounts import format_credits
from .errors import DecodeError, LocalProtocolError, SchemaError
from .genesis import Genesis
from .ledger import BP
from .ledger_ops import DRAW_RULES, NO_EXPIRY, PoolRow
from .payout import Party, related
from .schema import Bytes, Enum, Int, List, OneOf, Text, obj

CAPABILITY_BYTES_MAX = 64
CAPABILITIES_MAX = 32
COMMITTEE_MAX = 64
DECAY_STEPS_MAX = 1000  # after this many periods any reputation has decayed to 0
SELECT_STEPS_MAX = 100_000  # bounds the committee search when caps make seats scarce
VIEW_DOMAIN = b"can-swarm/pool-view/v1\x00"


class PoolError(LocalProtocolError):
    code = "pool"

    def __str__(self) -> str:
        return self.reason


class StakeTooLow(PoolError):
    code = "stake_too_low"


class NotRegistered(PoolError):
    code = "not_registered"


class AlreadyRegistered(PoolError):
    code = "already_registered"


class CommitteeUnfillable(PoolError):
    code = "committee_unfillable"


class PoolFull(PoolError):
    code = "pool_full"


@dataclass(frozen=True, slots=True)
class Verifier:
    account: bytes
    capabilities: tuple[str, ...]
    org: str
    asn: int
    region: str
    registered_ms: int
    reputation_bp: int  # as of `reputation_ms`
    reputation_ms: int  # time of the last reputation event (decay runs from here)
    active_ms: int  # last activity (registration, attestation, challenge)


# --- pool operations (what a verifier's bucket log carries) -----------------------

REPUTATION_EVENTS: tuple[str, ...] = ("upheld_challenge", "rejected_challenge",
                                      "attested", "failed_attestation")


@dataclass(frozen=True, slots=True)
class PoolRegister:
    """POOL_REGISTER: ordered in the verifier's bucket, where its stake is known."""

    op_id: bytes
    account: bytes
    capabilities: tuple[str, ...]
    org: str
    asn: int
    region: str
    expires_ms: int = NO_EXPIRY  # the envelope's validity limit (docs/LEDGER.md)


@dataclass(frozen=True, slots=True)
class PoolLeave:
    op_id: bytes
    account: bytes
    expires_ms: int = NO_EXPIRY


@dataclass(frozen=True, slots=True)
class ReputationEvent:
    """A decided challenge or a finalized attestation, as it bears on one verifier."""

    op_id: bytes
    account: bytes
    event: str
    expires_ms: int = NO_EXPIRY


PoolOp = PoolRegister | PoolLeave | ReputationEvent

_TEXT = Text(max_bytes=CAPABILITY_BYTES_MAX, min_bytes=1)
_EXP = {"exp": Int(max=NO_EXPIRY - 1)}  # absent: NO_EXPIRY
POOL_OP_SCHEMA = OneOf("op", {
    "pool_register": obj({"op": Enum(("pool_register",)), "id": Bytes(32),
                          "account": Bytes(32),
                          "capabilities": List(_TEXT, max_items=CAPABILITIES_MAX,
                                               sorted_unique=True),
                          "org": _TEXT, "asn": Int(max=2**32 - 1), "region": _TEXT}, _EXP),
    "pool_leave": obj({"op": Enum(("pool_leave",)), "id": Bytes(32), "account": Bytes(32)},
                      _EXP),
    "reputation": obj({"op": Enum(("reputation",)), "id": Bytes(32), "account": Bytes(32),
                       "event": Enum(REPUTATION_EVENTS)}, _EXP),
})


def encode_pool_op(op: PoolOp) -> bytes:
    return cbor.encode(pool_op_value(op))


def pool_op_value(op: PoolOp) -> dict[str, Any]:
    """The DAG-CBOR data-model value of a pool operation."""
    match op:
        case PoolRegister():
            value: dict[str, Any] = {
                "op": "pool_register", "id": op.op_id, "account": op.account,
                "capabilities": sorted(set(op.capabilities)), "org": op.org, "asn": op.asn,
                "region": op.region}
        case PoolLeave():
            value = {"op": "pool_leave", "id": op.op_id, "account": op.account}
        case ReputationEvent():
            value = {"op": "reputation", "id": op.op_id, "account": op.account,
                     "event": op.event}
    if op.expires_ms != NO_EXPIRY:
        value["exp"] = op.expires_ms
    return value


def decode_pool_op(data: bytes) -> PoolOp:
    return pool_op_from_value(cbor.decode(data))


def pool_op_from_value(v: Any, path: str = "op") -> PoolOp:
    """Validate a decoded value and build the pool operation; raises SchemaError."""
    POOL_OP_SCHEMA.check(v, path)
    exp = v.get("exp", NO_EXPIRY)
    if v["op"] == "pool_register":
        return PoolRegister(v["id"], v["account"], tuple(v["capabilities"]), v["org"],
                            v["asn"], v["region"], exp)
    if v["op"] == "pool_leave":
        return PoolLeave(v["id"], v["account"], exp)
    return ReputationEvent(v["id"], v["account"], v["event"], exp)


_VERIFIER_FIELDS = (Bytes(32), List(_TEXT, max_items=CAPABILITIES_MAX, sorted_unique=True),
                    _TEXT, Int(max=2**32 - 1), _TEXT, Int(), Int(max=BP), Int(), Int())


def _check_verifier_value(row: Any, path: str) -> None:
    if not isinstance(row, list) or len(row) != len(_VERIFIER_FIELDS):
        raise SchemaError(path, f"a verifier is an array of {len(_VERIFIER_FIELDS)} fields")
    for i, (ftype, v) in enumerate(zip(_VERIFIER_FIELDS, row, strict=True)):
        ftype.check(v, f"{path}[{i}]")


def decayed(reputation_bp: int, since_ms: int, now_ms: int, params: Mapping[str, int]) -> int:
    """Reputation after whole decay periods from `since_ms` to `now_ms`, floored each step."""
    period = params["reputation_decay_period_ms"]
    keep = BP - params["reputation_decay_weekly_bp"]
    if period <= 0 or now_ms <= since_ms:
        return reputation_bp
    r = reputation_bp
    for _ in range(min((now_ms - since_ms) // period, DECAY_STEPS_MAX)):
        r = r * keep // BP
        if r == 0:
            break
    return r


def recency_bp(active_ms: int, now_ms: int, params: Mapping[str, int]) -> int:
    window = params["recency_window_ms"]
    floor = params["recency_floor_bp"]
    idle = max(0, now_ms - active_ms)
    if window <= 0 or idle >= window:
        return floor
    return max(floor, BP - (BP - floor) * idle // window)


def _pick(pool: list[tuple[Verifier, int]], r: int) -> int:
    """Index of the candidate whose cumulative-weight interval holds r (0 <= r < total)."""
    for i, (_, w) in enumerate(pool):
        if r < w:
            return i
        r -= w
    raise AssertionError("r is below the total weight")


class VerifierPool:
    """The registered verifiers. Changed only through its methods, each given the entry's
    timestamp; every replica that makes the same calls holds the same pool (`root`)."""

    def __init__(self, params: Mapping[str, int]) -> None:
        self.params = dict(params)
        self._members: dict[bytes, Verifier] = {}

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> VerifierPool:
        """The genesis validators that stake at least the minimum, with no capabilities,
        registered at the genesis time."""
        pool = cls(genesis.params)
        for v in genesis.value["validators"]:
            if v["stake"] >= pool.params["min_verifier_stake"]:
                pool.register(v["account"], stake=v["stake"], capabilities=(), org=v["org"],
                              asn=v["asn"], region=v["region"],
                              ts_ms=genesis.value["created_ms"])
        return pool

    def subset(self, keep: Callable[[bytes], bool]) -> VerifierPool:
        """A copy holding only the members whose account `keep` accepts (one bucket's
        verifiers, when each bucket orders its own)."""
        pool = VerifierPool(self.params)
        pool._members = {a: v for a, v in self._members.items() if keep(a)}
        return pool

    def apply(self, op: PoolOp, *, ts_ms: int, stake: int) -> Verifier | None:
        """Apply a committed pool operation; `stake` is the account's ledger `locked` at
        this point of the log. Raises PoolError (the shell records the refusal)."""
        match op:
            case PoolRegister():
                return self.register(op.account, stake=stake, capabilities=op.capabilities,
                                     org=op.org, asn=op.asn, region=op.region, ts_ms=ts_ms)
            case PoolLeave():
                self.deregister(op.account)
                return None
            case ReputationEvent():
                if op.event not in REPUTATION_EVENTS:
                    raise PoolError("event", f"must be one of {', '.join(REPUTATION_EVENTS)}"
                                             f" (got {op.event!r})")
                if op.event.endswith("challenge"):
                    return self.record_challenge(op.account, upheld=op.event.startswith("up"),
                                                 ts_ms=ts_ms)
                return self.record_attestation(op.account, failed=op.event.startswith("fail"),
                                               ts_ms=ts_ms)
        raise AssertionError(f"not a pool operation: {op!r}")

    # -- membership

    def register(self, account: bytes, *, stake: int, capabilities: Iterable[str], org: str,
                 asn: int, region: str, ts_ms: int) -> Verifier:
        """Join the pool; `stake` is the account's locked amount in the ledger."""
        if account in self._members:
            raise AlreadyRegistered("account", f"{account.hex()[:16]} is already registered")
        self._require_stake(stake)
        caps = tuple(sorted(set(capabilities)))
        if len(caps) > CAPABILITIES_MAX or any(
                not 0 < len(c.encode()) <= CAPABILITY_BYTES_MAX for c in caps):
            raise PoolError("capabilities", f"at most {CAPABILITIES_MAX} capabilities of "
                                            f"1..{CAPABILITY_BYTES_MAX} bytes")
        for name, text in (("org", org), ("region", region)):
            if not 0 < len(text.encode()) <= CAPABILITY_BYTES_MAX:
                raise PoolError(name, f"{name} must be 1..{CAPABILITY_BYTES_MAX} bytes")
        if not 0 <= asn < 2**32:
            raise PoolError("asn", f"must be 0..2^32-1 (got {asn})")
        v = Verifier(account, caps, org, asn, region, ts_ms, self.params["reputation_initial_bp"],
                     ts_ms, ts_ms)
        self._members[account] = v
        return v

    def deregister(self, account: bytes) -> Verifier:
        v = self._members.pop(account, None)
        if v is None:
            raise NotRegistered("account", f"{account.hex()[:16]} is not in the pool")
        return v

    def _require_stake(self, stake: int) -> None:
        need = self.params["min_verifier_stake"]
        if stake < need:
            unit = self.params["unit_per_credit"]
            raise StakeTooLow("stake", f"stake {format_credits(stake, unit)} is below the "
                                       f"verifier minimum of {format_credits(need, unit)}")

    def member(self, account: bytes) -> Verifier | None:
        return self._members.get(account)

    def put_back(self, account: bytes, before: Verifier | None) -> None:
        """Undo `apply` for `account` (every pool operation changes one member only):
        `before` is what `member(account)` was."""
        if before is None:
            self._members.pop(account, None)
        else:
            self._members[account] = before

    @property
    def by_account(self) -> dict[bytes, Verifier]:
        """The live members by account: a caller journals an entry's change in it."""
        return self._members

    def members(self) -> list[Verifier]:
        return [self._members[k] for k in sorted(self._members)]

    def active(self, stakes: Mapping[bytes, int]) -> list[Verifier]:
        """P5: registered verifiers whose stake is at least the minimum right now."""
        need = self.params["min_verifier_stake"]
        return [v for v in self.members() if stakes.get(v.account, 0) >= need]

    # -- reputation

    def reputation(self, account: bytes, now_ms: int) -> int:
        v = self._get(account)
        return decayed(v.reputation_bp, v.reputation_ms, now_ms, self.params)

    def _get(self, account: bytes) -> Verifier:
        v = self._members.get(account)
        if v is None:
            raise NotRegistered("account", f"{account.hex()[:16]} is not in the pool")
        return v

    def _adjust(self, account: bytes, delta_bp: int, ts_ms: int) -> Verifier:
        v = self._get(account)
        rep = min(BP, max(0, self.reputation(account, ts_ms) + delta_bp))
        # Decay restarts from this event; whole periods already applied are kept in `rep`.
        new = replace(v, reputation_bp=rep, reputation_ms=max(ts_ms, v.reputation_ms),
                      active_ms=max(ts_ms, v.active_ms))
        self._members[account] = new
        return new

    def record_challenge(self, account: bytes, *, upheld: bool, ts_ms: int) -> Verifier:
        """A challenge `account` raised was decided: upheld raises its reputation, a
        rejected (frivolous) one lowers it."""
        delta = (self.params["reputation_upheld_challenge_bp"] if upheld
                 else -self.params["reputation_rejected_challenge_bp"])
        return self._adjust(account, delta, ts_ms)

    def record_attestation(self, account: bytes, *, failed: bool, ts_ms: int) -> Verifier:
        """An attestation by `account` was finalized (failed = shown wrong by a challenge)."""
        delta = -self.params["reputation_failed_attestation_bp"] if failed else 0
        return self._adjust(account, delta, ts_ms)

    # -- selection

    def weight(self, v: Verifier, stake: int, now_ms: int) -> int:
        return (math.isqrt(max(stake, 0)) * self.reputation(v.account, now_ms)
                * recency_bp(v.active_ms, now_ms, self.params))

    def select(self, k: int, *, seed: bytes, stakes: Mapping[bytes, int], now_ms: int,
               capability: str | None = None, exclude: Collection[bytes] = (),
               unrelated_to: Iterable[Party] = ()) -> list[bytes]:
        """Draw a committee of `k` active verifiers (see the module docstring), in draw order.

        `unrelated_to` names the parties the committee judges (the worker, the payer):
        verifiers related to any of them (same org or ASN, or a linked identity) are
        never drawn, so they can neither attest for a friend nor be paid for it (P8)."""
        if not 1 <= k <= COMMITTEE_MAX:
            raise PoolError("k", f"committee size must be 1..{COMMITTEE_MAX} (got {k})")
        judged = list(unrelated_to)
        cands = [(v, self.weight(v, stakes.get(v.account, 0), now_ms))
                 for v in self.active(stakes)
                 if v.account not in exclude
                 and (capability is None or capability in v.capabilities)
                 and not any(related(Party(v.account, v.org, v.asn), p) for p in judged)]
        cands = [(v, w) for v, w in cands if w > 0]
        caps = {name: max(1, k * self.params[f"cap_{name}_bp"] // BP)
                for name in ("org", "asn", "region")}
        # The seed orders the candidates: a weighted random permutation, drawn lazily,
        # the r-th pick taking `sha256(prefix || seed || r) mod weight left`. Seats go to
        # the first candidates in that order that fit the caps (greedy); if that leaves a
        # seat empty, a depth-first search over the same order finds the first choice
        # that fits, so a committee that exists is found, within SELECT_STEPS_MAX steps.
        order: list[Verifier] = []
        rest = list(cands)

        def at(i: int) -> Verifier | None:
            while len(order) <= i and rest:
                total = sum(w for _, w in rest)
                digest = hashlib.sha256(b"swarm-committee\x00" + seed
                                        + len(order).to_bytes(4, "big")).digest()
                order.append(rest.pop(_pick(rest, int.from_bytes(digest, "big") % total))[0])
            return order[i] if i < len(order) else None

        def keys(v: Verifier) -> tuple[tuple[str, object], ...]:
            return (("org", v.org), ("asn", v.asn), ("region", v.region))

        counts: dict[tuple[str, object], int] = {}
        seats: list[int] = []  # positions in `order`
        best = i = steps = 0
        while len(seats) < k:
            steps += 1
            v = at(i) if steps <= SELECT_STEPS_MAX else None
            if v is None:
                if not seats or steps > SELECT_STEPS_MAX:
                    stopped = (f"; search stopped after {SELECT_STEPS_MAX} steps"
                               if steps > SELECT_STEPS_MAX else "")
                    raise CommitteeUnfillable(
                        "k", f"only {best} of {k} committee seats can be filled from "
                             f"{len(cands)} eligible verifiers within the org/ASN/region caps "
                             f"(at most {caps['org']}, {caps['asn']}, {caps['region']} each)"
                             f"{stopped}")
                j = seats.pop()  # no candidate left for this seat: change the last one
                for key in keys(order[j]):
                    counts[key] -= 1
                i = j + 1
                continue
            if all(counts.get(key, 0) < caps[key[0]] for key in keys(v)):
                seats.append(i)
                for key in keys(v):
                    counts[key] = counts.get(key, 0) + 1
                best = max(best, len(seats))
            i += 1
        return [order[j].account for j in seats]

    def state_value(self) -> list[list[Any]]:
        """Every member as a canonical value, in account order (the root's preimage and
        what a snapshot carries)."""
        return [[v.account, list(v.capabilities), v.org, v.asn, v.region, v.registered_ms,
                 v.reputation_bp, v.reputation_ms, v.active_ms] for v in self.members()]

    @classmethod
    def from_state(cls, params: Mapping[str, int], value: Any) -> VerifierPool:
        """Rebuild a pool from `state_value()`; raises DecodeError if it is not one."""
        pool = cls(params)
        try:
            for i, row in enumerate(value):
                _check_verifier_value(row, f"pool[{i}]")
                account, caps, org, asn, region, reg_ms, rep_bp, rep_ms, active_ms = row
                pool._members[account] = Verifier(account, tuple(caps), org, asn, region,
                                                  reg_ms, rep_bp, rep_ms, active_ms)
        except (TypeError, ValueError, SchemaError) as exc:
            raise DecodeError("pool", f"not a verifier pool: {exc}") from None
        if pool.state_value() != value:
            raise DecodeError("pool", "verifier pool is not in canonical form")
        return pool

    def root(self) -> bytes:
        return hashlib.sha256(b"swarm-pool\x00" + cbor.encode(self.state_value())).digest()


# --- pool views: the verifiers of other buckets ------------------------------------


def pool_rows(pool: VerifierPool, locked: Callable[[bytes], int]) -> tuple[PoolRow, ...]:
    """A bucket's verifiers with their stake now, in account order."""
    return tuple(PoolRow(v.account, locked(v.account), v.capabilities, v.org, v.asn,
                         v.region, v.registered_ms, v.reputation_bp, v.reputation_ms,
                         v.active_ms) for v in pool.members())


def view_digest(rows: Iterable[PoolRow]) -> bytes | None:
    """What a chain entry's `pv` commits to; None for a bucket without verifiers."""
    values = [r.value() for r in rows]
    if not values:
        return None
    return hashlib.sha256(VIEW_DOMAIN + cbor.encode(values)).digest()


def party_of(account: bytes, row: PoolRow | None) -> Party:
    """An account as the relatedness rules see it: org and ASN when it is a verifier."""
    return Party(account) if row is None else Party(account, row.org, row.asn)


def draw(rows: Iterable[PoolRow], *, k: int, seed: bytes, now_ms: int,
         params: Mapping[str, int], exclude: Collection[bytes] = (),
         unrelated_to: Iterable[Party] = ()) -> tuple[tuple[bytes, ...], str]:
    """Seat a committee of `k` from `rows` (`VerifierPool.select`): within the caps if
    it can be, else with the region cap lifted, then the ASN's, then the org's. Returns
    the members in account order and the rule that filled it (`DRAW_RULES`), or no
    members and "none"."""
    members: dict[bytes, Verifier] = {}
    stakes: dict[bytes, int] = {}
    for r in rows:
        members[r.account] = Verifier(r.account, r.capabilities, r.org, r.asn, r.region,
                                      r.registered_ms, r.reputation_bp, r.reputation_ms,
                                      r.active_ms)
        stakes[r.account] = r.stake
    judged = list(unrelated_to)
    relaxed = dict(params)
    for rule, lift in zip(DRAW_RULES[:-1], (None, "region", "asn", "org"), strict=True):
        if lift is not None:
            relaxed[f"cap_{lift}_bp"] = BP
        pool = VerifierPool(relaxed)
        pool._members = members
        try:
            picked = pool.select(k, seed=seed, stakes=stakes, now_ms=now_ms,
                                 exclude=exclude, unrelated_to=judged)
        except CommitteeUnfillable:
            continue
        return tuple(sorted(picked)), rule
    return (), "none"
