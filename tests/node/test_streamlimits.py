"""Stream slots: a peer past its bound, or any peer past the total, is refused and
counted; every slot given back can be taken again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.node.streamlimits import Slots


def test_per_peer_and_total_bounds() -> None:
    s = Slots(per_peer=2, total=3)
    assert s.take("a") and s.take("a")
    assert not s.take("a")  # a's own bound
    assert s.take("b")
    assert not s.take("c")  # the total, though c has none
    assert s.refused == 2
    s.give("a")
    assert s.take("c")
    assert s.serving == {"a": 1, "b": 1, "c": 1} and s.in_use == 3


def test_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError):
        Slots(per_peer=0, total=4)
    with pytest.raises(ValueError):
        Slots(per_peer=5, total=4)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=200))
def test_counts_stay_exact_whatever_the_order(ops: list[tuple[bool, str]]) -> None:
    s = Slots(per_peer=3, total=7)
    held: dict[str, int] = {}
    for take, peer in ops:
        if take:
            if s.take(peer):
                held[peer] = held.get(peer, 0) + 1
        elif held.get(peer):
            s.give(peer)
            held[peer] -= 1
        assert s.in_use == sum(held.values()) <= 7
        assert all(n <= 3 for n in s.serving.values())
        assert s.serving == {p: n for p, n in held.items() if n}
