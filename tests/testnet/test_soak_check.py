"""The soak's checker on made-up runs.

Goal: each rule of testnet/soak_check.py catches the anomaly it is for, by name, and a
consistent run passes. Method: `Story` writes a small run as a client and a nemesis
would have seen it (NEEDs created, DECIDEs answered, transfers acknowledged or unknown,
faults) and a final state of three nodes that agrees with it; each test then breaks one
thing (a NEED or transfer missing from the final state, a transfer applied twice, an
acknowledged decision read back as undecided, two decisions for one NEED, supply not
conserved, ...) and reads the verdict. No node, no clock, no HTTP.
"""

from __future__ import annotations

import dataclasses

from soak_kit import ACCOUNTS, Story, a_clean_story, need_id

from swarm.testnet.soak_check import (
    FINAL_PROPOSAL,
    VIOLATIONS,
    Verdict,
    Violation,
    check,
    convergence_violations,
    subset_sums,
)
from swarm.testnet.soak_history import Incident, NodeLedger, NodePoll


def names(verdict: Verdict) -> list[str]:
    return [v.name for v in verdict.violations]


def test_a_clean_history_passes() -> None:
    verdict = check(a_clean_story().run())
    assert verdict.violations == []
    facts = verdict.facts
    assert facts["final_reads"] == 2 and facts["decided_final_read"] == 0
    assert facts["converged"] and facts["buckets_stuck"] == [] and facts["unread"] == 0
    assert facts["needs_looked_up"] == 2 and facts["accounts_unchecked"] == 0
    assert facts["plan_root"] == "p" * 64 and facts["campaigning"] == []


def test_an_acknowledged_need_missing_from_the_final_plan_is_a_lost_write() -> None:
    s = a_clean_story()
    lost = s.plan.pop(1)  # acknowledged to its client, gone from every node's plan
    verdict = check(s.run())
    assert names(verdict) == ["need-lost"]
    assert lost in verdict.violations[0].text and "node1:" in verdict.violations[0].text


def test_an_acknowledged_transfer_missing_from_the_balances_is_a_lost_write() -> None:
    s = a_clean_story()
    s.transfer(0, 2, 123_456, outcome="ok", applied=0)
    verdict = check(s.run())
    assert names(verdict) == ["account-total-unexplained"] * 2  # payer and payee
    payer, payee = (v.text for v in verdict.violations)
    assert payer.startswith(f"account {ACCOUNTS[0][:12]}: ") and "leaves +123456" in payer
    # the payee's gap also holds the unknown transfer of 5000 it paid, which applied
    assert payee.startswith(f"account {ACCOUNTS[2][:12]}: ") and "leaves -128456" in payee


def test_a_transfer_applied_twice_is_caught_and_an_unknown_one_applied_once_is_not() -> None:
    s = a_clean_story()
    s.transfer(1, 0, 80_000, outcome="ok", applied=2)
    verdict = check(s.run())
    assert names(verdict) == ["account-total-unexplained"] * 2
    assert "leaves +80000 unexplained" in verdict.violations[0].text
    s = a_clean_story()
    s.transfer(1, 0, 80_000, outcome="indeterminate", applied=1)
    assert check(s.run()).violations == []
    s.transfer(1, 0, 60_000, outcome="indeterminate", applied=2)
    assert names(check(s.run())) == ["account-total-unexplained"] * 2


def test_a_final_read_that_misses_an_acknowledged_decision_is_a_stale_read() -> None:
    # The decision of NEED 1 was acknowledged before the read after the heal began; the
    # read finds no decision (its own `final-read` commits): it reads a state older
    # than an acknowledged write.
    s = a_clean_story()
    n1 = need_id(1)
    read = next(op for op in s.ops if op.kind == "final_read" and op.info["need"] == n1)
    read.info["answer"] = FINAL_PROPOSAL
    s.decisions[n1] = FINAL_PROPOSAL
    verdict = check(s.run())
    assert names(verdict) == ["decision-changed"]
    assert "an acknowledged decision changed" in verdict.violations[0].text


def test_a_decide_answered_after_another_was_acknowledged_must_agree() -> None:
    # Node 2's DECIDE began after node 1's was acknowledged and committed its own
    # proposal: the stale read a DECIDE can make, caught whatever the order.
    s = a_clean_story()
    n1 = need_id(1)
    s.decide(n1, 2, "node2-" + n1[-6:])
    verdict = check(s.run())
    assert names(verdict) == ["decisions-differ", "decision-changed"]


def test_two_decisions_for_one_need_break_p1() -> None:
    s = Story()
    n1 = s.need(1)
    s.decide(n1, 0, "node0-" + n1[-6:])
    s.decide(n1, 1, "node1-" + n1[-6:])
    s.heal_and_read()
    verdict = check(s.run())
    assert names(verdict) == ["decisions-differ", "decision-changed"]
    assert "clients were answered different decisions" in verdict.violations[0].text
    # ...and nodes that hold different certified decisions for one NEED
    s = a_clean_story()
    nodes = s.final_nodes()
    other = dict(nodes[2].poll.decisions, **{n1: "node0-" + n1[-6:]})
    nodes[2] = dataclasses.replace(nodes[2], poll=dataclasses.replace(
        nodes[2].poll, decisions=other))
    verdict = check(s.run(nodes))
    assert names(verdict) == ["decision-missing"]
    assert verdict.violations[0].text.startswith("node2: 1 NEEDs without the agreed")
    assert not verdict.facts["converged"]


def test_answers_and_decisions_nobody_proposed() -> None:
    s = a_clean_story()
    n2 = need_id(2)
    s.decide(n2, 0, "node2-" + n2[-6:])
    s.ops[-1].info["answer"] = "forged"
    s.ops[-1].info["proposal"] = "node0-" + n2[-6:]
    verdict = check(s.run())
    assert names(verdict)[:2] == ["decisions-differ", "answer-not-proposed"]
    s = a_clean_story()
    probe = next(op for op in s.ops if op.kind == "probe")
    probe.info["answer"] = "node0-x"
    read = next(op for op in s.ops if op.kind == "final_read")
    read.info["answer"] = "forged"
    verdict = check(s.run())
    assert set(names(verdict)) >= {"probe-not-proposed", "decision-changed",
                                   "decision-not-proposed"}


def test_supply_not_conserved() -> None:
    s = a_clean_story()
    nodes = s.final_nodes()
    bad = dict(nodes[1].ledger.supply or {}, burned=10)
    nodes[1] = dataclasses.replace(nodes[1], ledger=dataclasses.replace(
        nodes[1].ledger, supply=bad))
    verdict = check(s.run(nodes))
    assert names(verdict) == ["supply-not-conserved"]
    assert verdict.violations[0].text.startswith("node1: supply not conserved")
    # credits created out of nothing, the same on every node: not conserved anywhere,
    # and the account's total is unexplained
    s = a_clean_story()
    s.balances[ACCOUNTS[2]]["escrowed"] += 500
    assert names(check(s.run())) == ["supply-not-conserved"] * 3 + \
        ["account-total-unexplained"]


def test_nodes_that_disagree_on_an_account_or_hold_a_negative_amount() -> None:
    s = a_clean_story()
    nodes = s.final_nodes()
    moved = {a: dict(v) for a, v in nodes[0].ledger.balances.items()}
    moved[ACCOUNTS[0]]["balance"] -= 1
    moved[ACCOUNTS[0]]["locked"] += 1
    nodes[0] = dataclasses.replace(nodes[0], ledger=dataclasses.replace(
        nodes[0].ledger, balances=moved))
    assert names(check(s.run(nodes))) == ["balances-differ"]
    s = a_clean_story()
    s.balances[ACCOUNTS[1]]["unbonding"] = -5
    s.balances[ACCOUNTS[1]]["balance"] += 5
    assert names(check(s.run())) == ["negative-amount"]


def test_unreadable_ledgers_and_plans_that_differ() -> None:
    s = a_clean_story()
    nodes = s.final_nodes()
    nodes[0] = dataclasses.replace(nodes[0], ledger=NodeLedger(error="client timeout"))
    nodes[1] = dataclasses.replace(nodes[1], poll=dataclasses.replace(
        nodes[1].poll, plan_root="q" * 64, in_flight=3))
    nodes[2] = dataclasses.replace(nodes[2], poll=NodePoll(error="503"))
    verdict = check(s.run(nodes))
    assert names(verdict) == ["node-unreachable", "plan-roots-differ",
                              "credits-in-flight", "ledger-unreadable"]
    assert verdict.violations[0].text == "node2: unreachable: 503"
    assert verdict.violations[2].text == "credits still in flight between buckets: " \
        "{0: 0, 1: 3}"


def test_a_bucket_that_decides_nothing_after_the_heal() -> None:
    s = Story()
    s.need(1)
    s.heal_and_read(stuck=frozenset({2}))
    verdict = check(s.run())
    assert names(verdict) == ["buckets-stuck"]
    assert verdict.violations[0].text.endswith("buckets [2]")
    assert verdict.facts["buckets_stuck"] == [2] and verdict.facts["unread"] == 1
    assert verdict.facts["decided_final_read"] == 1


def test_what_the_driver_saw_comes_first() -> None:
    s = a_clean_story()
    s.incidents.append(Incident("crash", 1, 12.0, "node1 (pid 7) died without the nemesis"))
    s.plan.pop()
    verdict = check(s.run())
    assert names(verdict) == ["crash", "need-lost"]
    assert verdict.violations[0].text == "node1 (pid 7) died without the nemesis"


def test_replicas_campaigning_in_both_readings_are_reported_not_violations() -> None:
    s = a_clean_story()
    nodes = s.final_nodes()
    nodes[1] = dataclasses.replace(nodes[1], campaigning=[5, 106, 7],
                                   campaigning_again=[106, 5])
    verdict = check(s.run(nodes))
    assert verdict.violations == []
    assert verdict.facts["campaigning"] == ["node1/bucket106", "node1/bucket5"]


def test_convergence_is_one_question_for_the_wait_and_the_verdict() -> None:
    polls = [NodePoll(plan_root="p", ledger_root="l", decisions={"n": "x"}),
             NodePoll(plan_root="p", ledger_root="l", decisions={"n": "x"})]
    assert convergence_violations({"n": "x"}, polls, 180.0) == []
    late = [polls[0], dataclasses.replace(polls[1], decisions={})]
    assert convergence_violations({"n": "x"}, late, 180.0) == [Violation(
        "decision-missing", "node1: 1 NEEDs without the agreed certified decision after "
        "180 s (e.g. ['n'])")]


def test_every_violation_has_a_name_and_a_meaning() -> None:
    assert all(name == name.lower() and " " not in name and text
               for name, text in VIOLATIONS.items())


def test_subset_rule_explains_only_what_could_have_applied() -> None:
    sums = subset_sums([-300, 500, -700])
    assert sums is not None
    assert {0, -300, 500, -700, 200, -1000, -200, -500} == sums
    # an acknowledged transfer lost (gap -acked) or one applied twice is not a subset sum
    assert 600 not in sums and -600 not in sums
    assert subset_sums(list(range(1, 40)), cap=100) is None


def test_the_market_budgets_and_payouts_explain_the_accounts() -> None:
    """A paid task (its budget out of the poster, payout, bounty and refund in), one
    posted with an unknown outcome that was funded, one still open: the accounts add
    up. A payout missing from the balances, a task a node lacks, an acknowledged post
    that is no task: each caught by name."""
    s = a_clean_story()
    paid = s.task(1, poster=0, budget=3_000_000, payouts=[
        (1, 2_000_000, "payout"), (2, 600_000, "bounty"), (0, 400_000, "refund")])
    s.task(2, poster=1, budget=3_000_000, payouts=[], outcome="indeterminate",
           state="OPEN")
    s.task(3, poster=2, budget=3_000_000, payouts=[(2, 3_000_000, "refund")],
           state="CANCELLED")
    assert check(s.run()).violations == []

    lost_payout = s.run()
    for n in lost_payout.final.nodes:
        n.ledger.balances[ACCOUNTS[1]]["balance"] -= 2_000_000
    assert names(check(lost_payout)) == ["account-total-unexplained"]

    nodes = s.final_nodes()
    del nodes[2].tasks[paid]
    assert names(check(s.run(nodes))) == ["tasks-differ"]

    s.ops.append(dataclasses.replace(s.ops[-1], info={"title": "x", "need": need_id(9)}))
    assert names(check(s.run())) == ["task-lost"]
