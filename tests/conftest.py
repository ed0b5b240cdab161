"""Shared fixtures and the Hypothesis profiles.

`ci` (the default under make test) keeps property runs bounded on a shared 2-core
machine; `SWARM_HYPOTHESIS_PROFILE=thorough` runs many more examples.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, settings

from swarm.protocol.envelope import Identity
from swarm.testnet.workload import TEST_SWARM, Agent

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True, print_blob=True,
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("SWARM_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def swarm_id() -> bytes:
    return TEST_SWARM


@pytest.fixture
def identity() -> Identity:
    return Identity(bytes(range(32)))


@pytest.fixture
def agent(identity: Identity) -> Agent:
    return Agent(identity, TEST_SWARM)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
