"""Fixtures for integration tests: in-process nodes on loopback (see swarm.testnet.inproc)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from swarm.testnet.inproc import Swarmlet, make_homes


@pytest.fixture
async def swarmlet(tmp_path: Path) -> AsyncIterator[Any]:
    async def make(n: int, validators: int | None = None,
                   params: dict[str, int] | None = None) -> Swarmlet:
        homes, gen = make_homes(tmp_path, n, validators, params)
        s = Swarmlet(nursery, homes, gen)
        for i in range(n):
            await s.start(i)
        await s.connect_all()
        return s

    async with trio.open_nursery() as nursery:
        yield make
        nursery.cancel_scope.cancel()
