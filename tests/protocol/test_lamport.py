"""Lamport clocks and P3 (no reversals)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol.errors import LamportReversal, LocalProtocolError
from swarm.protocol.lamport import LAMPORT_MAX, LamportClock, check_refs


def test_tick_and_observe() -> None:
    c = LamportClock()
    assert c.tick() == 1
    assert c.observe(10) == 10
    assert c.tick() == 11
    assert c.observe(3) == 11  # never backwards


@given(st.lists(st.one_of(st.tuples(st.just("tick"), st.just(0)),
                          st.tuples(st.just("observe"), st.integers(0, 2**40)))))
def test_clock_never_decreases_and_ticks_strictly_increase(events: list[tuple[str, int]]) -> None:
    c = LamportClock()
    last = 0
    for kind, value in events:
        if kind == "tick":
            t = c.tick()
            assert t > last
        else:
            t = c.observe(value)
            assert t >= last and t >= value
        last = t


def test_check_refs() -> None:
    check_refs(5, [1, 4])
    with pytest.raises(LamportReversal):
        check_refs(5, [1, 5])
    with pytest.raises(LamportReversal):
        check_refs(5, [9])


def test_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        LamportClock(-1)
    c = LamportClock(LAMPORT_MAX)
    with pytest.raises(LocalProtocolError):
        c.tick()
