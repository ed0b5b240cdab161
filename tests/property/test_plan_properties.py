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

from swarm.protocol.plan import AddTask, LinkOp, OpKey, Plan, PlanOp, SetState
from swarm.protocol.verbs import TASK_STATES

TASKS = ["a", "b", "c", "d", "e", "f"]
ACTORS = [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]

keys = st.builds(OpKey, st.integers(1, 30), st.sampled_from(ACTORS), st.just(b""),
                 st.integers(0, 3))
ops = st.one_of(
    st.builds(AddTask, keys, st.sampled_from(TASKS), st.sampled_from(["", "x", "y"])),
    st.builds(SetState, keys, st.sampled_from(TASKS), st.sampled_from(TASK_STATES)),
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
    states: dict[str, SetState] = {}
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
        elif isinstance(op, SetState):
            states[op.task_id] = op
        elif not reaches(op.dst, op.src):
            edges.add((op.src, op.dst))
    return {
        "tasks": {t: (adds[t].title if t in adds else None,
                      states[t].state if t in states else None)
                  for t in set(adds) | set(states)},
        "links": sorted(edges),
    }


def observed(plan: Plan) -> dict[str, Any]:
    views = {t: plan.task(t) for t in plan.task_ids()}
    return {
        "tasks": {t: (v.title if v.added else None, v.state) for t, v in views.items() if v},
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
