"""The task market on five real `swarm-node` processes, driven from the CLI.

Goal: a NEED posted on one node escrows its budget from the poster's bucket and opens a
task in its NEED's bucket; bids from three other nodes, two with plan patches (one
reaching outside the NEED is refused); the bucket's leader ticks the auction closed on
bucket time and decides the cheapest bid, whose patch alone joins every node's plan;
the losers' claims are
refused with their reason, the winner claims, heartbeats and commits; the bucket draws
a committee of three from the verifier pool (neither the worker nor the poster), whose
members attest; the challenge window passes, the task finalizes and the escrow pays the
worker its bid, the members the verify bounty and the poster the rest, once; every node
shows the same task state, ledger root and plan root (the replicas and the certified
read replicas alike), and the supply is conserved on every node. A worker killed with
`kill -9` mid-lease loses the task to the next bid, whose worker finishes it to payout
while the killed node restarts and serves on the committee if drawn. Method:
`swarm-testnet up -n 5` (three replicas a bucket, so some nodes read each bucket from
certified chain entries only); the testnet's genesis has second-scale windows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from swarm.node.client import Client
from swarm.testnet import cluster

BIN = Path(sys.executable).parent
WAIT_S = 90.0  # generous: a shared 2-core machine


def run_testnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-testnet"), *args], capture_output=True, text=True,
                          timeout=300)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "swarm-node"), *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=120)


def ok_json(home: Path, *args: str) -> Any:
    result = cli(home, *args, "--json")
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def refused(home: Path, *args: str) -> str:
    """The rule's code of a refused command (exit 1, the detail on stderr)."""
    result = cli(home, *args, "--json")
    assert result.returncode == 1, (args, result.stdout, result.stderr)
    detail = json.loads(result.stderr.strip().splitlines()[-1])["detail"]
    code: str = detail["code"]
    return code


def until(what: str, check: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def task_on(home: Path, need: str) -> dict[str, Any] | None:
    result = cli(home, "task", "show", need, "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture
def net(tmp_path: Path) -> Any:
    directory = tmp_path / "tn"
    result = run_testnet("up", "-n", "5", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    yield directory
    run_testnet("down", "--dir", str(directory))


def test_a_task_goes_from_post_to_payout(net: Path) -> None:
    homes = [net / f"node{i}" for i in range(5)]
    poster, cheap, dear, dearer, watcher = homes
    before = ok_json(poster, "ledger", "balance")["balance"]
    posted = ok_json(poster, "task", "post", "--budget", "5", "--bounty", "1",
                     "--window", "20s", "--title", "count the words")
    need = posted["need_id"]
    assert ok_json(poster, "ledger", "balance")["balance"] == before - 5_000_000
    assert refused(poster, "bid", need, "1") == "own_need"
    # A watcher follows the task's events from another node as they are applied there.
    watch = subprocess.Popen([str(BIN / "swarm-node"), "task", "watch", need, "--json",
                              "--home", str(watcher)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    # Bids may carry a plan patch under the NEED: only the winner's joins the plan.
    patches = {name: patch_file(net, need, name) for name in ("cheap", "dear")}
    outside = net / "outside.json"
    outside.write_text(json.dumps({"base_lamport": 0, "ops": [
        {"op": "ADD_TASK", "task_id": f"{need}/stray", "parent": "not-the-need"}]}))
    assert refused(watcher, "bid", need, "4", "--patch", str(outside)) == "patch_scope"
    ok_json(cheap, "bid", need, "2", "--eta", "10s", "--patch", str(patches["cheap"]))
    ok_json(dear, "bid", need, "3", "--eta", "10s", "--patch", str(patches["dear"]))
    ok_json(dearer, "bid", need, "3.5", "--eta", "5s")
    assert refused(cheap, "bid", need, "1.5") == "already_bid"

    decided = until("the auction to close on every node", lambda: all(
        (t := task_on(h, need)) is not None and t["state"] == "DECIDED" for h in homes))
    assert decided
    task = ok_json(watcher, "task", "show", need)
    cheap_account = ok_json(cheap, "status")["account"]
    assert task["decision"]["winner"] == cheap_account
    assert [b["cost"] for b in sorted(task["bids"], key=lambda b: b["cost"])] == [
        2_000_000, 3_000_000, 3_500_000]

    explained = ok_json(watcher, "task", "explain", need)
    assert explained["memo"] == task["decision"]["memo"]
    assert explained["explanation"]["bids"][0]["bidder"] == cheap_account
    assert explained["explanation"]["bids"][0]["score"] > \
        explained["explanation"]["bids"][1]["score"]
    for args in (("task", "explain", need), ("task", "list"), ("task", "show", need)):
        shown = cli(watcher, *args)  # the tables people read, not only --json
        assert shown.returncode == 0 and "object at 0x" not in shown.stdout, shown
    assert "winner" in cli(watcher, "task", "explain", need).stdout

    assert refused(dear, "claim", need, "--ttl", "60s", "--heartbeat", "5s") == "not_winner"
    ok_json(cheap, "claim", need, "--ttl", "60s", "--heartbeat", "5s")
    ok_json(cheap, "heartbeat", need, "--progress", "50")
    assert refused(dear, "heartbeat", need, "--progress", "60",
                   "--lease", task_on_lease(cheap, need)) == "not_lease_holder"
    result_cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    ok_json(cheap, "commit", need, result_cid)

    committee = until("the committee to be drawn", lambda: (
        (t := task_on(poster, need)) is not None and t["commit"]["committee"]))
    accounts = {ok_json(h, "status")["account"]: h for h in homes}
    assert sorted(committee) == sorted(ok_json(h, "status")["account"]
                                       for h in (dear, dearer, watcher))
    assert refused(cheap, "attest", need, "valid") == "not_in_committee"
    balances = {a: ok_json(poster, "ledger", "balance", a)["balance"] for a in accounts}
    ok_json(accounts[committee[0]], "attest", need, "valid")
    assert refused(accounts[committee[0]], "attest", need, "valid") == "already_attested"
    for member in committee[1:]:
        ok_json(accounts[member], "attest", need, "valid")

    def paid_everywhere() -> bool:
        tasks = [task_on(h, need) for h in homes]
        statuses = [ok_json(h, "status") for h in homes]
        return all(t is not None and t["state"] == "FINALIZED" and t["paid"] for t in tasks) \
            and len({s["ledger_root"] for s in statuses}) == 1 \
            and len({s["plan_root"] for s in statuses}) == 1
    until("every node to show the task paid and one ledger and plan root", paid_everywhere)
    poster_account = ok_json(poster, "status")["account"]
    cheap_account = ok_json(cheap, "status")["account"]

    def credited() -> dict[str, int]:
        return {a: ok_json(poster, "ledger", "balance", a)["balance"] - balances[a]
                for a in accounts}
    # Credits to other buckets arrive as effects: wait for the last of them.
    paid = until("the payouts to arrive", lambda: (c := credited())[poster_account] > 0
                 and all(c[m] > 0 for m in committee) and c[cheap_account] > 0 and c)
    # The bounty splits 333,334 / 333,333 / 333,333: the extra unit to the first member.
    assert paid == {poster_account: 2_000_000, cheap_account: 2_000_000,
                    committee[0]: 333_334, committee[1]: 333_333,
                    committee[2]: 333_333}, paid
    # Every state the task entered names its chain entry and, once a quorum signed it,
    # that entry's certificate (a read replica holds them too).
    certified = until("every transition certified at the watcher", lambda: (
        (t := task_on(watcher, need)) is not None
        and all(x["certificate"] for x in t["transitions"]) and t["transitions"]))
    assert [x["state"] for x in certified] == [
        "OPEN", "DECIDED", "CLAIMED", "COMMITTED", "ATTESTED", "FINALIZED"]
    assert all(len(x["certificate"]["sigs"]) >= 2 for x in certified)
    shown = {(p["account"], p["kind"]): p["amount"] for p in task_on(watcher, need)["payouts"]}
    assert shown[(cheap_account, "payout")] == 2_000_000
    assert shown[(poster_account, "refund")] == 2_000_000
    watch.terminate()
    seen = [e for e in json_docs(watch.communicate(timeout=30)[0])
            if e["kind"] == "transition"]
    assert [(e["before"], e["after"]) for e in seen if e["before"] != e["after"]] == [
        ("", "OPEN"), ("OPEN", "DECIDED"), ("DECIDED", "CLAIMED"),
        ("CLAIMED", "COMMITTED"), ("COMMITTED", "ATTESTED"), ("ATTESTED", "FINALIZED")], seen
    assert any(e["cause"].startswith("committee of 3 drawn") for e in seen), seen
    metrics = Client(cheap).get_text("/metrics")
    assert 'swarm_task_transitions_total{state="ATTESTED"} 1.0' in metrics
    assert 'swarm_task_refusals_total{code="already_bid"} 1.0' in metrics
    for h in homes:
        assert Client(h).get("/ledger/supply")["conserved"]
        t = task_on(h, need)
        assert t is not None and t["commit"]["result"] == result_cid
        plan = {t["task_id"]: t for t in ok_json(h, "plan", "show", need)["tasks"]}
        # The plan holds the DAG (the winner's subtask, not the loser's); the state
        # shown is the bucket's.
        assert sorted(plan) == sorted([need, f"{need}/sub-cheap"]), plan
        assert plan[need]["state"] == "FINALIZED" and plan[f"{need}/sub-cheap"]["state"] is None


def patch_file(net: Path, need: str, name: str) -> Path:
    path = net / f"patch-{name}.json"
    path.write_text(json.dumps({"base_lamport": 0, "ops": [
        {"op": "ADD_TASK", "task_id": f"{need}/sub-{name}", "parent": need, "title": name},
        {"op": "LINK", "from": need, "to": f"{need}/sub-{name}"}]}))
    return path


def json_docs(text: str) -> list[dict[str, Any]]:
    """Consecutive JSON documents (what `--json` prints, one per event)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


def task_on_lease(home: Path, need: str) -> str:
    task = task_on(home, need)
    assert task is not None and task["lease"] is not None
    lease: str = task["lease"]["lease_id"]
    return lease


def test_a_worker_killed_mid_lease_loses_the_task_to_the_next_bid(net: Path) -> None:
    """kill -9 of the worker's node while it holds the lease: its heartbeats stop, the
    bucket releases the lease on bucket time, slashes the missed heartbeats, and the
    next-best bid wins the task's next epoch; that worker claims and commits it, and the
    task is attested and paid, the killed node back on its feet by then."""
    members = cluster.load_state(net)
    poster, doomed, backup = (m.home for m in members[:3])
    need = ok_json(poster, "task", "post", "--budget", "5", "--k", "2",
                   "--window", "15s")["need_id"]
    ok_json(doomed, "bid", need, "1")
    ok_json(backup, "bid", need, "2")
    until("the auction to close", lambda: (t := task_on(poster, need)) is not None
          and t["state"] == "DECIDED")
    ok_json(doomed, "claim", need, "--ttl", "10m", "--heartbeat", "1s")
    doomed_account = ok_json(doomed, "status")["account"]
    locked_before = ok_json(poster, "ledger", "balance", doomed_account)["locked"]
    victim = members[1]
    os.kill(victim.pid, signal.SIGKILL)

    reopened = until("the lease to be released and the next bid to win", lambda: (
        (t := task_on(poster, need)) is not None and t["epoch"] == 1
        and t["state"] == "DECIDED" and t["decision"]["winner"] != doomed_account and t))
    assert doomed_account in reopened["excluded"]
    ok_json(backup, "claim", need, "--ttl", "10m", "--heartbeat", "5m")
    until("the missed heartbeats to be slashed", lambda: ok_json(
        poster, "ledger", "balance", doomed_account)["locked"] < locked_before)
    cluster.wait_until(lambda: not victim.alive(), 30, "the victim to die")
    members[1] = cluster.start_member(victim.index, victim.home, victim.addr)
    cluster.save_state(net, members)
    ok_json(backup, "commit", need,
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    committee = until("the backup's commit and its committee", lambda: (
        (t := task_on(poster, need)) is not None and t["commit"]["worker"] != doomed_account
        and t["commit"]["committee"]))
    homes = {ok_json(m.home, "status")["account"]: m.home for m in members
             if m.index != victim.index}
    homes[doomed_account] = doomed
    for member in committee:
        # The restarted node attests once its own view shows the commit.
        until(f"{member[:8]} to attest", lambda m=member: cli(
            homes[m], "attest", need, "valid", "--json").returncode == 0)
    until("the task to be paid", lambda: (t := task_on(poster, need)) is not None
          and t["paid"])
    assert Client(poster).get("/ledger/supply")["conserved"]
