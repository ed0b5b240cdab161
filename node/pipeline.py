"""The inbound pipeline: bytes -> decode -> verify -> duplicate? -> policy -> store -> apply.

Owns the order of those stages and the verdict each gives. It is what the gossipsub
validator and catch-up both call, so an envelope is judged the same way whichever road
it came by. Verdicts follow gossipsub's three outcomes: ACCEPT (valid and new: stored,
applied, forwarded), IGNORE (valid but not to forward: a duplicate, or over a local
limit), REJECT (invalid: the sending peer is penalised). Every outcome is counted by
reason for /metrics by the caller.

`judge()` never raises on input from the network; `commit()` raises on storage failure,
because a node that cannot persist must stop rather than acknowledge what it may lose.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from swarm.protocol.envelope import Envelope, decode_envelope
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.replay import Replica
from swarm.protocol.sync import IdSet

from .store import Store


class Verdict(enum.Enum):
    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    verdict: Verdict
    reason: str = "ok"


class PolicyStage(Protocol):
    """Decides what a peer may say. The WebAssembly policy will implement this."""

    def evaluate(self, envelope: Envelope) -> PolicyDecision: ...


class SchemaOnlyPolicy:
    """The interim policy: payload schemas are already enforced by decoding, so every
    well-formed envelope is allowed. Replaced by the pinned WebAssembly policy."""

    def evaluate(self, envelope: Envelope) -> PolicyDecision:
        return PolicyDecision(Verdict.ACCEPT)


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str
    envelope: Envelope | None = None


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

    @classmethod
    def open(cls, swarm_id: bytes, store: Store, policy: PolicyStage | None = None,
             replayed: Callable[[Envelope], None] | None = None) -> Pipeline:
        """Rebuild the replica from the store (entries were verified when written);
        `replayed` sees each stored envelope again, to rebuild other read models."""
        replica = Replica(swarm=swarm_id)
        ids = IdSet()
        for envelope_id, wire in store.log():
            _, env = replica.receive(wire, verify=False)
            if replayed is not None and isinstance(env, Envelope):
                replayed(env)
            ids.add(envelope_id)
        return cls(swarm_id, store, replica, ids, policy or SchemaOnlyPolicy())

    def judge(self, data: bytes) -> Outcome:
        """Every check but storage; for the gossip validator and catch-up alike."""
        decoded = self.decode(data)
        return decoded if isinstance(decoded, Outcome) else self.judge_envelope(decoded)

    def decode(self, data: bytes) -> Envelope | Outcome:
        """The first stages (decode, verify the signature): the envelope, or the REJECT
        `judge` gives it."""
        try:
            return decode_envelope(data, swarm=self.swarm_id)
        except RemoteProtocolError as exc:
            return Outcome(Verdict.REJECT, exc.code)
        except Exception:  # noqa: BLE001 - a decoder bug must not take the node down
            return Outcome(Verdict.REJECT, "internal")

    def judge_envelope(self, env: Envelope) -> Outcome:
        """The stages after `decode`: duplicate, certificate, policy."""
        if env.id in self.ids:
            return Outcome(Verdict.IGNORE, "duplicate", env)
        if self.certify is not None:
            try:
                self.certify(env)
            except RemoteProtocolError as exc:
                return Outcome(Verdict.REJECT, exc.code, env)
        decision = self.policy.evaluate(env)
        return Outcome(decision.verdict, decision.reason, env)

    def commit(self, envelopes: list[Envelope], *, sync: bool = True) -> list[Envelope]:
        """Store then apply envelopes that passed `judge`; returns the new ones. They are
        written through to the operating system before they are applied (so before the
        caller can forward them); `sync` also fsyncs first (see `Store.append`)."""
        fresh: list[Envelope] = []
        seen: set[bytes] = set()
        for env in envelopes:
            if env.id not in self.ids and env.id.raw not in seen:
                seen.add(env.id.raw)
                fresh.append(env)
        self.store.append([(e.id, e.wire) for e in fresh], sync=sync)
        for env in fresh:
            self.ids.add(env.id)
            self.replica.receive_envelope(env)
            for hook in self.on_accept:
                hook(env)
        return fresh
