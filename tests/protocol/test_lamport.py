"""Lamport clocks, P3 (no reversals) and the ceiling on how far ahead a clock may run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol.errors import LamportFuture, LamportReversal, LocalProtocolError
from swarm.protocol.lamport import (
    LAMPORT_MAX,
    LAMPORT_PER_MS,
    LAMPORT_SKEW_MS,
    LamportClock,
    check_not_future,
    check_refs,
    lamport_ceiling,
)


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


# --- the ceiling: how far ahead of a receiver's wall clock a Lamport time may be ---------


def test_ceiling_follows_wall_time_with_the_skew_allowance() -> None:
    assert lamport_ceiling(0) == LAMPORT_SKEW_MS * LAMPORT_PER_MS
    now_ms = 1_750_000_000_000  # mid-2025
    assert lamport_ceiling(now_ms) == (now_ms + LAMPORT_SKEW_MS) * LAMPORT_PER_MS
    assert lamport_ceiling(now_ms + 1) - lamport_ceiling(now_ms) == LAMPORT_PER_MS
    assert lamport_ceiling(now_ms) < 2**58  # honest clocks have room for millennia
    assert lamport_ceiling(-5) == lamport_ceiling(0)  # a clock before 1970 is not below it


def test_ceiling_never_passes_the_maximum() -> None:
    assert lamport_ceiling(2**62) == LAMPORT_MAX
    year_6000_ms = (6000 - 1970) * 365 * 86_400_000
    assert lamport_ceiling(year_6000_ms) < LAMPORT_MAX


@pytest.mark.parametrize("lamport", [LAMPORT_MAX, 2**62])
def test_far_future_times_are_refused(lamport: int) -> None:
    with pytest.raises(LamportFuture) as raised:
        check_not_future(lamport, 1_750_000_000_000)
    assert raised.value.code == "lamport_future" and raised.value.field == "lamport"


def test_a_time_refused_now_is_accepted_once_its_time_has_come() -> None:
    now_ms = 1_750_000_000_000
    ceiling = lamport_ceiling(now_ms)
    check_not_future(ceiling, now_ms)
    with pytest.raises(LamportFuture):
        check_not_future(ceiling + 1, now_ms)
    check_not_future(ceiling + 1, now_ms + 1)


@given(st.integers(0, 2**45), st.lists(st.integers(1, 2**63 - 1), max_size=50))
def test_a_clock_fed_only_what_passes_stays_under_the_ceiling(
        now_ms: int, pushes: list[int]) -> None:
    """Whatever a sender tries, a receiver's clock ends at most at the ceiling plus its
    own ticks, and it can always tick."""
    c = LamportClock()
    ticks = 0
    for lamport in sorted(pushes):  # a slow climb: each a little above the last
        try:
            check_not_future(lamport, now_ms)
        except LamportFuture:
            continue
        c.observe(lamport)
        c.tick()
        ticks += 1
    assert c.time <= lamport_ceiling(now_ms) + ticks
    c.tick()
