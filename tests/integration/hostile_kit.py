"""What every hostile test checks after its attack: the swarm still does its work.

`swarm_works(s)` posts a NEED, makes a ledger transfer and decides a NEED through every
node of an in-process `Swarmlet`, then waits until every node holds one plan root and
every validator one ledger root. An attack that stalls a node, pins its clock, poisons its ledger or
splits the replicas fails here, whatever the attack's own assertions said.
"""

from __future__ import annotations

import os

import trio

from swarm.protocol.raft import NONE
from swarm.testnet.inproc import Swarmlet, wait_for

TRANSFER_CREDITS = "0.25"


def ledger_roots(s: Swarmlet) -> set[str]:
    """The ledger roots of the validators. A node that is not a validator follows by
    chain sync, a pull a second behind (tests/integration/test_chain_sync.py checks
    it); its root is not compared here, so these checks do not wait on that lag."""
    return {n.ledger.root_hex() for n in s.nodes.values() if n.decider.raft.id != NONE}


async def swarm_works(s: Swarmlet, *, timeout_s: float = 90.0) -> None:
    """A plan task (a gossiped NEED), ledger transfer and decide on every node; then one
    plan root and one ledger root on every validator. Raises AssertionError naming what
    failed."""
    nodes = sorted(s.nodes.items())
    accounts = [n.identity.public_key.hex() for _, n in nodes]
    tasks_before = max(len(n.pipeline.replica.plan.task_ids()) for _, n in nodes)
    need_ids: list[str] = []
    with trio.fail_after(timeout_s):
        for k, (i, node) in enumerate(nodes):
            need = await node.publish("NEED", {"class": "simple", "budget": 1,
                                               "title": f"still working {i}"}, "", [])
            need_ids.append(need["id"])
            to = accounts[(k + 1) % len(accounts)]
            done = await node.ledger.transfer(to, TRANSFER_CREDITS, "still working")
            assert done["ok"], f"node{i}: transfer refused: {done}"
        for k, (i, node) in enumerate(nodes):
            proposal = f"p-{os.urandom(4).hex()}"
            decided = await node.decider.try_decide(need_ids[k], proposal)
            assert decided["proposal_id"] == proposal, (
                f"node{i}: a fresh NEED was decided for another proposal: {decided}")
    await wait_for(lambda: s.converged(tasks_before + len(nodes)),
                   "one plan root on every node", timeout_s)
    await wait_for(lambda: len(ledger_roots(s)) == 1, "one ledger root on every validator",
                   timeout_s)
    for i, node in nodes:
        if node.decider.raft.id == NONE:
            continue
        supply = node.ledger.supply()
        assert supply["conserved"], f"node{i}: supply not conserved: {supply}"


def cli_swarm_works(homes: list[os.PathLike[str]], *, timeout_s: float = 180.0
                    ) -> None:
    """`swarm_works` for process nodes, through the CLI: `plan add`, `ledger transfer`
    and `decide` on every node (its home in `homes`), then `status --json` until every
    node shows one plan root and one ledger root. Raises AssertionError naming what
    failed."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "swarm-node")

    def cli(home: os.PathLike[str], *args: str) -> dict[str, object]:
        done = subprocess.run([exe, *args, "--home", str(home), "--json"],
                              capture_output=True, text=True, timeout=timeout_s)
        assert done.returncode == 0, f"{home}: swarm-node {' '.join(args)}: {done.stderr}"
        doc: dict[str, object] = json.loads(done.stdout)
        return doc

    accounts = [str(cli(h, "status")["account"]) for h in homes]
    need_ids = []
    for k, home in enumerate(homes):
        need_ids.append(str(cli(home, "plan", "add", "--class", "simple", "--budget", "1",
                                "--title", f"still working {k}")["need_id"]))
        to = accounts[(k + 1) % len(homes)]
        done = cli(home, "ledger", "transfer", to, TRANSFER_CREDITS, "--memo", "still working",
                   "--timeout", "60")
        assert done["ok"], f"{home}: transfer refused: {done}"
    for k, home in enumerate(homes):
        proposal = f"p-{os.urandom(4).hex()}"
        decided = cli(home, "decide", need_ids[k], proposal, "--timeout", "60")
        assert decided["proposal_id"] == proposal, (
            f"{home}: a fresh NEED was decided for another proposal: {decided}")
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [cli(h, "status") for h in homes]
        plan_roots = {s["plan_root"] for s in statuses}
        ledger_roots_ = {s["ledger_root"] for s in statuses}
        if len(plan_roots) == 1 and len(ledger_roots_) == 1:
            return
        assert time.monotonic() < deadline, (
            f"after {timeout_s:g} s: plan roots {sorted(plan_roots)}, ledger roots "
            f"{sorted(ledger_roots_)}")
        time.sleep(0.5)
