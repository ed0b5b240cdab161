"""The plan CRDT's rules, one at a time: G-Set tasks, acyclic links, versions, diffs,
patch conflicts and the scope of a bid's patch."""

from __future__ import annotations

from swarm.protocol.plan import (
    EMPTY_ROOT,
    AddTask,
    LinkOp,
    OpKey,
    Plan,
    diff,
    merge_patches,
    merkle_root,
    patch_scope_error,
    version_of,
)

A, B = b"\x0a" * 32, b"\x0b" * 32


def k(lamport: int, actor: bytes = A, seq: int = 0) -> OpKey:
    return OpKey(lamport, actor, b"", seq)


def test_add_task_is_a_grow_only_set_first_writer_wins() -> None:
    p = Plan()
    assert p.apply(AddTask(k(5), "t", title="late"))
    assert p.apply(AddTask(k(2), "t", title="early"))
    assert not p.apply(AddTask(k(2), "t", title="early"))  # duplicate
    view = p.task("t")
    assert view is not None and view.title == "early"
    assert p.task_ids() == ["t"]


def test_a_link_names_tasks_the_plan_may_not_know_yet() -> None:
    p = Plan()
    p.apply(LinkOp(k(1), "a", "b"))
    assert p.links() == [("a", "b")] and p.task_ids() == [] and p.task("a") is None
    p.apply(AddTask(k(2), "a"))
    assert p.task_ids() == ["a"]


def test_patch_scope_keeps_a_bid_under_its_need() -> None:
    need = "bafyneed"
    s1, s2 = f"{need}/s1", f"{need}/s2"
    inside = [{"op": "ADD_TASK", "task_id": s1, "parent": need},
              {"op": "ADD_TASK", "task_id": s2, "parent": s1},
              {"op": "LINK", "from": s2, "to": need},
              {"op": "LINK", "from": need, "to": s1}]
    assert patch_scope_error(need, inside) is None
    for bad in ([{"op": "ADD_TASK", "task_id": s1}],  # no parent
                [{"op": "ADD_TASK", "task_id": s1, "parent": "elsewhere"}],
                [{"op": "ADD_TASK", "task_id": "s1", "parent": need}],  # not need/...
                [{"op": "ADD_TASK", "task_id": "other/s1", "parent": need}],
                [{"op": "ADD_TASK", "task_id": s1, "parent": need}] * 2,
                [{"op": "LINK", "from": need, "to": "elsewhere"}],
                [{"op": "LINK", "from": s1, "to": need},  # s1 added only after
                 {"op": "ADD_TASK", "task_id": s1, "parent": need}],
                [{"op": "STATE", "task_id": need, "state": "FINALIZED"}]):
        assert patch_scope_error(need, bad) is not None, bad


def test_link_that_closes_a_cycle_is_dropped_and_the_earlier_link_kept() -> None:
    p = Plan()
    p.apply(LinkOp(k(1), "a", "b"))
    p.apply(LinkOp(k(2), "b", "c"))
    p.apply(LinkOp(k(3), "c", "a"))  # would close a -> b -> c -> a
    assert p.links() == [("a", "b"), ("b", "c")]
    assert p.rejected_links == 1
    assert p.is_acyclic()


def test_late_link_with_smaller_key_displaces_a_later_one() -> None:
    # Every replica must end with the links kept by the greedy pass in key order.
    p = Plan()
    p.apply(LinkOp(k(5), "b", "a"))
    p.apply(LinkOp(k(1), "a", "b"))  # arrives late but orders first
    assert p.links() == [("a", "b")]
    q = Plan()
    q.apply(LinkOp(k(1), "a", "b"))
    q.apply(LinkOp(k(5), "b", "a"))
    assert q.links() == p.links() and q.root() == p.root()


def test_displacement_cascades() -> None:
    # x->y (5) is kept and y->x (6) dropped; then y->x (1) arrives late, orders first,
    # so x->y must go, and with it gone the later y->x is kept again.
    p = Plan()
    p.apply(LinkOp(k(5), "x", "y"))
    p.apply(LinkOp(k(6), "y", "x"))
    assert p.links() == [("x", "y")]
    p.apply(LinkOp(k(1), "y", "x"))
    assert p.links() == [("y", "x")]
    assert [kept for _, kept in p.link_records()] == [True, False, True]
    q = Plan()
    q.apply_all(sorted(p.ops(), key=lambda o: o.key))
    assert q.snapshot() == p.snapshot()


def test_duplicate_links_counted_once_in_the_graph() -> None:
    p = Plan()
    p.apply(LinkOp(k(1), "a", "b"))
    p.apply(LinkOp(k(2, B), "a", "b"))
    assert p.links() == [("a", "b")]
    assert p.rejected_links == 0


def test_merkle_root() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    one = b"\x01" * 32
    assert merkle_root([one]) == one
    p, q = Plan(), Plan()
    assert p.root() == EMPTY_ROOT
    p.apply(AddTask(k(1), "t"))
    q.apply(AddTask(k(1), "t", title="other"))
    assert p.root() != q.root()


def test_version_at_and_diff() -> None:
    p = Plan()
    p.apply_all([AddTask(k(1), "a"), AddTask(k(2), "b"), AddTask(k(3), "c"),
                 LinkOp(k(4), "a", "b"), AddTask(k(5), "d")])
    v2 = p.version_at(2)
    assert v2.task_ids() == ["a", "b"] and v2.links() == []
    assert p.version_at(5).root() == p.root()
    d = diff(p.version_at(3), p)
    assert d.links_added == (("a", "b"),)
    assert d.tasks_added == ("d",) and d.tasks_removed == ()
    assert diff(p, p).empty
    assert version_of(p, 2).root == v2.root()


def test_patch_conflicts_and_deterministic_merge() -> None:
    base = Plan()
    base.apply_all([AddTask(k(1), "a"), AddTask(k(1, B), "b"), LinkOp(k(2), "b", "c")])
    patch = [AddTask(k(3), "c"), LinkOp(k(3, A, 1), "c", "b")]
    conflicts = base.conflicts(patch, base_lamport=2)
    assert [c.reason for c in conflicts] == ["cycle"]

    p1 = [LinkOp(k(6), "a", "b")]
    p2 = [LinkOp(k(7, B), "b", "a"), AddTask(k(7, B, 1), "a", title="different")]
    x, y = base.copy(), base.copy()
    rx = merge_patches(x, [(p1, 5), (p2, 5)])
    ry = merge_patches(y, [(p2, 5), (p1, 5)])
    assert x.snapshot() == y.snapshot()
    assert [c.reason for c in rx[1]] == ["cycle", "duplicate_task"]
    assert [c.reason for c in ry[0]] == ["cycle", "duplicate_task"]
    assert rx[0] == ry[1] == []
