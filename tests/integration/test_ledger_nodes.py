"""The ledger on five real `swarm-node` processes, driven from the CLI.

Goal: transfers, staking and unbonding driven from the CLI on
different nodes; every node ends with the same ledger root; the genesis supply is
conserved on every node; the ledger refuses overspending with its typed reasons.
Method: `swarm-testnet up -n 5`; a ring of transfers (each node pays the next), three
concurrent transfers from one account that can afford two, staking, unbonding
(the testnet's genesis unbonds in 10 s) and pool membership, with a `kill -9` and restart
of the leader of a busy bucket in the middle; a plain model of the balances alongside;
then every node's `ledger balance --json`, `ledger supply` and `status --json` compared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from swarm.node.client import Client
from swarm.protocol.buckets import bucket_of
from swarm.testnet import cluster

BIN = Path(sys.executable).parent
U = 1_000_000
UNBONDING_S = 10  # testnet/cluster.py's genesis


def run_testnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-testnet"), *args], capture_output=True, text=True,
                          timeout=300)


def cli(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "swarm-node"), *args, "--home", str(home)],
                            capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def cli_json(home: Path, *args: str) -> Any:
    return json.loads(cli(home, *args, "--json").stdout)


@pytest.fixture
def net(tmp_path: Path) -> Any:
    directory = tmp_path / "tn"
    result = run_testnet("up", "-n", "5", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    yield directory
    run_testnet("down", "--dir", str(directory))


def test_transfers_staking_and_unbonding_from_the_cli_agree_everywhere(net: Path) -> None:
    members = cluster.load_state(net)
    homes = [m.home for m in members]
    accounts = [cli_json(h, "status")["account"] for h in homes]
    model = {a: {"balance": 10_000 * U, "locked": 1_000 * U, "unbonding": 0}
             for a in accounts}

    # A ring of transfers, each from a different node.
    for i, home in enumerate(homes):
        to = accounts[(i + 1) % 5]
        amount = f"{100 + i}.5"
        doc = cli_json(home, "ledger", "transfer", to, amount)
        assert doc["ok"] and doc["kind"] == "transfer"
        units = (100 + i) * U + U // 2
        model[accounts[i]]["balance"] -= units
        model[to]["balance"] += units
        assert doc["account"]["balance"] == model[accounts[i]]["balance"]

    # Three concurrent transfers from one account that can afford two: the bucket
    # orders them, the third is refused with the ledger's reason, nothing overspends.
    payer = 3
    budget = model[accounts[payer]]["balance"] // U
    each = str(budget // 2 - 1)
    results: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def pay(to: str) -> None:
        results.append((to, cli(homes[payer], "ledger", "transfer", to, each, ok=False)))

    threads = [threading.Thread(target=pay, args=(accounts[k],)) for k in (0, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paid = [to for to, r in results if r.returncode == 0]
    refused = [r for _, r in results if r.returncode != 0]
    assert len(paid) == 2 and len(refused) == 1, [r.stderr for _, r in results]
    assert "insufficient balance: have" in refused[0].stderr
    for payee in paid:
        model[accounts[payer]]["balance"] -= int(each) * U
        model[payee]["balance"] += int(each) * U

    # Kill -9 the leader of the payer's bucket, keep transferring, restart it.
    status = Client(homes[0]).get("/raft/status")
    bucket = bucket_of(bytes.fromhex(accounts[1]), status["bucket_count"])
    by_id = {Client(h).get("/raft/status")["node_id"]: m for h, m in zip(homes, members,
                                                                          strict=True)}
    leader = None
    for m in members:
        row = Client(m.home).get(f"/raft/status?bucket={bucket}")["buckets"][0]
        if row.get("role") == "leader":
            leader = by_id[row["leader"]]
    assert leader is not None
    os.kill(leader.pid, signal.SIGKILL)
    survivor = next(m for m in members if m is not leader)
    # node1 pays node4 through whichever node is up; the bucket elects a new leader.
    payer_home = homes[1] if members[1] is not leader else None
    if payer_home is not None:
        doc = cli_json(payer_home, "ledger", "transfer", accounts[4], "7", "--timeout", "60")
        assert doc["ok"]
        model[accounts[1]]["balance"] -= 7 * U
        model[accounts[4]]["balance"] += 7 * U
    doc = cli_json(survivor.home, "ledger", "transfer", accounts[leader.index], "3",
                   "--timeout", "60")
    model[accounts[survivor.index]]["balance"] -= 3 * U
    model[accounts[leader.index]]["balance"] += 3 * U
    restarted = cluster.start_member(leader.index, leader.home, leader.addr)
    members[leader.index] = restarted
    cluster.save_state(net, members)
    cluster.wait_until(lambda: cluster.status_of(restarted) is not None, 60, "the restart")

    # Staking and unbonding on node2, pool membership on node4.
    cli(homes[2], "stake", "add", "200")
    cli(homes[2], "stake", "remove", "50.25")
    early = cli(homes[2], "stake", "complete-unbonding", ok=False)
    assert early.returncode == 1 and "unbonding completes in" in early.stderr
    me = model[accounts[2]]
    me["balance"] -= 200 * U
    me["locked"] += 200 * U - 50 * U - U // 4
    time.sleep(UNBONDING_S + 1)
    cli(homes[2], "stake", "complete-unbonding")
    me["balance"] += 50 * U + U // 4
    shown = cli_json(homes[2], "stake", "show")
    assert (shown["locked"], shown["unbonding"]) == (me["locked"], 0)
    cli(homes[4], "pool", "leave")
    cli(homes[4], "pool", "register", "--org", "acme", "--asn", "64500", "--region", "eu",
        "--capability", "python")
    left = cli(homes[4], "pool", "leave")
    assert left.returncode == 0
    again = cli(homes[4], "pool", "leave", ok=False)
    assert "is not in the pool" in again.stderr

    # Every node: the same ledger root, the model's balances, the supply conserved.
    def agreed() -> bool:
        roots = set()
        for m in members:
            s = cluster.status_of(m)
            if s is None:
                return False
            roots.add(s["ledger_root"])
            supply = Client(m.home).get("/ledger/supply")
            if supply["in_flight"] or not supply["conserved"]:
                return False
        return len(roots) == 1

    cluster.wait_until(agreed, 120, "every node to agree on the ledger root")
    for m in members:
        for a in accounts:
            got = cli_json(m.home, "ledger", "balance", a)
            assert set(got) == {"account", "balance", "locked", "unbonding", "escrowed"}
            assert {k: got[k] for k in ("balance", "locked", "unbonding")} == model[a], (
                m.index, a)
        supply = cli_json(m.home, "ledger", "supply")
        assert set(supply) == {"total", "circulating", "locked", "escrowed", "burned"}
        assert supply["total"] + supply["burned"] == 5 * 11_000 * U
    history = cli_json(homes[0], "ledger", "history", accounts[2])["records"]
    assert [r["kind"] for r in history if r["account"] == accounts[2]] == [
        "transfer", "stake", "unstake", "complete_unbonding", "complete_unbonding"]
