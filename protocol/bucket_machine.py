"""One bucket's replicated state machine: DECIDE, the credit ledger and the verifier pool.

Owns how a bucket interprets its committed Raft entries, and nothing about Raft itself:
`BucketMachine.apply(index, term, data)` is called with every committed NORMAL entry in
log order and answers what it did. Every replica calls it with the same entries, so
every replica holds the same state and gives every caller the same answer.

Entry data
----------
A Raft entry's `data` is a canonical DAG-CBOR map tagged by ``"op"``, stamped by the
bucket's leader with its clock (``"ts"``, ms) when it proposed it:

====================  =====================================  =========================
``op``                fields                                 applied by
====================  =====================================  =========================
``decide``            need, proposal, k_plan, epoch, ts      `DecideMachine`
``ledger``            env (a signed envelope's wire), ts     verified here, then the
                                                             ledger, the pool or the
                                                             task book (a NEED, a
                                                             lifecycle verb)
``tick``              ts                                     fires the task timers
``effects``           batch (an `EffectBatch` value),        the ledger, once the proof
                      proof, ts                              checks
``effect_ack``        ack (an `EffectAck` value), proof, ts  the ledger, likewise
``pool_view``         bucket, rows, proof (absent: genesis)  the ledger's pool views,
                                                             once the proof checks
``draw``              need, proof (the COMMIT's              seats the committee the
                      certificate), ts                       draw gives (`committee`)
====================  =====================================  =========================

Anything else (the leader's empty no-op, garbage) is skipped alike on every replica.

A ``ledger`` entry is checked when it is applied, not trusted because a leader proposed
it: the envelope must decode, be for this swarm, carry a valid signature, and be one of
the verbs a bucket orders (`SUBMITTED_KINDS`: the ledger verbs, NEED and the lifecycle
verbs). It then becomes the ledger operation, pool operation, `PostNeed` or `TaskStep`
its verb names, with the envelope's signer as the account and
`ledger_op_id(signer, payload.op_id, payload.valid_until_ms)` as the operation id (for
a NEED or lifecycle verb, the envelope's own id: `op_id_of`), so a retry that reuses the
client's op id and validity limit is the same operation. An
envelope that fails is a rejection recorded in `rejections` that changes nothing; in
particular its id is *not* decided, or anyone could block a real envelope by
submitting a copy with a broken signature.

Facts from other buckets are authenticated
------------------------------------------
An ``effects`` entry is applied only with proof that its source bucket committed the
batch: the source's certified chain entry (a quorum of the source's replicas by the
genesis placement signed it) whose `out` lists the batch's (target, seq, digest). An
``effect_ack`` entry likewise carries the target's certified chain entry that applied
(or found already applied) one of our batches, whose `in` says how many of our batches
the target has applied in order. Every replica checks the proof when it applies the
entry; one that does not check is refused (`unauthenticated`), changes nothing and
decides nothing, so a rogue validator can neither credit an account nor drop a batch
from an outbox. The rule is the same for every body a chain entry can carry, so any
entry that emits effects (transfers, payouts, slashes, ...) is covered.

A ``pool_view`` entry brings another bucket's verifiers (with their stakes), proven by
that bucket's certified chain entry whose `pv` is their `view_digest`, or equal to that
bucket's verifiers at genesis. A ``draw`` entry carries the certificate of this bucket's
own COMMIT entry: its signatures seed the draw, and every replica draws the committee
from its own pool and the views it holds, so the leader proposes when, never who.

All or nothing
--------------
Applying an entry either completes or leaves no trace: the ledger journals every write
(`ledger._Tx`) and the pool one member, and an unexpected exception (a bug) rolls the
entry back and records the same `internal` rejection on every replica. Should the
rollback itself fail, or the error be one that need not repeat alike on every replica
(out of memory, recursion), the machine raises `BucketHalted`: the shell stops that
bucket, loudly, and the node goes on.

Time
----
One clock per bucket: the largest ``ts`` of any entry so far (a leader with a slow clock
cannot move the bucket's time back). Ledger entries are applied at that clock.

The chain
---------
Entries that change the ledger part (ledger and pool operations, effect batches and
acknowledgements, pool views and draws) form a chain: each becomes a
`ChainEntry(index, prev, ts_ms, body, out, applied_below, pv)` where `prev` is the
index of the chain entry before it in this bucket (0 for the first), `out` the
(target, seq, digest) of each batch it emitted, for an effect batch `applied_below`
the source's batches applied here in order after it, and `pv` the `view_digest` of
the bucket's verifiers after it (absent when it has none). Replicas certify chain
entries (`ChainEntry.digest`); a node that does not replicate the bucket rebuilds the
same `LedgerPart` from certified chain entries alone, in order
(`LedgerPart.apply_chain`), and knows it missed one when `prev` is not the last it
applied. DECIDE entries are not in the chain (their certificates travel in DECIDE
envelopes).
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import cbor, certificate
from .buckets import bucket_of
from .cid import Cid
from .committee import (
    POOL_OP_SCHEMA,
    PoolError,
    PoolFull,
    PoolLeave,
    PoolOp,
    PoolRegister,
    ReputationEvent,
    VerifierPool,
    decayed,
    draw,
    party_of,
    pool_op_from_value,
    pool_op_value,
    pool_rows,
    view_digest,
)
from .decide import DecideMachine, Decision
from .envelope import ENVELOPE_BYTES_MAX, Envelope, decode_envelope
from .errors import (
    DecodeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SchemaError,
)
from .genesis import Genesis
from .ledger import (
    SNAPSHOT_LIMITS,
    AccountView,
    Applied,
    AuditRecord,
    BucketLedger,
    Change,
    LedgerError,
    OutOfOrder,
    WrongBucket,
)
from .ledger_ops import (
    BODY_SCHEMA,
    POOL_VIEW_ROWS_MAX,
    POOL_VIEWS_MAX,
    Body,
    CompleteUnbonding,
    Draw,
    EffectAck,
    EffectBatch,
    LedgerEntry,
    Op,
    PoolRow,
    PoolView,
    PoolViews,
    PostChallenge,
    PostNeed,
    Repute,
    SlashOrder,
    Stake,
    TaskStep,
    Tick,
    Transfer,
    Unstake,
    body_from_value,
    body_value,
    encode_body,
)
from .payout import Party, related
from .placement import Placement
from .schema import INT_MAX, Bytes, Enum, FieldType, Int, Link, List, OneOf, obj
from .task import (
    ATTESTED,
    COMMITTED,
    TASK_VERBS,
    ChallengeSlash,
    ChallengeTerms,
    Step,
    Task,
    Terms,
    challenge_barred,
    need_of,
    panel_size,
)
from .verbs import LEDGER_KINDS

LEDGER_VERBS: tuple[str, ...] = LEDGER_KINDS
# Every verb a bucket orders from a signed envelope.
SUBMITTED_KINDS: tuple[str, ...] = (*LEDGER_KINDS, "NEED", "CHALLENGE", *TASK_VERBS)
CHAIN_DOMAIN = b"can-swarm/ledger-chain/v1\x00"
PART_DOMAIN = b"can-swarm/ledger-part/v1\x00"
BATCH_DOMAIN = b"can-swarm/effect-batch/v1\x00"
OP_DOMAIN = b"can-swarm/ledger-op/v1\x00"
SEED_DOMAIN = b"can-swarm/committee-seed/v1\x00"
OUTCOMES_MAX = 65_536  # answers kept for callers that retry (not state: rebuilt by applying)
REJECTIONS_MAX = 1024
# An entry holds one envelope, or a batch with the chain entry that proves it.
ENTRY_LIMITS = cbor.Limits(size_bytes_max=256 * 1024, depth_max=10,
                           items_max=16_384)

ChainBody = Body | PoolOp
_CHAIN_BODY = OneOf("op", {**BODY_SCHEMA.variants, **POOL_OP_SCHEMA.variants})
OUT_MAX = 256  # batches one entry may emit (one per target bucket)
_OUT = obj({"to": Int(max=65535), "seq": Int(), "digest": Bytes(32)})
_CHAIN_SCHEMA = obj({"index": Int(min=1), "prev": Int(min=0), "ts": Int(min=0),
                     "body": _CHAIN_BODY},
                    {"out": List(_OUT, max_items=OUT_MAX, min_items=1), "in": Int(),
                     "pv": Bytes(32)})


# --- commands: what a node submits and the leader stamps ---------------------------

class _Blob(FieldType):
    """Bytes of any length up to `length_max`."""

    def __init__(self, length_max: int) -> None:
        self.length_max = length_max

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes) or len(value) > self.length_max:
            raise SchemaError(path, f"must be bytes of at most {self.length_max}")

    def describe(self) -> str:
        return f"bytes[..{self.length_max}]"


# A chain entry travels inside commands as the proof of a fact from another bucket.
CHAIN_ENTRY_BYTES_MAX = 64 * 1024
PROOF_SCHEMA = obj({
    "index": Int(min=1), "term": Int(min=1), "entry": _Blob(CHAIN_ENTRY_BYTES_MAX),
    "sigs": List(obj({"signer": Bytes(32), "sig": Bytes(64)}), max_items=64, min_items=1)})
_COMMAND_FIELDS: dict[str, dict[str, FieldType]] = {
    "ledger": {"env": _Blob(ENVELOPE_BYTES_MAX)},
    "tick": {},
    "effects": {"batch": BODY_SCHEMA.variants["effects"], "proof": PROOF_SCHEMA},
    "effect_ack": {"ack": BODY_SCHEMA.variants["effect_ack"], "proof": PROOF_SCHEMA},
    # Another bucket's verifiers, proven by its certified chain entry (no proof: as
    # genesis made them).
    "pool_view": {"bucket": Int(max=65535),
                  "rows": BODY_SCHEMA.variants["pool_view"].fields["rows"]},
    # Several at once, each as a `pool_view` command holds it.
    "pool_views": {"views": List(obj({"bucket": Int(max=65535),
                                      "rows": BODY_SCHEMA.variants["pool_view"].fields["rows"]},
                                     {"proof": PROOF_SCHEMA}),
                                 max_items=POOL_VIEWS_MAX, min_items=1)},
    # Seat the committee of the result this bucket committed at the proof's entry.
    "draw": {"need": Link(), "proof": PROOF_SCHEMA},
}
_COMMAND_OPTIONAL: dict[str, dict[str, FieldType]] = {"pool_view": {"proof": PROOF_SCHEMA}}
COMMAND_SCHEMA = OneOf("op", {op: obj({"op": Enum((op,)), **fields},
                                      _COMMAND_OPTIONAL.get(op))
                              for op, fields in _COMMAND_FIELDS.items()})
ENTRY_SCHEMA = OneOf("op", {op: obj({"op": Enum((op,)), **fields, "ts": Int()},
                                    _COMMAND_OPTIONAL.get(op))
                            for op, fields in _COMMAND_FIELDS.items()})


@dataclass(frozen=True, slots=True)
class Command:
    """A ledger command for one bucket, not yet stamped: `key` identifies it for
    idempotency (a command with the same key is applied once; retries get the first
    answer)."""

    bucket: int
    key: bytes
    value: Mapping[str, Any]

    def encode(self) -> bytes:
        """The unstamped form that travels to the leader (`SubmitRequest`)."""
        return cbor.encode(dict(self.value))

    def stamp(self, ts_ms: int) -> bytes:
        """The Raft entry's data: the command with the leader's clock."""
        return cbor.encode({**self.value, "ts": ts_ms})


# NEED and the lifecycle verbs carry no client op id or validity limit: the operation
# is the envelope itself, valid within half the operation window either side of the
# envelope's own `ts` (so a sender's clock a little ahead of the bucket's is fine, and
# an envelope from long ago, or dated far ahead, is refused).
ENVELOPE_OP_DOMAIN = b"can-swarm/envelope-op/v1\x00"
MARKET_KINDS = ("NEED", "CHALLENGE", *TASK_VERBS)


def ledger_op_id(sender: bytes, client_op_id: bytes, valid_until_ms: int) -> bytes:
    """The operation a ledger envelope asks for: its signer's, with the client's op id
    and validity limit. Any envelope of the same signer carrying both is the same
    operation (a retry), applied at most once."""
    return hashlib.sha256(OP_DOMAIN + sender + client_op_id
                          + valid_until_ms.to_bytes(8, "big")).digest()


def op_id_of(envelope: Envelope) -> bytes:
    """A ledger envelope's operation id (`ledger_op_id`); a NEED's or a lifecycle
    envelope's is its envelope id's digest."""
    if envelope.kind in MARKET_KINDS:
        return hashlib.sha256(ENVELOPE_OP_DOMAIN + envelope.id.raw).digest()
    p = envelope.payload
    return ledger_op_id(envelope.sender, p["op_id"], p["valid_until_ms"])


def bucket_for(envelope: Envelope, bucket_count: int) -> int:
    """The bucket that orders a submitted envelope: a lifecycle verb's NEED's bucket,
    else the signer's (a ledger verb, a NEED, a CHALLENGE: what debits the signer).
    Raises TaskError for a lifecycle envelope that names no NEED."""
    if envelope.kind in TASK_VERBS:
        return bucket_of(need_of(envelope).raw, bucket_count)
    return bucket_of(envelope.sender, bucket_count)


def expiry_of(envelope: Envelope, params: Mapping[str, int]) -> int:
    """The validity limit of the operation an envelope asks for (bucket time)."""
    if envelope.kind in MARKET_KINDS:
        return envelope.ts + params["op_validity_ms_max"] // 2
    limit: int = envelope.payload["valid_until_ms"]
    return limit


def envelope_key(wire: bytes) -> bytes:
    """The command key of a submitted envelope: its operation id when it parses as a
    ledger envelope (signature not checked here), else the digest of its bytes, under
    which its rejection is remembered."""
    try:
        env = decode_envelope(wire, verify=False)
    except RemoteProtocolError:
        env = None
    if env is None or env.kind not in SUBMITTED_KINDS:
        return hashlib.sha256(b"not-an-op\x00" + bytes(wire)).digest()
    return op_id_of(env)


# A command's key: an envelope's operation id (or digest) is 32 bytes; an effect
# batch's and an acknowledgement's is "fx" or "ak", a bucket (2 bytes) and a seq (8).
ENVELOPE_KEY_BYTES = 32
SEQ_KEY_BYTES = 2 + 2 + 8


def command_key(value: Mapping[str, Any]) -> bytes:
    op = value["op"]
    if op == "ledger":
        return envelope_key(value["env"])
    if op == "tick":
        return b"tk\x00\x00" + int(value.get("ts", 0)).to_bytes(8, "big")
    if op == "pool_view":
        index = value["proof"]["index"] if "proof" in value else 0
        bucket: int = value["bucket"]
        return b"pv" + bucket.to_bytes(2, "big") + int(index).to_bytes(8, "big")
    if op == "pool_views":
        # The views' (bucket, proven index) pairs, hashed: 10 bytes keep the key the
        # size of the others (a retry of the same views is the same command).
        pairs = b"".join(int(v["bucket"]).to_bytes(2, "big")
                         + int(v["proof"]["index"] if "proof" in v else 0).to_bytes(8, "big")
                         for v in value["views"])
        return b"pw" + hashlib.sha256(pairs).digest()[:10]
    if op == "draw":
        return b"dr\x00\x00" + int(value["proof"]["index"]).to_bytes(8, "big")
    if op == "effects":
        b = value["batch"]
        source: int = b["source_bucket"]
        seq: int = b["seq"]
        return b"fx" + source.to_bytes(2, "big") + seq.to_bytes(8, "big")
    a = value["ack"]
    target: int = a["target_bucket"]
    applied: int = a["applied_seq"]
    return b"ak" + target.to_bytes(2, "big") + applied.to_bytes(8, "big")


def ledger_command(bucket: int, wire: bytes) -> Command:
    """Submit a signed envelope to `bucket`: a ledger verb or a NEED to the signer's
    bucket, a lifecycle verb to its NEED's."""
    value = {"op": "ledger", "env": bytes(wire)}
    return Command(bucket, command_key(value), value)


def tick_command(bucket: int) -> Command:
    """The leader's timer entry for `bucket` (stamped when proposed)."""
    value = {"op": "tick"}
    return Command(bucket, b"tk\x00\x00" + bytes(8), value)


# -- submission by a node that is not a validator ----------------------------------------
#
# Such a node has no Raft stream, so it hands its signed ledger envelope to a validator,
# which submits it for it and answers the outcome (node/ledger_service.py carries it).
# The envelope's signature is the account holder's: the validator can relay it, not
# forge or alter it. One request and one answer per stream, each a canonical CBOR map.

LEDGER_SUBMISSION_BYTES_MAX = 70 * 1024  # an envelope (at most 64 KiB) and a few fields
LEDGER_SUBMISSION_TIMEOUT_MS_MAX = 60_000


def encode_ledger_submission(bucket: int, wire: bytes, timeout_ms: int) -> bytes:
    return cbor.encode({"bucket": bucket, "env": bytes(wire), "timeout_ms": timeout_ms})


def decode_ledger_submission(data: bytes, bucket_count: int) -> tuple[int, bytes, int]:
    """(bucket, envelope wire, how long the asker waits in ms); RemoteProtocolError if
    malformed. The envelope itself is checked where every ledger command is: at the
    bucket leader's door and when applied."""
    if len(data) > LEDGER_SUBMISSION_BYTES_MAX:
        raise RemoteProtocolError("submission", f"over {LEDGER_SUBMISSION_BYTES_MAX} bytes")
    v = cbor.decode(data)
    if not isinstance(v, dict) or set(v) != {"bucket", "env", "timeout_ms"}:
        raise RemoteProtocolError("submission", "must be a map of bucket, env, timeout_ms")
    bucket, wire, timeout = v["bucket"], v["env"], v["timeout_ms"]
    if not isinstance(bucket, int) or isinstance(bucket, bool) or not 0 <= bucket < bucket_count:
        raise RemoteProtocolError("submission.bucket", f"must be 0..{bucket_count - 1}")
    if not isinstance(wire, bytes) or not wire:
        raise RemoteProtocolError("submission.env", "must be the signed envelope's bytes")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not (
            1 <= timeout <= LEDGER_SUBMISSION_TIMEOUT_MS_MAX):
        raise RemoteProtocolError("submission.timeout_ms",
                                  f"must be an integer in [1, {LEDGER_SUBMISSION_TIMEOUT_MS_MAX}]")
    return bucket, wire, timeout


def encode_ledger_answer(outcome: LedgerOutcome | None, code: str = "",
                         reason: str = "") -> bytes:
    """The applied outcome, or why there is none (`code`, `reason`; at most 200 bytes)."""
    if outcome is not None:
        return cbor.encode({"ok": True, "outcome": outcome.to_value()})
    return cbor.encode({"ok": False, "code": code[:64],
                        "reason": reason.encode()[:200].decode(errors="ignore")})


def decode_ledger_answer(data: bytes) -> LedgerOutcome | tuple[str, str]:
    """The outcome, or (code, reason) when the validator had none."""
    if len(data) > LEDGER_SUBMISSION_BYTES_MAX:
        raise RemoteProtocolError("answer", f"over {LEDGER_SUBMISSION_BYTES_MAX} bytes")
    v = cbor.decode(data)
    if isinstance(v, dict) and v.get("ok") is True and set(v) == {"ok", "outcome"}:
        return LedgerOutcome.from_value(v["outcome"])
    if isinstance(v, dict) and v.get("ok") is False and set(v) == {"ok", "code", "reason"} \
            and isinstance(v["code"], str) and isinstance(v["reason"], str):
        return v["code"], v["reason"]
    raise RemoteProtocolError("answer", "not a ledger submission answer")


@dataclass(frozen=True, slots=True)
class Proof:
    """A certified chain entry of `bucket`: a quorum of its replicas signed (swarm,
    bucket, index, term, chain_digest(entry))."""

    bucket: int
    index: int
    term: int
    entry: bytes
    sigs: tuple[tuple[bytes, bytes], ...]

    def value(self) -> dict[str, Any]:
        return {"index": self.index, "term": self.term, "entry": self.entry,
                "sigs": [{"signer": a, "sig": b} for a, b in sorted(self.sigs)]}


def effects_command(batch: EffectBatch, proof: Proof) -> Command:
    """Deliver an effect batch to its target bucket, with the source's certified chain
    entry that emitted it."""
    value = {"op": "effects", "batch": body_value(batch), "proof": proof.value()}
    return Command(batch.target_bucket, command_key(value), value)


def pool_view_command(target_bucket: int, source_bucket: int, rows: Iterable[PoolRow],
                      proof: Proof | None) -> Command:
    """Tell `target_bucket` what `source_bucket`'s verifiers are, as the certified chain
    entry `proof` left them (None: as genesis made them)."""
    value: dict[str, Any] = {"op": "pool_view", "bucket": source_bucket,
                             "rows": [r.value() for r in rows]}
    if proof is not None:
        value["proof"] = proof.value()
    return Command(target_bucket, command_key(value), value)


def pool_views_command(target_bucket: int,
                       views: Iterable[tuple[int, Iterable[PoolRow], Proof | None]]
                       ) -> Command:
    """`pool_view_command` for several source buckets at once: one entry. The views go
    in bucket order; together at most `POOL_VIEW_ROWS_MAX` rows."""
    items = []
    for source, rows, proof in sorted(views, key=lambda v: v[0]):
        item: dict[str, Any] = {"bucket": source, "rows": [r.value() for r in rows]}
        if proof is not None:
            item["proof"] = proof.value()
        items.append(item)
    value = {"op": "pool_views", "views": items}
    return Command(target_bucket, command_key(value), value)


def draw_command(bucket: int, need: Cid, proof: Proof) -> Command:
    """Ask `bucket` to seat the committee of the result its certified chain entry
    `proof` committed (the certificate seeds the draw)."""
    value = {"op": "draw", "need": need, "proof": proof.value()}
    return Command(bucket, command_key(value), value)


def draw_seed(sigs: Iterable[Mapping[str, bytes]]) -> bytes:
    """A committee's seed: the hash of a quorum's signatures over its COMMIT entry, in
    signer order. Ed25519 signatures are deterministic but unknown before the replicas
    sign, so neither the worker (who wrote the COMMIT) nor anyone else chose it."""
    return hashlib.sha256(SEED_DOMAIN + b"".join(
        s["sig"] for s in sorted(sigs, key=lambda s: s["signer"]))).digest()


def ack_command(source_bucket: int, target_bucket: int, proof: Proof,
                applied_below: int) -> Command:
    """Tell `source_bucket` that `target_bucket` applied its batches below
    `applied_below`, proven by the target's certified chain entry that says so."""
    value = {"op": "effect_ack", "ack": body_value(EffectAck(target_bucket, applied_below)),
             "proof": proof.value()}
    return Command(source_bucket, command_key(value), value)


class Unauthenticated(RemoteProtocolError):
    """A fact from another bucket whose proof does not check."""

    code = "unauthenticated"


def check_proof(value: Mapping[str, Any], bucket: int, swarm_id: bytes,
                placement: Placement | None, path: str) -> ChainEntry:
    """The chain entry a (schema-checked) proof carries, once its certificate checks: a
    quorum of `bucket`'s replicas signed exactly these bytes at that index and term.
    Raises Unauthenticated."""
    if placement is None:
        raise Unauthenticated(path, "this machine knows no validator set to check "
                                    "certificates against")
    digest = chain_digest(value["entry"])
    cert = {"bucket": bucket, "index": value["index"], "term": value["term"],
            "entry_hash": digest, "sigs": value["sigs"]}
    try:
        certificate.check(cert, swarm_id, placement, bucket, digest, path)
        entry = ChainEntry.decode(value["entry"])
    except RemoteProtocolError as exc:
        raise Unauthenticated(exc.field, exc.reason) from None
    if entry.index != value["index"]:
        raise Unauthenticated(f"{path}.entry", "its index differs from the certificate's")
    return entry


def batch_digest(batch: EffectBatch) -> bytes:
    """What a chain entry's `out` commits to for each batch it emitted."""
    return hashlib.sha256(BATCH_DOMAIN + encode_body(batch)).digest()


def entry_stamp(data: bytes) -> int | None:
    """The leader's stamp (`ts`) of a Raft entry's data, or None for an entry without
    one (the empty entry a new leader appends, bytes this module would not apply). For
    the shell's admission check, before the entry is in the log: it judges nothing."""
    try:
        value = cbor.decode(data, ENTRY_LIMITS)
    except RemoteProtocolError:
        return None
    ts = value.get("ts") if isinstance(value, dict) else None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else None


def decode_command(bucket: int, data: bytes) -> Command:
    """A command from another node (strict); raises RemoteProtocolError."""
    value = cbor.decode(data, ENTRY_LIMITS)
    COMMAND_SCHEMA.check(value, "command")
    return Command(bucket, command_key(value), value)


def op_from_envelope(env: Envelope, params: Mapping[str, int]) -> Op | PoolOp | TaskStep:
    """The operation a (verified) envelope asks for, its signer as the account and its
    validity limit as the operation's: a ledger verb's, a NEED posted (`PostNeed`), or
    a lifecycle step for the NEED's task book (`TaskStep`)."""
    if env.kind not in SUBMITTED_KINDS:
        raise SchemaError("kind", f"{env.kind} is not a ledger or market verb (one of "
                                  f"{', '.join(SUBMITTED_KINDS)})", code="not_ledger_verb")
    p, oid, who = env.payload, op_id_of(env), env.sender
    exp = expiry_of(env, params)
    if env.kind in TASK_VERBS:
        return TaskStep(oid, env, exp)
    match env.kind:
        case "NEED":
            caps = tuple(p.get("capabilities", ()))
            return PostNeed(oid, Terms(env.id, who, p["budget"], p["class"],
                                       p.get("verify_bounty", 0), p.get("bid_window_ms", 0),
                                       p.get("k_result", params["k_result_default"]), caps,
                                       p.get("k_plan", params["k_plan_default"]),
                                       p.get("job"), p.get("input"), p.get("host"),
                                       p.get("check"), p.get("output"),
                                       tuple(p.get("cites", ())),
                                       tuple(p.get("deny", ()))),
                            exp)
        case "CHALLENGE":
            return PostChallenge(oid, ChallengeTerms(
                env.id, who, need_of_challenge(p), p["commit_id"], p["proof_type"],
                p["evidence"], p["bond_amount"]), p.get("size_bytes", 0), exp)
        case "TRANSFER":
            return Transfer(oid, who, p["to"], p["amount"], p.get("memo", ""), exp)
        case "STAKE":
            return Stake(oid, who, p["amount"], exp)
        case "UNSTAKE":
            return Unstake(oid, who, p["amount"], exp)
        case "COMPLETE_UNBONDING":
            return CompleteUnbonding(oid, who, exp)
        case "POOL_REGISTER":
            return PoolRegister(oid, who, tuple(p["capabilities"]), p["org"], p["asn"],
                                p["region"], exp)
        case "POOL_LEAVE":
            return PoolLeave(oid, who, exp)
    raise SchemaError("kind", f"{env.kind} is not a ledger verb (one of "
                              f"{', '.join(LEDGER_VERBS)})", code="not_ledger_verb")


def need_of_challenge(payload: Mapping[str, Any]) -> Cid:
    """The task a CHALLENGE names (its NEED's id as text); SchemaError if none."""
    try:
        return Cid.parse(payload["task_id"], "payload.task_id")
    except DecodeError as exc:
        raise SchemaError("payload.task_id", f"not a NEED id: {exc.reason}",
                          code="unknown_task") from None


# --- chain entries: what replicas certify and read replicas apply ------------------


def chain_body_value(body: ChainBody) -> dict[str, Any]:
    if isinstance(body, PoolRegister | PoolLeave | ReputationEvent):
        return pool_op_value(body)
    return body_value(body)


def chain_digest(encoded: bytes) -> bytes:
    """The digest of an encoded chain entry (its encoding is canonical, so a verifier
    hashes the bytes it received)."""
    return hashlib.sha256(CHAIN_DOMAIN + encoded).digest()


@dataclass(frozen=True, slots=True)
class Emitted:
    """A batch a chain entry emitted, as the entry commits to it."""

    target_bucket: int
    seq: int
    digest: bytes  # batch_digest(batch)


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One entry of a bucket's ledger chain: applied at `index` (the Raft index) with
    the bucket's clock `ts_ms`, right after the chain entry at `prev`. `out` names every
    effect batch applying it emitted; for an effect batch, `applied_below` is how many
    of its source's batches this bucket has applied in order after it (what the
    source's acknowledgement proves)."""

    index: int
    prev: int
    ts_ms: int
    body: ChainBody
    out: tuple[Emitted, ...] = ()
    applied_below: int | None = None
    pv: bytes | None = None  # view_digest of the bucket's verifiers after this entry

    def encode(self) -> bytes:
        v: dict[str, Any] = {"index": self.index, "prev": self.prev, "ts": self.ts_ms,
                             "body": chain_body_value(self.body)}
        if self.out:
            v["out"] = [{"to": e.target_bucket, "seq": e.seq, "digest": e.digest}
                        for e in self.out]
        if self.applied_below is not None:
            v["in"] = self.applied_below
        if self.pv is not None:
            v["pv"] = self.pv
        return cbor.encode(v)

    def emitted(self, target_bucket: int, seq: int) -> Emitted | None:
        return next((e for e in self.out
                     if e.target_bucket == target_bucket and e.seq == seq), None)

    def digest(self) -> bytes:
        """What the bucket's replicas sign (through `certificate.signing_message`)."""
        return chain_digest(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> ChainEntry:
        """Strict: raises RemoteProtocolError unless `data` is a canonical chain entry."""
        v = cbor.decode(data, ENTRY_LIMITS)
        _CHAIN_SCHEMA.check(v, "chain")
        if v["prev"] >= v["index"]:
            raise SchemaError("chain.prev", f"must be below the index {v['index']}")
        b = v["body"]
        body: ChainBody = (pool_op_from_value(b, "chain.body")
                           if b["op"] in POOL_OP_SCHEMA.variants
                           else body_from_value(b, "chain.body"))
        if ("in" in v) != isinstance(body, EffectBatch):
            raise SchemaError("chain.in", "an effect batch's entry, and only it, says `in`")
        out = tuple(Emitted(o["to"], o["seq"], o["digest"]) for o in v.get("out", ()))
        return cls(v["index"], v["prev"], v["ts"], body, out, v.get("in"), v.get("pv"))


# --- outcomes: what a caller is told -----------------------------------------------


def view_json(v: AccountView) -> dict[str, Any]:
    return {"account": v.account.hex(), "balance": v.balance, "locked": v.locked,
            "unbonding": v.unbonding, "escrowed": v.escrowed,
            "unbonding_entries": [{"amount": a, "complete_ms": c}
                                  for a, c in v.unbonding_entries],
            "violations": v.violations}


def _view_value(v: AccountView) -> list[Any]:
    return [v.account, v.balance, v.locked, v.unbonding, v.escrowed,
            [[a, c] for a, c in v.unbonding_entries], v.violations]


def _int(v: Any, where: str, lo: int = 0, hi: int = INT_MAX) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise SchemaError(where, f"must be an integer in {lo}..{hi}")
    return v


def _bytes(v: Any, where: str, lengths: tuple[int, ...]) -> bytes:
    if not isinstance(v, bytes) or len(v) not in lengths:
        raise SchemaError(where, f"must be bytes of length {' or '.join(map(str, lengths))}")
    return v


def _text(v: Any, where: str, max_len: int) -> str:
    if not isinstance(v, str) or len(v) > max_len:
        raise SchemaError(where, f"must be text of at most {max_len} characters")
    return v


def _array(v: Any, where: str, max_items: int, length: int | None = None) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_items or (length is not None
                                                         and len(v) != length):
        raise SchemaError(where, "must be an array" + (f" of {length}" if length else ""))
    return v


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    """What applying one ledger command did, as every replica computed it.

    `code` is empty when the command applied; otherwise it is the typed error's code
    (`insufficient_balance`, `unbonding_pending`, `bad_signature`, ...) and `reason`
    its message for people. `account` is the home account right after the entry."""

    key: bytes
    kind: str
    op_id: bytes
    bucket: int
    index: int
    ts_ms: int
    code: str = ""
    reason: str = ""
    account: AccountView | None = None
    changes: tuple[Change, ...] = ()
    emitted: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.code

    def to_value(self) -> dict[str, Any]:
        v: dict[str, Any] = {
            "key": self.key, "kind": self.kind, "op": self.op_id, "bucket": self.bucket,
            "index": self.index, "ts": self.ts_ms, "code": self.code, "reason": self.reason,
            "changes": [[c.account, c.field, c.delta] for c in self.changes],
            "emitted": [list(e) for e in self.emitted]}
        if self.account is not None:
            a = self.account
            v["account"] = [a.account, a.balance, a.locked, a.unbonding, a.escrowed,
                            [[x, c] for x, c in a.unbonding_entries], a.violations]
        return v

    @classmethod
    def from_value(cls, v: Any) -> LedgerOutcome:
        """Strict: a replica's answer is input from elsewhere. Raises SchemaError."""
        if not isinstance(v, dict) or not set(v) <= {
                "key", "kind", "op", "bucket", "index", "ts", "code", "reason", "changes",
                "emitted", "account"}:
            raise SchemaError("outcome", "must be a map with known keys")
        try:
            changes = tuple(
                Change(_bytes(c[0], "outcome.changes", (0, 32)),
                       _text(c[1], "outcome.changes", 32), _int(c[2], "outcome.changes",
                                                                -INT_MAX, INT_MAX))
                for c in (_array(x, "outcome.changes", 3, 3)
                          for x in _array(v["changes"], "outcome.changes", 4096)))
            emitted = tuple((_int(e[0], "outcome.emitted", 0, 65535),
                             _int(e[1], "outcome.emitted"))
                            for e in (_array(x, "outcome.emitted", 2, 2)
                                      for x in _array(v["emitted"], "outcome.emitted", 1024)))
            account = None
            if "account" in v:
                a = _array(v["account"], "outcome.account", 7, 7)
                entries = tuple((_int(x[0], "outcome.account"), _int(x[1], "outcome.account"))
                                for x in (_array(y, "outcome.account", 2, 2)
                                          for y in _array(a[5], "outcome.account", 4096)))
                bal, locked, unb, esc = (_int(x, "outcome.account") for x in a[1:5])
                account = AccountView(_bytes(a[0], "outcome.account", (32,)), bal, locked,
                                      unb, esc, entries, _int(a[6], "outcome.account"))
            return cls(_bytes(v["key"], "outcome.key", (SEQ_KEY_BYTES, ENVELOPE_KEY_BYTES)),
                       _text(v["kind"], "outcome.kind", 32),
                       _bytes(v["op"], "outcome.op", (0, 32)),
                       _int(v["bucket"], "outcome.bucket", 0, 65535),
                       _int(v["index"], "outcome.index"), _int(v["ts"], "outcome.ts"),
                       _text(v["code"], "outcome.code", 64),
                       _text(v["reason"], "outcome.reason", 1024), account, changes, emitted)
        except KeyError as exc:
            raise SchemaError(f"outcome.{exc.args[0]}", "required field is missing") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "op_id": self.op_id.hex(), "kind": self.kind, "bucket": self.bucket,
            "index": self.index, "ts_ms": self.ts_ms, "ok": self.ok, "code": self.code,
            "reason": self.reason,
            "account": view_json(self.account) if self.account is not None else None,
            "changes": [{"account": c.account.hex(), "field": c.field, "delta": c.delta}
                        for c in self.changes],
            "emitted": [{"bucket": t, "seq": q} for t, q in self.emitted]}


@dataclass(frozen=True, slots=True)
class LedgerApplied:
    """`BucketMachine.apply`'s answer for a ledger command: the outcome, the chain entry
    to certify (None for a rejection, which is not in the chain) and the effect batches
    it emitted (to deliver once the chain entry is certified)."""

    outcome: LedgerOutcome
    chain: ChainEntry | None
    emitted: tuple[EffectBatch, ...] = ()
    tasks: tuple[Step, ...] = ()  # what the entry did to the bucket's tasks


# Outcomes of commands that decided nothing: a broken envelope, a proof that did not
# check, an entry rolled back. A real outcome for the same key may follow.
REJECTION_KINDS = frozenset({"envelope", "unauthenticated", "internal"})


class BucketHalted(Exception):
    """The machine could not apply an entry and cannot vouch that its state is what
    every other replica holds; it applies nothing more. The shell stops the bucket."""


# --- the ledger part: what the chain builds ----------------------------------------


class ChainGap(LocalProtocolError):
    """A chain entry does not follow the last one applied (a gap to fetch, or old)."""

    code = "chain_gap"


class LedgerPart:
    """A bucket's ledger and verifier pool, built by its chain entries only."""

    def __init__(self, ledger: BucketLedger, pool: VerifierPool, last: int = 0) -> None:
        self.ledger = ledger
        self.pool = pool
        self.last = last  # index of the last chain entry applied; 0 at genesis
        ledger.bid_facts = self.bid_facts
        ledger.repute = self._repute
        ledger.related_any = self.related_any
        ledger.stake_of = self.stake_of
        ledger.slash_order = self.slash_order

    def _repute(self, effect: Repute, ts_ms: int, tx: Any) -> None:
        """A judged attestation or challenge of a member of this bucket's pool (one that
        left the pool since keeps nothing); journaled in the entry's transaction."""
        account = effect.account
        if self.pool.member(account) is None:
            return
        tx.save_item(self.pool.by_account, account)
        if effect.challenge:
            self.pool.record_challenge(account, upheld=not effect.failed, ts_ms=ts_ms)
        else:
            self.pool.record_attestation(account, failed=effect.failed, ts_ms=ts_ms)

    def party(self, account: bytes) -> Party:
        return party_of(account, self.row(account))

    def related_any(self, account: bytes, others: Iterable[bytes]) -> bool:
        """Is `account` related (same org or ASN) to any of `others` (P8)?"""
        me = self.party(account)
        return any(related(me, self.party(o)) for o in others)

    def stake_of(self, account: bytes) -> int:
        """A verifier's stake as this bucket knows it (0 for one it does not know)."""
        row = self.row(account)
        return 0 if row is None else row.stake

    def slash_order(self, cause: ChallengeSlash) -> SlashOrder:
        """An upheld challenge's slash, paying nobody related to the challenged (P8):
        the challenger is dropped when related to the worker or the slashed member
        (the poster may challenge: a wrong result wrongs it), an honest verifier when
        related to either, to the poster or to the challenger. A dropped share is
        burned."""
        challenged = [self.party(a) for a in (cause.worker, cause.account)]
        challenger = self.party(cause.challenger)
        paid = cause.challenger if not any(related(challenger, x)
                                           for x in challenged) else None
        honest = tuple(sorted(
            h for h in cause.honest
            if not any(related(self.party(h), x)
                       for x in [*challenged, self.party(cause.poster), challenger])))
        return SlashOrder(cause.account, "failed_challenge", cause.challenge_id, 1, paid,
                          honest)

    def row(self, account: bytes) -> PoolRow | None:
        """A verifier as this bucket knows it: from its own pool, or from the latest
        view it holds of the verifier's bucket."""
        home = bucket_of(account, self.ledger.bucket_count)
        if home == self.bucket:
            v = self.pool.member(account)
            if v is None:
                return None
            return next(r for r in pool_rows(self.pool.subset(lambda a: a == account),
                                              lambda a: self.ledger.account(a).locked))
        view = self.ledger.view(home)
        return None if view is None else next(
            (r for r in view[1] if r.account == account), None)

    def bid_facts(self, bidder: bytes, poster: bytes, ts_ms: int) -> tuple[int, bool]:
        """A bidder's reputation at `ts_ms` (the initial one for a bidder that is not a
        verifier) and whether it is related to the poster (same org or ASN)."""
        b, p = self.row(bidder), self.row(poster)
        params = self.ledger.params
        rep = (params["reputation_initial_bp"] if b is None
               else decayed(b.reputation_bp, b.reputation_ms, ts_ms, params))
        return rep, related(party_of(bidder, b), party_of(poster, p))

    @classmethod
    def from_genesis(cls, genesis: Genesis, bucket: int) -> LedgerPart:
        """Genesis balances and stakes of the bucket's accounts; the genesis validators
        it owns that stake the minimum are in its pool."""
        n = genesis.params["bucket_count"]
        pool = VerifierPool.from_genesis(genesis).subset(lambda a: bucket_of(a, n) == bucket)
        return cls(BucketLedger.from_genesis(genesis, bucket), pool)

    @classmethod
    def empty(cls, params: Mapping[str, int], bucket: int) -> LedgerPart:
        return cls(BucketLedger(params, bucket), VerifierPool(params))

    @property
    def bucket(self) -> int:
        return self.ledger.bucket

    def rows(self) -> tuple[PoolRow, ...]:
        """The bucket's verifiers with their stake now (what other buckets draw from)."""
        return pool_rows(self.pool, lambda a: self.ledger.account(a).locked)

    def root(self) -> bytes:
        """sha256 over the ledger root, the pool root and the chain position."""
        return hashlib.sha256(PART_DOMAIN + self.ledger.root() + self.pool.root()
                              + self.last.to_bytes(8, "big")).digest()

    def apply_chain(self, entry: ChainEntry) -> Applied:
        """Apply a certified chain entry (a read replica): it must follow the last."""
        if entry.prev != self.last or entry.index <= self.last:
            raise ChainGap("prev", f"bucket {self.bucket}: entry {entry.index} follows "
                                   f"{entry.prev}, the last applied is {self.last}")
        return self.apply_body(entry.index, entry.ts_ms, entry.body)

    def apply_body(self, index: int, ts_ms: int, body: ChainBody) -> Applied:
        """Apply one chain body, all or nothing: an exception leaves the part as it was
        (the ledger journals its writes, the pool changes one member) and propagates."""
        if index <= self.last:
            raise LocalProtocolError("index", f"chain entry {index} is not after {self.last}")
        if isinstance(body, PoolRegister | PoolLeave | ReputationEvent):
            record, error = self._apply_pool(index, ts_ms, body)
            applied = Applied(record, (), error)
        else:
            applied = self.ledger.apply(LedgerEntry(index, ts_ms, body))
            if isinstance(applied.error, OutOfOrder):
                raise LocalProtocolError("index", f"out of order: {applied.error.reason}")
        self.last = index
        return applied

    def _apply_pool(self, index: int, ts_ms: int, op: PoolOp
                    ) -> tuple[AuditRecord, ProtocolError | None]:
        kind = pool_op_value(op)["op"]
        error: ProtocolError | None = None
        tx = self.ledger.transaction()
        member = self.pool.member(op.account)
        try:
            self.ledger.forget_expired(ts_ms, tx)
            try:
                if not self.ledger.owns(op.account):
                    home = bucket_of(op.account, self.ledger.bucket_count)
                    raise WrongBucket("account", f"account {op.account.hex()[:16]} belongs "
                                                 f"to bucket {home}, not {self.bucket}")
                self.ledger.check_window(op.op_id, op.expires_ms, ts_ms)
                if isinstance(op, PoolRegister) and member is None \
                        and len(self.pool.members()) >= POOL_VIEW_ROWS_MAX:
                    raise PoolFull("account", f"bucket {self.bucket} holds the most "
                                              f"verifiers a bucket may "
                                              f"({POOL_VIEW_ROWS_MAX})")
                self.pool.apply(op, ts_ms=ts_ms,
                                stake=self.ledger.account(op.account).locked)
            except (PoolError, LedgerError) as exc:
                error = exc
            record = self.ledger.record_other(index, ts_ms, op.op_id, op.expires_ms, kind,
                                              op.account, f"{kind} by {op.account.hex()[:16]}",
                                              error, tx)
        except BaseException:
            self.pool.put_back(op.account, member)
            tx.rollback()
            raise
        return record, error

    def snapshot_value(self) -> dict[str, Any]:
        return {"ledger": self.ledger.snapshot(), "pool": self.pool.state_value(),
                "last": self.last}

    @classmethod
    def from_snapshot_value(cls, params: Mapping[str, int], v: Any) -> LedgerPart:
        if not isinstance(v, dict) or set(v) != {"ledger", "pool", "last"}:
            raise DecodeError("snapshot", "not a ledger part")
        return cls(BucketLedger.restore(params, v["ledger"]),
                   VerifierPool.from_state(params, v["pool"]),
                   _int(v["last"], "snapshot.last"))


# --- the bucket's machine ------------------------------------------------------------

# Errors that need not happen alike on every replica: after one, a replica cannot vouch
# that its rejection is everyone's, so the bucket halts instead.
_NOT_REPEATABLE = (MemoryError, RecursionError)


class BucketMachine:
    """DECIDE and the ledger part of one bucket, fed every committed entry in order.

    Keeps the surface MultiRaft used on `DecideMachine` (`applied`, `decisions`, `get`,
    `snapshot`, and `apply` returning a `Decision` for decide entries). `placement`
    (the genesis validator set) checks the proofs of effects and acknowledgements; a
    machine without one refuses them."""

    def __init__(self, bucket: int, swarm_id: bytes, params: Mapping[str, int],
                 part: LedgerPart, decide: DecideMachine | None = None,
                 placement: Placement | None = None, genesis: Genesis | None = None) -> None:
        self.bucket = bucket
        self.genesis = genesis  # to check a view of another bucket at genesis
        self._genesis_rows: dict[int, tuple[PoolRow, ...]] = {}
        self.swarm_id = swarm_id
        self.params = dict(params)
        self.part = part
        self.decide = decide if decide is not None else DecideMachine(bucket)
        self.placement = placement
        self.outcomes: OrderedDict[bytes, LedgerOutcome] = OrderedDict()
        self.rejections: deque[LedgerOutcome] = deque(maxlen=REJECTIONS_MAX)
        self.refused: Counter[str] = Counter()  # rejections by code, for metrics
        # Entries applied by what they carried (a verb, or a body's type), for metrics.
        self.entry_kinds: Counter[str] = Counter()
        self.halted: str = ""  # why the machine stopped, once it has

    @classmethod
    def fresh(cls, bucket: int, swarm_id: bytes, params: Mapping[str, int],
              genesis: Genesis | None = None,
              placement: Placement | None = None) -> BucketMachine:
        part = (LedgerPart.from_genesis(genesis, bucket) if genesis is not None
                else LedgerPart.empty(params, bucket))
        if placement is None and genesis is not None:
            placement = Placement.from_genesis(genesis)
        return cls(bucket, swarm_id, params, part, placement=placement, genesis=genesis)

    # -- the DecideMachine surface

    @property
    def applied(self) -> int:
        return self.decide.applied

    @property
    def decisions(self) -> dict[bytes, Decision]:
        return self.decide.decisions

    @property
    def clock_ms(self) -> int:
        return self.decide.clock_ms

    def get(self, need_id: bytes) -> Decision | None:
        return self.decide.get(need_id)

    @property
    def ledger(self) -> BucketLedger:
        return self.part.ledger

    def outcome(self, key: bytes) -> LedgerOutcome | None:
        """The first outcome of the command with this key, if still remembered."""
        return self.outcomes.get(key)

    # -- applying

    def apply(self, index: int, term: int, data: bytes) -> Decision | LedgerApplied | None:
        """Apply one committed entry; see the module docstring for what each does.
        Raises BucketHalted (and keeps raising it) when it cannot apply an entry alike
        on every replica."""
        if self.halted:
            raise BucketHalted(self.halted)
        if index <= self.decide.applied:
            raise AssertionError(f"entry {index} applied twice (applied {self.decide.applied})")
        value: Any = None
        if data:
            try:
                value = cbor.decode(data, ENTRY_LIMITS)
            except RemoteProtocolError:
                value = None
        op = value.get("op") if isinstance(value, dict) else None
        if op == "decide":
            self.entry_kinds["DECIDE"] += 1
            return self.decide.apply(index, term, data)
        self.decide.applied = index
        if op not in _COMMAND_FIELDS:
            return None  # a no-op or garbage: skipped alike everywhere
        try:
            ENTRY_SCHEMA.check(value, "entry")
        except SchemaError:
            return None
        self.decide.clock_ms = max(self.decide.clock_ms, value["ts"])
        try:
            body = self._body(op, value)
        except RemoteProtocolError as exc:
            kind = "envelope" if op == "ledger" else "unauthenticated"
            return LedgerApplied(self._reject(command_key(value), kind, index, exc.code,
                                              f"{exc.field}: {exc.reason}"), None)
        # A ledger envelope's key is its operation's id (`command_key` would decode the
        # envelope once more to find it).
        key = (command_key(value)
               if isinstance(body, EffectBatch | EffectAck | Tick | PoolView | PoolViews
                             | Draw)
               else body.op_id)
        self.entry_kinds[body.envelope.kind if isinstance(body, TaskStep)
                         else type(body).__name__] += 1
        try:
            return self._apply_chain_body(index, key, body)
        except _NOT_REPEATABLE as exc:
            self.halted = f"entry {index}: {exc!r}"
            raise BucketHalted(self.halted) from exc
        except BucketHalted:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug; the entry was rolled back whole
            # Every replica applies the same entry to the same state with the same code,
            # so every replica rolls it back and records this same rejection.
            return LedgerApplied(self._reject(key, "internal", index, "internal",
                                              f"the bucket could not apply this entry "
                                              f"({type(exc).__name__}); it was rolled "
                                              f"back"), None)

    def _body(self, op: str, value: Mapping[str, Any]) -> ChainBody:
        """The chain body an entry asks to apply, once checked: a ledger envelope's
        operation, or a fact from another bucket whose proof checks. Raises
        RemoteProtocolError (the entry is then a rejection that decides nothing)."""
        if op == "ledger":
            env = decode_envelope(value["env"], swarm=self.swarm_id)
            return op_from_envelope(env, self.params)
        if op == "tick":
            return Tick()
        if op == "pool_view":
            return self._pool_view(value)
        if op == "pool_views":
            views = tuple(self._pool_view(v) for v in value["views"])
            if [v.bucket for v in views] != sorted({v.bucket for v in views}):
                raise Unauthenticated("entry.views", "views are in bucket order, once each")
            if sum(len(v.rows) for v in views) > POOL_VIEW_ROWS_MAX:
                raise Unauthenticated("entry.views", f"at most {POOL_VIEW_ROWS_MAX} rows "
                                                     f"in all")
            return PoolViews(views)
        if op == "draw":
            return self._draw(value)
        if op == "effects":
            batch = body_from_value(value["batch"], "entry.batch")
            assert isinstance(batch, EffectBatch)
            entry = check_proof(value["proof"], batch.source_bucket, self.swarm_id,
                                self.placement, "entry.proof")
            emitted = entry.emitted(batch.target_bucket, batch.seq)
            if entry.index != batch.source_index or emitted is None \
                    or emitted.digest != batch_digest(batch):
                raise Unauthenticated("entry.batch", f"bucket {batch.source_bucket}'s "
                                                     f"entry {entry.index} did not emit it")
            return batch
        ack = body_from_value(value["ack"], "entry.ack")
        assert isinstance(ack, EffectAck)
        entry = check_proof(value["proof"], ack.target_bucket, self.swarm_id,
                            self.placement, "entry.proof")
        proven = entry.body
        if not isinstance(proven, EffectBatch) or proven.source_bucket != self.bucket \
                or proven.target_bucket != ack.target_bucket \
                or entry.applied_below != ack.applied_seq:
            raise Unauthenticated("entry.ack", f"bucket {ack.target_bucket}'s entry "
                                               f"{entry.index} does not say so")
        return ack

    def _pool_view(self, value: Mapping[str, Any]) -> PoolView:
        """Another bucket's verifiers, once its certified chain entry (or the genesis)
        shows they are exactly these."""
        source: int = value["bucket"]
        n = self.params["bucket_count"]
        if source == self.bucket or source >= n:
            raise Unauthenticated("entry.bucket", f"not another bucket of 0..{n - 1}")
        view = body_from_value({"op": "pool_view", "bucket": source, "index": 0,
                                "rows": value["rows"]}, "entry")
        assert isinstance(view, PoolView)
        if any(bucket_of(r.account, n) != source for r in view.rows):
            raise Unauthenticated("entry.rows", f"a verifier of another bucket than {source}")
        if "proof" not in value:
            if view.rows != self.genesis_rows(source):
                raise Unauthenticated("entry.rows", f"not bucket {source}'s verifiers at "
                                                    f"genesis")
            return view
        entry = check_proof(value["proof"], source, self.swarm_id, self.placement,
                            "entry.proof")
        if entry.pv != view_digest(view.rows):
            raise Unauthenticated("entry.rows", f"bucket {source}'s entry {entry.index} "
                                                f"holds other verifiers")
        return PoolView(source, entry.index, view.rows)

    def genesis_rows(self, bucket: int) -> tuple[PoolRow, ...]:
        """Bucket `bucket`'s verifiers as genesis made them (none without a genesis)."""
        rows = self._genesis_rows.get(bucket)
        if rows is None:
            rows = (LedgerPart.from_genesis(self.genesis, bucket).rows()
                    if self.genesis is not None else ())
            self._genesis_rows[bucket] = rows
        return rows

    def _draw(self, value: Mapping[str, Any]) -> Draw:
        """The committee for the result this bucket committed at the proof's entry:
        seeded by that entry's certificate, drawn here from what this bucket holds."""
        need: Cid = value["need"]
        proof = value["proof"]
        entry = check_proof(proof, self.bucket, self.swarm_id, self.placement, "entry.proof")
        assert self.placement is not None  # check_proof refuses without one
        quorum = self.placement.quorum(self.bucket)
        if len(proof["sigs"]) != quorum:
            raise Unauthenticated("entry.proof.sigs", f"a draw is seeded by exactly a quorum "
                                                      f"({quorum}) of signatures")
        seed = draw_seed(proof["sigs"])
        task = self.ledger.tasks.get(need)
        if task is not None and task.state == ATTESTED:
            # A challenge panel, seeded by the entry that started its round.
            if task.draw_index != entry.index:
                return Draw(need, entry.index, seed, (), "none")  # the book says why
            panel, rule = self.panel(task, seed)
            return Draw(need, entry.index, seed, panel, rule)
        body = entry.body
        if not isinstance(body, TaskStep) or body.envelope.kind != "COMMIT" \
                or need_of(body.envelope) != need:
            raise Unauthenticated("entry.proof", f"entry {entry.index} is not a COMMIT "
                                                 f"for {need}")
        if task is None or task.state != COMMITTED or task.commit is None \
                or task.commit.committee or task.commit.index != entry.index:
            # Nothing to seat: the task book refuses it and says why.
            return Draw(need, entry.index, seed, (), "none")
        committee, rule = self.committee(task, seed)
        return Draw(need, entry.index, seed, committee, rule)

    def _rows(self) -> list[PoolRow]:
        rows = list(self.part.rows())
        for b, (_, view) in self.ledger.views().items():
            if b != self.bucket:
                rows.extend(view)
        return rows

    def panel(self, task: Task, seed: bytes) -> tuple[tuple[bytes, ...], str]:
        """Draw the panel of `task`'s challenge under way, by the committee's draw rule:
        `panel_size` of its round, none of the parties to the result or the challenge
        nor anyone seated before (`challenge_barred`), none related to them; fewer when
        the pool has no more (an empty panel lets the votes so far decide)."""
        ch = task.active
        assert ch is not None
        rows = self._rows()
        by_account = {r.account: r for r in rows}
        barred = challenge_barred(task, ch)
        judged = [a for a in sorted(barred) if a not in ch.seated]
        seed = hashlib.sha256(seed + ch.terms.challenge_id.raw).digest()
        for size in range(panel_size(ch.round, self.params), 0, -1):
            panel, rule = draw(rows, k=size, seed=seed, now_ms=self.clock_ms,
                               params=self.params, exclude=sorted(barred),
                               unrelated_to=[party_of(a, by_account.get(a)) for a in judged])
            if panel:
                return panel, rule
        return (), "none"

    def committee(self, task: Task, seed: bytes) -> tuple[tuple[bytes, ...], str]:
        """Draw `task`'s committee from this bucket's verifiers and every view it holds
        of another bucket's, excluding (and unrelated to) its worker and poster, and
        excluding the members silent on its earlier committees. A committee redrawn
        after silence may be smaller than `k_result` when the pool has no more members
        left to seat (D36); a first one may not."""
        assert task.commit is not None
        rows = self._rows()
        by_account = {r.account: r for r in rows}
        judged = [task.commit.worker, task.terms.poster]
        k = task.k_result
        # After silence, or an upheld challenge grew k past what the pool holds, seat
        # what there is (at least the NEED's k_result after a challenge).
        least = 1 if task.silent else task.terms.k_result if task.upheld else k
        for size in range(k, least - 1, -1):
            committee, rule = draw(rows, k=size, seed=seed, now_ms=self.clock_ms,
                                   params=self.params, exclude=[*judged, *task.silent],
                                   unrelated_to=[party_of(a, by_account.get(a))
                                                 for a in judged])
            if committee:
                return committee, rule
        return (), "none"

    def _reject(self, key: bytes, kind: str, index: int, code: str,
                reason: str) -> LedgerOutcome:
        out = LedgerOutcome(key, kind, key, self.bucket, index, self.clock_ms, code, reason)
        self.rejections.append(out)
        self.refused[code] += 1
        self._remember(out)
        return out

    def _apply_chain_body(self, index: int, key: bytes, body: ChainBody) -> LedgerApplied:
        prev, ts = self.part.last, self.clock_ms
        applied = self.part.apply_body(index, ts, body)
        record, batches, error = applied.record, applied.effects, applied.error
        home = record.account
        view = (self.part.ledger.account(home)
                if home and self.part.ledger.owns(home) else None)
        out = LedgerOutcome(key, record.kind, record.op_id, self.bucket, index, ts,
                            error.code if error else "", error.reason if error else "",
                            view, record.changes, record.emitted)
        self._remember(out)
        emitted = tuple(Emitted(b.target_bucket, b.seq, batch_digest(b)) for b in batches)
        applied_below = (self.part.ledger.applied_seq(body.source_bucket)
                         if isinstance(body, EffectBatch) else None)
        entry = ChainEntry(index, prev, ts, body, emitted, applied_below,
                           view_digest(self.part.rows()))
        return LedgerApplied(out, entry, batches, applied.tasks)

    def _remember(self, out: LedgerOutcome) -> None:
        had = self.outcomes.get(out.key)
        # A repeat keeps the first answer, except that a real outcome replaces a
        # rejection that decided nothing (same key: a copy with a bad signature, a
        # batch with a forged proof, an entry rolled back).
        if had is not None and not (had.kind in REJECTION_KINDS
                                    and out.kind not in REJECTION_KINDS):
            return
        self.outcomes[out.key] = out
        while len(self.outcomes) > OUTCOMES_MAX:
            self.outcomes.popitem(last=False)

    # -- snapshots

    def snapshot(self) -> bytes:
        return cbor.encode({"v": 1, "decide": self.decide.snapshot(),
                            "part": self.part.snapshot_value()})

    @classmethod
    def restore(cls, data: bytes, bucket: int, swarm_id: bytes, params: Mapping[str, int],
                genesis: Genesis | None = None,
                placement: Placement | None = None) -> BucketMachine:
        """Rebuild from `snapshot()` bytes; empty data is the genesis state. A snapshot
        written before the ledger existed (a bare DecideMachine snapshot) keeps its
        decisions and starts the ledger part at genesis."""
        if placement is None and genesis is not None:
            placement = Placement.from_genesis(genesis)
        if not data:
            return cls.fresh(bucket, swarm_id, params, genesis, placement)
        v = cbor.decode(data, SNAPSHOT_LIMITS)
        if isinstance(v, dict) and "decisions" in v:
            fresh = cls.fresh(bucket, swarm_id, params, genesis, placement)
            fresh.decide = DecideMachine.restore(data, bucket)
            return fresh
        if not isinstance(v, dict) or v.get("v") != 1 or set(v) != {"v", "decide", "part"}:
            raise DecodeError("snapshot", "not a bucket machine snapshot")
        part = LedgerPart.from_snapshot_value(params, v["part"])
        if part.bucket != bucket:
            raise DecodeError("snapshot", f"a snapshot of bucket {part.bucket}, not {bucket}")
        return cls(bucket, swarm_id, params, part, DecideMachine.restore(v["decide"], bucket),
                   placement, genesis)
