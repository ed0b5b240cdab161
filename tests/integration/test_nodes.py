"""Real nodes on loopback: convergence, restart with catch-up, persistence.

Method: nodes run in one trio process with OS-chosen ports, connected in a line so that
gossip has to be relayed; every assertion is about end state (equal plan roots, counts)
reached within a generous deadline.
"""

from __future__ import annotations

from typing import Any

from swarm.node.store import Store
from swarm.protocol.sync import IdSet
from swarm.testnet.inproc import wait_for


async def test_five_nodes_converge(swarmlet: Any) -> None:
    s = await swarmlet(5)
    ids = []
    for i in range(5):
        doc = await s.nodes[i].publish("NEED", {"class": "simple", "budget": 5,
                                                "title": f"from {i}"}, "", [])
        ids.append(doc["id"])
    # A plan patch that refers to a NEED published elsewhere.
    await wait_for(lambda: ids[0] in s.nodes[4].pipeline.replica.plan.task_ids(),
                   "node4 to see node0's NEED")
    await s.nodes[4].publish("UPDATE_PLAN", {"base_lamport": 1, "ops": [
        {"op": "ADD_TASK", "task_id": "sub", "title": "part"},
        {"op": "LINK", "from": ids[0], "to": "sub"}]}, ids[0], [ids[0]])
    await wait_for(lambda: s.converged(6), "five nodes to agree")
    for node in s.nodes.values():
        assert node.pipeline.replica.plan.links() == [(ids[0], "sub")]
        assert node.status()["envelopes"] == 6
    view = s.nodes[2].plan_thread(ids[0])
    assert [t["task_id"] for t in view["tasks"]] == [ids[0], "sub"]


async def test_stopped_node_catches_up_after_restart(swarmlet: Any) -> None:
    s = await swarmlet(3)
    await s.nodes[0].publish("NEED", {"class": "simple", "budget": 1}, "", [])
    await wait_for(lambda: s.converged(1), "first NEED everywhere")
    await s.stop(2)
    for k in range(20):
        await s.nodes[k % 2].publish("NEED", {"class": "complex", "budget": 10 + k}, "", [])
    await wait_for(lambda: s.converged(21), "nodes 0 and 1 to agree")
    # Gossip would hand them over itself when node 2 returns (py-libp2p keeps messages
    # for a peer that went away, 30 s): restart nodes 0 and 1 too, so that only
    # catch-up can bring them.
    for i in (0, 1):
        await s.stop(i)
        await s.start(i)
    await s.nodes[1].connect(s.nodes[0].addrs()[0])
    node2 = await s.start(2)
    assert len(node2.pipeline.replica.plan.task_ids()) == 1  # persisted, then behind
    await node2.connect(s.nodes[1].addrs()[0])
    # Nothing is re-published: only catch-up can bring the 20 NEEDs it missed.
    await wait_for(lambda: s.converged(21), "the restarted node to catch up")
    assert node2.metrics.synced._value.get() >= 20


async def test_restart_keeps_plan_root(swarmlet: Any) -> None:
    s = await swarmlet(1)
    node = s.nodes[0]
    for k in range(5):
        await node.publish("NEED", {"class": "simple", "budget": k + 1}, "", [])
    root, clock = node.pipeline.replica.plan.root(), node.clock.time
    await s.stop(0)
    again = await s.start(0)
    assert again.pipeline.replica.plan.root() == root
    assert again.clock.time == clock
    doc = await again.publish("NEED", {"class": "simple", "budget": 9}, "", [])
    assert doc["lamport"] == clock + 1  # P3 across restarts


async def test_store_append_is_ordered_and_idempotent(tmp_path: Any) -> None:
    from swarm.testnet.workload import generate

    envs = list(generate(30, seed=2))
    store = Store(tmp_path / "db")
    store.append([(e.id, e.wire) for e in envs[:10]])
    store.append([(e.id, e.wire) for e in envs[10:]])
    assert [c for c, _ in store.log()] == [e.id for e in envs]
    assert store.get(envs[3].id) == envs[3].wire and store.has(envs[29].id)
    store.close()
    reopened = Store(tmp_path / "db")
    assert reopened.count == 30
    assert IdSet(c for c, _ in reopened.log()).root() == IdSet(e.id for e in envs).root()
    reopened.close()
