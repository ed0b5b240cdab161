"""The node's garbage-collector settings: freezing takes startup's objects out of what
collections walk, and every collection's pause lands in /metrics by generation."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from swarm.node.heap import GcPauses, freeze_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process must not keep its objects out of collections


def test_freezing_takes_existing_objects_out_of_collections(unfrozen: None) -> None:
    keep = [[i] for i in range(1000)]  # tracked containers that exist "at startup"
    frozen = freeze_startup(collect=True)
    assert frozen >= len(keep)
    assert all(not any(obj is x for x in gc.get_objects()) for obj in keep[:3])
    assert freeze_startup(collect=False) >= frozen


def test_every_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    pauses.install()  # installing twice does not count twice
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection in between
    try:
        gc.collect(0)
        gc.collect(2)
        pauses.uninstall()
        gc.collect(2)  # after uninstalling: not counted
    finally:
        if enabled:
            gc.enable()
    text = generate_latest(registry).decode()
    assert 'swarm_gc_pause_seconds_count{generation="0"} 1.0' in text
    assert 'swarm_gc_pause_seconds_count{generation="2"} 1.0' in text
    assert 'swarm_gc_pause_seconds_count{generation="1"} 0.0' in text
    assert pauses._callback not in gc.callbacks
