"""Fixtures for the policy tests (helpers in policy_kit.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from policy_kit import PolicyKit, kit_for


@pytest.fixture
def kit() -> PolicyKit:
    return kit_for()


@pytest.fixture
def make_kit() -> Callable[..., PolicyKit]:
    return kit_for
