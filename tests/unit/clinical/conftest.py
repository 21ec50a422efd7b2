"""Shared fixtures for the clinical tests: a manual clock, actors, vitals."""

from __future__ import annotations

import pytest

from ketaflow.clinical.actors import Actor, Role
from ketaflow.clinical.clock import ManualClock

from ._helpers import T0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def nurse() -> Actor:
    return Actor("nurse-1", Role.NURSE)


@pytest.fixture
def nurse2() -> Actor:
    return Actor("nurse-2", Role.NURSE)


@pytest.fixture
def physician() -> Actor:
    return Actor("md-1", Role.PHYSICIAN)


@pytest.fixture
def system() -> Actor:
    return Actor("service", Role.SYSTEM)


@pytest.fixture
def front_desk() -> Actor:
    return Actor("desk-1", Role.FRONT_DESK)
