"""Raft interaction scripts (testdata/raft/*.txt): transcripts of elections, PreVote,
CheckQuorum, leader transfer, membership change, snapshot catch-up and figure 8."""

from __future__ import annotations

from pathlib import Path

import pytest
from raft_interaction import run_script

SCRIPTS = sorted((Path(__file__).parents[2] / "testdata" / "raft").glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    expected, actual = run_script(path)
    assert actual == expected
