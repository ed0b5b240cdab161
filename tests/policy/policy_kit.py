"""Helpers for the policy tests: a genesis with known stakes, a controllable clock, and
a `WasmPolicy` over the committed module.

Senders: `staked` is a validator with exactly `min_verifier_stake`, `poor` one unit
short of it, `outsider` is not a validator (stake 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from swarm.node.policy import GenesisContext, WasmPolicy
from swarm.policy_wasm.host import PolicyHost, load_for_genesis
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.genesis import Genesis

STAKED = Identity(bytes([1]) * 32)
POOR = Identity(bytes([2]) * 32)
OUTSIDER = Identity(bytes([3]) * 32)


@dataclass
class Clock:
    """Milliseconds that move only when a test says so."""

    now: int = 10_000

    def __call__(self) -> int:
        return self.now


def make_genesis(**params: int) -> Genesis:
    base = genesis_mod.DEFAULT_PARAMS
    stake = params.get("min_verifier_stake", base["min_verifier_stake"])
    return genesis_mod.new(
        name="policy-tests", created_ms=0,
        validators=[
            {"account": STAKED.public_key, "org": "a", "asn": 1, "region": "r",
             "stake": stake},
            {"account": POOR.public_key, "org": "b", "asn": 2, "region": "r",
             "stake": stake - 1},
        ],
        params={"replicas": 1, **params},
    )


@dataclass
class PolicyKit:
    genesis: Genesis
    clock: Clock
    policy: WasmPolicy
    lamport: dict[bytes, int] = field(default_factory=dict)

    @property
    def host(self) -> PolicyHost:
        return self.policy.host

    def envelope(self, kind: str, payload: dict[str, Any], sender: Identity = STAKED,
                 thread: str = "") -> Envelope:
        stamp = self.lamport.get(sender.public_key, 0) + 1
        self.lamport[sender.public_key] = stamp
        return make_envelope(sender, kind=kind, swarm=self.genesis.swarm_id, lamport=stamp,
                             ts=1_700_000_000_000, payload=payload, thread=thread)


def kit_for(**params: int) -> PolicyKit:
    gen = make_genesis(**params)
    clock = Clock()
    host = load_for_genesis(gen.params, None)
    return PolicyKit(gen, clock, WasmPolicy(host, GenesisContext(gen, clock)))

