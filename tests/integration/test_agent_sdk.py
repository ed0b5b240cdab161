"""The agent SDK against real nodes, and the example agent doing a task end to end.

Goal: a program written with `swarm.agent` reaches a node through its home directory,
acts with the node's account, follows the task events without polling, gets refusals
as `Refused` naming the rule, and the example agent earns its pay: on three in-process
nodes (real libp2p, Raft, ledger, HTTP), node0 publishes the built-in jobs and a text
as evidence and posts a NEED to run the wordcount job on it; the example agents of
node1 and node2 bid; the winner claims, has its node fetch the module and the input
from node0 by bitswap and run the job, and commits the output's CID; the other, drawn
into the committee, runs the job again, gets the same CID and attests; the task
finalizes and pays the worker its bid and the verifier the bounty. Backoff waits are
bounded, spread and reproducible.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from swarm.agent import Agent, AgentError, Backoff, Refused
from swarm.agent.example import JobRunner
from swarm.agent.roles import ROLES, RoleConfig, Roles
from swarm.node.home import HomeError, read_config, write_config
from swarm.node.service import open_node
from swarm.testnet.inproc import wait_for

MARKET_PARAMS = {"min_verifier_stake": 1, "challenge_window_ms": 2_000,
                 "escrow_hold_factor": 1, "reputation_decay_weekly_bp": 0}
U = 1_000_000


def test_backoff_is_full_jitter_bounded_and_reproducible() -> None:
    a, b = Backoff(b"agent-a", base_ms=100, cap_ms=1_000), Backoff(b"agent-b", 100, 1_000)
    for attempt in range(12):
        ceiling = min(1_000, 100 << attempt)
        waits = [a.delay_ms(f"need-{k}", attempt) for k in range(50)]
        assert all(0 <= w <= ceiling for w in waits)
        assert waits == [a.delay_ms(f"need-{k}", attempt) for k in range(50)]
    spread = [a.delay_ms("n", 5) for _ in range(3)] + [b.delay_ms("n", 5)]
    assert spread[0] == spread[1] == spread[2] and len(set(spread)) == 2, spread


async def test_the_example_agent_works_and_verifies_to_payout(swarmlet: Any) -> None:
    s = await swarmlet(3, params=MARKET_PARAMS)
    await s.connect_mesh()  # validators talk directly; bitswap asks connected peers
    homes = [s.nodes[i].settings.home for i in range(3)]
    async with Agent.open(homes[0]) as poster, Agent.open(homes[1]) as one, \
            Agent.open(homes[2]) as two, trio.open_nursery() as nursery:
        assert poster.account == s.nodes[0].identity.public_key.hex()
        counters = [JobRunner(one), JobRunner(two)]
        for c in counters:
            nursery.start_soon(c.run)
        before = {a.account: await a.balance() for a in (one, two)}
        with trio.fail_after(120):
            jobs = await poster.builtin_jobs(publish=True)
            text = await poster.put_evidence(b"the quick  brown\tfox\n")
            need = await poster.post("4", bounty="1", window_ms=1_500, k_result=1,
                                     title="count the words", job=jobs["wordcount"],
                                     data=text)
            await wait_for(lambda: s.nodes[0].market.task_named(need) is not None,
                           "the task open at the poster's node")
            with pytest.raises(Refused) as refused:
                await poster.bid(need, "1")
            assert refused.value.code == "own_need"
            await wait_for(lambda: (s.nodes[0].market.task_named(need) is not None
                                    and s.nodes[0].market.task_named(need).paid),  # type: ignore[union-attr]
                           "the task to be paid", timeout_s=110)
            task = await poster.task(need)
            # The result, fetched by node0 from the worker's node, every block checked.
            assert await poster.get_evidence(task["commit"]["result"]) == b"4\n"
            worker = task["winner"]
            verifier = next(a for a in (one.account, two.account) if a != worker)
            paid = {p["account"]: p["amount"] for p in task["payouts"]
                    if p["kind"] != "refund"}
            assert paid == {worker: 1_500_000, verifier: 1_000_000}, task["payouts"]
            with pytest.raises(AgentError) as bad:  # a text is no module
                await poster.run_job(text, text)
            assert bad.value.detail["code"] == "bad_module"
            agents = {one.account: one, two.account: two}
            for account, amount in paid.items():  # credits reach other buckets as effects
                while await agents[account].balance() != before[account] + amount:
                    await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert task["state"] == "FINALIZED" and task["paid"]
    assert task["commit"]["committee"] == [verifier]
    assert task["commit"]["verdicts"] == [{"member": verifier, "valid": True}]
    done = {c.agent.account: c.done for c in counters}
    assert done[worker]["commits"] == 1 and done[verifier]["attests"] == 1
    assert done[worker]["bids"] == 1 and done[verifier]["bids"] == 1


async def test_host_jobs_checks_and_output_schemas_through_a_node(swarmlet: Any) -> None:
    """A node runs a host job and asks its check; an output schema's verdict comes back
    with a run; a NEED naming two kinds of job, or a check without a host job, is
    refused before it is signed."""
    s = await swarmlet(2, params=MARKET_PARAMS)
    await s.connect_mesh()
    async with Agent.open(s.nodes[0].settings.home) as a, \
            Agent.open(s.nodes[1].settings.home) as b:
        listed = await a.host_jobs()
        assert listed["jobs"]["deflate"]["check"] == "inflates-to-input"
        assert {"inflates-to-input", "sha256"} <= set(listed["checks"])
        text = await a.put_evidence(b"to be or not to be\n" * 50)
        packed = await b.run_host_job("deflate", text, schema="bytes<=200")  # fetched
        assert packed["violation"] is None and packed["size"] < 200
        assert (await b.check_host_job("deflate", text, packed["output"]))["valid"]
        other = await a.put_evidence(b"something else")
        wrong = await a.check_host_job("deflate", other, packed["output"])
        assert wrong["valid"] is False and "refuses" in wrong["violation"]
        too_small = await a.check_host_job("deflate", text, packed["output"],
                                           schema="bytes<=10")
        assert too_small["valid"] is False and "over the schema" in too_small["violation"]
        jobs = await a.builtin_jobs(publish=True)
        counted = await a.run_job(jobs["wordcount"], text, schema="hex<=2")
        assert counted["violation"] is not None  # "300\n" is 4 bytes
        for body, field in (({"job": jobs["wordcount"], "host": "deflate"}, "host"),
                            ({"check": "sha256"}, "check"),
                            ({"host": "Not A Name"}, "host"),
                            ({"host": "deflate", "output": "json"}, "output")):
            with pytest.raises(AgentError) as bad:
                await a.post("4", data=text, **body)
            assert field in str(bad.value.detail), bad.value.detail
        with pytest.raises(AgentError) as unknown:
            await a.run_host_job("no-such-job", text)
        assert unknown.value.detail["code"] == "unknown_job"
        need = await a.post("4", host="sha256", data=text, output="hex<=65", window_ms=60_000)
        await wait_for(lambda: s.nodes[0].market.task_named(need) is not None,
                       "the task open at the poster's node")
        task = await a.task(need)
        assert (task["host"], task["check"], task["output"], task["job"]) == (
            "sha256", None, "hex<=65", None)


async def test_a_verifier_role_stakes_and_joins_the_pool_at_start(swarmlet: Any) -> None:
    """A node that is no genesis validator, configured as a verifier with a stake,
    stakes it and registers in the pool when it starts; a bad role config stops a node
    at start naming the key."""
    s = await swarmlet(2, validators=1, params=MARKET_PARAMS)
    await s.connect_mesh()
    home = s.homes[1]
    await s.stop(1)
    write_config(home, {**read_config(home), "roles": ["verifier"],
                        "role_options": {"verifier_stake": "3", "org": "far-org",
                                         "asn": 65001, "region": "far"}})
    node = await s.start(1)
    await s.nodes[1].connect(s.nodes[0].addrs()[0])
    account = node.identity.public_key.hex()

    def pooled() -> bool:
        return any(v["account"] == account for v in node.ledger.pool()["verifiers"])

    await wait_for(pooled, "node1's verifier role to join the pool", timeout_s=60)
    row = next(v for v in node.ledger.pool()["verifiers"] if v["account"] == account)
    assert (row["org"], row["asn"], row["region"], row["stake"]) == (
        "far-org", 65001, "far", 3 * U)
    assert node.status()["roles"] == ["verifier"]
    write_config(home, {**read_config(home), "role_options": {"capacity": 0}})
    with pytest.raises(HomeError, match="capacity"):
        open_node(home)


async def test_the_roles_work_verify_yield_a_misfit_and_pass_on_what_pays_too_little(
        swarmlet: Any) -> None:
    """The built-in roles over the SDK on two in-process nodes (node0 posts): a job
    whose output fits its schema is bid on, worked, verified and paid; one whose output
    cannot fit is yielded by each worker in turn, and the task ends cancelled and
    refunded; a budget below a planner's price gets no bid."""
    s = await swarmlet(3, params={**MARKET_PARAMS, "auction_rounds_max": 1})
    await s.connect_mesh()
    config = RoleConfig(roles=frozenset(ROLES), lease_ms=20_000, heartbeat_ms=2_000)
    async with Agent.open(s.homes[0]) as poster, Agent.open(s.homes[1]) as one, \
            Agent.open(s.homes[2]) as two, trio.open_nursery() as nursery:
        roles = [Roles(one, config), Roles(two, config)]
        for r in roles:
            nursery.start_soon(r.run)
        jobs = await poster.builtin_jobs(publish=True)
        text = await poster.put_evidence(b"one two three\n")
        with trio.fail_after(150):
            fits = await poster.post("4", bounty="1", window_ms=1_500, k_result=1,
                                     job=jobs["wordcount"], data=text, output="uint<=20")
            misfit = await poster.post("4", bounty="1", window_ms=1_500, k_result=1,
                                       job=jobs["wordcount"], data=text, output="hex<=1")
            cheap = await poster.post("0.01", window_ms=1_500, k_result=1,
                                      job=jobs["checksum"], data=text)

            def state(need: str) -> str | None:
                task = s.nodes[0].market.task_named(need)
                return None if task is None else ("PAID" if task.paid else task.state)

            await wait_for(lambda: state(fits) == "PAID", "the fitting task to be paid",
                           timeout_s=140)
            await wait_for(lambda: state(misfit) == "CANCELLED" and
                           state(cheap) == "CANCELLED", "the others to end", timeout_s=140)
        nursery.cancel_scope.cancel()
    done = roles[0].done + roles[1].done
    assert done["work:ok"] == 1 and done["attest:valid"] == 1, done
    assert done["work:yielded"] == 2, done  # each worker once, then it is excluded
    assert done["bid:too_cheap"] == 2, done
    task = s.nodes[0].market.task_named(misfit)
    assert task is not None and len(task.excluded) == 2
