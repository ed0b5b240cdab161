"""Several real nodes in one trio process: homes, start, stop, connect, wait.

For integration tests and benchmarks. Ports are picked by the OS (listen on port 0);
waits poll with a generous deadline and check an end state, never a duration.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from swarm.node.home import GENESIS_FILE, create_identity, ensure_token, write_config
from swarm.node.service import Node, open_node
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.genesis import Genesis

WAIT_S = 60.0


BALANCE = 1_000 * genesis_mod.UNIT_PER_CREDIT  # every node's account holds this at genesis


def make_homes(root: Path, n: int, validators: int | None = None,
               params: Mapping[str, int] | None = None) -> tuple[list[Path], Genesis]:
    """n homes sharing one genesis whose validators are the first `validators` (all by
    default); the others are plain nodes. Every node's account starts with `BALANCE`.
    `params` override genesis parameters (one replica per bucket by default)."""
    homes = [root / f"node{i}" for i in range(n)]
    identities = [create_identity(h) for h in homes]
    gen = genesis_mod.new(
        name="integration", created_ms=0,
        validators=[{"account": ident.public_key, "org": f"o{i}", "asn": i, "region": "r",
                     "stake": 1} for i, ident in enumerate(identities[:validators])],
        accounts=[{"account": ident.public_key, "balance": BALANCE} for ident in identities],
        params={"replicas": 1, **(params or {})},
    )
    for h in homes:
        (h / GENESIS_FILE).write_text(gen.to_json())
        write_config(h, {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": [],
                         "api": "127.0.0.1:0", "swarm": gen.swarm_id.hex()})
        ensure_token(h)
    return homes, gen


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Swarmlet:
    """A handful of in-process nodes sharing one nursery."""

    def __init__(self, nursery: trio.Nursery, homes: list[Path], genesis: Genesis) -> None:
        self.nursery = nursery
        self.homes = homes
        self.genesis = genesis
        self.nodes: dict[int, Node] = {}

    async def start(self, i: int) -> Node:
        node = open_node(self.homes[i])
        await self.nursery.start(node.run)
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        node = self.nodes.pop(i)
        node.stop()
        await wait_for(lambda: not (self.homes[i] / "api.json").exists(), f"node{i} to stop")

    async def connect_all(self) -> None:
        indices = sorted(self.nodes)
        for a, b in itertools.pairwise(indices):  # a line: gossip must relay
            await self.nodes[b].connect(self.nodes[a].addrs()[0])

    async def connect_mesh(self) -> None:
        """Every node to every other, then wait until every validator's Raft transport
        reaches every other: validators talk directly (Raft has no relay), as genesis
        addresses or bootstrap lists let them in a real swarm."""
        indices = sorted(self.nodes)
        for a, b in itertools.combinations(indices, 2):
            await self.nodes[b].connect(self.nodes[a].addrs()[0])
        await wait_for(self.raft_connected, "Raft to reach every validator")

    def raft_connected(self) -> bool:
        """Every validator's Raft transport holds a stream to every other."""
        return all(peer.connected for n in self.nodes.values()
                   if n.decider.transport is not None
                   for peer in n.decider.transport.peers.values())

    def roots(self) -> set[str]:
        return {n.pipeline.replica.plan.root().hex() for n in self.nodes.values()}

    def converged(self, tasks: int) -> bool:
        return len(self.roots()) == 1 and all(
            len(n.pipeline.replica.plan.task_ids()) >= tasks for n in self.nodes.values())


