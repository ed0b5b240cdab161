"""The ledger's operations and effects: what a bucket's Raft log carries, and its codec.

Owns the operation types (`Transfer`, `Escrow`, `Bounty`, `Release`, `Cancel`, `Stake`,
`Unstake`, `CompleteUnbonding`, `Slash`, `PostNeed`, `PostChallenge`), the task entries
(`TaskStep`, a signed lifecycle envelope; `Tick`, the leader's timer entry; `PoolView`,
another bucket's verifiers as its certified chain left them, and `PoolViews`, several at
once; `Draw`, a committee or challenge panel seated), the effects one bucket sends
another (`EffectBatch` of `Credit`s, `SlashOrder`s, `Fund`s, `Bond`s and `Repute`s,
acknowledged by `EffectAck`), the committed `LedgerEntry`, and their one canonical
DAG-CBOR encoding with its schema (`encode_body`/`decode_body`,
`encode_entry`/`decode_entry`, `entry_hash`). Decoding checks shape only (SchemaError
naming the field); the rules that may refuse an
operation are protocol/ledger.py's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import cbor
from .cid import Cid
from .envelope import ENVELOPE_BYTES_MAX, Envelope, decode_envelope
from .errors import RemoteProtocolError, SchemaError
from .output_schema import CITES_MAX, DENY_MAX, DENY_TEXT_MAX
from .schema import INT_MAX, Bytes, Enum, FieldType, Int, Link, List, Obj, OneOf, Text, obj
from .task import TASK_VERBS, ChallengeTerms, Terms, terms_extra, terms_with_extra
from .verbs import JOB_NAME, OUTPUT_SCHEMA, PROOF_TYPES

SLASH_REASONS: tuple[str, ...] = ("failed_challenge", "missed_heartbeat", "policy_violation")
TASK_CLASSES: tuple[str, ...] = ("simple", "complex", "critical")
MISSES_MAX = 10_000  # more missed heartbeats in one slash than this is a bug upstream
# An operation without a validity limit (the bucket's own operations, which its rules
# make at most once); an operation from a signed envelope always has one.
NO_EXPIRY = INT_MAX


@dataclass(frozen=True, slots=True)
class Share:
    """`amount` units to `account`, part of a payout or a split."""

    account: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Transfer:
    op_id: bytes
    sender: bytes
    recipient: bytes
    amount: int
    memo: str = ""
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.sender


@dataclass(frozen=True, slots=True)
class Escrow:
    """Move `amount` from the payer's balance into a held escrow, releasable after hold_ms."""

    op_id: bytes
    payer: bytes
    escrow_id: bytes
    amount: int
    hold_ms: int
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.payer


@dataclass(frozen=True, slots=True)
class Bounty:
    """A verification bounty: an escrow capped by task class, held for
    escrow_hold_factor x challenge_window_ms (P6 is enforced here as well as upstream)."""

    op_id: bytes
    payer: bytes
    escrow_id: bytes
    amount: int
    task_class: str
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.payer


@dataclass(frozen=True, slots=True)
class SlashOrder:
    """What to slash and why; also the effect a `Release` sends to a verifier's bucket.

    `challenger` and `honest` receive the slashed amount's challenger and honest shares
    (payout_*_bp); without a challenger all of it is burned. The caller has already
    removed related parties from both (see `payout.py`)."""

    account: bytes
    reason: str
    evidence: Cid
    misses: int = 1
    challenger: bytes | None = None
    honest: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Release:
    """Pay out an escrow: `shares` plus `burn` must equal its amount exactly; `slashes`
    are sent to the slashed accounts' buckets as effects (an upheld challenge)."""

    op_id: bytes
    payer: bytes
    escrow_id: bytes
    shares: tuple[Share, ...]
    burn: int = 0
    slashes: tuple[SlashOrder, ...] = ()
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.payer


@dataclass(frozen=True, slots=True)
class Cancel:
    op_id: bytes
    payer: bytes
    escrow_id: bytes
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.payer


@dataclass(frozen=True, slots=True)
class Stake:
    op_id: bytes
    account: bytes
    amount: int
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.account


@dataclass(frozen=True, slots=True)
class Unstake:
    op_id: bytes
    account: bytes
    amount: int
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.account


@dataclass(frozen=True, slots=True)
class CompleteUnbonding:
    op_id: bytes
    account: bytes
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.account


@dataclass(frozen=True, slots=True)
class Slash:
    """A slash ordered in the slashed account's own bucket (missed heartbeats, policy)."""

    op_id: bytes
    order: SlashOrder
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.order.account


@dataclass(frozen=True, slots=True)
class Credit:
    """Effect: add `amount` to `account`'s balance. `kind` says why, `source` is the
    account the credits came from and `memo` the transfer's memo (for the audit)."""

    account: bytes
    amount: int
    kind: str
    source: bytes = b""
    memo: str = ""


@dataclass(frozen=True, slots=True)
class Fund:
    """Effect: open the task `terms` describe in its NEED's bucket, holding the budget
    (already taken from the poster in the poster's bucket) as its escrow."""

    terms: Terms

    @property
    def amount(self) -> int:
        return self.terms.budget


@dataclass(frozen=True, slots=True)
class PostNeed:
    """A poster's NEED, ordered in the poster's bucket: the budget leaves the poster's
    balance and funds the task in the NEED's bucket (a `Fund` effect)."""

    op_id: bytes
    terms: Terms
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.terms.poster


@dataclass(frozen=True, slots=True)
class Bond:
    """Effect: open the challenge `terms` describe in its task's bucket, holding the
    bond (already taken from the challenger in the challenger's bucket)."""

    terms: ChallengeTerms

    @property
    def amount(self) -> int:
        return self.terms.bond


@dataclass(frozen=True, slots=True)
class PostChallenge:
    """A challenger's CHALLENGE, ordered in the challenger's bucket: the bond leaves
    its balance and opens the challenge in the task's bucket (a `Bond` effect).
    `size_bytes` is the proof's declared size."""

    op_id: bytes
    terms: ChallengeTerms
    size_bytes: int
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.terms.challenger


@dataclass(frozen=True, slots=True)
class TaskStep:
    """A signed lifecycle envelope (PROPOSE, CLAIM, ...) for its NEED's bucket."""

    op_id: bytes
    envelope: Envelope
    expires_ms: int = NO_EXPIRY

    @property
    def home(self) -> bytes:
        return self.envelope.sender


@dataclass(frozen=True, slots=True)
class Tick:
    """The leader's timer entry: it only moves the bucket's clock, so that the task
    timers due by its stamp fire."""


POOL_VIEW_ROWS_MAX = 256  # verifiers one bucket may hold (so its view fits one entry)
POOL_VIEWS_MAX = 16  # views in one `pool_views` entry
# How a committee was filled: within the org/ASN/region caps, or with caps lifted in
# this order; "none" when no committee could be drawn at all.
DRAW_RULES: tuple[str, ...] = ("caps", "region_cap_lifted", "asn_cap_lifted",
                               "org_cap_lifted", "none")


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One registered verifier as its own bucket holds it, with its stake (`locked`)
    there: what another bucket needs to draw it into a committee."""

    account: bytes
    stake: int
    capabilities: tuple[str, ...]
    org: str
    asn: int
    region: str
    registered_ms: int
    reputation_bp: int
    reputation_ms: int
    active_ms: int

    def value(self) -> list[Any]:
        return [self.account, self.stake, list(self.capabilities), self.org, self.asn,
                self.region, self.registered_ms, self.reputation_bp, self.reputation_ms,
                self.active_ms]


@dataclass(frozen=True, slots=True)
class PoolView:
    """Bucket `bucket`'s verifiers as its certified chain entry `index` left them (0: as
    genesis made them). The leader proposes it; every replica checked the certificate
    (or the genesis) before the view became this chain body."""

    bucket: int
    index: int
    rows: tuple[PoolRow, ...]


@dataclass(frozen=True, slots=True)
class PoolViews:
    """Several buckets' views in one entry (what a draw needs, at once): each applied as
    a `PoolView`, but one not newer than the view held is skipped. Together they hold at
    most `POOL_VIEW_ROWS_MAX` rows, as one view may."""

    views: tuple[PoolView, ...]


@dataclass(frozen=True, slots=True)
class Draw:
    """A committee drawn for the result committed at `commit_index`: `seed` is the hash
    of that COMMIT entry's certificate (decided after the commit, so its worker cannot
    choose it), `committee` what the draw gave on the replicas that ordered it, `rule`
    how it was filled (`DRAW_RULES`)."""

    need: Cid
    commit_index: int
    seed: bytes
    committee: tuple[bytes, ...]
    rule: str


@dataclass(frozen=True, slots=True)
class Repute:
    """Effect: a committee member's attestation was judged (`failed`: it was silent or
    on the losing side), or with `challenge` a challenger's challenge (`failed`:
    rejected); its bucket moves the account's reputation and recency."""

    account: bytes
    failed: bool
    challenge: bool = False

    @property
    def event(self) -> str:
        if self.challenge:
            return "rejected_challenge" if self.failed else "upheld_challenge"
        return "failed_attestation" if self.failed else "attested"


REPUTE_EVENTS = ("attested", "failed_attestation", "upheld_challenge", "rejected_challenge")
Effect = Credit | SlashOrder | Fund | Bond | Repute


@dataclass(frozen=True, slots=True)
class EffectBatch:
    """Effects of one source entry on one target bucket; applied there exactly once."""

    source_bucket: int
    source_index: int
    seq: int
    target_bucket: int
    source_op_id: bytes
    effects: tuple[Effect, ...]

    @property
    def key(self) -> tuple[int, int]:
        return (self.source_bucket, self.source_index)


@dataclass(frozen=True, slots=True)
class EffectAck:
    """In the source bucket's log: `target_bucket` has applied every batch from here with
    seq below `applied_seq`, so they leave the outbox. The shell proposes it after
    reading the target's certified state (`BucketLedger.applied_seq`)."""

    target_bucket: int
    applied_seq: int


Op = (Transfer | Escrow | Bounty | Release | Cancel | Stake | Unstake | CompleteUnbonding
      | Slash | PostNeed | PostChallenge)
Body = Op | EffectBatch | EffectAck | TaskStep | Tick | PoolView | PoolViews | Draw


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A committed log entry as the ledger sees it: index and leader timestamp from Raft."""

    index: int
    ts_ms: int
    body: Body


# --- canonical encoding -------------------------------------------------------------

_ID = Bytes(32)
_ACCOUNT = Bytes(32)
_AMOUNT = Int(min=1)
_SLASH = obj(
    {"account": _ACCOUNT, "reason": Enum(SLASH_REASONS), "evidence": Link(),
     "misses": Int(min=1, max=MISSES_MAX)},
    {"challenger": _ACCOUNT, "honest": List(_ACCOUNT, max_items=64, sorted_unique=True)},
)
_SHARE = obj({"account": _ACCOUNT, "amount": _AMOUNT})
_MEMO = Text(min_bytes=1, max_bytes=256)  # absent when empty: one encoding per value
CREDIT_KINDS = ("transfer", "payout", "slash_share", "bounty", "refund", "bond",
                "bond_share")
_CREDIT = obj({"account": _ACCOUNT, "amount": _AMOUNT, "kind": Enum(CREDIT_KINDS)},
              {"from": _ACCOUNT, "memo": _MEMO})


class _Row(FieldType):
    """A `PoolRow` as its array of fields."""

    FIELDS = (Bytes(32), Int(), List(Text(max_bytes=64, min_bytes=1), max_items=32,
                                     sorted_unique=True),
              Text(max_bytes=64, min_bytes=1), Int(max=2**32 - 1),
              Text(max_bytes=64, min_bytes=1), Int(), Int(max=10_000), Int(), Int())

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.FIELDS):
            raise SchemaError(path, f"a pool row is an array of {len(self.FIELDS)} fields")
        for i, (ftype, v) in enumerate(zip(self.FIELDS, value, strict=True)):
            ftype.check(v, f"{path}[{i}]")

    def describe(self) -> str:
        return "pool row"


# A task's terms as a NEED fixes them; `window` 0 is the genesis bid window.
_TERMS = obj({"need": Link(), "poster": _ACCOUNT, "budget": _AMOUNT,
              "class": Enum(TASK_CLASSES), "bounty": Int(min=0), "window": Int(min=0),
              "k": Int(min=1, max=64)},
             {"caps": List(Text(max_bytes=64, min_bytes=1), max_items=32, min_items=1,
                           sorted_unique=True),
              "kp": Int(min=1, max=64), "job": Link(), "input": Link(), "host": JOB_NAME,
              "check": JOB_NAME, "out": OUTPUT_SCHEMA,
              "cites": List(Link(), max_items=CITES_MAX, min_items=1),
              "deny": List(Text(max_bytes=DENY_TEXT_MAX, min_bytes=1), max_items=DENY_MAX,
                           min_items=1, sorted_unique=True)})


# A challenge as its bond carries it (the task is its NEED).
_CHALLENGE = obj({"id": Link(), "challenger": _ACCOUNT, "need": Link(), "commit": Link(),
                  "type": Enum(PROOF_TYPES), "evidence": Link(), "bond": _AMOUNT})


class _Wire(FieldType):
    """A signed envelope's bytes."""

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes) or not 0 < len(value) <= ENVELOPE_BYTES_MAX:
            raise SchemaError(path, f"must be an envelope's bytes (at most "
                                    f"{ENVELOPE_BYTES_MAX})")

    def describe(self) -> str:
        return "envelope bytes"

# Every operation's optional validity limit; absent means NO_EXPIRY.
_EXP = {"exp": Int(min=0, max=NO_EXPIRY - 1)}


def _op(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Obj:
    return obj(required, {**_EXP, **(optional or {})})


_OPS: dict[str, Obj] = {
    "transfer": _op({"id": _ID, "from": _ACCOUNT, "to": _ACCOUNT, "amount": _AMOUNT},
                    {"memo": _MEMO}),
    "escrow": _op({"id": _ID, "payer": _ACCOUNT, "escrow": _ID, "amount": _AMOUNT,
                   "hold_ms": Int(min=0)}),
    "bounty": _op({"id": _ID, "payer": _ACCOUNT, "escrow": _ID, "amount": _AMOUNT,
                   "class": Enum(TASK_CLASSES)}),
    "release": _op({"id": _ID, "payer": _ACCOUNT, "escrow": _ID,
                    "shares": List(_SHARE, max_items=256), "burn": Int(min=0),
                    "slashes": List(_SLASH, max_items=64)}),
    "cancel": _op({"id": _ID, "payer": _ACCOUNT, "escrow": _ID}),
    "stake": _op({"id": _ID, "account": _ACCOUNT, "amount": _AMOUNT}),
    "unstake": _op({"id": _ID, "account": _ACCOUNT, "amount": _AMOUNT}),
    "complete_unbonding": _op({"id": _ID, "account": _ACCOUNT}),
    "slash": _op({"id": _ID, "slash": _SLASH}),
    "post_need": _op({"id": _ID, "terms": _TERMS}),
    "post_challenge": _op({"id": _ID, "challenge": _CHALLENGE, "size": Int(min=0)}),
    "task": _op({"id": _ID, "env": _Wire()}),
    "tick": obj({}),
    "pool_view": obj({"bucket": Int(max=65535), "index": Int(),
                      "rows": List(_Row(), max_items=POOL_VIEW_ROWS_MAX)}),
    "pool_views": obj({"views": List(obj({"bucket": Int(max=65535), "index": Int(),
                                          "rows": List(_Row(), max_items=POOL_VIEW_ROWS_MAX)}),
                                     max_items=POOL_VIEWS_MAX, min_items=1)}),
    "draw": obj({"need": Link(), "commit": Int(min=1), "seed": Bytes(32),
                 "committee": List(_ACCOUNT, max_items=64, sorted_unique=True),
                 "rule": Enum(DRAW_RULES)}),
    "effects": obj({"source_bucket": Int(max=65535), "source_index": Int(min=1),
                    "seq": Int(), "target_bucket": Int(max=65535), "source_op": _ID,
                    "credits": List(_CREDIT, max_items=512),
                    "slashes": List(_SLASH, max_items=64)},
                   # absent when empty, so batches without them encode as before
                   {"funds": List(_TERMS, max_items=64, min_items=1),
                    "bonds": List(_CHALLENGE, max_items=64, min_items=1),
                    "reputation": List(obj({"account": _ACCOUNT,
                                            "event": Enum(REPUTE_EVENTS)}),
                                       max_items=64, min_items=1)}),
    "effect_ack": obj({"target_bucket": Int(max=65535), "applied_seq": Int()}),
}
BODY_SCHEMA = OneOf("op", {
    name: Obj({**o.fields, "op": Enum((name,))}, o.required | {"op"}) for name, o in _OPS.items()
})
KIND_OF: dict[type, str] = {  # a body's "op" in the encoding
    Transfer: "transfer", Escrow: "escrow", Bounty: "bounty", Release: "release",
    Cancel: "cancel", Stake: "stake", Unstake: "unstake",
    CompleteUnbonding: "complete_unbonding", Slash: "slash", EffectBatch: "effects",
    EffectAck: "effect_ack", PostNeed: "post_need", PostChallenge: "post_challenge",
    TaskStep: "task", Tick: "tick",
    PoolView: "pool_view", PoolViews: "pool_views", Draw: "draw",
}
ENTRY_SCHEMA = obj({"index": Int(min=1), "ts_ms": Int(min=0), "body": BODY_SCHEMA})


def _slash_value(s: SlashOrder) -> dict[str, Any]:
    v: dict[str, Any] = {"account": s.account, "reason": s.reason, "evidence": s.evidence,
                         "misses": s.misses}
    if s.challenger is not None:
        v["challenger"] = s.challenger
    if s.honest:
        v["honest"] = list(s.honest)
    return v


def _slash_from(v: Mapping[str, Any]) -> SlashOrder:
    return SlashOrder(v["account"], v["reason"], v["evidence"], v["misses"],
                      v.get("challenger"), tuple(v.get("honest", ())))


def _terms_value(t: Terms) -> dict[str, Any]:
    v: dict[str, Any] = {"need": t.need, "poster": t.poster, "budget": t.budget,
                         "class": t.task_class, "bounty": t.verify_bounty,
                         "window": t.bid_window_ms, "k": t.k_result}
    if t.capabilities:
        v["caps"] = list(t.capabilities)
    return {**v, **terms_extra(t)}


def _terms_from(v: Mapping[str, Any]) -> Terms:
    return terms_with_extra((v["need"], v["poster"], v["budget"], v["class"], v["bounty"],
                             v["window"], v["k"], tuple(v.get("caps", ()))), v)


def _challenge_value(t: ChallengeTerms) -> dict[str, Any]:
    return {"id": t.challenge_id, "challenger": t.challenger, "need": t.need,
            "commit": t.commit_id, "type": t.proof_type, "evidence": t.evidence,
            "bond": t.bond}


def _challenge_from(v: Mapping[str, Any]) -> ChallengeTerms:
    return ChallengeTerms(v["id"], v["challenger"], v["need"], v["commit"], v["type"],
                          v["evidence"], v["bond"])


def body_value(body: Body) -> dict[str, Any]:
    """The DAG-CBOR data-model value of an operation or effect batch."""
    value = _body_value(body)
    expires = getattr(body, "expires_ms", NO_EXPIRY)
    if expires != NO_EXPIRY:
        value["exp"] = expires
    return value


def _credit_value(e: Credit) -> dict[str, Any]:
    v: dict[str, Any] = {"account": e.account, "amount": e.amount, "kind": e.kind}
    if e.source:
        v["from"] = e.source
    if e.memo:
        v["memo"] = e.memo
    return v


def _body_value(body: Body) -> dict[str, Any]:
    match body:
        case Transfer():
            v = {"op": "transfer", "id": body.op_id, "from": body.sender,
                 "to": body.recipient, "amount": body.amount}
            if body.memo:
                v["memo"] = body.memo
            return v
        case Escrow():
            return {"op": "escrow", "id": body.op_id, "payer": body.payer,
                    "escrow": body.escrow_id, "amount": body.amount, "hold_ms": body.hold_ms}
        case Bounty():
            return {"op": "bounty", "id": body.op_id, "payer": body.payer,
                    "escrow": body.escrow_id, "amount": body.amount, "class": body.task_class}
        case Release():
            return {"op": "release", "id": body.op_id, "payer": body.payer,
                    "escrow": body.escrow_id,
                    "shares": [{"account": s.account, "amount": s.amount} for s in body.shares],
                    "burn": body.burn, "slashes": [_slash_value(s) for s in body.slashes]}
        case Cancel():
            return {"op": "cancel", "id": body.op_id, "payer": body.payer,
                    "escrow": body.escrow_id}
        case Stake() | Unstake():
            return {"op": "stake" if isinstance(body, Stake) else "unstake", "id": body.op_id,
                    "account": body.account, "amount": body.amount}
        case CompleteUnbonding():
            return {"op": "complete_unbonding", "id": body.op_id, "account": body.account}
        case Slash():
            return {"op": "slash", "id": body.op_id, "slash": _slash_value(body.order)}
        case PostNeed():
            return {"op": "post_need", "id": body.op_id, "terms": _terms_value(body.terms)}
        case PostChallenge():
            return {"op": "post_challenge", "id": body.op_id,
                    "challenge": _challenge_value(body.terms), "size": body.size_bytes}
        case TaskStep():
            return {"op": "task", "id": body.op_id, "env": body.envelope.wire}
        case Tick():
            return {"op": "tick"}
        case PoolView():
            return {"op": "pool_view", "bucket": body.bucket, "index": body.index,
                    "rows": [r.value() for r in body.rows]}
        case PoolViews():
            return {"op": "pool_views", "views": [
                {"bucket": v.bucket, "index": v.index, "rows": [r.value() for r in v.rows]}
                for v in body.views]}
        case Draw():
            return {"op": "draw", "need": body.need, "commit": body.commit_index,
                    "seed": body.seed, "committee": list(body.committee), "rule": body.rule}
        case EffectBatch():
            v = {"op": "effects", "source_bucket": body.source_bucket,
                 "source_index": body.source_index, "seq": body.seq,
                 "target_bucket": body.target_bucket, "source_op": body.source_op_id,
                 "credits": [_credit_value(e) for e in body.effects
                             if isinstance(e, Credit)],
                 "slashes": [_slash_value(e) for e in body.effects
                             if isinstance(e, SlashOrder)]}
            funds = [_terms_value(e.terms) for e in body.effects if isinstance(e, Fund)]
            if funds:
                v["funds"] = funds
            bonds = [_challenge_value(e.terms) for e in body.effects if isinstance(e, Bond)]
            if bonds:
                v["bonds"] = bonds
            reps = [{"account": e.account, "event": e.event}
                    for e in body.effects if isinstance(e, Repute)]
            if reps:
                v["reputation"] = reps
            return v
        case EffectAck():
            return {"op": "effect_ack", "target_bucket": body.target_bucket,
                    "applied_seq": body.applied_seq}
    raise AssertionError(f"not a ledger body: {body!r}")


def body_from_value(v: Any, path: str = "body") -> Body:
    """Validate a decoded value and build the operation; raises SchemaError naming the field."""
    BODY_SCHEMA.check(v, path)
    kind = v["op"]
    exp = v.get("exp", NO_EXPIRY)
    if kind == "transfer":
        return Transfer(v["id"], v["from"], v["to"], v["amount"], v.get("memo", ""), exp)
    if kind == "escrow":
        return Escrow(v["id"], v["payer"], v["escrow"], v["amount"], v["hold_ms"], exp)
    if kind == "bounty":
        return Bounty(v["id"], v["payer"], v["escrow"], v["amount"], v["class"], exp)
    if kind == "release":
        return Release(v["id"], v["payer"], v["escrow"],
                       tuple(Share(s["account"], s["amount"]) for s in v["shares"]),
                       v["burn"], tuple(_slash_from(s) for s in v["slashes"]), exp)
    if kind == "cancel":
        return Cancel(v["id"], v["payer"], v["escrow"], exp)
    if kind == "stake":
        return Stake(v["id"], v["account"], v["amount"], exp)
    if kind == "unstake":
        return Unstake(v["id"], v["account"], v["amount"], exp)
    if kind == "complete_unbonding":
        return CompleteUnbonding(v["id"], v["account"], exp)
    if kind == "slash":
        return Slash(v["id"], _slash_from(v["slash"]), exp)
    if kind == "effect_ack":
        return EffectAck(v["target_bucket"], v["applied_seq"])
    if kind == "post_need":
        return PostNeed(v["id"], _terms_from(v["terms"]), exp)
    if kind == "post_challenge":
        return PostChallenge(v["id"], _challenge_from(v["challenge"]), v["size"], exp)
    if kind == "tick":
        return Tick()
    if kind == "pool_view":
        return _pool_view(v, path)
    if kind == "pool_views":
        views = tuple(_pool_view(x, f"{path}.views[{i}]") for i, x in enumerate(v["views"]))
        if [x.bucket for x in views] != sorted({x.bucket for x in views}):
            raise SchemaError(f"{path}.views", "views are sorted by bucket, once each")
        if sum(len(x.rows) for x in views) > POOL_VIEW_ROWS_MAX:
            raise SchemaError(f"{path}.views", f"at most {POOL_VIEW_ROWS_MAX} rows in all")
        return PoolViews(views)
    if kind == "draw":
        return Draw(v["need"], v["commit"], v["seed"], tuple(v["committee"]), v["rule"])
    if kind == "task":
        try:
            env = decode_envelope(v["env"])
        except RemoteProtocolError as exc:
            raise SchemaError(f"{path}.env.{exc.field}", exc.reason) from None
        if env.kind not in TASK_VERBS:
            raise SchemaError(f"{path}.env.kind", f"{env.kind} is not a lifecycle verb")
        return TaskStep(v["id"], env, exp)
    # Credits, slashes, funds, bonds, then reputation: the order `_emit` builds them in.
    effects: list[Effect] = [Credit(c["account"], c["amount"], c["kind"], c.get("from", b""),
                                    c.get("memo", "")) for c in v["credits"]]
    effects += [_slash_from(s) for s in v["slashes"]]
    effects += [Fund(_terms_from(t)) for t in v.get("funds", ())]
    effects += [Bond(_challenge_from(b)) for b in v.get("bonds", ())]
    effects += [Repute(r["account"], r["event"] in ("failed_attestation",
                                                    "rejected_challenge"),
                       r["event"].endswith("challenge"))
                for r in v.get("reputation", ())]
    return EffectBatch(v["source_bucket"], v["source_index"], v["seq"], v["target_bucket"],
                       v["source_op"], tuple(effects))


def encode_body(body: Body) -> bytes:
    return cbor.encode(body_value(body))


def decode_body(data: bytes) -> Body:
    return body_from_value(cbor.decode(data))


def encode_entry(entry: LedgerEntry) -> bytes:
    return cbor.encode({"index": entry.index, "ts_ms": entry.ts_ms,
                        "body": body_value(entry.body)})


def decode_entry(data: bytes) -> LedgerEntry:
    v = cbor.decode(data)
    ENTRY_SCHEMA.check(v, "entry")
    return LedgerEntry(v["index"], v["ts_ms"], body_from_value(v["body"], "entry.body"))


def entry_hash(entry: LedgerEntry) -> bytes:
    """sha256 of the canonical entry: what committees are seeded from."""
    return hashlib.sha256(encode_entry(entry)).digest()


def _pool_view(v: Mapping[str, Any], path: str) -> PoolView:
    rows = tuple(PoolRow(r[0], r[1], tuple(r[2]), *r[3:]) for r in v["rows"])
    if [r.account for r in rows] != sorted({r.account for r in rows}):
        raise SchemaError(f"{path}.rows", "rows are sorted by account, once each")
    return PoolView(v["bucket"], v["index"], rows)
