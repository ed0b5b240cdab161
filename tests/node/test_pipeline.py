"""The inbound pipeline's verdicts and its fault handling, on a real store.

Goal: the judging stages give the verdicts docs/NETWORK.md lists (ledger verbs
`not_gossiped`, `lamport_future` against the wall clock passed in, `lamport_reversal`
against known refs), a reversal found only when its refs arrive drops the envelope from
the id set, and a fault of ours costs one envelope in judging, applying and replay
alike while a storage failure is the one exception `commit` lets out. Method: a
`Pipeline` over a `Store` in a temporary folder, with the interim schema-only policy;
faults are injected by monkeypatching one function for one envelope.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.node.pipeline import INTERNAL, Pipeline, PolicyDecision, Verdict
from swarm.node.store import Store, StoreError
from swarm.protocol import replay as replay_mod
from swarm.protocol import verbs
from swarm.protocol.bucket_machine import LEDGER_VERBS
from swarm.protocol.envelope import Envelope, make_envelope
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.lamport import LAMPORT_MAX, lamport_ceiling
from swarm.testnet.workload import TEST_SWARM, Agent, example_payloads

NOW_MS = 1_750_000_000_000


class Faults:
    """What the pipeline reported: (key, exception, count) per fault."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, BaseException, bool]] = []

    def __call__(self, key: str, exc: BaseException, count: bool) -> None:
        self.seen.append((key, exc, count))


class Home:
    """One store folder; `restart` closes the store and replays it into a new pipeline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = Store(path)

    def restart(self, faults: Faults, replayed: Any = None) -> Pipeline:
        self.store.close()
        self.store = Store(self.path)
        return Pipeline.open(TEST_SWARM, self.store, replayed=replayed, on_fault=faults)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "store")
    try:
        yield h
    finally:
        h.store.close()


def need(agent: Agent, title: str = "", refs: list[Envelope] | None = None) -> Envelope:
    return agent.make("NEED", {"class": "simple", "budget": 1, "title": title}, refs)


def at(agent: Agent, lamport: int, refs: list[Envelope] | None = None,
       title: str = "") -> Envelope:
    return make_envelope(agent.identity, kind="NEED", swarm=TEST_SWARM, lamport=lamport,
                         ts=0, payload={"class": "simple", "budget": 1, "title": title},
                         refs=[r.id for r in refs or ()])


def test_ledger_verbs_are_not_gossiped(home: Home, agent: Agent) -> None:
    p = Pipeline.open(TEST_SWARM, home.store)
    payloads = example_payloads()
    for kind in LEDGER_VERBS:
        env = agent.make(kind, verbs.payload_from_json(kind, payloads[kind]))
        outcome = p.judge(env.wire, NOW_MS)
        assert (outcome.verdict, outcome.reason) == (Verdict.REJECT, "not_gossiped"), kind
    assert home.store.count == 0


def test_far_future_is_ignored_until_its_time_has_come(home: Home, agent: Agent) -> None:
    p = Pipeline.open(TEST_SWARM, home.store)
    for lamport in (LAMPORT_MAX, 2**62, lamport_ceiling(NOW_MS) + 1):
        outcome = p.judge(at(agent, lamport).wire, NOW_MS)
        assert (outcome.verdict, outcome.reason) == (Verdict.IGNORE, "lamport_future")
    soon = at(agent, lamport_ceiling(NOW_MS) + 1)
    later = p.judge(soon.wire, NOW_MS + 1)
    assert later.verdict is Verdict.ACCEPT
    assert p.commit([soon]).fresh == [soon] and home.store.count == 1


def test_a_known_reversal_is_rejected_and_never_stored(home: Home, agent: Agent) -> None:
    p = Pipeline.open(TEST_SWARM, home.store)
    a = need(agent)
    p.commit([a])
    bad = at(agent, a.lamport, [a])
    outcome = p.judge(bad.wire, NOW_MS)
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECT, "lamport_reversal")
    assert home.store.count == 1


def test_a_reversal_found_when_its_refs_arrive_leaves_the_id_set(
        home: Home, agent: Agent) -> None:
    late: list[tuple[Envelope, RemoteProtocolError]] = []
    p = Pipeline.open(TEST_SWARM, home.store)
    p.on_late_reject = lambda e, x: late.append((e, x))
    a = need(agent)
    bad = at(agent, a.lamport, [a])
    assert p.judge(bad.wire, NOW_MS).verdict is Verdict.ACCEPT  # its ref is unknown yet
    p.commit([bad])
    assert bad.id in p.ids and bad.id in p.replica.pending
    p.commit([a])
    assert [(e.id, x.code) for e, x in late] == [(bad.id, "lamport_reversal")]
    assert bad.id not in p.ids and bad.id not in p.replica.applied
    assert p.judge(bad.wire, NOW_MS).reason == "lamport_reversal"  # offered again: refused
    # A restart finds it in the store and leaves it out of the id set again.
    faults = Faults()
    again = home.restart(faults)
    assert bad.id not in again.ids and a.id in again.ids
    assert again.replica.plan.root() == p.replica.plan.root()
    assert faults.seen == []


def test_a_fault_while_judging_rejects_as_internal_and_stores_nothing(
        home: Home, agent: Agent) -> None:
    faults = Faults()
    p = Pipeline.open(TEST_SWARM, home.store, on_fault=faults)

    class Faulty:
        def evaluate(self, env: Envelope) -> PolicyDecision:
            if env.payload.get("title") == "boom":
                raise RuntimeError("injected")
            return PolicyDecision(Verdict.ACCEPT)

    p.policy = Faulty()
    boom, fine = need(agent, "boom"), need(agent, "fine")
    outcome = p.judge(boom.wire, NOW_MS)
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECT, INTERNAL)
    assert [(k, type(x), c) for k, x, c in faults.seen] == [(str(boom.id), RuntimeError,
                                                              False)]
    assert p.judge(fine.wire, NOW_MS).verdict is Verdict.ACCEPT
    assert home.store.count == 0


def test_a_fault_while_applying_keeps_the_envelope_stored_and_replay_skips_it(
        home: Home, agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    real = replay_mod.plan_ops

    def faulty(env: Envelope) -> list[Any]:
        if env.payload.get("title") == "boom":
            raise RuntimeError("injected")
        return real(env)

    monkeypatch.setattr(replay_mod, "plan_ops", faulty)
    faults = Faults()
    hooked: list[Envelope] = []
    p = Pipeline.open(TEST_SWARM, home.store, on_fault=faults)
    p.on_accept.append(hooked.append)
    boom, fine = need(agent, "boom"), need(agent, "fine")
    committed = p.commit([boom, fine])
    assert committed.fresh == [boom, fine] and committed.faulted == [boom]
    assert boom.id in p.ids and fine.id in p.replica.applied
    assert boom.id not in p.replica.applied
    assert hooked == [boom, fine]  # the hooks still saw it
    assert [(k, c) for k, _, c in faults.seen] == [(str(boom.id), True)]
    root = p.replica.plan.root()
    # A restart with the fault still there: it starts, skips the same envelope.
    again_faults = Faults()
    replayed: list[Envelope] = []
    again = home.restart(again_faults, replayed.append)
    assert again.replica.plan.root() == root and boom.id in again.ids
    assert [(k, c) for k, _, c in again_faults.seen] == [(str(boom.id), True)]
    assert [e.id for e in replayed] == [boom.id, fine.id]
    # The fault fixed, the next start applies it.
    monkeypatch.setattr(replay_mod, "plan_ops", real)
    fixed = home.restart(Faults())
    assert boom.id in fixed.replica.applied


def test_a_faulty_hook_costs_only_its_own_work(home: Home, agent: Agent) -> None:
    faults = Faults()
    seen: list[Envelope] = []
    p = Pipeline.open(TEST_SWARM, home.store, on_fault=faults)

    def faulty(env: Envelope) -> None:
        if env.payload.get("title") == "boom":
            raise RuntimeError("injected")

    p.on_accept.extend([faulty, seen.append])
    boom, fine = need(agent, "boom"), need(agent, "fine")
    committed = p.commit([boom, fine])
    assert committed.faulted == [boom] and seen == [boom, fine]
    assert boom.id in p.replica.applied  # the replica applied it; one read model did not
    again = home.restart(faults, faulty)
    assert again.replica.plan.root() == p.replica.plan.root()
    assert [k for k, _, _ in faults.seen] == [str(boom.id), str(boom.id)]


def test_a_storage_failure_is_the_one_exception_commit_lets_out(
        home: Home, agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    p = Pipeline.open(TEST_SWARM, home.store)

    def broken(items: Any, *, sync: bool = True) -> None:
        raise StoreError("disk gone")

    monkeypatch.setattr(home.store, "append", broken)
    env = need(agent)
    with pytest.raises(StoreError):
        p.commit([env])
    assert env.id not in p.ids and env.id not in p.replica.applied


def test_replay_leaves_stored_ledger_verbs_out(home: Home, agent: Agent) -> None:
    """A ledger envelope an older node stored from gossip is neither applied nor
    offered to peers."""
    transfer = agent.make("TRANSFER", verbs.payload_from_json(
        "TRANSFER", example_payloads()["TRANSFER"]))
    home.store.append([(transfer.id, transfer.wire)])
    p = home.restart(Faults())
    assert transfer.id not in p.ids and transfer.id not in p.replica.applied
    assert home.store.count == 1
