"""Clocks: the system clock is aware UTC; the manual clock moves only forward, when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ketaflow.errors import InputError
from ketaflow.services.clock import Clock, ManualClock, SystemClock
from service_testkit import T0


def test_system_clock_is_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo == UTC
    assert isinstance(SystemClock(), Clock)


def test_manual_clock_advances_and_converts_to_utc() -> None:
    clock = ManualClock(datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))))
    assert clock.now() == T0
    assert clock.now().tzinfo == UTC
    assert clock.advance(minutes=1.5, seconds=30) == T0 + timedelta(minutes=2)
    clock.set(T0)
    assert clock.now() == T0
    assert isinstance(clock, Clock)


def test_manual_clock_refuses_naive_times_and_going_back() -> None:
    with pytest.raises(InputError):
        ManualClock(datetime(2025, 1, 1))
    clock = ManualClock(T0)
    with pytest.raises(InputError):
        clock.set(datetime(2025, 1, 1))
    with pytest.raises(InputError):
        clock.advance(minutes=-1)
