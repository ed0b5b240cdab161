"""The plan CRDT: tasks and their dependency links (the DAG), not their lifecycle.

A task's lifecycle state lives in its NEED's bucket (`protocol/task.py`), decided by
certified entries; the plan only says which tasks exist and what depends on what.
Owns the merge rules, and nothing about envelopes or the network. Every op carries an
`OpKey` (lamport, actor, origin envelope id, position in that envelope) that totally
orders all ops, so the state is a function of the *set* of ops applied, whatever the
order or duplication of delivery:

* ADD_TASK: grow-only set by task id. If two ADD_TASKs name the same id, the one with
  the smallest key supplies the attributes (first writer wins, deterministically).
* LINK(from, to) ("from depends on to"): the graph is built by taking links in key
  order and keeping each one that does not close a cycle. Every replica therefore ends
  with the same acyclic graph. A link arriving late (a smaller key than links already
  kept) re-runs that greedy pass over the links after it; gossip disorder is short,
  so that suffix is short.

A version of the plan is named by its Merkle root (see `merkle_root`), `version_at`
rebuilds the plan as of a Lamport time, `diff` compares two versions, and patches
(`ops[]` on a `base_lamport`) get conflict reports before they merge.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cbor2

from . import cbor
from .errors import SchemaError
from .verbs import PLAN_OP


class OpKey(NamedTuple):
    """Total order on ops: Lamport time, then actor, then origin envelope, then position.

    A tuple, so comparisons run in C: ordering keys is the plan's innermost loop.
    """

    lamport: int
    actor: bytes
    origin: bytes = b""
    seq: int = 0

    def as_list(self) -> list[Any]:
        return [self.lamport, self.actor, self.origin, self.seq]


@dataclass(frozen=True, slots=True)
class AddTask:
    key: OpKey
    task_id: str
    title: str = ""
    task_class: str = ""
    parent: str = ""


@dataclass(frozen=True, slots=True)
class LinkOp:
    key: OpKey
    src: str
    dst: str


PlanOp = AddTask | LinkOp


def op_from_payload(
    raw: Mapping[str, Any], key: OpKey, path: str = "op", *, checked: bool = False
) -> PlanOp:
    """A plan op as carried in UPDATE_PLAN/PROPOSE payloads -> typed op.

    Validates unless `checked` says the payload's schema was already enforced (as
    `decode_envelope` does for every envelope).
    """
    if not checked:
        PLAN_OP.check(dict(raw), path)
    kind = raw["op"]
    if kind == "ADD_TASK":
        return AddTask(
            key,
            raw["task_id"],
            raw.get("title", ""),
            raw.get("class", ""),
            raw.get("parent", ""),
        )
    if raw["from"] == raw["to"]:
        raise SchemaError(f"{path}.to", "a task cannot depend on itself")
    return LinkOp(key, raw["from"], raw["to"])


def op_to_payload(op: PlanOp) -> dict[str, Any]:
    if isinstance(op, AddTask):
        out: dict[str, Any] = {"op": "ADD_TASK", "task_id": op.task_id}
        if op.title:
            out["title"] = op.title
        if op.task_class:
            out["class"] = op.task_class
        if op.parent:
            out["parent"] = op.parent
        return out
    return {"op": "LINK", "from": op.src, "to": op.dst}


def patch_scope_error(need: str, ops: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a bid's patch (its `ops` as carried) reaches outside its NEED, or None.

    A winning bid may only grow the plan under the task it won: every ADD_TASK adds a
    task named `<NEED>/...` (so no patch can touch another NEED's tasks, whose attributes
    the earliest ADD_TASK of an id would set) whose parent is the NEED or a task the
    patch added before it, and every LINK joins the NEED and tasks the patch adds."""
    inside = {need}
    for i, raw in enumerate(ops):
        if raw["op"] == "ADD_TASK":
            if not raw["task_id"].startswith(need + "/"):
                return f"ops[{i}]: {raw['task_id']} is not named {need}/..."
            if raw["task_id"] in inside:
                return f"ops[{i}]: adds {raw['task_id']} twice"
            if raw.get("parent", "") not in inside:
                return f"ops[{i}]: {raw['task_id']}'s parent is not the NEED or a task " \
                       f"this patch added"
            inside.add(raw["task_id"])
        elif raw["op"] == "LINK":
            for end in (raw["from"], raw["to"]):
                if end not in inside:
                    return f"ops[{i}]: links {end}, which is not the NEED or a task " \
                           f"this patch added"
        else:
            return f"ops[{i}]: {raw['op']} is not a patch op"
    return None


@dataclass(frozen=True, slots=True)
class TaskView:
    task_id: str
    title: str
    task_class: str
    parent: str

    def as_leaf(self) -> list[Any]:
        return ["task", self.task_id, self.title, self.task_class, self.parent]


@dataclass(frozen=True, slots=True)
class Conflict:
    """Why an op of a patch does not take effect as its author may have intended."""

    op: PlanOp
    reason: str  # "cycle" | "duplicate_task"
    detail: str


@dataclass(frozen=True, slots=True)
class PlanDiff:
    tasks_added: tuple[str, ...] = ()
    tasks_removed: tuple[str, ...] = ()
    links_added: tuple[tuple[str, str], ...] = ()
    links_removed: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.tasks_added or self.tasks_removed or self.links_added
                    or self.links_removed)


EMPTY_ROOT = hashlib.sha256(b"").digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root over already-hashed leaves (sha2-256).

    Interior node = sha256(0x01 || left || right); an odd node at the end of a level is
    carried up unchanged; the root of no leaves is sha256("").
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def leaf_hash(entry: list[Any]) -> bytes:
    """sha256(0x00 || DAG-CBOR(entry)); entries hold only text."""
    return hashlib.sha256(b"\x00" + cbor2.dumps(entry, canonical=True)).digest()


@dataclass(slots=True)
class _LinkRecord:
    op: LinkOp
    kept: bool = False


class Plan:
    """One replica's plan state. Mutated only through `apply`."""

    def __init__(self) -> None:
        self._ops: dict[OpKey, PlanOp] = {}
        self._adds: dict[str, AddTask] = {}
        self._links: list[_LinkRecord] = []  # sorted by key
        self._link_keys: list[OpKey] = []
        self._edges: dict[str, dict[str, int]] = {}  # src -> dst -> number of kept links
        self._leaf_cache: dict[str, bytes] = {}
        self._root_cache: bytes | None = None
        self.max_lamport = 0

    # --- applying ops ---------------------------------------------------------------

    def apply(self, op: PlanOp) -> bool:
        """Apply one op; returns False if it was already applied (duplicate)."""
        if op.key in self._ops:
            return False
        self._ops[op.key] = op
        self.max_lamport = max(self.max_lamport, op.key.lamport)
        self._root_cache = None
        if isinstance(op, AddTask):
            cur = self._adds.get(op.task_id)
            if cur is None or op.key < cur.key:
                self._adds[op.task_id] = op
                self._leaf_cache.pop(op.task_id, None)
        else:
            self._insert_link(op)
        return True

    def apply_all(self, ops: Iterable[PlanOp]) -> int:
        return sum(1 for op in ops if self.apply(op))

    def _reaches(self, start: str, goal: str) -> bool:
        if start == goal:
            return True
        seen = {start}
        stack = [start]
        edges = self._edges
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def _add_edge(self, src: str, dst: str) -> None:
        dsts = self._edges.setdefault(src, {})
        dsts[dst] = dsts.get(dst, 0) + 1

    def _remove_edge(self, src: str, dst: str) -> None:
        dsts = self._edges[src]
        dsts[dst] -= 1
        if not dsts[dst]:
            del dsts[dst]
            if not dsts:
                del self._edges[src]

    def _try_keep(self, rec: _LinkRecord) -> None:
        # Keeping src -> dst closes a cycle iff dst already reaches src.
        rec.kept = not self._reaches(rec.op.dst, rec.op.src)
        if rec.kept:
            self._add_edge(rec.op.src, rec.op.dst)

    def _insert_link(self, op: LinkOp) -> None:
        idx = bisect.bisect(self._link_keys, op.key)
        rec = _LinkRecord(op)
        self._link_keys.insert(idx, op.key)
        self._links.insert(idx, rec)
        if idx == len(self._links) - 1 or not self._reaches(op.dst, op.src):
            # Fast path. Either the link is the latest, or it closes no cycle even with
            # every later link's edge present: then it is kept, every later kept link
            # stays acyclic (any subgraph of an acyclic graph is acyclic) and every later
            # rejected link stays rejected (more edges only add paths).
            self._try_keep(rec)
            return
        suffix = self._links[idx + 1 :]
        # Undo the greedy pass for links after this one, then redo it in key order.
        for later in suffix:
            if later.kept:
                self._remove_edge(later.op.src, later.op.dst)
        for r in (rec, *suffix):
            self._try_keep(r)

    # --- reading --------------------------------------------------------------------

    @property
    def op_count(self) -> int:
        return len(self._ops)

    def ops(self) -> Iterator[PlanOp]:
        """All applied ops in key order."""
        for key in sorted(self._ops):
            yield self._ops[key]

    def task_ids(self) -> list[str]:
        return sorted(self._adds)

    def task(self, task_id: str) -> TaskView | None:
        add = self._adds.get(task_id)
        if add is None:
            return None
        return TaskView(task_id, add.title, add.task_class, add.parent)

    def links(self) -> list[tuple[str, str]]:
        """The kept dependency edges, sorted."""
        return sorted((s, d) for s, dsts in self._edges.items() for d in dsts)

    def link_records(self) -> list[tuple[LinkOp, bool]]:
        return [(r.op, r.kept) for r in self._links]

    @property
    def rejected_links(self) -> int:
        return sum(1 for r in self._links if not r.kept)

    def is_acyclic(self) -> bool:
        """Full check (Kahn's algorithm); for tests and assertions, not the hot path."""
        indeg: dict[str, int] = {}
        for s, dsts in self._edges.items():
            indeg.setdefault(s, 0)
            for d in dsts:
                indeg[d] = indeg.get(d, 0) + 1
        ready = [n for n, k in indeg.items() if k == 0]
        seen = 0
        while ready:
            n = ready.pop()
            seen += 1
            for d in self._edges.get(n, ()):
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
        return seen == len(indeg)

    # --- versions -------------------------------------------------------------------

    def _task_leaf(self, task_id: str) -> bytes:
        leaf = self._leaf_cache.get(task_id)
        if leaf is None:
            view = self.task(task_id)
            assert view is not None
            leaf = leaf_hash(view.as_leaf())
            self._leaf_cache[task_id] = leaf
        return leaf

    def root(self) -> bytes:
        """Merkle root of the visible plan: one leaf per task, then one per kept link."""
        if self._root_cache is None:
            leaves = [self._task_leaf(t) for t in self.task_ids()]
            leaves.extend(leaf_hash(["link", s, d]) for s, d in self.links())
            self._root_cache = merkle_root(leaves)
        return self._root_cache

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole replica (every op and its outcome).

        Two replicas that applied the same set of ops produce identical bytes.
        """
        doc = {
            "v": 2,
            "root": self.root(),
            "tasks": [
                [t.task_id, t.title, t.task_class, t.parent]
                for t in (self.task(i) for i in self.task_ids())
                if t is not None
            ],
            "links": [[s, d] for s, d in self.links()],
            "ops": [[*op.key.as_list(), op_to_payload(op)] for op in self.ops()],
        }
        return cbor.encode(doc)

    def version_at(self, lamport: int) -> Plan:
        """The plan as it was with only ops stamped at or before `lamport`."""
        past = Plan()
        past.apply_all(op for op in self.ops() if op.key.lamport <= lamport)
        return past

    def copy(self) -> Plan:
        clone = Plan()
        clone.apply_all(self.ops())
        return clone

    # --- patches --------------------------------------------------------------------

    def conflicts(self, ops: Sequence[PlanOp], base_lamport: int) -> list[Conflict]:
        """What in `ops` (a patch written against `base_lamport`) collides with this plan.

        * cycle: the link would close a cycle with links kept here;
        * duplicate_task: the task exists with different attributes.
        Reports only; merging is always `apply`, whose rules are deterministic.
        """
        out: list[Conflict] = []
        for op in ops:
            if isinstance(op, LinkOp):
                if self._reaches(op.dst, op.src):
                    out.append(Conflict(op, "cycle",
                                        f"{op.src} -> {op.dst} closes a cycle"))
            else:
                cur_a = self._adds.get(op.task_id)
                if cur_a is not None and (cur_a.title, cur_a.task_class, cur_a.parent) != (
                    op.title, op.task_class, op.parent
                ):
                    out.append(Conflict(op, "duplicate_task",
                                        f"{op.task_id} already exists with other attributes"))
        return out


def merge_patches(
    plan: Plan, patches: Iterable[tuple[Sequence[PlanOp], int]]
) -> list[list[Conflict]]:
    """Merge several patches into `plan` deterministically; returns each one's conflicts.

    Conflicts are judged against the plan as it stood before the merge plus the patches
    that order before it by their first op's key, so the report, like the result, does
    not depend on the order the patches are given in.
    """
    indexed = sorted(
        enumerate(list(patches)),
        key=lambda item: min((op.key for op in item[1][0]), default=OpKey(0, b"")),
    )
    reports: dict[int, list[Conflict]] = {}
    for original_index, (ops, base) in indexed:
        reports[original_index] = plan.conflicts(ops, base)
        plan.apply_all(ops)
    return [reports[i] for i in range(len(reports))]


def diff(old: Plan, new: Plan) -> PlanDiff:
    old_ids, new_ids = set(old.task_ids()), set(new.task_ids())
    old_links, new_links = set(old.links()), set(new.links())
    return PlanDiff(
        tasks_added=tuple(sorted(new_ids - old_ids)),
        tasks_removed=tuple(sorted(old_ids - new_ids)),
        links_added=tuple(sorted(new_links - old_links)),
        links_removed=tuple(sorted(old_links - new_links)),
    )


def diff_to_json(d: PlanDiff) -> dict[str, Any]:
    return {
        "tasks_added": list(d.tasks_added),
        "tasks_removed": list(d.tasks_removed),
        "links_added": [list(x) for x in d.links_added],
        "links_removed": [list(x) for x in d.links_removed],
    }


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """What names a plan's version: its Merkle root and counts, at a Lamport time."""

    lamport: int
    root: bytes
    tasks: int = 0
    links: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: Plan, lamport: int) -> PlanVersion:
        """`plan` as it stands, labelled with `lamport` (the time it was cut at, or the
        clock of the replica holding it)."""
        return cls(lamport=lamport, root=plan.root(), tasks=len(plan.task_ids()),
                   links=len(plan.links()))

    def to_json(self) -> dict[str, Any]:
        return {"lamport": self.lamport, "plan_root": self.root.hex(), "tasks": self.tasks,
                "links": self.links}


def version_of(plan: Plan, lamport: int | None = None) -> PlanVersion:
    """The plan's version at `lamport`, or as it stands (at its latest op's time)."""
    at = plan if lamport is None else plan.version_at(lamport)
    return PlanVersion.of(at, at.max_lamport if lamport is None else lamport)


def thread_view(plan: Plan, thread: str) -> dict[str, Any]:
    """A thread as `GET /plan/threads/{thread}` shows it: the task named `thread` and every
    task reachable from it by links, breadth first, each with the tasks it depends on
    (a task the plan does not know yet is listed as unknown)."""
    edges: dict[str, list[str]] = {}
    for src, dst in plan.links():
        edges.setdefault(src, []).append(dst)
    order, seen, frontier = [], {thread}, deque([thread])
    while frontier:
        node = frontier.popleft()
        order.append(node)
        for nxt in edges.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    tasks = []
    for task_id in order:
        view = plan.task(task_id)
        tasks.append({"task_id": task_id, "known": view is not None,
                      "title": view.title if view else "",
                      "class": view.task_class if view else "",
                      "depends_on": sorted(edges.get(task_id, []))})
    return {"thread": thread, "tasks": tasks}
