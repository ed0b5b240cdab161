"""Realistic envelope traffic for the simulation, the benchmarks and the tests.

Owns nothing protocol-related: it only drives `swarm.protocol` the way agents would.
Everything is drawn from one `random.Random(seed)`, so a seed names a workload exactly.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.lamport import LamportClock

TEST_SWARM = hashlib.sha256(b"can-swarm test swarm").digest()


def fake_cid(label: str) -> Cid:
    """A well-formed CID for an object that does not need to exist (tests, examples)."""
    return dag_cbor_cid(label.encode())


# A ledger envelope's client op id and validity limit (2026-01-01 plus ten minutes): the
# examples' and the generated traffic's, well-formed; no bucket clock is involved here.
EXAMPLE_VALID_UNTIL_MS = 1_767_225_600_000 + 600_000


def ledger_fields(op_id: bytes) -> dict[str, Any]:
    return {"op_id": op_id, "valid_until_ms": EXAMPLE_VALID_UNTIL_MS}


def example_payloads() -> dict[str, dict[str, Any]]:
    """One valid payload for every verb."""
    need = fake_cid("need")
    commit = fake_cid("commit")
    lease = fake_cid("lease")
    return {
        "NEED": {"class": "complex", "budget": 50, "title": "summarise a paper",
                 "input": fake_cid("input"), "bid_window_ms": 30_000, "k_result": 3,
                 "capabilities": ["nlp", "summarise"]},
        "PROPOSE": {"need_id": need, "proposal_id": "p-1", "cost": 40, "eta_ms": 60_000,
                    "ballot": "b-1",
                    "patch": {"base_lamport": 3, "ops": [
                        {"op": "ADD_TASK", "task_id": "t-read", "title": "read",
                         "parent": str(need)},
                        {"op": "LINK", "from": str(need), "to": "t-read"}]}},
        "DECIDE": {"need_id": need, "proposal_id": "p-1", "k_plan": 2, "epoch": 1},
        "CLAIM": {"task_id": "t-read", "lease_ttl_ms": 60_000, "heartbeat_interval_ms": 10_000,
                  "need_id": need, "proposal_id": "p-1"},
        "HEARTBEAT": {"task_id": "t-read", "lease_id": lease, "progress": 40},
        "COMMIT": {"task_id": "t-read", "lease_id": lease, "result": fake_cid("result"),
                   "evidence": sorted([fake_cid("e1"), fake_cid("e2")]), "verify_bounty": 5},
        "ATTEST": {"task_id": "t-read", "commit_id": commit, "verdict": "valid"},
        "FINALIZE": {"task_id": "t-read", "commit_id": commit},
        "YIELD": {"task_id": "t-read", "reason": "overloaded", "lease_id": lease},
        "RELEASE": {"task_id": "t-read", "lease_id": lease, "reason": "timeout"},
        "UPDATE_PLAN": {"base_lamport": 4, "ops": [
            {"op": "ADD_TASK", "task_id": "t-write", "title": "write", "class": "simple"},
            {"op": "LINK", "from": "t-write", "to": "t-read"}]},
        "ATTEST_PLAN": {"need_id": need, "proposal_id": "p-1", "verdict": "approve"},
        "CHALLENGE": {"task_id": "t-read", "commit_id": commit, "proof_type": "output_mismatch",
                      "evidence": fake_cid("proof"), "bond_amount": 100, "size_bytes": 2048},
        "INVALIDATE": {"task_id": "t-read", "challenge_id": fake_cid("challenge"),
                       "slashed_verifiers": [bytes([1]) * 32, bytes([2]) * 32],
                       "new_k_result": 5},
        "WITHDRAW": {"task_id": "t-read", "challenge_id": fake_cid("challenge")},
        "TRANSFER": {"to": bytes([7]) * 32, "amount": 25, "memo": "thanks",
                     **ledger_fields(bytes([1]) * 16)},
        "STAKE": {"amount": 1000, **ledger_fields(bytes([2]) * 16)},
        "UNSTAKE": {"amount": 400, **ledger_fields(bytes([3]) * 16)},
        "COMPLETE_UNBONDING": ledger_fields(bytes([4]) * 16),
        "POOL_REGISTER": {"capabilities": ["code", "nlp"], "org": "acme", "asn": 64512,
                          "region": "eu-west", **ledger_fields(bytes([5]) * 16)},
        "POOL_LEAVE": ledger_fields(bytes([6]) * 16),
    }


@dataclass
class Agent:
    identity: Identity
    swarm: bytes
    clock: LamportClock = field(default_factory=LamportClock)

    def make(self, kind: str, payload: dict[str, Any], refs: list[Envelope] | None = None,
             thread: str = "") -> Envelope:
        for ref in refs or ():
            self.clock.observe(ref.lamport)
        return make_envelope(self.identity, kind=kind, swarm=self.swarm,
                             lamport=self.clock.tick(), ts=0, payload=payload, thread=thread,
                             refs=[r.id for r in refs or ()])


def agents(n: int, rng: random.Random, swarm: bytes = TEST_SWARM) -> list[Agent]:
    return [Agent(Identity(rng.randbytes(32)), swarm) for _ in range(n)]


def generate(count: int, *, n_agents: int = 5, seed: int = 0,
             swarm: bytes = TEST_SWARM) -> Iterator[Envelope]:
    """A plausible mix of task traffic: NEEDs, plan patches with links, bids, decisions,
    claims, heartbeats, commits, attestations, finalisations and transfers. Envelopes
    reference what they act on, so Lamport times respect causality (P3)."""
    rng = random.Random(seed)
    crowd = agents(n_agents, rng, swarm)
    needs: list[Envelope] = []
    tasks: list[str] = []
    made = 0
    while made < count:
        a = rng.choice(crowd)
        roll = rng.random()
        if not needs or roll < 0.15:
            env = a.make("NEED", {"class": rng.choice(["simple", "complex", "critical"]),
                                  "budget": rng.randint(1, 1000), "title": f"task {made}"})
            needs.append(env)
            tasks.append(str(env.id))
        elif roll < 0.40:
            need = rng.choice(needs[-50:])
            base = str(need.id)
            ops: list[dict[str, Any]] = []
            for j in range(rng.randint(1, 3)):
                sub = f"{base[-12:]}/{made}.{j}"
                ops.append({"op": "ADD_TASK", "task_id": sub, "title": "subtask"})
                ops.append({"op": "LINK", "from": base, "to": sub})
                tasks.append(sub)
            if rng.random() < 0.3:  # occasionally a link that may close a cycle
                x, y = rng.sample(tasks[-40:], 2) if len(tasks) > 2 else (base, tasks[0])
                if x != y:
                    ops.append({"op": "LINK", "from": x, "to": y})
            env = a.make("UPDATE_PLAN", {"base_lamport": need.lamport, "ops": ops}, [need],
                         thread=base)
        elif roll < 0.55:
            need = rng.choice(needs[-50:])
            env = a.make("PROPOSE", {"need_id": need.id, "proposal_id": f"p{made}",
                                     "cost": rng.randint(0, 100), "eta_ms": 60_000,
                                     "ballot": f"b{made}"}, [need])
        elif roll < 0.62:
            need = rng.choice(needs[-50:])
            env = a.make("DECIDE", {"need_id": need.id, "proposal_id": f"p{made}",
                                    "k_plan": 1, "epoch": 0}, [need])
        elif roll < 0.90:
            kind = rng.choice(["CLAIM", "HEARTBEAT", "COMMIT", "ATTEST", "FINALIZE"])
            task = rng.choice(tasks[-100:])
            lease = fake_cid(f"lease{made}")
            payload: dict[str, Any] = {
                "CLAIM": {"task_id": task, "lease_ttl_ms": 60_000,
                          "heartbeat_interval_ms": 5_000},
                "HEARTBEAT": {"task_id": task, "lease_id": lease,
                              "progress": rng.randint(0, 100)},
                "COMMIT": {"task_id": task, "lease_id": lease,
                           "result": fake_cid(f"r{made}")},
                "ATTEST": {"task_id": task, "commit_id": fake_cid(f"c{made}"),
                           "verdict": "valid"},
                "FINALIZE": {"task_id": task, "commit_id": fake_cid(f"c{made}")},
            }[kind]
            env = a.make(kind, payload)
        else:
            env = a.make("TRANSFER", {"to": rng.choice(crowd).identity.public_key,
                                      "amount": rng.randint(1, 50),
                                      **ledger_fields(rng.randbytes(16))})
        made += 1
        yield env
