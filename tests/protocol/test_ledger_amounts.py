"""Amounts typed in credits (the CLI and the control API) become exact units, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol.amounts import format_credits, parse_credits
from swarm.protocol.errors import LocalProtocolError

U = 1_000_000


@pytest.mark.parametrize("text, units", [
    ("12", 12 * U), ("12.5", 12 * U + U // 2), ("0.000001", 1), (".5", U // 2),
    (" 3 ", 3 * U), ("1.000000", U),
])
def test_credits_parse_exactly(text: str, units: int) -> None:
    assert parse_credits(text, U) == units


@pytest.mark.parametrize("text, why", [
    ("0", "more than 0"), ("0.0", "more than 0"), ("-1", "credits such as"),
    ("1e3", "credits such as"), ("1.0000001", "at most 6 decimals"), ("", "credits such as"),
    ("5.", "credits such as"), ("1,5", "credits such as"), ("\uff11", "credits such as"),
    ("nan", "credits such as"), ("9" * 30, "too large"),
])
def test_bad_amounts_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why) as err:
        parse_credits(text, U)
    assert err.value.field == "amount"


def test_a_unit_that_is_not_a_power_of_ten_takes_whole_credits_only() -> None:
    assert parse_credits("3", 7) == 21
    with pytest.raises(LocalProtocolError):
        parse_credits("0.5", 7)


@given(st.integers(1, 10**15))
def test_format_and_parse_round_trip(units: int) -> None:
    assert parse_credits(format_credits(units, U), U) == units
