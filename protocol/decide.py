"""DECIDE: the bucket state machine that makes P1 (exactly one DECIDE per NEED) hold.

Owns the command a node submits (`TryDecide`), its encoding as a Raft entry, and the
rule applied to committed entries: the first committed decision for a NEED is final,
and every later attempt for that NEED returns it unchanged. Because each NEED belongs
to exactly one bucket (`buckets.bucket_of(need_id, n)`) and a bucket's entries are
applied in one order on every replica, every replica computes the same decision.

Time: an entry carries the leader's timestamp (`ts_ms`), the only clock a state machine
sees; the state machine keeps it monotonic per bucket so a leader with a slow clock
cannot move a bucket's time backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import cbor
from .cid import Cid
from .envelope import Envelope, decode_envelope
from .errors import RemoteProtocolError

ID_BYTES_MAX = 128  # a NEED id is a 36-byte CID; a proposal id up to 128 bytes of text


@dataclass(frozen=True, slots=True)
class TryDecide:
    need_id: bytes
    proposal_id: bytes
    k_plan: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        for name in ("need_id", "proposal_id"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or not 1 <= len(v) <= ID_BYTES_MAX:
                raise RemoteProtocolError(f"decide.{name}", f"must be 1..{ID_BYTES_MAX} bytes")
        for name in ("k_plan", "epoch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
                raise RemoteProtocolError(f"decide.{name}", "must be an integer in [0, 2^63)")


@dataclass(frozen=True, slots=True)
class Decision:
    need_id: bytes
    proposal_id: bytes
    k_plan: int
    epoch: int
    bucket: int
    index: int  # the Raft index that committed it
    term: int
    ts_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"need_id": self.need_id.hex(), "proposal_id": self.proposal_id.hex(),
                "k_plan": self.k_plan, "epoch": self.epoch, "bucket": self.bucket,
                "index": self.index, "term": self.term, "ts_ms": self.ts_ms}


def encode_command(cmd: TryDecide, ts_ms: int) -> bytes:
    """A Raft entry's data: the command stamped with the leader's time."""
    return cbor.encode({"op": "decide", "need": cmd.need_id, "proposal": cmd.proposal_id,
                        "k_plan": cmd.k_plan, "epoch": cmd.epoch, "ts": ts_ms})


def decode_command(data: bytes) -> tuple[TryDecide, int]:
    value = cbor.decode(data)
    if not isinstance(value, dict) or value.get("op") != "decide" or set(value) != {
            "op", "need", "proposal", "k_plan", "epoch", "ts"}:
        raise RemoteProtocolError("decide", "not a decide command")
    ts = value["ts"]
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise RemoteProtocolError("decide.ts", "must be a non-negative integer")
    return TryDecide(value["need"], value["proposal"], value["k_plan"], value["epoch"]), ts


# -- submission by a node that is not a validator --------------------------------------
#
# Such a node has no Raft stream (validators accept those only from validators), so it
# asks a validator, over its own request/response protocol (node/decide_service.py), to
# submit the command for it and answer the committed decision. The request is a DECIDE
# envelope the asker signs, without a certificate (that is what it asks for): the
# validator knows who asks, and judges the request with the swarm's policy as it enters
# Raft. One request and one answer per stream, each a canonical CBOR map.

SUBMISSION_BYTES_MAX = 2048
SUBMISSION_TIMEOUT_MS_MAX = 60_000
_SUBMISSION_KEYS = {"env", "timeout_ms"}
_ANSWER_KEYS = {"ok", "need", "proposal", "k_plan", "epoch", "bucket", "index", "term", "ts"}


def request_payload(cmd: TryDecide) -> dict[str, Any]:
    """The DECIDE payload that asks for `cmd` (protocol values: the NEED id as a link)."""
    return {"need_id": Cid.from_bytes(cmd.need_id, "need_id"),
            "proposal_id": cmd.proposal_id.decode(), "k_plan": cmd.k_plan,
            "epoch": cmd.epoch}


def encode_submission(wire: bytes, timeout_ms: int) -> bytes:
    """A request: the asker's signed DECIDE envelope (`request_payload`) and its wait."""
    return cbor.encode({"env": bytes(wire), "timeout_ms": timeout_ms})


def decode_submission(data: bytes, swarm_id: bytes) -> tuple[Envelope, TryDecide, int]:
    """The asker's verified request envelope, the command it asks for and how long the
    asker waits (ms). RemoteProtocolError if malformed, signed wrongly, for another
    swarm, not a DECIDE, or carrying a certificate or further decisions."""
    if len(data) > SUBMISSION_BYTES_MAX:
        raise RemoteProtocolError("submission", f"over {SUBMISSION_BYTES_MAX} bytes")
    value = cbor.decode(data)
    if not isinstance(value, dict) or set(value) != _SUBMISSION_KEYS:
        raise RemoteProtocolError("submission", f"must be a map of {sorted(_SUBMISSION_KEYS)}")
    timeout, wire = value["timeout_ms"], value["env"]
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not (
            1 <= timeout <= SUBMISSION_TIMEOUT_MS_MAX):
        raise RemoteProtocolError("submission.timeout_ms",
                                  f"must be an integer in [1, {SUBMISSION_TIMEOUT_MS_MAX}]")
    if not isinstance(wire, bytes):
        raise RemoteProtocolError("submission.env", "must be a signed DECIDE envelope")
    env = decode_envelope(wire, swarm=swarm_id)
    p = env.payload
    if env.kind != "DECIDE" or "cert" in p or "also" in p:
        raise RemoteProtocolError("submission.env", "must be a DECIDE without `cert` or "
                                                    "`also`: the decision it asks for")
    cmd = TryDecide(p["need_id"].raw, p["proposal_id"].encode(), p["k_plan"], p["epoch"])
    return env, cmd, timeout


def encode_answer(d: Decision | None, reason: str = "") -> bytes:
    """The committed decision, or why there is none (`reason`, at most 200 bytes)."""
    if d is None:
        return cbor.encode({"ok": False, "reason": reason.encode()[:200].decode(
            errors="ignore")})
    return cbor.encode({"ok": True, "need": d.need_id, "proposal": d.proposal_id,
                        "k_plan": d.k_plan, "epoch": d.epoch, "bucket": d.bucket,
                        "index": d.index, "term": d.term, "ts": d.ts_ms})


def decode_answer(data: bytes) -> Decision:
    """The decision an answer states; RemoteProtocolError carrying the validator's reason
    if it has none, or if the answer is malformed."""
    if len(data) > SUBMISSION_BYTES_MAX:
        raise RemoteProtocolError("answer", f"over {SUBMISSION_BYTES_MAX} bytes")
    value = cbor.decode(data)
    if isinstance(value, dict) and value.get("ok") is False and set(value) == {"ok", "reason"} \
            and isinstance(value["reason"], str):
        raise RemoteProtocolError("answer", value["reason"] or "no decision")
    if not isinstance(value, dict) or value.get("ok") is not True or set(value) != _ANSWER_KEYS:
        raise RemoteProtocolError("answer", "not a decide answer")
    cmd = TryDecide(value["need"], value["proposal"], value["k_plan"], value["epoch"])
    for name in ("bucket", "index", "term", "ts"):
        v = value[name]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
            raise RemoteProtocolError(f"answer.{name}", "must be an integer in [0, 2^63)")
    return Decision(cmd.need_id, cmd.proposal_id, cmd.k_plan, cmd.epoch, value["bucket"],
                    value["index"], value["term"], value["ts"])


@dataclass
class DecideMachine:
    """One bucket's decisions. `apply` is called with committed entries in log order."""

    bucket: int
    decisions: dict[bytes, Decision] = field(default_factory=dict)
    applied: int = 0
    clock_ms: int = 0

    def apply(self, index: int, term: int, data: bytes) -> Decision | None:
        """Apply one committed entry; returns the decision in force for its NEED, or None
        for an entry that is not a decide command (no-ops, malformed data: skipped alike
        on every replica)."""
        if index <= self.applied:
            raise AssertionError(f"entry {index} applied twice (applied {self.applied})")
        self.applied = index
        if not data:
            return None
        try:
            cmd, ts = decode_command(data)
        except RemoteProtocolError:
            return None
        self.clock_ms = max(self.clock_ms, ts)
        existing = self.decisions.get(cmd.need_id)
        if existing is not None:
            return existing
        d = Decision(cmd.need_id, cmd.proposal_id, cmd.k_plan, cmd.epoch, self.bucket,
                     index, term, self.clock_ms)
        self.decisions[cmd.need_id] = d
        return d

    def get(self, need_id: bytes) -> Decision | None:
        return self.decisions.get(need_id)

    def snapshot(self) -> bytes:
        return cbor.encode({
            "bucket": self.bucket, "applied": self.applied, "clock": self.clock_ms,
            "decisions": [[d.need_id, d.proposal_id, d.k_plan, d.epoch, d.index, d.term,
                           d.ts_ms] for _, d in sorted(self.decisions.items())],
        })

    @classmethod
    def restore(cls, data: bytes, bucket: int) -> DecideMachine:
        if not data:
            return cls(bucket)
        value: Mapping[str, Any] = cbor.decode(data)
        m = cls(bucket, applied=value["applied"], clock_ms=value["clock"])
        for need, prop, k, epoch, index, term, ts in value["decisions"]:
            m.decisions[need] = Decision(need, prop, k, epoch, bucket, index, term, ts)
        return m
