"""A seeded, in-process network of plan replicas: the testnet until real nodes exist.

Each replica has an agent that publishes envelopes; a simulated network delivers each
envelope to every other replica with seeded loss, duplication and delay (so delivery
order differs per replica). Gossip alone leaves gaps, as it will on the real network,
so rounds of anti-entropy (each replica asks a random peer for what it lacks, by id)
follow until no replica lacks anything. The run then checks what the protocol promises:
every replica has the same plan root and the same snapshot bytes, and replaying any
replica's log reproduces its state (P2).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.node.logfile import append_log
from swarm.protocol.envelope import Envelope
from swarm.protocol.replay import Outcome, Replica, replay

from .workload import TEST_SWARM, generate


@dataclass
class SimNode:
    index: int
    replica: Replica
    log: list[bytes] = field(default_factory=list)  # accepted or pending, in arrival order

    def deliver(self, env: Envelope) -> None:
        outcome, _ = self.replica.receive(env.wire)
        if outcome in (Outcome.ACCEPTED, Outcome.PENDING):
            self.log.append(env.wire)

    def has(self, env_id: Any) -> bool:
        return env_id in self.replica.applied or env_id in self.replica.pending


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 5
    envelopes: int = 2000
    seed: int = 1
    loss: float = 0.2
    duplicate: float = 0.1
    delay_max: int = 50  # in delivery steps


@dataclass
class SimResult:
    config: SimConfig
    nodes: list[SimNode]
    gossip_deliveries: int
    lost: int
    duplicated: int
    anti_entropy_rounds: int
    repaired: int

    @property
    def roots(self) -> list[str]:
        return [n.replica.plan.root().hex() for n in self.nodes]

    @property
    def converged(self) -> bool:
        snaps = {n.replica.plan.snapshot() for n in self.nodes}
        return len(set(self.roots)) == 1 and len(snaps) == 1


def run(config: SimConfig, progress: Callable[[str, int, int], None] | None = None) -> SimResult:
    rng = random.Random(config.seed)
    nodes = [SimNode(i, Replica(swarm=TEST_SWARM)) for i in range(config.nodes)]
    # Which node publishes each envelope; the publisher applies it at once.
    queue: list[tuple[int, int, int, Envelope]] = []  # (due step, tiebreak, node, env)
    tiebreak = 0
    lost = duplicated = deliveries = 0
    published: list[Envelope] = []
    for step, env in enumerate(generate(config.envelopes, n_agents=config.nodes,
                                        seed=config.seed)):
        origin = step % config.nodes
        nodes[origin].deliver(env)
        published.append(env)
        for target in range(config.nodes):
            if target == origin:
                continue
            if rng.random() < config.loss:
                lost += 1
                continue
            copies = 2 if rng.random() < config.duplicate else 1
            duplicated += copies - 1
            for _ in range(copies):
                tiebreak += 1
                heapq.heappush(queue, (step + rng.randint(1, config.delay_max), tiebreak,
                                       target, env))
        while queue and queue[0][0] <= step:
            _, _, target, due_env = heapq.heappop(queue)
            nodes[target].deliver(due_env)
            deliveries += 1
        if progress and step % 100 == 0:
            progress("gossip", step, config.envelopes)
    while queue:
        _, _, target, due_env = heapq.heappop(queue)
        nodes[target].deliver(due_env)
        deliveries += 1
    # Anti-entropy: pull what a random peer has and we lack, until nobody lacks anything.
    rounds = repaired = 0
    by_id = {e.id: e for e in published}
    while any(not n.has(e) for n in nodes for e in by_id):
        rounds += 1
        for node in nodes:
            peer = nodes[rng.choice([i for i in range(config.nodes) if i != node.index])]
            peer_ids = [eid for eid in by_id if peer.has(eid) and not node.has(eid)]
            for eid in peer_ids:
                node.deliver(by_id[eid])
                repaired += 1
        if progress:
            progress("anti-entropy", rounds, rounds + 1)
    return SimResult(config, nodes, deliveries, lost, duplicated, rounds, repaired)


def write_logs(result: SimResult, directory: Path) -> list[Path]:
    paths = []
    for node in result.nodes:
        path = directory / f"node{node.index}" / "envelopes.log"
        if path.exists():
            path.unlink()
        append_log(path, node.log)
        paths.append(path)
    return paths


def check_replay(node: SimNode) -> bool:
    """P2: replaying the node's log gives the node's exact snapshot."""
    again = replay(node.log, swarm=TEST_SWARM)
    return again.plan.snapshot() == node.replica.plan.snapshot()
