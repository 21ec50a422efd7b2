"""Column types and enumerations shared by the tables.

Every timestamp in the database is timezone-aware UTC (:class:`UTCDateTime`): SQLite has no
time-zone type, so the type stores naive UTC there and hands back aware UTC values on both
dialects. Enumerations are stored as short strings guarded by a CHECK constraint (not native
PostgreSQL enums), so that adding a member later is a plain constraint change in a migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

from ketaflow.errors import InputError


class Role(StrEnum):
    """What a signed-in principal may do; one role per account.

    ``kiosk`` is never an account's role: it is the role of a kiosk token, issued by a nurse or
    physician for ONE infusion session (see ``login_sessions.bound_session_id``).
    """

    ADMIN = "admin"
    PHYSICIAN = "physician"
    NURSE = "nurse"
    FRONT_DESK = "front_desk"
    KIOSK = "kiosk"


class Sex(StrEnum):
    """Administrative sex (the FHIR ``AdministrativeGender`` value set)."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    Naive datetimes are refused when written: a naive value has no defined instant, and
    guessing the zone is how clinical timelines go wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError(
                "timestamps must be timezone-aware; got a naive datetime. "
                "Use an aware UTC value from the injected clock.",
                field="timestamp",
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
