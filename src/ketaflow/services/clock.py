"""Time, injected: services ask a :class:`Clock` instead of calling ``datetime.now()``.

:class:`Clock` is the one protocol of :mod:`ketaflow.clinical.clock` (anything with an aware
``now()``), so the same clock drives the service and the clinical rules.

:class:`SystemClock` is the real one; :class:`ManualClock` is the public test double (set and
advance it by hand), so expiry, lock-out and idle timeouts are tested without sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ketaflow.clinical.clock import Clock
from ketaflow.errors import InputError

__all__ = ["Clock", "ManualClock", "SystemClock"]


class SystemClock:
    """The wall clock, in UTC. The one place that reads the system time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (for tests, simulations and demos)."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start, "start")

    def now(self) -> datetime:
        """The clock's current instant, timezone-aware UTC."""
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant`` (aware)."""
        self._now = _aware(instant, "instant")

    def advance(self, *, minutes: float = 0.0, seconds: float = 0.0) -> datetime:
        """Move forward by ``minutes`` + ``seconds`` (never backward); returns the new time."""
        step = timedelta(minutes=minutes, seconds=seconds)
        if step < timedelta(0):
            raise InputError(
                f"a ManualClock only moves forward; got a step of {step.total_seconds()} s.",
                field="minutes",
            )
        self._now += step
        return self._now


def _aware(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InputError(f"{name} must be timezone-aware; got a naive datetime.", field=name)
    return instant.astimezone(UTC)
