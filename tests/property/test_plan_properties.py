"""Property tests of the plan CRDT.

Goal: the plan is a function of the *set* of ops it has seen. Method: Hypothesis draws
op sets over a small universe of task ids (so links collide and cycles are common),
applies them in permuted, duplicated orders, and compares snapshots byte for byte; a
stateful machine checks the incremental implementation against a model that rebuilds
the plan from scratch (the specification, written the slow, obvious way) after every
step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from swarm.protocol.plan import AddTask, LinkOp, OpKey, Plan, PlanOp

TASKS = ["a", "b", "c", "d", "e", "f"]
ACTORS = [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]

keys = st.builds(OpKey, st.integers(1, 30), st.sampled_from(ACTORS), st.just(b""),
                 st.integers(0, 3))
ops = st.one_of(
    st.builds(AddTask, keys, st.sampled_from(TASKS), st.sampled_from(["", "x", "y"])),
    st.builds(lambda key, pair: LinkOp(key, *pair), keys,
              st.permutations(TASKS).map(lambda p: (p[0], p[1]))),
)


def unique_by_key(items: list[PlanOp]) -> list[PlanOp]:
    seen: dict[OpKey, PlanOp] = {}
    for op in items:
        seen.setdefault(op.key, op)
    return list(seen.values())


op_sets = st.lists(ops, max_size=40).map(unique_by_key)


def model(all_ops: list[PlanOp]) -> dict[str, Any]:
    """The specification, computed from scratch in key order."""
    adds: dict[str, AddTask] = {}
    edges: set[tuple[str, str]] = set()

    def reaches(a: str, b: str) -> bool:
        frontier, seen = [a], {a}
        while frontier:
            n = frontier.pop()
            if n == b:
                return True
            for s, d in edges:
                if s == n and d not in seen:
                    seen.add(d)
                    frontier.append(d)
        return False

    for op in sorted(all_ops, key=lambda o: o.key):
        if isinstance(op, AddTask):
            adds.setdefault(op.task_id, op)
        elif not reaches(op.dst, op.src):
            edges.add((op.src, op.dst))
    return {
        "tasks": {t: add.title for t, add in adds.items()},
        "links": sorted(edges),
    }


def observed(plan: Plan) -> dict[str, Any]:
    views = {t: plan.task(t) for t in plan.task_ids()}
    return {
        "tasks": {t: v.title for t, v in views.items() if v},
        "links": plan.links(),
    }


@given(op_sets, st.randoms(use_true_random=False), st.integers(0, 10))
def test_any_permutation_and_duplication_gives_the_same_plan(
    items: list[PlanOp], rnd: Any, dups: int
) -> None:
    reference = Plan()
    reference.apply_all(items)
    shuffled = items + [rnd.choice(items) for _ in range(dups if items else 0)]
    rnd.shuffle(shuffled)
    other = Plan()
    other.apply_all(shuffled)
    assert other.snapshot() == reference.snapshot()
    assert other.root() == reference.root()
    assert observed(reference) == model(items)


@given(op_sets, st.randoms(use_true_random=False))
def test_link_graph_is_never_cyclic(items: list[PlanOp], rnd: Any) -> None:
    rnd.shuffle(items)
    plan = Plan()
    for op in items:
        plan.apply(op)
        assert plan.is_acyclic()


@given(op_sets, st.integers(0, 31))
def test_version_at_equals_plan_built_from_the_past(items: list[PlanOp], at: int) -> None:
    plan = Plan()
    plan.apply_all(items)
    past = Plan()
    past.apply_all(op for op in items if op.key.lamport <= at)
    assert plan.version_at(at).snapshot() == past.snapshot()


class PlanMachine(RuleBasedStateMachine):
    """Incremental plan vs the from-scratch model, after every op."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = Plan()
        self.applied: dict[OpKey, PlanOp] = {}

    @rule(op=ops)
    def apply(self, op: PlanOp) -> None:
        if op.key in self.applied:  # same key, other content cannot happen on the wire
            op = self.applied[op.key]
        fresh = op.key not in self.applied
        assert self.plan.apply(op) == fresh
        self.applied[op.key] = op

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        if self.applied:
            op = data.draw(st.sampled_from(sorted(self.applied.values(), key=lambda o: o.key)))
            assert not self.plan.apply(op)

    @invariant()
    def matches_model(self) -> None:
        assert observed(self.plan) == model(list(self.applied.values()))

    @invariant()
    def acyclic(self) -> None:
        assert self.plan.is_acyclic()


TestPlanMachine = PlanMachine.TestCase


# --- winning bids' patches (Replica.admit) -------------------------------------------


def _patch_world() -> tuple[list[Any], list[tuple[Any, int]]]:
    """Envelopes (a NEED, three bids with patches, approving and rejecting ATTEST_PLANs)
    and the admissions a bucket might certify, built once from fixed keys."""
    import random

    from swarm.protocol.envelope import Identity
    from swarm.testnet.workload import TEST_SWARM, Agent

    rng = random.Random(11)
    poster, *others = (Agent(Identity(rng.randbytes(32)), TEST_SWARM) for _ in range(5))
    need = poster.make("NEED", {"class": "simple", "budget": 9})
    envs: list[Any] = [need]
    bids = []
    for i, bidder in enumerate(others[:3]):
        sub = f"{need.id}/s{i}"
        bid = bidder.make("PROPOSE", {
            "need_id": need.id, "proposal_id": f"p{i}", "cost": 1, "eta_ms": 1,
            "ballot": f"b{i}", "patch": {"base_lamport": 1, "ops": [
                {"op": "ADD_TASK", "task_id": sub, "parent": str(need.id)},
                {"op": "LINK", "from": str(need.id), "to": sub},
                {"op": "LINK", "from": sub, "to": str(need.id)}]}}, [need])  # a cycle
        bids.append(bid)
        envs.append(bid)
    for voter in others:
        for i in range(3):
            verdict = "approve" if (i + len(envs)) % 3 else "reject"
            envs.append(voter.make("ATTEST_PLAN", {"need_id": need.id, "proposal_id": f"p{i}",
                                                   "verdict": verdict}, [need]))
    return envs, [(bids[0].id, 0), (bids[1].id, 2), (bids[2].id, 3)]


_ENVS, _ADMISSIONS = _patch_world()


@given(st.permutations(list(range(len(_ENVS) + len(_ADMISSIONS)))),
       st.lists(st.integers(0, len(_ENVS) - 1), max_size=5))
def test_admitted_patches_give_one_plan_in_any_order(order: list[int], dups: list[int]
                                                      ) -> None:
    """The plan is a function of the envelopes and admissions, in any order, with
    redelivery; a patch joins only with its decision and its k_plan approvals."""
    from swarm.protocol.replay import Replica

    def run(sequence: list[int]) -> Replica:
        r = Replica()
        for k in sequence:
            if k < len(_ENVS):
                r.receive(_ENVS[k].wire)
            else:
                proposal, k_plan = _ADMISSIONS[k - len(_ENVS)]
                r.admit(proposal, _ENVS[0].id, k_plan)
        return r

    reference = run(list(range(len(_ENVS) + len(_ADMISSIONS))))
    shuffled = run(order + dups)
    assert shuffled.plan.snapshot() == reference.plan.snapshot()
    assert shuffled.merged == reference.merged
    assert reference.plan.is_acyclic()
    # p0 (k_plan 0) joins; p1 (k_plan 2) has only rejections; p2 (k_plan 3) has the
    # approvals of the three voters that did not bid it. Each patch's LINK back to the
    # NEED would close a cycle and is dropped.
    subs = sorted(t.rsplit("/", 1)[1] for t in reference.plan.task_ids() if "/" in t)
    assert subs == ["s0", "s2"]
