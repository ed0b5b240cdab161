"""Task events (node/market_events.py): numbered in applied order, filtered by task,
followed live, a follower that fell behind the ring told how much it missed, and the
transitions counted by state."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from swarm.node import market_events
from swarm.node.market_events import TaskEvents
from swarm.protocol import cbor
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.task import Payment, Step, Transition

A, B = dag_cbor_cid(cbor.encode("a")), dag_cbor_cid(cbor.encode("b"))


def moved(need: Any, before: str, after: str) -> Step:
    return Step(transitions=[Transition(need, 0, before, after, "test")])


async def test_followers_get_history_then_live_events_of_their_task() -> None:
    registry = CollectorRegistry()
    events = TaskEvents(registry)
    events.publish(1, [moved(A, "", "OPEN"), moved(B, "", "OPEN")])
    got: list[dict[str, Any]] = []

    async def follow() -> None:
        async with aclosing(events.follow(0, str(A))) as stream:
            async for e in stream:
                if e is not None:
                    got.append(e)
                if len(got) == 3:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.sleep(0.01)
        assert events.followers == 1
        step = moved(A, "OPEN", "DECIDED")
        step.payments.append(Payment(A, b"\1" * 32, 5, "refund", b"\2" * 32))
        events.publish(1, [step, moved(B, "OPEN", "CANCELLED")])
    assert events.followers == 0
    assert [(e["kind"], e.get("after")) for e in got] == [
        ("transition", "OPEN"), ("transition", "DECIDED"), ("payment", None)]
    assert [e["seq"] for e in got] == [1, 3, 4]
    assert registry.get_sample_value("swarm_task_transitions_total",
                                     {"state": "OPEN"}) == 2


async def test_a_follower_behind_the_ring_is_told_what_it_missed(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(market_events, "EVENTS_KEPT", 3)
    events = TaskEvents(CollectorRegistry())
    for _ in range(5):
        events.publish(0, [moved(A, "OPEN", "OPEN")])
    first = [e async for e in _take(events.follow(0), 2)]
    assert first[0] == {"kind": "gap", "missed": 2, "seq": 2}
    assert first[1]["seq"] == 3


async def test_silence_yields_keep_alives(monkeypatch: Any) -> None:
    monkeypatch.setattr(market_events, "KEEPALIVE_S", 0.01)
    events = TaskEvents(CollectorRegistry())
    assert [e async for e in _take(events.follow(0), 2)] == [None, None]


async def _take(stream: Any, n: int) -> Any:
    async for e in stream:
        yield e
        n -= 1
        if n == 0:
            await stream.aclose()
            return
