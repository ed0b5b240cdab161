"""A wrong result caught by a challenge, on five in-process nodes (real libp2p, Raft,
ledger, HTTP) with the built-in roles.

node1's worker is faulty (it commits a made-up result) and bids lowest, so it wins the
NEED node0 posts. The committee of one drawn for it attests the result valid without
checking (the test does it by hand, as a colluding verifier would). node0 runs the
verifier role with `audit`: it re-runs the job, finds another output and challenges.
The other validators' verifier roles, drawn onto the panel, re-run the job and vote to
uphold. The result is invalidated: the attester loses half its stake, node0 gets its
bond back and half the slash, the panel shares 40%, 10% is burned; the task reopens
with k_result + 2 without node1, an honest worker redoes it, and it is paid for the
right output. Supply is conserved and every validator holds the same ledger root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from swarm.agent import Agent, AgentError
from swarm.agent.roles import ROLES, RoleConfig, Roles
from swarm.jobs.proofs import verifier_cids
from swarm.testnet.inproc import wait_for

U = 1_000_000
PARAMS = {"min_verifier_stake": 1, "challenge_window_ms": 20_000, "escrow_hold_factor": 1,
          "reputation_decay_weekly_bp": 0, "attest_window_ms": 8_000,
          "challenge_vote_window_ms": 30_000}
STAKE = 100
CLI = Path(sys.executable).parent / "swarm-node"


async def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI against an in-process node, off the event loop that serves it."""
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        [str(CLI), *args, "--home", str(home)], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120))


async def test_a_wrong_result_is_challenged_upheld_slashed_and_redone(swarmlet: Any) -> None:
    s = await swarmlet(5, params=PARAMS)
    await s.connect_mesh()
    faulty = RoleConfig(roles=frozenset({"planner", "worker"}), lease_ms=20_000,
                        heartbeat_ms=2_000, fee="0.001", cpu_second_price="0.001",
                        fault_bp=10_000)
    auditor = RoleConfig(roles=frozenset({"verifier"}), audit=True)
    honest = RoleConfig(roles=frozenset(ROLES), lease_ms=20_000, heartbeat_ms=2_000)
    agents = [Agent.open(h) for h in s.homes]
    async with agents[0] as poster, agents[1] as cheat, agents[2] as a2, agents[3] as a3, \
            agents[4] as a4, trio.open_nursery() as nursery:
        others = {a.account: a for a in (a2, a3, a4)}
        for a in others.values():
            await a.stake(str(STAKE))
        nursery.start_soon(Roles(cheat, faulty).run)
        jobs = await poster.builtin_jobs(publish=True)
        text = await poster.put_evidence(b"the quick brown fox\njumps over\n")
        right = (await poster.run_job(jobs["wordcount"], text))["output"]
        with trio.fail_after(240):
            need = await poster.post("4", bounty="1", window_ms=1_500, k_result=1,
                                     job=jobs["wordcount"], data=text, output="uint<=20",
                                     deny=["made up"])
            with pytest.raises(AgentError):  # no attested result to challenge yet
                await poster.challenge(need, "output_mismatch", text)
            market = s.nodes[0].market

            def task() -> Any:
                return market.task_named(need)

            await wait_for(lambda: task() is not None and task().commit is not None
                           and bool(task().commit.committee), "the faulty result's committee",
                           timeout_s=90)
            assert task().commit.worker.hex() == cheat.account
            assert str(task().commit.result) != right
            (member,) = [m.hex() for m in task().commit.committee]
            colluder = others[member]
            staked = (await colluder.stake_info())["locked"]
            await colluder.attest(need, valid=True)
            await wait_for(lambda: task().state == "ATTESTED", "the wrong result attested")
            # Before any bond: what node0's proof verifiers say of proofs against it.
            at0 = await poster.put_evidence(b'{"claim": "schema_violation", "offset": 0}')
            judged = await poster.check_proof(need, "schema_violation", at0)
            assert judged["holds"], judged  # "made up ..." is no unsigned integer
            assert judged["verifier"] == verifier_cids()["schema_violation"]
            assert 0 < judged["fuel"] < judged["fuel_max"]
            bare = await poster.put_evidence(b'{"claim": "output_mismatch"}')
            judged = await poster.check_proof(need, "output_mismatch", bare)
            assert judged["holds"] and right in judged["reason"], judged
            leak = await poster.put_evidence(b'{"deny": "made up", "offset": 0}')
            judged = await poster.check_proof(need, "policy_breach", leak)
            assert judged["holds"], judged  # the NEED's content policy denies it
            empty = await poster.put_evidence(b"{}")
            judged = await poster.check_proof(need, "semantic_contradiction", empty)
            assert not judged["holds"] and "host job" in judged["reason"]  # a wasm job
            nursery.start_soon(Roles(poster, auditor).run)
            for a in others.values():
                nursery.start_soon(Roles(a, honest).run)
            await wait_for(lambda: bool(task().rulings), "the challenge decided", timeout_s=90)
            (ruling,) = task().rulings
            assert ruling.outcome == "UPHELD", ruling
            assert ruling.challenger.hex() == poster.account
            assert task().upheld == 1 and task().k_result == 3
            assert task().epoch >= 1 and bytes.fromhex(cheat.account) in task().excluded
            await wait_for(lambda: task().paid, "the task redone and paid", timeout_s=150)
        nursery.cancel_scope.cancel()
    final = task()
    assert str(final.commit.result) == right and final.commit.worker.hex() != cheat.account
    # The colluder lost half its stake; node0's node lists the slash with its challenger.
    slash = staked * s.nodes[0].genesis.params["slash_failed_challenge_bp"] // 10_000
    member_node = s.nodes[[a.account for a in (poster, cheat, a2, a3, a4)].index(member)]
    assert member_node.ledger.balance(None)["locked"] == staked - slash
    slashes = market.slashes(bytes.fromhex(member))["slashes"]
    assert [(x["amount"], x["challenger"]) for x in slashes] == [(slash, poster.account)]
    await wait_for(lambda: len({n.ledger.root_hex() for n in s.nodes.values()}) == 1,
                   "one ledger root on every validator")
    for n in s.nodes.values():
        supply = n.ledger.supply()
        assert supply["conserved"], supply
    # The same from the CLI: the challenge, its outcome, the slash.
    home = s.homes[0]
    listed = json.loads((await cli(home, "challenge", "list", "--json")).stdout)
    assert [c["state"] for c in listed["challenges"]] == ["UPHELD"]
    cid = listed["challenges"][0]["challenge_id"]
    status = json.loads((await cli(home, "challenge", "status", cid, "--json")).stdout)
    assert status["outcome"] == "UPHELD" and status["task_id"] == need
    shown = json.loads((await cli(home, "slashes", "list", "--json")).stdout)["slashes"]
    assert [(x["account"], x["evidence"]) for x in shown] == [(member, cid)]
    for args, word in ((("challenge", "list"), "UPHELD"),
                       (("challenge", "status", cid), "UPHELD"),
                       (("slashes", "list"), "failed_challenge")):
        table = await cli(home, *args)  # what people read, not only --json
        assert table.returncode == 0 and word in table.stdout, table
    shown_task = await cli(home, "task", "show", need)
    assert "output uint<=20" in shown_task.stdout and "denies 'made up'" in shown_task.stdout
    checked = await cli(home, "challenge", "check", need, "--type", "output-mismatch",
                        "--evidence", bare, "--json")
    assert checked.returncode == 1, checked  # the redone result is right: no mismatch
    assert json.loads(checked.stdout)["holds"] is False
    decided = await cli(home, "challenge", "check", cid)
    assert decided.returncode == 1 and "is UPHELD" in decided.stderr, decided
    withdrawn = await cli(home, "challenge", "withdraw", cid, "--json")
    assert withdrawn.returncode == 1 and "unknown_challenge" in withdrawn.stderr
    proof = Path(home) / "proof.json"
    proof.write_text('{"claim": "output_mismatch"}')
    unconfirmed = await cli(home, "challenge", "open", need, "--type", "output-mismatch",
                            "--evidence", str(proof))
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    late = await cli(home, "challenge", "open", need, "--type", "output-mismatch",
                     "--evidence", str(proof), "--yes", "--json")
    assert late.returncode == 1 and "wrong_state" in late.stderr, late  # paid already
