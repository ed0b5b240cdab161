"""The nodes' built-in roles trade real work on a five-process testnet, and survive a
worker's `kill -9` and a silent verifier.

Goal: with nobody driving them, NEEDs naming WebAssembly and host jobs are bid on,
claimed, run, verified and paid; every paid result is right (checked here against the
Python references and the host checks, apart from the committees); a worker killed with
`kill -9` mid-lease loses the task, which another worker finishes; a committee member
that stays silent (the dead node) is replaced by a redraw, and the task still pays; the
ledger conserves credits and the live nodes agree on every root.
Method: `cluster.up` with the testnet's roles (node0 only verifies; node1-4 plan, work
and verify) and short windows; `testnet/demo.py` posts and follows; the test kills the
winner of a task over a 48 MiB input as soon as its lease is certified.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from swarm.jobs.reference import fnv1a64
from swarm.node.client import ApiError, Client
from swarm.node.home import read_config
from swarm.testnet import cluster, demo

# Windows short enough for a test, long enough for a loaded 2-core machine.
PARAMS = {"attest_window_ms": 8_000, "challenge_window_ms": 3_000}
BIG = 48 * 1024 * 1024  # a checksum input whose fetch keeps a worker busy a while


@pytest.fixture
def market(tmp_path: Path) -> Any:
    directory = tmp_path / "tn"
    members = cluster.up(directory, 5, roles=True, params=PARAMS, timeout_s=120)
    try:
        yield members
    finally:
        cluster.down(directory)


def task_at(member: cluster.Member, need: str) -> dict[str, Any]:
    try:
        return Client(member.home).get(f"/tasks/{need}")  # type: ignore[no-any-return]
    except ApiError:
        return {}


def test_roles_work_to_payout_through_a_kill_9_and_a_silent_verifier(
        market: list[cluster.Member]) -> None:
    members = market
    tasks = demo.post_tasks(members, 5)
    assert {t.kind for t in tasks} == {"wasm", "host"}
    demo.follow(members, tasks, 180, lambda _: None)
    result = demo.summary(members, tasks)
    assert result["ok"], result
    assert all(t.doc["paid"] and t.doc["state"] == "FINALIZED" for t in tasks)

    # A task whose worker dies mid-lease. node0 posts it: its 48 MiB input lives there.
    node0 = Client(members[0].home)
    big = random.Random(5).randbytes(BIG)
    data = node0.post_bytes("/evidence", big)["cid"]
    checksum = node0.get("/jobs/builtins")["jobs"]["checksum"]
    need = node0.post("/tasks", {"class": "simple", "budget": "4", "verify_bounty": "1",
                                 "k_result": 2, "job": checksum, "input": data,
                                 "output": "hex<=17"})["need_id"]
    accounts = {Client(m.home).get("/status")["account"]: m for m in members}
    cluster.wait_until(lambda: task_at(members[0], need).get("state") in ("DECIDED",
                                                                         "CLAIMED"),
                       60, "the big task to be decided")
    victim = accounts[task_at(members[0], need)["winner"]]
    cluster.wait_until(lambda: task_at(victim, need).get("state") == "CLAIMED", 60,
                       "the winner to claim the big task", interval_s=0.02)
    os.kill(victim.pid, signal.SIGKILL)
    assert task_at(members[0], need).get("state") in ("CLAIMED", "DECIDED"), \
        "the worker committed before it could be killed; the input is too small here"
    live = [m for m in members if m is not victim]

    # node0 asks for three verifiers; only three nodes other than the poster and the
    # next worker exist, and one of them is dead: it is drawn and stays silent.
    text = b"one two three\nfour five\n"
    small = node0.post_bytes("/evidence", text)["cid"]
    wordcount = node0.get("/jobs/builtins")["jobs"]["wordcount"]
    silent_need = node0.post("/tasks", {"class": "simple", "budget": "4",
                                        "verify_bounty": "1", "k_result": 3,
                                        "job": wordcount, "input": small})["need_id"]

    def paid(n: str) -> bool:
        return bool(task_at(members[0], n).get("paid"))

    cluster.wait_until(lambda: paid(need) and paid(silent_need), 300,
                       "both tasks to be paid")
    gone = next(a for a, m in accounts.items() if m is victim)
    big_task = task_at(members[0], need)
    # Released (heartbeats missed), excluded, and done by another worker.
    assert big_task["epoch"] >= 1 and gone in big_task["excluded"]
    assert big_task["winner"] != gone
    assert node0.get_bytes(f"/evidence/{big_task['commit']['result']}") == fnv1a64(big)

    silent_task = task_at(members[0], silent_need)
    assert gone in silent_task["silent"] and silent_task["epoch"] == 0
    assert gone not in silent_task["commit"]["committee"]
    assert node0.get_bytes(f"/evidence/{silent_task['commit']['result']}") == b"5\n"

    # Credits conserved, and every live node ends on the same roots.
    summary = demo.summary(live, [])
    assert summary["checks"]["supply_conserved"], summary
    assert all(summary["checks"][f"same_{r}_root"] for r in ("plan", "task", "ledger")), \
        summary


def test_the_testnet_spreads_the_roles(tmp_path: Path) -> None:
    plan = cluster.prepare(tmp_path, 2, roles=True)
    roles = [read_config(home)["roles"] for home, _ in plan]
    assert roles == [["verifier"], ["planner", "worker", "verifier"]]
    bare = cluster.prepare(tmp_path, 2)  # roles are off unless asked for
    assert all("roles" not in read_config(home) for home, _ in bare)
