"""The tables of the service database, as SQLAlchemy 2 typed declarative models.

Conventions, so that new tables (courses, infusion sessions, transitions, rate changes, vitals,
alarms, check-ins, scales) slot in by a new Alembic revision without surprises:

- an integer surrogate primary key ``id`` (the audit log uses its chain position ``seq``);
- timestamps are ``Mapped[datetime]`` and stored as aware UTC (:class:`UTCDateTime`), named
  ``*_at``; calendar dates are ``Mapped[date]``, named ``*_on`` (or ``birth_date``);
- quantities carry their unit in the column name (``weight_kg``) and a CHECK on their range;
- enumerations are strings with a CHECK (``native_enum=False``);
- constraint names come from :data:`NAMING_CONVENTION`, so migrations name them identically on
  SQLite and PostgreSQL and later ``ALTER``\\s can refer to them;
- the models describe the schema; the migrations in ``migrations/versions`` create it, and a test
  proves the two agree.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final

from sqlalchemy import (
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ketaflow.store.types import Role, Sex, UTCDateTime

#: Constraint names, identical on every dialect (Alembic relies on stable names).
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Hash that precedes the first audit record (64 hex zeros, the width of a SHA-256 digest).
GENESIS_HASH: Final[str] = "0" * 64


def _str_enum(enum_cls: type[StrEnum], name: str) -> Enum:
    """A string column limited to the enum's values by a named CHECK constraint."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in enum_cls),
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base: one metadata with the naming convention, aware UTC timestamps."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class User(Base):
    """A staff account. Accounts are deactivated, never deleted (the audit log refers to them)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_str_enum(Role, "role"))
    active: Mapped[bool] = mapped_column(default=True)
    failed_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("failed_count >= 0", name="failed_count_nonnegative"),)


class LoginSession(Base):
    """A signed-in session. Only the SHA-256 of the opaque token is stored.

    A kiosk token is a login session with ``bound_session_id`` set: it acts with role
    ``kiosk`` for that one infusion session only, and ``user_id`` is the staff member who
    issued it. ``bound_session_id`` gains a foreign key when the infusion-session table exists.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    bound_session_id: Mapped[int | None] = mapped_column(index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked: Mapped[bool] = mapped_column(default=False)
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")


class AuditRecord(Base):
    """One append-only audit record, chained to its predecessor by SHA-256.

    ``hash`` is the SHA-256 of the canonical serialisation of (prev_hash, seq, ts, actor,
    action, entity, entity_id, details); see :mod:`ketaflow.store.audit`. Database triggers
    refuse UPDATE and DELETE. Records hold identifiers only, never patient data.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index(None, "entity", "entity_id"),
    )


class AuditChainHead(Base):
    """The single row naming the last audit record.

    Appenders lock this row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers
    itself), so concurrent transactions extend the chain one at a time. It also lets
    verification notice records cut off the end of the log.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_seq: Mapped[int]
    last_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class Patient(Base):
    """Patient demographics. Weight lives in :class:`WeightMeasurement`, one row per weighing."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    mrn: Mapped[str] = mapped_column(String(32), unique=True)
    family_name: Mapped[str] = mapped_column(String(100), index=True)
    given_name: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date]
    sex: Mapped[Sex] = mapped_column(_str_enum(Sex, "sex"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WeightMeasurement(Base):
    """A body weight, as measured on a calendar day."""

    __tablename__ = "weight_measurements"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    weight_kg: Mapped[float] = mapped_column(Float)
    measured_on: Mapped[date]
    recorded_at: Mapped[datetime]
    recorded_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT")
    )

    __table_args__ = (
        CheckConstraint("weight_kg > 0 AND weight_kg < 1000", name="weight_kg_range"),
    )
