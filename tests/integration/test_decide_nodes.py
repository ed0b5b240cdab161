"""DECIDE on five real `swarm-node` processes: concurrent competing decisions for many
NEEDs from every node while a bucket leader is killed with `kill -9` and restarted.

Goal (P1 on real nodes): every NEED has exactly one decision, the same on every node
(callers, replicas and certified read replicas alike), and deciding resumes in the
killed leader's buckets. Method: `swarm-testnet up -n 5`, a thread per node submitting
through its control API, SIGKILL of the leader of a busy bucket mid-run, restart, then
compare every node's view.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from swarm.node.client import ApiError, Client
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.testnet import cluster

BIN = Path(sys.executable).parent
NEEDS = 40


def run_testnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-testnet"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def net(tmp_path: Path) -> Any:
    directory = tmp_path / "tn"
    # Made-up NEED ids, chosen by bucket: the nodes must decide ids they do not know.
    result = run_testnet("up", "-n", "5", "--dir", str(directory), "--decide-unknown-needs",
                         "--json")
    assert result.returncode == 0, result.stderr
    yield directory
    run_testnet("down", "--dir", str(directory))


def need_cid(i: int) -> str:
    return str(dag_cbor_cid(b"decide-test-%d" % i))


def submit_all(home: Path, label: str, needs: list[str], results: dict[tuple[str, str], Any],
               errors: list[str]) -> None:
    c = Client(home, timeout_s=60)
    try:
        for need in needs:
            for attempt in range(4):
                try:
                    results[(label, need)] = c.post("/decide", {
                        "need_id": need, "proposal_id": f"{label}-{need[-6:]}",
                        "timeout_s": 20})
                    break
                except ApiError as exc:  # the node we ask may be the one being killed
                    if attempt == 3:
                        errors.append(f"{label} {need}: {exc}")
    finally:
        c.close()


def test_one_decision_per_need_across_a_leader_kill(net: Path) -> None:
    members = cluster.load_state(net)
    needs = [need_cid(i) for i in range(NEEDS)]
    bucket_count = Client(members[0].home).get("/raft/status")["bucket_count"]
    # The victim: the leader of the first NEED's bucket, as its replicas see it.
    target_bucket = bucket_of(Cid.parse(needs[0]).raw, bucket_count)
    by_id = {Client(m.home).get("/raft/status")["node_id"]: m for m in members}
    replicas = Client(members[0].home).get(
        f"/raft/status?bucket={target_bucket}")["buckets"][0]["replicas"]
    found: list[int] = []

    def leader_known() -> bool:
        # Asked of a replica, and again until one answers: between an election or a
        # balancing leader transfer and the next beat, a replica may know no leader.
        for r in replicas:
            lead = Client(by_id[r].home).get(
                f"/raft/status?bucket={target_bucket}")["buckets"][0]["leader"]
            if lead:
                found.append(lead)
                return True
        return False

    cluster.wait_until(leader_known, 60, f"a leader of bucket {target_bucket}")
    leader_id = found[-1]
    victim = by_id[leader_id]
    others = [m for m in members if m is not victim]

    results: dict[tuple[str, str], Any] = {}
    errors: list[str] = []
    threads = [threading.Thread(target=submit_all, args=(m.home, f"n{m.index}", needs,
                                                        results, errors))
               for m in others]
    for t in threads:
        t.start()
    os.kill(victim.pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]

    # Deciding resumed: a fresh NEED in the killed leader's bucket commits.
    fresh = next(need_cid(i) for i in range(1000, 100_000)
                 if bucket_of(Cid.parse(need_cid(i)).raw, bucket_count) == target_bucket)
    d = Client(others[0].home, timeout_s=60).post("/decide", {"need_id": fresh,
                                                              "proposal_id": "after-kill"})
    assert d["bucket"] == target_bucket and d["proposal_id"] == "after-kill"

    restarted = cluster.start_member(victim.index, victim.home, victim.addr)
    members[victim.index] = restarted
    cluster.save_state(net, members)
    cluster.wait_until(lambda: cluster.status_of(restarted) is not None, 60, "the restart")

    # Every caller was told the same decision for each NEED...
    decided: dict[str, str] = {}
    for need in needs:
        answers = {results[(f"n{m.index}", need)]["proposal_id"] for m in others}
        assert len(answers) == 1, (need, answers)
        decided[need] = answers.pop()
    # ... and every node, the restarted one included, ends up holding that decision,
    # certified (learned from DECIDE envelopes whose certificates checked).
    def all_certified() -> bool:
        for m in members:
            got = {d["need_id"]: d["proposal_id"]
                   for d in Client(m.home).get("/decisions")["decisions"]}
            if any(got.get(n) != p for n, p in decided.items()):
                return False
        return True

    cluster.wait_until(all_certified, 120, "every node to hold every certified decision")
