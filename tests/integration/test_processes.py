"""Real `swarm-node` processes: the testnet commands, `kill -9`, and the CLI against a
running node.

Goal: what the node acknowledged survives `kill -9`; a killed node restarts with the same
plan root and catches up; the testnet layout and commands behave as documented. Method:
`swarm-testnet up` in a temporary folder, the CLI as a user runs it, SIGKILL, restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.node.client import Client
from swarm.testnet import cluster

BIN = Path(sys.executable).parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-node"), *args], capture_output=True, text=True,
                          timeout=120)


def run_testnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-testnet"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def net(tmp_path: Path) -> object:
    directory = tmp_path / "tn"
    result = run_testnet("up", "-n", "3", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    yield directory
    run_testnet("down", "--dir", str(directory))


def roots(members: list[cluster.Member]) -> set[str]:
    out = set()
    for m in members:
        s = cluster.status_of(m)
        out.add(s["plan_root"] if s else "down")
    return out


def test_kill_9_loses_nothing_acknowledged(net: Path) -> None:
    status = json.loads(run_testnet("status", "--dir", str(net), "--json").stdout)
    assert [n["home"] for n in status["nodes"]] == [str(net / f"node{i}") for i in range(3)]
    assert all(n["alive"] and n["peers"] >= 1 for n in status["nodes"])
    members = cluster.load_state(net)
    victim = members[2]
    posted = []
    for k in range(10):
        out = cli("plan", "add", "--class", "simple", "--budget", str(k + 1),
                  "--home", str(victim.home), "--json")
        assert out.returncode == 0, out.stderr
        posted.append(json.loads(out.stdout)["need_id"])
    os.kill(victim.pid, signal.SIGKILL)  # right after the last acknowledgement
    cluster.wait_until(lambda: not victim.alive(), 30, "the victim to die")
    # Restart it; everything it acknowledged is in its own store.
    restarted = cluster.start_member(victim.index, victim.home, victim.addr)
    members[2] = restarted
    cluster.save_state(net, members)
    cluster.wait_until(lambda: cluster.status_of(restarted) is not None, 60, "the restart")
    plan = Client(restarted.home).get("/plan/root")
    assert plan["tasks"] >= 10
    for need in posted:
        doc = json.loads(cli("plan", "show", need, "--home", str(restarted.home), "--json")
                         .stdout)
        assert doc["tasks"][0]["known"] and doc["tasks"][0]["state"] is None  # unfunded
    # ... and the others have them too, by gossip before the kill or catch-up after.
    cluster.wait_until(lambda: len(roots(members)) == 1, 60, "all three to agree")


def test_cli_against_a_running_node(net: Path) -> None:
    home = str(net / "node0")
    status = json.loads(cli("status", "--home", home, "--json").stdout)
    for key in ("peer_id", "addrs", "account", "peers", "topics", "lamport", "plan_root"):
        assert key in status
    assert status["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
    peers = json.loads(cli("peers", "--home", home, "--json").stdout)
    assert len(peers) >= 1
    bad = cli("need", "create", "--class", "simple", "--budget", "0", "--home", home)
    assert bad.returncode == 1 and "payload.budget" in bad.stderr
    wrong = cli("peers", "connect", "/ip4/127.0.0.1/tcp/1", "--home", home)
    assert wrong.returncode == 1 and "multiaddr" in wrong.stderr
    token = (net / "node0" / "api.token").read_text().strip()
    api = json.loads((net / "node0" / "api.json").read_text())["url"]
    import httpx

    assert httpx.get(api + "/status").status_code == 401
    assert httpx.get(api + "/status", headers={"authorization": "Bearer x"}).status_code == 401
    assert httpx.get(api + "/status",
                     headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert "/needs" in httpx.get(api + "/openapi.json").json()["paths"]
    metrics = httpx.get(api + "/metrics").text
    assert "swarm_envelopes_published_total" in metrics
    # A node process times its garbage collections (node/heap.py).
    assert 'swarm_gc_pause_seconds_count{generation="0"}' in metrics
