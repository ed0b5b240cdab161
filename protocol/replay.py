"""Applying envelopes to a plan replica, and replaying a log (P2: deterministic replay).

Owns how each verb becomes plan ops, when a winning bid's patch joins the plan, causal
delivery (an envelope waits until every
envelope it references has been applied, so the Lamport check of P3 gives the same
answer in every delivery order), duplicate suppression, and the counts a replay reports.
Same log in, same snapshot bytes and the same Merkle root out.

Applying one envelope never raises: a rule it breaks (`lamport_reversal`) or an
unexpected exception while turning it into plan ops (a bug, code `internal`) rejects
that envelope alone, and the replica goes on with the next. Every rejection, of the
envelope received or of a pending one its arrival released, is also handed to
`on_reject`, so a node can forget what it will never apply and log what it could not.
A fault midway through an envelope's plan ops leaves the ops before it applied (the plan
is a set of ops, so that is a state like any other, and every replica running the same
code stops at the same op).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .cid import Cid
from .envelope import Envelope, decode_envelope
from .errors import RemoteProtocolError
from .lamport import LamportClock, check_refs
from .plan import (
    AddTask,
    LinkOp,
    OpKey,
    Plan,
    PlanOp,
    PlanVersion,
    op_from_payload,
    patch_scope_error,
)

PENDING_MAX = 10_000


def plan_ops(env: Envelope) -> list[PlanOp]:
    """The plan ops an envelope carries, keyed by (lamport, sender, id, i).

    A NEED adds its task and an UPDATE_PLAN its ops. Lifecycle verbs change no plan
    (a task's state is its bucket's); a PROPOSE's patch waits for `Replica.admit`."""

    def key(seq: int) -> OpKey:
        return OpKey(env.lamport, env.sender, env.id.raw, seq)

    p = env.payload
    if env.kind == "NEED":
        return [AddTask(key(0), str(env.id), p.get("title", ""), p["class"], "")]
    if env.kind == "UPDATE_PLAN":
        # decode_envelope enforced the payload schema, including LINK from != to.
        return [op_from_payload(raw, key(i), f"payload.ops[{i}]", checked=True)
                for i, raw in enumerate(p["ops"])]
    return []


def patch_ops(env: Envelope) -> list[PlanOp]:
    """A PROPOSE's patch as plan ops, keyed by the PROPOSE (lamport, sender, id, i)."""
    return [op_from_payload(raw, OpKey(env.lamport, env.sender, env.id.raw, i),
                            f"payload.patch.ops[{i}]", checked=True)
            for i, raw in enumerate(env.payload["patch"]["ops"])]


@dataclass(frozen=True, slots=True)
class Admission:
    """A bucket decided for a PROPOSE (a certified decision): its patch joins the plan
    once `k_plan` distinct senders approved it by ATTEST_PLAN."""

    need: Cid
    k_plan: int


class Outcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PENDING = "pending"
    REJECTED = "rejected"


@dataclass
class Replica:
    """A plan replica fed with envelopes in any order."""

    swarm: bytes | None = None
    plan: Plan = field(default_factory=Plan)
    clock: LamportClock = field(default_factory=LamportClock)
    applied: dict[Cid, int] = field(default_factory=dict)  # id -> lamport
    pending: dict[Cid, Envelope] = field(default_factory=dict)
    waiting_on: dict[Cid, set[Cid]] = field(default_factory=dict)  # missing ref -> waiters
    kinds: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    received: int = 0
    dropped_pending: int = 0
    # Patches of winning bids. A PROPOSE with a patch is held by id until its bucket
    # decides for it (`admit`) and enough approving ATTEST_PLANs, keyed by (NEED,
    # proposal id), arrived; every side is a set, so the plan stays a function of what
    # was received, in any order.
    proposals: dict[Cid, Envelope] = field(default_factory=dict)
    admissions: dict[Cid, Admission] = field(default_factory=dict)
    plan_votes: dict[tuple[bytes, str], set[bytes]] = field(default_factory=dict)
    admitted_for: dict[bytes, list[Cid]] = field(default_factory=dict)  # by NEED
    merged: set[Cid] = field(default_factory=set)
    patches_refused: int = 0
    # Told of every envelope `_apply` rejects (it is never applied): the error is a
    # RemoteProtocolError for a broken rule, anything else for a fault of ours.
    on_reject: Callable[[Envelope, Exception], None] | None = None

    def receive(self, wire: bytes, *, verify: bool = True) -> tuple[Outcome, Any]:
        """Bytes from the wire or a log. Returns (outcome, envelope or error)."""
        self.received += 1
        try:
            env = decode_envelope(wire, swarm=self.swarm, verify=verify)
        except RemoteProtocolError as exc:
            self.rejected[exc.code] += 1
            return Outcome.REJECTED, exc
        return self.receive_envelope(env)

    def receive_envelope(self, env: Envelope) -> tuple[Outcome, Any]:
        if env.id in self.applied or env.id in self.pending:
            self.duplicates += 1
            return Outcome.DUPLICATE, env
        missing = [r for r in env.refs if r not in self.applied]
        if missing:
            if len(self.pending) >= PENDING_MAX:
                self.dropped_pending += 1
                # Not the envelope's fault: catch-up will offer it again later.
                return Outcome.REJECTED, RemoteProtocolError(
                    "refs", f"{PENDING_MAX} envelopes already wait for their refs",
                    code="pending_full")
            self.pending[env.id] = env
            for r in missing:
                self.waiting_on.setdefault(r, set()).add(env.id)
            return Outcome.PENDING, env
        outcome = self._apply(env)
        # Release whatever was waiting on this envelope (iteratively, no recursion).
        ready = [env.id] if outcome[0] is Outcome.ACCEPTED else []
        while ready:
            done = ready.pop()
            for waiter_id in sorted(self.waiting_on.pop(done, ())):
                waiter = self.pending.get(waiter_id)
                if waiter is None or any(r not in self.applied for r in waiter.refs):
                    continue
                del self.pending[waiter_id]
                if self._apply(waiter)[0] is Outcome.ACCEPTED:
                    ready.append(waiter_id)
        return outcome

    def known_lamport(self, envelope_id: Cid) -> int | None:
        """The Lamport time of an envelope this replica knows: applied, or held as
        pending (stored, waiting for refs of its own); None if unknown."""
        t = self.applied.get(envelope_id)
        if t is None:
            waiting = self.pending.get(envelope_id)
            t = waiting.lamport if waiting is not None else None
        return t

    def ref_lamports(self, env: Envelope) -> list[int]:
        """The Lamport times of `env`'s refs that this replica knows."""
        return [t for t in map(self.known_lamport, env.refs) if t is not None]

    def check_known_refs(self, env: Envelope) -> None:
        """Raise LamportReversal if `env` is not after every ref whose time is known
        here. An envelope that passes may still fail once the rest of its refs arrive;
        one that fails would never be applied, whatever arrives later."""
        check_refs(env.lamport, self.ref_lamports(env))

    def _apply(self, env: Envelope) -> tuple[Outcome, Any]:
        try:
            check_refs(env.lamport, (self.applied[r] for r in env.refs))
            ops = plan_ops(env)
            self.plan.apply_all(ops)
            if env.kind == "PROPOSE" and "patch" in env.payload:
                self.proposals[env.id] = env
                self._try_merge(env.id)
            elif env.kind == "ATTEST_PLAN" and env.payload["verdict"] == "approve":
                p = env.payload
                self.plan_votes.setdefault((p["need_id"].raw, p["proposal_id"]),
                                           set()).add(env.sender)
                for proposal in self.admitted_for.get(p["need_id"].raw, ()):
                    self._try_merge(proposal)
        except RemoteProtocolError as exc:
            return self._reject(env, exc, exc.code)
        except Exception as exc:  # noqa: BLE001 - a bug costs this envelope, not the replica
            return self._reject(env, exc, "internal")
        self.applied[env.id] = env.lamport
        self.clock.observe(env.lamport)
        self.kinds[env.kind] += 1
        return Outcome.ACCEPTED, env

    def admit(self, proposal: Cid, need: Cid, k_plan: int) -> bool:
        """The NEED's bucket decided for the PROPOSE `proposal` (a certified decision,
        which the caller checked). True if its patch is in the plan now."""
        if proposal not in self.admissions:
            self.admissions[proposal] = Admission(need, k_plan)
            self.admitted_for.setdefault(need.raw, []).append(proposal)
        return self._try_merge(proposal)

    def _try_merge(self, proposal: Cid) -> bool:
        if proposal in self.merged:
            return True
        adm, env = self.admissions.get(proposal), self.proposals.get(proposal)
        if adm is None or env is None:
            return False
        p = env.payload
        if p["need_id"] != adm.need:
            return False  # the decision names another NEED's bid: never merged
        votes = self.plan_votes.get((adm.need.raw, p["proposal_id"]), set())
        if len(votes - {env.sender}) < adm.k_plan:
            return False
        self.merged.add(proposal)
        # Its bucket refused an out-of-scope patch at the bid; a replica checks again
        # rather than trust that every bucket ran these rules.
        if patch_scope_error(str(adm.need), p["patch"]["ops"]) is not None:
            self.patches_refused += 1
            return False
        self.plan.apply_all(patch_ops(env))
        return True

    def _reject(self, env: Envelope, exc: Exception, code: str) -> tuple[Outcome, Any]:
        self.rejected[code] += 1
        if self.on_reject is not None:
            self.on_reject(env, exc)
        return Outcome.REJECTED, exc

    def summary(self) -> dict[str, Any]:
        plan = self.plan
        version = PlanVersion.of(plan, self.clock.time)
        return {
            "plan_root": version.root.hex(),
            "snapshot_sha256": hashlib.sha256(plan.snapshot()).hexdigest(),
            "lamport": version.lamport,
            "envelopes": self.received,
            "accepted": len(self.applied),
            "duplicates": self.duplicates,
            "pending": len(self.pending),
            "rejected": dict(sorted(self.rejected.items())),
            "kinds": dict(sorted(self.kinds.items())),
            "ops": plan.op_count,
            "tasks": version.tasks,
            "links": version.links,
            "links_rejected": plan.rejected_links,
            "patches_merged": len(self.merged) - self.patches_refused,
        }


def replay(wires: Iterable[bytes], *, swarm: bytes | None = None, verify: bool = True) -> Replica:
    """Rebuild a plan replica from envelopes in log order."""
    replica = Replica(swarm=swarm)
    for wire in wires:
        replica.receive(wire, verify=verify)
    return replica


__all__ = ["Admission", "LinkOp", "Outcome", "Replica", "patch_ops", "plan_ops", "replay"]
