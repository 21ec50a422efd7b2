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
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
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
    issued it.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    bound_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
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


# --- the clinic ---------------------------------------------------------------------------------
# Domain values that are read whole (screening answers, order, pump program, limit checks,
# the session snapshot) are stored as JSON text written by ketaflow.services.codec; what is
# searched, counted or shown on boards has its own column.


class HeightMeasurement(Base):
    """A body height, as measured on a calendar day."""

    __tablename__ = "height_measurements"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    height_cm: Mapped[float] = mapped_column(Float)
    measured_on: Mapped[date]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (CheckConstraint("height_cm > 0 AND height_cm < 300", name="height_cm_range"),)


class Allergy(Base):
    """A recorded allergy or intolerance."""

    __tablename__ = "allergies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    substance: Mapped[str] = mapped_column(String(200))
    reaction: Mapped[str] = mapped_column(String(500))
    severity: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(128))


class Medication(Base):
    """A current medication (checked against the interaction table when read)."""

    __tablename__ = "medications"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    dose_text: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(128))


class Screening(Base):
    """A screening decision: the answers, the findings and who decided."""

    __tablename__ = "screenings"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    answers_json: Mapped[str] = mapped_column(Text)
    findings_json: Mapped[str] = mapped_column(Text)
    hard_stop: Mapped[bool] = mapped_column(Boolean)
    notes: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime]


class Course(Base):
    """A planned series of infusion sessions for one patient."""

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    indication: Mapped[str] = mapped_column(String(32))
    protocol: Mapped[str] = mapped_column(String(64))
    planned_sessions: Mapped[int]
    goal_json: Mapped[str] = mapped_column(Text)
    started_on: Mapped[date]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint(
            "planned_sessions >= 1 AND planned_sessions <= 100", name="planned_sessions_range"
        ),
    )


class InfusionSession(Base):
    """One infusion session: board columns plus the domain session's snapshot (JSON).

    ``version`` increases with every change (optimistic check against lost updates).
    """

    __tablename__ = "infusion_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(
        ForeignKey("courses.id", ondelete="RESTRICT"), index=True
    )
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    session_number: Mapped[int]
    chair: Mapped[str] = mapped_column(String(32))
    scheduled_for: Mapped[datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    pump_unconfirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot_json: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SessionTransition(Base):
    """One state change of a session: who, role, when, from, to, why."""

    __tablename__ = "session_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    seq: Mapped[int]
    event: Mapped[str] = mapped_column(String(32))
    who: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    why: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("session_id", "seq"),)


class InfusionOrder(Base):
    """The order of a session with its pump program, limit checks, verification and check."""

    __tablename__ = "infusion_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    order_ref: Mapped[str] = mapped_column(String(64))
    dose_text: Mapped[str] = mapped_column(String(200))
    care_area: Mapped[str] = mapped_column(String(64))
    concentration_mg_per_ml: Mapped[float] = mapped_column(Float)
    rate_mg_per_h: Mapped[float | None] = mapped_column(Float)
    dose_mg: Mapped[float] = mapped_column(Float)
    order_json: Mapped[str] = mapped_column(Text)
    pump_json: Mapped[str] = mapped_column(Text)
    limit_checks_json: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    verified_by: Mapped[str | None] = mapped_column(String(128))
    verified_at: Mapped[datetime | None]
    double_check_json: Mapped[str | None] = mapped_column(Text)
    double_checked_by: Mapped[str | None] = mapped_column(String(128))
    double_check_status: Mapped[str | None] = mapped_column(String(16))


class RateChange(Base):
    """One entry of the infusion record (start, rate change, pause, resume, stop, ...)."""

    __tablename__ = "rate_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    rate_mg_per_h: Mapped[float] = mapped_column(Float)
    bolus_mg: Mapped[float] = mapped_column(Float, default=0.0)
    who: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    override_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("session_id", "seq"),
        CheckConstraint("rate_mg_per_h >= 0", name="rate_nonnegative"),
    )


class VitalSign(Base):
    """One accepted vital-sign reading. ``reading_id`` (client-chosen) makes retries safe."""

    __tablename__ = "vital_signs"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("infusion_sessions.id", ondelete="RESTRICT"))
    reading_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    loinc: Mapped[str] = mapped_column(String(16))
    measured_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(8))
    device_id: Mapped[str | None] = mapped_column(String(64))
    artefact_suspect: Mapped[bool] = mapped_column(Boolean)
    artefact_reasons: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        UniqueConstraint("session_id", "reading_id", name="uq_vital_signs_reading_id"),
        Index(None, "session_id", "measured_at"),
    )


class AlarmRecord(Base):
    """An alarm raised for a session (state kept current; events in the child tables)."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    engine_alarm_id: Mapped[int | None]
    key: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), index=True)
    suggested_action: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)
    vital: Mapped[str | None] = mapped_column(String(8))
    value: Mapped[float | None] = mapped_column(Float)
    artefact_suspect: Mapped[bool] = mapped_column(Boolean, default=False)
    raised_at: Mapped[datetime]
    escalation_level: Mapped[int] = mapped_column(default=0)
    resolved_at: Mapped[datetime | None]


class AlarmAcknowledgement(Base):
    """A clinician acknowledged an alarm, with a reason."""

    __tablename__ = "alarm_acknowledgements"

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="RESTRICT"), index=True)
    by: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    action_taken: Mapped[str | None] = mapped_column(String(32))


class AlarmEscalation(Base):
    """An alarm was not acknowledged in time and went up a level."""

    __tablename__ = "alarm_escalations"

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="RESTRICT"), index=True)
    level: Mapped[int]
    at: Mapped[datetime]


class PatientCheckIn(Base):
    """A patient's check-in from the kiosk (or entered by a nurse)."""

    __tablename__ = "check_ins"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    at: Mapped[datetime]
    comfort: Mapped[int | None]
    intensity: Mapped[int | None]
    anxiety: Mapped[int | None]
    nausea: Mapped[int | None]
    need_help: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(128))


class ScaleResult(Base):
    """A scored rating scale (items, total, band, flags)."""

    __tablename__ = "scale_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), index=True
    )
    scale: Mapped[str] = mapped_column(String(32))
    timing: Mapped[str] = mapped_column(String(16))
    items_json: Mapped[str] = mapped_column(Text)
    total: Mapped[int]
    total_max: Mapped[int]
    band: Mapped[str | None] = mapped_column(String(64))
    flags_json: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(128))


class DischargeRecord(Base):
    """The discharge decision: evaluation, who decided, override."""

    __tablename__ = "discharge_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("infusion_sessions.id", ondelete="RESTRICT"), unique=True
    )
    evaluation_json: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_role: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime]
    overridden: Mapped[bool] = mapped_column(Boolean)
    override_reason: Mapped[str] = mapped_column(Text)
