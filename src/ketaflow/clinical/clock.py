"""Injected clocks. Domain logic never reads the wall clock itself.

Every clinical object that needs "now" takes a :class:`Clock`. Production code passes
:class:`SystemClock`; tests and simulations pass :class:`ManualClock` and move it forward by
hand, which makes alarm timers, escalation and observation windows deterministic.

All times are timezone-aware :class:`~datetime.datetime` values; a naive datetime is an
:class:`~ketaflow.errors.InputError` (a naive time is ambiguous across daylight-saving changes
and between the server and a bedside device).

>>> from datetime import UTC, datetime
>>> clock = ManualClock(datetime(2025, 1, 1, 9, 0, tzinfo=UTC))
>>> clock.advance(seconds=90).isoformat()
'2025-01-01T09:01:30+00:00'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from ketaflow.errors import InputError


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the current time as an aware datetime."""

    def now(self) -> datetime:
        """The current time (timezone-aware)."""
        ...


class SystemClock:
    """The real clock (UTC). The only place in ``ketaflow.clinical`` that reads wall time."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, simulations, replays)."""

    def __init__(self, start: datetime) -> None:
        self._now = require_aware(start, "start")

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, *, seconds: float = 0.0, minutes: float = 0.0) -> datetime:
        """Move forward by ``seconds`` + ``minutes`` (never backward); returns the new time."""
        step = timedelta(seconds=seconds, minutes=minutes)
        if step < timedelta(0):
            raise InputError(
                f"advance: a clock cannot go backward, got {step.total_seconds()} s; "
                "pass a positive number of seconds or minutes",
                field="seconds",
            )
        self._now += step
        return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (which must not be earlier than now)."""
        when = require_aware(when, "when")
        if when < self._now:
            raise InputError(
                f"set: a clock cannot go backward ({when.isoformat()} is before "
                f"{self._now.isoformat()})",
                field="when",
            )
        self._now = when
        return self._now


def require_aware(when: datetime, field: str) -> datetime:
    """Return ``when`` if it is timezone-aware, else raise InputError naming ``field``."""
    if not isinstance(when, datetime):
        raise InputError(
            f"{field}: expected a timezone-aware datetime, got {type(when).__name__}", field=field
        )
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise InputError(
            f"{field}: the datetime {when.isoformat()} has no timezone; give one (e.g. UTC)",
            field=field,
        )
    return when
