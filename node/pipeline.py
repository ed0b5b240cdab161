"""The inbound pipeline: bytes -> decode -> verify -> judge -> store -> apply.

Owns the order of those stages and the verdict each gives. It is what the gossipsub
validator and catch-up both call, so an envelope is judged the same way whichever road
it came by. Verdicts follow gossipsub's three outcomes: ACCEPT (valid and new: stored,
applied, forwarded), IGNORE (valid but not to forward now: a duplicate, over a local
limit, or too far in the future for this node's wall clock), REJECT (invalid: the
sending peer is penalised). The caller counts every verdict by reason for /metrics (an
ACCEPT once `commit` says it applied cleanly). The judging stages, in order: not a
ledger verb (those go through their account's Raft bucket, never gossip:
`not_gossiped`), duplicate, Lamport ceiling (`lamport_future`), Lamport order against
the refs this replica knows (`lamport_reversal`), certificate, policy.

Error handling. Only storage may stop a node: `commit()` raises `StoreError` when the
store cannot take a write, because a node that cannot persist must stop rather than
acknowledge what it may lose. Any other exception is a fault of ours (a bug) met while
handling one envelope, and costs that envelope alone, in live traffic, catch-up and
restart replay alike: while judging, the verdict is REJECT `internal` and nothing is
stored; while applying (the replica, each `on_accept` hook, each on its own), the
envelope stays stored and in the id set, whatever else applied it goes on, and a restart
replay meets and skips the same fault the same way. Each fault is reported through
`on_fault` (the node logs it once per envelope, with the traceback).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from swarm.protocol.bucket_machine import LEDGER_VERBS
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope, decode_envelope
from swarm.protocol.errors import LamportFuture, LamportReversal, RemoteProtocolError
from swarm.protocol.lamport import check_not_future
from swarm.protocol.replay import Replica
from swarm.protocol.sync import IdSet

from .store import Store

INTERNAL = "internal"
NOT_GOSSIPED = "not_gossiped"
# REJECT reasons that depend on what the judging node knows, not on the envelope alone:
# a relay that knew less (a ref not seen yet) may have accepted and forwarded it
# honestly, so only the peer that published it is blamed for it.
KNOWLEDGE_DEPENDENT = frozenset({LamportReversal.code})


def wall_ms() -> int:
    """This node's wall clock in milliseconds: what the Lamport ceiling is read against."""
    return time.time_ns() // 1_000_000


class Verdict(enum.Enum):
    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    verdict: Verdict
    reason: str = "ok"


class PolicyStage(Protocol):
    """Decides what a peer may say; `node/policy.py`'s `WasmPolicy` implements it."""

    def evaluate(self, envelope: Envelope) -> PolicyDecision: ...


class SchemaOnlyPolicy:
    """The interim policy: payload schemas are already enforced by decoding, so every
    well-formed envelope is allowed. Replaced by the pinned WebAssembly policy."""

    def evaluate(self, envelope: Envelope) -> PolicyDecision:
        return PolicyDecision(Verdict.ACCEPT)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verdict, its reason (a stable code), the envelope when it decoded, and where
    the fault lies (`field`, `detail`: a check's own words) for a client to be told."""

    verdict: Verdict
    reason: str
    envelope: Envelope | None = None
    field: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Committed:
    """What `commit` did: `fresh` were new and are now stored; `faulted` are those of
    them whose apply met a fault of ours (stored all the same)."""

    fresh: list[Envelope]
    faulted: list[Envelope]


def fault_key(data: bytes) -> str:
    """What a fault on bytes that never became an envelope is reported under."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _no_fault_report(key: str, exc: BaseException, count: bool) -> None:
    pass


@dataclass
class Pipeline:
    swarm_id: bytes
    store: Store
    replica: Replica
    ids: IdSet
    policy: PolicyStage = field(default_factory=SchemaOnlyPolicy)
    on_accept: list[Callable[[Envelope], None]] = field(default_factory=list)
    # Checks that need node state beyond the envelope (a DECIDE's commit certificate
    # against the validator set); raise RemoteProtocolError to reject.
    certify: Callable[[Envelope], None] | None = None
    # Every fault of ours met on one envelope: (envelope id, or "sha256:" and the digest
    # of bytes that never became one; the exception; `count`). `count` is True for the
    # first fault met on an envelope after its verdict (applying it, in live traffic or
    # replay): only this report tells of it, so it is the one to count as REJECT
    # `internal`. It is False for a fault met while judging, whose REJECT `internal` the
    # caller counts with every other verdict, and for a further fault on one envelope.
    on_fault: Callable[[str, BaseException, bool], None] = _no_fault_report
    # Stored envelopes the replica rejected (a Lamport reversal found only once their
    # refs arrived): never applied, and dropped from `ids`, so no peer is offered them.
    on_late_reject: Callable[[Envelope, RemoteProtocolError], None] | None = None
    # Faults met so far in judging, applying and replay (`on_fault` was told of each).
    faults: int = 0

    def __post_init__(self) -> None:
        self.replica.on_reject = self._replica_rejected
        self._faulted: set[bytes] = set()  # ids that faulted in the current `_apply`

    @classmethod
    def open(cls, swarm_id: bytes, store: Store, policy: PolicyStage | None = None,
             replayed: Callable[[Envelope], None] | None = None, *,
             on_fault: Callable[[str, BaseException, bool], None] = _no_fault_report,
             ) -> Pipeline:
        """Rebuild the replica from the store (entries were verified when written);
        `replayed` sees each stored envelope again, to rebuild other read models.

        Replay judges nothing again (the store holds what was accepted, under the rules
        and wall clock of that moment) except what no node may offer: a ledger verb (an
        older node may have stored one from gossip), an entry these rules no longer
        decode, and an envelope the replica rejects (a Lamport reversal) stay in the store
        but are left out of `ids`. A fault while
        applying one entry is reported and replay goes on (see the module docstring);
        only a store that cannot be read (`StoreError`) stops it."""
        pipeline = cls(swarm_id, store, Replica(swarm=swarm_id), IdSet(),
                       policy or SchemaOnlyPolicy(), on_fault=on_fault)
        for envelope_id, wire in store.log():
            try:
                env = decode_envelope(wire, swarm=swarm_id, verify=False)
            except RemoteProtocolError:
                continue  # stored under older rules, invalid under these: offered to nobody
            except Exception as exc:  # noqa: BLE001 - a decoder bug costs this entry only
                pipeline._fault(envelope_id, exc, applying=True)
                pipeline.ids.add(envelope_id)
                continue
            if env.kind in LEDGER_VERBS:
                continue
            pipeline.ids.add(envelope_id)
            pipeline._apply(env, [] if replayed is None else [replayed])
        return pipeline

    # --- judging ----------------------------------------------------------------------

    def judge(self, data: bytes, now_ms: int | None = None) -> Outcome:
        """Every check but storage; for the gossip validator and catch-up alike.
        `now_ms` is this node's wall clock, for the Lamport ceiling (None: read it)."""
        decoded = self.decode(data)
        return decoded if isinstance(decoded, Outcome) \
            else self.judge_envelope(decoded, now_ms)

    def decode(self, data: bytes) -> Envelope | Outcome:
        """The first stages (decode, verify the signature): the envelope, or the REJECT
        `judge` gives it."""
        try:
            return decode_envelope(data, swarm=self.swarm_id)
        except RemoteProtocolError as exc:
            return Outcome(Verdict.REJECT, exc.code, None, exc.field, exc.reason)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not take the node down
            self._fault(None, exc, applying=False, data=data)
            return Outcome(Verdict.REJECT, INTERNAL)

    def judge_envelope(self, env: Envelope, now_ms: int | None = None) -> Outcome:
        """The stages after `decode`. Never raises: a fault of ours is REJECT
        `internal`, reported through `on_fault`."""
        try:
            return self._judge(env, wall_ms() if now_ms is None else now_ms)
        except Exception as exc:  # noqa: BLE001 - a bug costs this envelope, not the node
            self._fault(env.id, exc, applying=False)
            return Outcome(Verdict.REJECT, INTERNAL, env)

    def _judge(self, env: Envelope, now_ms: int) -> Outcome:
        if env.kind in LEDGER_VERBS:
            return Outcome(Verdict.REJECT, NOT_GOSSIPED, env, "kind",
                           "a ledger verb is submitted to its account's bucket, not gossiped")
        if env.id in self.ids:
            return Outcome(Verdict.IGNORE, "duplicate", env, "id", "already stored here")
        try:
            check_not_future(env.lamport, now_ms)
            self.replica.check_known_refs(env)
        except LamportFuture as exc:
            return Outcome(Verdict.IGNORE, exc.code, env, exc.field, exc.reason)
        except RemoteProtocolError as exc:
            return Outcome(Verdict.REJECT, exc.code, env, exc.field, exc.reason)
        if self.certify is not None:
            try:
                self.certify(env)
            except RemoteProtocolError as exc:
                return Outcome(Verdict.REJECT, exc.code, env, exc.field, exc.reason)
        decision = self.policy.evaluate(env)
        if decision.verdict is Verdict.ACCEPT:
            return Outcome(Verdict.ACCEPT, decision.reason, env)
        return Outcome(decision.verdict, decision.reason, env, "policy",
                       f"the swarm's policy denies this {env.kind}: {decision.reason}")

    # --- storing and applying -----------------------------------------------------------

    def commit(self, envelopes: list[Envelope], *, sync: bool = True) -> Committed:
        """Store then apply envelopes that passed `judge`. They are written through to
        the operating system before they are applied (so before the caller can forward
        them); `sync` also fsyncs first (see `Store.append`). Raises `StoreError` (the
        only exception it lets out) if the store cannot take them; then nothing was
        applied."""
        fresh: list[Envelope] = []
        seen: set[bytes] = set()
        for env in envelopes:
            if env.id not in self.ids and env.id.raw not in seen:
                seen.add(env.id.raw)
                fresh.append(env)
        self.store.append([(e.id, e.wire) for e in fresh], sync=sync)
        faulted: list[Envelope] = []
        for env in fresh:
            self.ids.add(env.id)
            if not self._apply(env, self.on_accept):
                faulted.append(env)
        return Committed(fresh, faulted)

    def _apply(self, env: Envelope, hooks: list[Callable[[Envelope], None]]) -> bool:
        """Apply a stored envelope to the replica, then give it to each hook, each on
        its own: a fault in one is reported and the others still run. False if any
        faulted (a pending envelope this one released may fault too: that one is
        reported under its own id). The same in live traffic and in replay."""
        self._faulted.clear()
        try:
            self.replica.receive_envelope(env)  # reports its own rejections and faults
        except Exception as exc:  # noqa: BLE001 - the replica guards itself; belt and braces
            self._fault(env.id, exc, applying=True)
        for hook in hooks:
            try:
                hook(env)
            except Exception as exc:  # noqa: BLE001 - one read model's bug, not the node's
                self._fault(env.id, exc, applying=True)
        clean = env.id.raw not in self._faulted
        self._faulted.clear()
        return clean

    def _replica_rejected(self, env: Envelope, exc: Exception) -> None:
        """The replica will never apply `env`. A broken rule (a reversal found once its
        refs arrived): nobody is to be offered it again. A fault of ours: keep it, a
        fixed node applies it on its next start."""
        if not isinstance(exc, RemoteProtocolError):
            self._fault(env.id, exc, applying=True)
            return
        self.ids.discard(env.id)
        if self.on_late_reject is not None:
            try:
                self.on_late_reject(env, exc)
            except Exception as fault:  # noqa: BLE001 - the node's report, not the replica's
                self._fault(env.id, fault, applying=True)

    def _fault(self, envelope_id: Cid | None, exc: BaseException, *, applying: bool,
               data: bytes = b"") -> None:
        self.faults += 1
        first = True
        if applying and envelope_id is not None:  # `_apply` clears the set after each
            first = envelope_id.raw not in self._faulted
            self._faulted.add(envelope_id.raw)
        key = str(envelope_id) if envelope_id is not None else fault_key(data)
        with contextlib.suppress(Exception):  # reporting must not become a fault itself
            self.on_fault(key, exc, applying and first)
