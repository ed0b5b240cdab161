"""Ledger transcripts (testdata/ledger/*.txt): transfers, double spends, staking and
unbonding, slashing, escrows and bounties, and effects between buckets, delivered out
of order, twice, and acknowledged. The harness is tests/protocol/ledger_interaction.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_interaction import run_script

SCRIPTS = sorted((Path(__file__).parents[2] / "testdata" / "ledger").glob("*.txt"))


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    expected, actual = run_script(path)
    assert actual == expected
