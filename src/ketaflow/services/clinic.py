"""The clinic's use-cases: screening, courses, infusion sessions, vitals, alarms, check-ins,
scales, discharge and the session report.

Every method runs inside the caller's unit of work (one transaction), records an audit entry
with identifiers only, and queues its live events with :func:`publish_after_commit` so that an
event is never seen for data that was rolled back. The clinical rules live in
:mod:`ketaflow.clinical` and :mod:`ketaflow.dosing`; this module loads the domain objects from
the database, calls them, and stores what changed.

The alarm engines (one per infusion session) live in memory in :class:`ClinicRuntime`, one per
process. After a restart an engine is rebuilt on first use from the stored session (phase and
baseline) and continues the stored alarm numbering; alarms left open before the restart stay
open in the database and are acknowledged there.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import func, insert, select

from ketaflow.clinical import (
    Actor,
    AlarmEngine,
    AlarmEvent,
    AlarmEventKind,
    CheckIn,
    CourseGoal,
    GapAssumption,
    GoalKind,
    Indication,
    InfusionPlan,
    OrderVerification,
    PreAssessment,
    PumpConfirmation,
    ScaleAssessment,
    ScaleScore,
    ScreeningAnswers,
    Session,
    SessionEvent,
    SessionSnapshot,
    SessionState,
    TreatmentCourse,
    VitalKind,
    VitalReading,
    VitalSource,
    assess_reading,
    evaluate_discharge,
    make_vital_set,
    score_items,
    score_modified_aldrete,
    screen,
    track_outcomes,
    vital_spec,
)
from ketaflow.clinical import Patient as DomainPatient
from ketaflow.clinical import Role as ClinicalRole
from ketaflow.clinical import Sex as DomainSex
from ketaflow.clinical.infusion import ConcentrationForecast
from ketaflow.clinical.patient import Allergy as DomainAllergy
from ketaflow.clinical.patient import AllergySeverity
from ketaflow.clinical.patient import HeightMeasurement as DomainHeight
from ketaflow.clinical.patient import Medication as DomainMedication
from ketaflow.clinical.patient import WeightMeasurement as DomainWeight
from ketaflow.dosing.library import LimitStatus, Override, check_order, load_library
from ketaflow.dosing.orders import create_order
from ketaflow.dosing.protocols import Protocol, load_protocol
from ketaflow.dosing.pump import BlindEntry, double_check, program_pump
from ketaflow.dosing.titration import SessionOutcome
from ketaflow.errors import (
    AuthError,
    HardLimitError,
    InputError,
    NotFoundError,
    SoftLimitError,
    StateError,
)
from ketaflow.pk.effect import DISSOCIATION
from ketaflow.services.clock import Clock
from ketaflow.services.codec import dumps, loads, to_jsonable
from ketaflow.services.events import EventBroker, publish_after_commit
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import (
    AlarmAcknowledgement,
    AlarmEscalation,
    AlarmRecord,
    Allergy,
    Course,
    DischargeRecord,
    HeightMeasurement,
    InfusionOrder,
    InfusionSession,
    Medication,
    Patient,
    PatientCheckIn,
    RateChange,
    ScaleResult,
    Screening,
    SessionTransition,
    VitalSign,
)
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

#: Service roles as the clinical rules know them. ``kiosk`` acts for the patient.
CLINICAL_ROLE_OF: Final[Mapping[Role, ClinicalRole]] = {
    Role.ADMIN: ClinicalRole.ADMIN,
    Role.PHYSICIAN: ClinicalRole.PHYSICIAN,
    Role.NURSE: ClinicalRole.NURSE,
    Role.FRONT_DESK: ClinicalRole.FRONT_DESK,
    Role.KIOSK: ClinicalRole.PATIENT,
}
#: The service itself (crash recovery, background alarm ticks).
SYSTEM_ACTOR: Final = Actor("system", ClinicalRole.SYSTEM)
#: Why a session is marked uncertain at startup.
RESTART_REASON: Final = "server restarted while the pump may have been running; pump unconfirmed"
#: Alarm code of a PHQ-9 item 9 answer above 0 (the scale's ``suicide_risk_workflow`` flag).
PHQ9_ITEM9_CODE: Final = "PHQ9_ITEM9_SUICIDE_RISK"
#: Largest batch of vital readings per request.
MAX_VITALS_BATCH: Final = 500

_ACTIONS: Final[Mapping[str, SessionEvent]] = {
    "check_in": SessionEvent.CHECK_IN,
    "start_pre_assessment": SessionEvent.BEGIN_PRE_ASSESSMENT,
    "mark_ready": SessionEvent.MARK_READY,
    "reopen_assessment": SessionEvent.REOPEN_ASSESSMENT,
    "start": SessionEvent.START_INFUSION,
    "pause": SessionEvent.PAUSE,
    "resume": SessionEvent.RESUME,
    "complete": SessionEvent.COMPLETE_INFUSION,
    "stop": SessionEvent.STOP_INFUSION,
    "start_recovery": SessionEvent.BEGIN_RECOVERY,
    "discharge": SessionEvent.DISCHARGE,
    "abort": SessionEvent.ABORT,
    "confirm_pump": SessionEvent.CONFIRM_PUMP_STATE,
}
#: Actions POST /sessions/{id}/transitions accepts (the others have their own endpoints).
TRANSITION_ACTIONS: Final = (
    "check_in",
    "start_pre_assessment",
    "mark_ready",
    "reopen_assessment",
    "complete",
    "stop",
    "start_recovery",
    "abort",
)
_INFUSION_STATES: Final = frozenset({SessionState.INFUSING, SessionState.PAUSED})


def actor_of(role: Role, actor: str) -> Actor:
    """The clinical :class:`Actor` for a signed-in principal (``actor`` is its audit name)."""
    return Actor(actor, CLINICAL_ROLE_OF[role])


# --- process-wide state: alarm engines ----------------------------------------------------------


@dataclass(slots=True)
class _EngineSlot:
    engine: AlarmEngine
    lock: threading.Lock = field(default_factory=threading.Lock)
    previous: dict[VitalKind, VitalReading] = field(default_factory=dict)


class ClinicRuntime:
    """In-memory state of one server process: the alarm engine of each open session."""

    def __init__(self, clock: Clock, broker: EventBroker) -> None:
        self.clock = clock
        self.broker = broker
        self._lock = threading.Lock()
        self._slots: dict[int, _EngineSlot] = {}

    def slot(self, uow: UnitOfWork, row: InfusionSession, session: Session) -> _EngineSlot:
        """The session's engine, built (and set to the session's phase) on first use."""
        with self._lock:
            found = self._slots.get(row.id)
        if found is not None:
            return found
        last = uow.session.execute(
            select(func.max(AlarmRecord.engine_alarm_id)).where(AlarmRecord.session_id == row.id)
        ).scalar_one()
        engine = AlarmEngine(clock=self.clock, first_alarm_id=(last or 0) + 1)
        pre = session.pre_assessment
        if pre is not None and pre.baseline_vitals is not None:
            engine.set_baseline(pre.baseline_vitals)
        engine.set_phase(session.alarm_phase)
        new = _EngineSlot(engine)
        with self._lock:
            return self._slots.setdefault(row.id, new)

    def session_ids(self) -> list[int]:
        """Sessions with an engine in memory."""
        with self._lock:
            return list(self._slots)

    def get(self, session_id: int) -> _EngineSlot | None:
        """The engine slot of ``session_id`` if built."""
        with self._lock:
            return self._slots.get(session_id)

    def drop(self, session_id: int) -> None:
        """Forget the engine of an ended session."""
        with self._lock:
            self._slots.pop(session_id, None)


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewReading:
    """One vital-sign reading as received. ``reading_id`` is the client's idempotency key."""

    kind: str
    value: float
    unit: str
    measured_at: datetime
    source: str = "manual"
    reading_id: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    """Pre-infusion vitals (UCUM units in the names)."""

    sbp_mmhg: float
    dbp_mmhg: float
    hr_per_min: float
    spo2_percent: float
    rr_per_min: float | None = None


# --- the service --------------------------------------------------------------------------------


def _j(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class ClinicService:
    """Use-cases of the clinic, inside the caller's unit of work, each audited."""

    def __init__(
        self, uow: UnitOfWork, clock: Clock, broker: EventBroker, runtime: ClinicRuntime
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._broker = broker
        self._runtime = runtime

    # --- helpers --------------------------------------------------------------------------------

    @property
    def _db(self) -> Any:
        return self._uow.session

    def _audit(
        self,
        actor: Actor,
        action: str,
        entity: str,
        entity_id: int | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._uow.audit.record(
            ts=self._clock.now(),
            actor=actor.user_id,
            action=action,
            entity=entity,
            entity_id=entity_id,
            details=dict(details or {}),
        )

    def _publish(self, session_id: int, event_type: str, data: Mapping[str, Any]) -> None:
        publish_after_commit(
            self._uow, self._broker, session_id, event_type, data, ts=self._clock.now()
        )

    def _patient(self, patient_id: int) -> Patient:
        row = self._db.get(Patient, patient_id)
        if row is None:
            raise NotFoundError(f"no patient with id {patient_id}.", field="patient_id")
        assert isinstance(row, Patient)
        return row

    def _domain_patient(self, patient: Patient) -> DomainPatient:
        weights = self._uow.patients.weights(patient.id)
        heights = self._rows(HeightMeasurement, HeightMeasurement.patient_id == patient.id)
        allergies = self._rows(Allergy, Allergy.patient_id == patient.id)
        meds = self._rows(Medication, Medication.patient_id == patient.id)
        return DomainPatient(
            mrn=patient.mrn,
            family_name=patient.family_name,
            given_name=patient.given_name,
            date_of_birth=patient.birth_date,
            sex=DomainSex(patient.sex.value),
            weights=tuple(DomainWeight(w.weight_kg, w.measured_on) for w in weights),
            heights=tuple(DomainHeight(h.height_cm, h.measured_on) for h in heights),
            allergies=tuple(
                DomainAllergy(a.substance, a.reaction, AllergySeverity(a.severity))
                for a in allergies
            ),
            medications=tuple(DomainMedication(m.name, m.dose_text) for m in meds),
        )

    def _rows(self, table: Any, *where: Any, order: Any = None) -> list[Any]:
        query = select(table).where(*where).order_by(order if order is not None else table.id)
        return list(self._db.execute(query).scalars().all())

    def _session_row(self, session_id: int, *, lock: bool = False) -> InfusionSession:
        row = self._db.get(InfusionSession, session_id, with_for_update=lock or None)
        if row is None:
            raise NotFoundError(f"no infusion session with id {session_id}.", field="session_id")
        assert isinstance(row, InfusionSession)
        return row

    def _load(self, session_id: int, *, lock: bool = True) -> tuple[InfusionSession, Session]:
        row = self._session_row(session_id, lock=lock)
        snapshot = loads(SessionSnapshot, row.snapshot_json)
        return row, Session.restore(snapshot, clock=self._clock)

    def _save(self, row: InfusionSession, session: Session) -> None:
        """Store the snapshot and append the new transitions and infusion-record entries."""
        now = self._clock.now()
        row.snapshot_json = dumps(session.snapshot())
        row.state = session.state.value
        row.pump_unconfirmed = session.state is SessionState.UNCERTAIN
        row.version += 1
        row.updated_at = now
        stored = self._db.execute(
            select(func.count())
            .select_from(SessionTransition)
            .where(SessionTransition.session_id == row.id)
        ).scalar_one()
        for seq, ev in enumerate(session.history[stored:], start=stored + 1):
            self._db.add(
                SessionTransition(
                    session_id=row.id,
                    seq=seq,
                    event=ev.event.value,
                    who=ev.who,
                    role=ev.role.value,
                    at=ev.when,
                    from_state=ev.from_state.value,
                    to_state=ev.to_state.value,
                    why=ev.why,
                )
            )
            self._publish(
                row.id,
                "state",
                {
                    "session_id": row.id,
                    "event": ev.event.value,
                    "from": ev.from_state.value,
                    "to": ev.to_state.value,
                    "by": ev.who,
                    "why": ev.why,
                    "pump_unconfirmed": row.pump_unconfirmed,
                },
            )
        if session.infusion is not None:
            entries = session.infusion.entries
            have = self._db.execute(
                select(func.count()).select_from(RateChange).where(RateChange.session_id == row.id)
            ).scalar_one()
            for seq, entry in enumerate(entries[have:], start=have + 1):
                self._db.add(
                    RateChange(
                        session_id=row.id,
                        seq=seq,
                        kind=entry.kind.value,
                        at=entry.at,
                        rate_mg_per_h=entry.rate_mg_per_h,
                        bolus_mg=entry.bolus_mg,
                        who=entry.who,
                        role=entry.role.value,
                        reason=entry.reason,
                        override_reason=None,
                    )
                )
                self._publish(
                    row.id,
                    "rate_change",
                    {
                        "session_id": row.id,
                        "kind": entry.kind.value,
                        "at": entry.at.isoformat(),
                        "rate_mg_per_h": entry.rate_mg_per_h,
                        "by": entry.who,
                        "reason": entry.reason,
                    },
                )
            if len(entries) > have:
                self._publish_prediction(row, session)
        self._db.flush()
        if session.is_terminal:
            self._uow.after_commit(lambda: self._runtime.drop(row.id))

    def _publish_prediction(self, row: InfusionSession, session: Session) -> None:
        """Push the new 30-min forecast after every change to the infusion record."""
        record = session.infusion
        if record is None:
            return
        try:
            covariates = self._domain_patient(self._patient(row.patient_id)).covariates(
                on=self._clock.now().date()
            )
            forecast = record.forecast(self._clock.now(), covariates, horizon_min=30.0)
        except InputError:
            return  # no weight: no prediction (the order already needed one)
        self._publish(row.id, "prediction", {"session_id": row.id, **self._forecast_view(forecast)})

    def _sync_phase(self, row: InfusionSession, session: Session) -> None:
        slot = self._runtime.slot(self._uow, row, session)
        with slot.lock:
            events = slot.engine.set_phase(session.alarm_phase)
        self._store_alarm_events(row.id, events)

    # --- patient record -------------------------------------------------------------------------

    def add_height(
        self, actor: Actor, patient_id: int, height_cm: float, measured_on: date
    ) -> dict[str, Any]:
        """Record a body height (cm) measured on ``measured_on``."""
        patient = self._patient(patient_id)
        if measured_on > self._clock.now().date():
            raise InputError("measured_on must not be in the future.", field="measured_on")
        DomainHeight(height_cm, measured_on)
        row = HeightMeasurement(
            patient_id=patient.id,
            height_cm=float(height_cm),
            measured_on=measured_on,
            recorded_at=self._clock.now(),
            recorded_by=actor.user_id,
        )
        self._db.add(row)
        self._db.flush()
        self._audit(actor, "create", "height_measurement", row.id, {"patient_id": patient.id})
        return {"id": row.id, "height_cm": row.height_cm, "measured_on": row.measured_on}

    def add_allergy(
        self, actor: Actor, patient_id: int, substance: str, reaction: str, severity: str
    ) -> dict[str, Any]:
        """Record an allergy."""
        patient = self._patient(patient_id)
        try:
            sev = AllergySeverity(severity)
        except ValueError:
            raise InputError(
                f"severity must be one of {', '.join(s.value for s in AllergySeverity)}.",
                field="severity",
            ) from None
        allergy = DomainAllergy(substance, reaction, sev)
        row = Allergy(
            patient_id=patient.id,
            substance=allergy.substance,
            reaction=allergy.reaction,
            severity=sev.value,
            recorded_at=self._clock.now(),
            recorded_by=actor.user_id,
        )
        self._db.add(row)
        self._db.flush()
        self._audit(actor, "create", "allergy", row.id, {"patient_id": patient.id})
        return {
            "id": row.id,
            "substance": row.substance,
            "reaction": row.reaction,
            "severity": row.severity,
        }

    def add_medication(
        self, actor: Actor, patient_id: int, name: str, dose_text: str
    ) -> dict[str, Any]:
        """Record a current medication; the answer carries its interaction flags."""
        patient = self._patient(patient_id)
        med = DomainMedication(name, dose_text)
        row = Medication(
            patient_id=patient.id,
            name=med.name,
            dose_text=med.dose_text,
            recorded_at=self._clock.now(),
            recorded_by=actor.user_id,
        )
        self._db.add(row)
        self._db.flush()
        self._audit(actor, "create", "medication", row.id, {"patient_id": patient.id})
        flags = [
            to_jsonable(f)
            for f in self._domain_patient(patient).interaction_flags()
            if f.medication == med.name
        ]
        return {
            "id": row.id,
            "name": row.name,
            "dose_text": row.dose_text,
            "interaction_flags": flags,
        }

    def clinical_record(self, actor: Actor, patient_id: int) -> dict[str, Any]:
        """Heights, allergies, medications (with interaction flags), latest screening, courses."""
        patient = self._patient(patient_id)
        domain = self._domain_patient(patient)
        latest = self._latest_screening(patient.id)
        courses = self._rows(Course, Course.patient_id == patient.id)
        self._audit(actor, "read", "patient", patient.id, {"part": "clinical"})
        return {
            "heights": [
                {"height_cm": h.height_cm, "measured_on": h.measured_on} for h in domain.heights
            ],
            "allergies": [to_jsonable(a) for a in domain.allergies],
            "medications": [to_jsonable(m) for m in domain.medications],
            "interaction_flags": [to_jsonable(f) for f in domain.interaction_flags()],
            "latest_screening": None if latest is None else self._screening_view(latest),
            "courses": [self._course_summary(c) for c in courses],
        }

    # --- screening and courses ------------------------------------------------------------------

    def _latest_screening(self, patient_id: int) -> Screening | None:
        row = self._db.execute(
            select(Screening)
            .where(Screening.patient_id == patient_id)
            .order_by(Screening.decided_at.desc(), Screening.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        assert row is None or isinstance(row, Screening)
        return row

    @staticmethod
    def _screening_view(row: Screening) -> dict[str, Any]:
        findings = _j(row.findings_json)
        return {
            "id": row.id,
            "patient_id": row.patient_id,
            "hard_stops": [f for f in findings if f["kind"] == "hard_stop"],
            "warnings": [f for f in findings if f["kind"] != "hard_stop"],
            "can_schedule": not row.hard_stop,
            "decided_by": row.decided_by,
            "decided_at": row.decided_at,
            "notes": row.notes,
        }

    def record_screening(
        self, actor: Actor, patient_id: int, findings: Mapping[str, bool], notes: str
    ) -> dict[str, Any]:
        """Evaluate the screening answers (physician decides) and store the result."""
        patient = self._patient(patient_id)
        known = set(ScreeningAnswers.__dataclass_fields__)
        unknown = sorted(set(findings) - known)
        if unknown:
            raise InputError(
                f"findings: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                field="findings",
            )
        answers = {k: bool(findings.get(k, False)) for k in known}
        result = screen(
            self._domain_patient(patient),
            ScreeningAnswers(**answers),
            decided_by=actor,
            clock=self._clock,
            notes=notes,
        )
        row = Screening(
            patient_id=patient.id,
            answers_json=dumps(result.answers),
            findings_json=dumps(list(result.findings)),
            hard_stop=bool(result.hard_stops),
            notes=notes,
            decided_by=actor.user_id,
            decided_at=result.decided_at,
        )
        self._db.add(row)
        self._db.flush()
        self._audit(
            actor,
            "create",
            "screening",
            row.id,
            {"patient_id": patient.id, "hard_stop": row.hard_stop},
        )
        return self._screening_view(row)

    def create_course(
        self,
        actor: Actor,
        patient_id: int,
        *,
        indication: str,
        protocol: str,
        planned_sessions: int,
        goal_scale: str,
        goal_kind: str,
        goal_target_total: float | None = None,
    ) -> dict[str, Any]:
        """Plan a course; refused (409) without a screening or while it has a hard stop."""
        patient = self._patient(patient_id)
        latest = self._latest_screening(patient.id)
        if latest is None:
            raise StateError("a course needs a screening first; record one for this patient.")
        if latest.hard_stop:
            raise StateError(
                "the latest screening has a hard stop: no course can be planned. A physician "
                "must screen again once the contraindication is resolved."
            )
        try:
            ind = Indication(indication)
            kind = GoalKind(goal_kind)
        except ValueError as exc:
            raise InputError(
                f"indication or goal kind unknown: {exc}", field="indication"
            ) from None
        proto = load_protocol(protocol)
        goal = CourseGoal(goal_scale, kind, goal_target_total)
        today = self._clock.now().date()
        TreatmentCourse("new", patient.mrn, ind, proto.name, planned_sessions, goal, today)
        row = Course(
            patient_id=patient.id,
            indication=ind.value,
            protocol=proto.name,
            planned_sessions=planned_sessions,
            goal_json=dumps(goal),
            started_on=today,
            created_at=self._clock.now(),
            created_by=actor.user_id,
        )
        self._db.add(row)
        self._db.flush()
        self._audit(actor, "create", "course", row.id, {"patient_id": patient.id})
        return self._course_summary(row)

    def _course_row(self, course_id: int) -> Course:
        row = self._db.get(Course, course_id)
        if row is None:
            raise NotFoundError(f"no course with id {course_id}.", field="course_id")
        assert isinstance(row, Course)
        return row

    @staticmethod
    def _course_summary(row: Course) -> dict[str, Any]:
        return {
            "id": row.id,
            "patient_id": row.patient_id,
            "indication": row.indication,
            "protocol": row.protocol,
            "planned_sessions": row.planned_sessions,
            "goal": _j(row.goal_json),
            "started_on": row.started_on,
        }

    def get_course(self, actor: Actor, course_id: int) -> dict[str, Any]:
        """The course with its sessions, doses and outcomes (response/remission per scale)."""
        row = self._course_row(course_id)
        sessions = self._rows(InfusionSession, InfusionSession.course_id == row.id)
        assessments: list[ScaleAssessment] = []
        out_sessions = []
        for s in sessions:
            scales = self._rows(ScaleResult, ScaleResult.session_id == s.id)
            for sc in scales:
                assessments.append(
                    ScaleAssessment(sc.scale, sc.total, s.session_number, sc.recorded_at)
                )
            delivered = self._delivered_mg(s)
            out_sessions.append(
                {
                    "id": s.id,
                    "session_number": s.session_number,
                    "scheduled_for": s.scheduled_for,
                    "state": s.state,
                    "delivered_mg": delivered,
                    "scales": [
                        {"scale": sc.scale, "total": sc.total, "band": sc.band} for sc in scales
                    ],
                }
            )
        outcomes = track_outcomes(assessments)
        self._audit(actor, "read", "course", row.id)
        return {
            **self._course_summary(row),
            "sessions": out_sessions,
            "outcomes": {
                sid: {
                    "baseline_total": o.baseline_total,
                    "points": [to_jsonable(p) for p in o.points],
                    "response": None if o.latest is None else o.latest.response,
                    "remission": None if o.latest is None else o.latest.remission,
                }
                for sid, o in outcomes.items()
            },
        }

    def _delivered_mg(self, row: InfusionSession) -> float | None:
        snapshot = loads(SessionSnapshot, row.snapshot_json)
        if not snapshot.infusion_entries:
            return None
        session = Session.restore(snapshot, clock=self._clock)
        assert session.infusion is not None
        return round(session.infusion.dose_delivered_mg(self._clock.now()), 3)

    # --- sessions ---------------------------------------------------------------------------------

    def create_session(
        self, actor: Actor, course_id: int, *, scheduled_for: datetime, chair: str
    ) -> dict[str, Any]:
        """Schedule an infusion session of a course."""
        course = self._course_row(course_id)
        patient = self._patient(course.patient_id)
        if scheduled_for.tzinfo is None:
            raise InputError("scheduled_for must carry a time zone offset.", field="scheduled_for")
        count = self._db.execute(
            select(func.count())
            .select_from(InfusionSession)
            .where(InfusionSession.course_id == course.id)
        ).scalar_one()
        now = self._clock.now()
        row = InfusionSession(
            course_id=course.id,
            patient_id=patient.id,
            session_number=count + 1,
            chair=chair.strip(),
            scheduled_for=scheduled_for,
            state=SessionState.SCHEDULED.value,
            pump_unconfirmed=False,
            snapshot_json="{}",
            version=0,
            created_at=now,
            updated_at=now,
        )
        self._db.add(row)
        self._db.flush()
        session = Session(
            str(row.id),
            patient.mrn,
            clock=self._clock,
            scheduled_for=scheduled_for,
            course_id=str(course.id),
        )
        self._save(row, session)
        self._audit(actor, "create", "infusion_session", row.id, {"course_id": course.id})
        return self._summary(row)

    @staticmethod
    def _summary(row: InfusionSession) -> dict[str, Any]:
        return {
            "id": row.id,
            "course_id": row.course_id,
            "patient_id": row.patient_id,
            "session_number": row.session_number,
            "chair": row.chair,
            "scheduled_for": row.scheduled_for,
            "state": row.state,
            "pump_unconfirmed": row.pump_unconfirmed,
        }

    def board(self, actor: Actor, day: date) -> list[dict[str, Any]]:
        """The sessions scheduled on ``day`` (UTC): chair, patient, state, alarms."""
        start = datetime.combine(day, time(0), tzinfo=UTC)
        rows = self._rows(
            InfusionSession,
            InfusionSession.scheduled_for >= start,
            InfusionSession.scheduled_for < start + timedelta(days=1),
            order=InfusionSession.scheduled_for,
        )
        now = self._clock.now()
        out = []
        for row in rows:
            patient = self._patient(row.patient_id)
            alarms = self._rows(
                AlarmRecord, AlarmRecord.session_id == row.id, AlarmRecord.state != "resolved"
            )
            by_priority = {
                p: sum(1 for a in alarms if a.priority == p) for p in ("high", "medium", "low")
            }
            started = self._db.execute(
                select(func.min(RateChange.at)).where(RateChange.session_id == row.id)
            ).scalar_one()
            out.append(
                {
                    **self._summary(row),
                    "patient_name": f"{patient.family_name}, {patient.given_name}",
                    "elapsed_min": None
                    if started is None
                    else round((now - started).total_seconds() / 60.0, 1),
                    "active_alarms": by_priority,
                    "overdue_readings": any(a.code.startswith("VITALS_OVERDUE") for a in alarms),
                }
            )
        self._audit(
            actor, "query", "infusion_session", None, {"result_ids": [r["id"] for r in out]}
        )
        return out

    def allowed_actions(
        self, session: Session, role: ClinicalRole, order: InfusionOrder | None
    ) -> list[dict[str, Any]]:
        """Each action with ``enabled`` and, when disabled, the ``reason``."""
        out = []
        by_table = session.allowed_events()
        for_role = session.allowed_events(role)
        for name, event in _ACTIONS.items():
            reason = ""
            if event not in by_table:
                reason = f"not possible in state {session.state.value}"
            elif event not in for_role:
                reason = f"role {role.value} may not do this"
            elif event is SessionEvent.START_INFUSION and (
                session.verification is None or session.verification.problems()
            ):
                reason = "the order double check is missing or failed"
            elif event is SessionEvent.MARK_READY and (
                session.pre_assessment is None or session.verification is None
            ):
                reason = "needs the pre-assessment and a verified, double-checked order"
            out.append({"action": name, "enabled": not reason, "reason": reason})
        if order is None and session.state in (
            SessionState.CHECKED_IN,
            SessionState.PRE_ASSESSMENT,
        ):
            out.append(
                {
                    "action": "order",
                    "enabled": role is ClinicalRole.PHYSICIAN,
                    "reason": "" if role is ClinicalRole.PHYSICIAN else "physician only",
                }
            )
        return out

    def _current_order(self, session_id: int) -> InfusionOrder | None:
        row = self._db.execute(
            select(InfusionOrder)
            .where(InfusionOrder.session_id == session_id, InfusionOrder.superseded.is_(False))
            .order_by(InfusionOrder.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        assert row is None or isinstance(row, InfusionOrder)
        return row

    @staticmethod
    def _order_view(order: InfusionOrder | None) -> dict[str, Any] | None:
        if order is None:
            return None
        return {
            "id": order.id,
            "order_ref": order.order_ref,
            "dose_text": order.dose_text,
            "care_area": order.care_area,
            "concentration_mg_per_ml": order.concentration_mg_per_ml,
            "rate_mg_per_h": order.rate_mg_per_h,
            "dose_mg": order.dose_mg,
            "order": _j(order.order_json),
            "pump": _j(order.pump_json),
            "limit_checks": _j(order.limit_checks_json),
            "created_by": order.created_by,
            "created_at": order.created_at,
            "verified_by": order.verified_by,
            "verified_at": order.verified_at,
            "double_check": _j(order.double_check_json),
            "double_check_status": order.double_check_status,
        }

    def get_session(self, actor: Actor, session_id: int, *, audit: bool = True) -> dict[str, Any]:
        """The full session view (see docs/api.md)."""
        row, session = self._load(session_id, lock=False)
        patient = self._patient(row.patient_id)
        order = self._current_order(row.id)
        now = self._clock.now()
        rate_history = [
            {
                "at": r.at,
                "kind": r.kind,
                "rate_mg_per_h": r.rate_mg_per_h,
                "reason": r.reason,
                "by": r.who,
            }
            for r in self._rows(RateChange, RateChange.session_id == row.id, order=RateChange.seq)
        ]
        latest: dict[str, Any] = {}
        for v in self._latest_vitals(row.id).values():
            latest[v.kind] = self._vital_view(v)
        alarms = self._rows(
            AlarmRecord, AlarmRecord.session_id == row.id, AlarmRecord.state != "resolved"
        )
        transitions = self._rows(
            SessionTransition, SessionTransition.session_id == row.id, order=SessionTransition.seq
        )
        record = session.infusion
        view = {
            **self._summary(row),
            "patient": {
                "id": patient.id,
                "mrn": patient.mrn,
                "name": f"{patient.family_name}, {patient.given_name}",
                "birth_date": patient.birth_date,
                "sex": patient.sex.value,
            },
            "allowed_actions": self.allowed_actions(session, actor.role, order),
            "pre_assessment": to_jsonable(session.pre_assessment),
            "order": self._order_view(order),
            "rate_history": rate_history,
            "current_rate_mg_per_h": None if record is None else record.current_rate_mg_per_h,
            "infusion_status": None if record is None else record.status.value,
            "delivered_mg": None if record is None else round(record.dose_delivered_mg(now), 3),
            "uncertain_since": session.uncertain_since,
            "latest_vitals": latest,
            "active_alarms": [self._alarm_view(a) for a in alarms],
            "checkins": [
                self._checkin_view(c)
                for c in self._rows(PatientCheckIn, PatientCheckIn.session_id == row.id)
            ],
            "scales": [
                self._scale_view(s)
                for s in self._rows(ScaleResult, ScaleResult.session_id == row.id)
            ],
            "transitions": [
                {
                    "seq": t.seq,
                    "event": t.event,
                    "from": t.from_state,
                    "to": t.to_state,
                    "by": t.who,
                    "role": t.role,
                    "at": t.at,
                    "why": t.why,
                }
                for t in transitions
            ],
            "discharge": self._discharge_view(row.id),
        }
        if audit:
            self._audit(actor, "read", "infusion_session", row.id)
        return view

    def transition(self, actor: Actor, session_id: int, action: str, reason: str) -> dict[str, Any]:
        """Move the session by ``action`` (see :data:`TRANSITION_ACTIONS`)."""
        if action not in TRANSITION_ACTIONS:
            raise InputError(
                f"action must be one of {', '.join(TRANSITION_ACTIONS)}; got {action!r}.",
                field="action",
            )
        row, session = self._load(session_id)
        if action == "check_in":
            session.check_in(actor, reason)
        elif action == "start_pre_assessment":
            session.begin_pre_assessment(actor, reason)
        elif action == "mark_ready":
            session.mark_ready(actor, reason)
        elif action == "reopen_assessment":
            session.reopen_assessment(actor, reason)
        elif action == "complete":
            session.complete_infusion(actor, reason)
        elif action == "stop":
            session.stop_infusion(actor, reason)
        elif action == "start_recovery":
            session.begin_recovery(actor, reason)
        else:
            session.abort(actor, reason)
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(
            actor,
            "transition",
            "infusion_session",
            row.id,
            {"action": action, "to": session.state.value},
        )
        return self.get_session(actor, row.id, audit=False)

    def pre_assessment(
        self,
        actor: Actor,
        session_id: int,
        *,
        fasting_confirmed: bool,
        consent_confirmed: bool,
        escort_name: str,
        baseline: Baseline,
        notes: str = "",
    ) -> dict[str, Any]:
        """Record the pre-assessment (stores the baseline vitals too); marks the session ready
        when the order is already verified and double-checked."""
        row, session = self._load(session_id)
        now = self._clock.now()
        vitals = make_vital_set(
            measured_at=now,
            source=VitalSource.MANUAL,
            hr_per_min=baseline.hr_per_min,
            sbp_mmhg=baseline.sbp_mmhg,
            dbp_mmhg=baseline.dbp_mmhg,
            spo2_pct=baseline.spo2_percent,
            rr_per_min=baseline.rr_per_min,
        )
        session.record_pre_assessment(
            actor,
            PreAssessment(
                baseline_vitals=vitals,
                fasting_confirmed=fasting_confirmed,
                consent_confirmed=consent_confirmed,
                escort_confirmed=bool(escort_name.strip()),
                notes=notes,
            ),
        )
        for reading in vitals.readings:
            self._store_reading(row.id, reading, actor, None, now)
        slot = self._runtime.slot(self._uow, row, session)
        with slot.lock:
            slot.engine.set_baseline(vitals)
        self._try_ready(actor, session)
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(actor, "update", "infusion_session", row.id, {"part": "pre_assessment"})
        return self.get_session(actor, row.id, audit=False)

    def _try_ready(self, actor: Actor, session: Session) -> None:
        if (
            session.state is SessionState.PRE_ASSESSMENT
            and session.pre_assessment is not None
            and not session.pre_assessment.missing(session.requirements.required_pre_scales)
            and session.verification is not None
            and not session.verification.problems()
            and SessionEvent.MARK_READY in session.allowed_events(actor.role)
        ):
            session.mark_ready(actor, "pre-assessment complete and order double-checked")

    # --- order, verification, double check --------------------------------------------------------

    def _protocol(self, row: InfusionSession) -> Protocol:
        return load_protocol(self._course_row(row.course_id).protocol)

    def write_order(
        self,
        actor: Actor,
        session_id: int,
        *,
        dose_text: str | None,
        concentration_mg_per_ml: float | None,
        override_reason: str | None,
    ) -> dict[str, Any]:
        """Write the session's order (default: the protocol dose for this session number),
        check it against the drug library and program the pump."""
        if actor.role is not ClinicalRole.PHYSICIAN:
            raise AuthError("only a physician may write an order.", field="role")
        row, session = self._load(session_id)
        if session.state not in (SessionState.CHECKED_IN, SessionState.PRE_ASSESSMENT):
            raise StateError(
                f"an order can be written in checked_in or pre_assessment, not {row.state}."
            )
        protocol = self._protocol(row)
        patient = self._patient(row.patient_id)
        weight = self._uow.patients.latest_weight(patient.id)
        if weight is None:
            raise StateError("no weight recorded: weigh the patient before ordering.")
        height = self._db.execute(
            select(HeightMeasurement)
            .where(HeightMeasurement.patient_id == patient.id)
            .order_by(HeightMeasurement.measured_on.desc(), HeightMeasurement.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        text = dose_text
        titration: dict[str, Any] | None = None
        if text is None:
            text, titration = self._protocol_dose(row, protocol)
        now = self._clock.now()
        count = self._db.execute(
            select(func.count())
            .select_from(InfusionOrder)
            .where(InfusionOrder.session_id == row.id)
        ).scalar_one()
        order = create_order(
            text,
            weight.weight_kg,
            weight.measured_on,
            None if height is None else height.height_cm,
            patient.sex.value,
            protocol.dosing_weight.rule,
            now,
            patient_ref=str(patient.id),
            created_by=actor.user_id,
            order_id=f"S{row.id}-{count + 1}",
        )
        conc = (
            protocol.standard_concentration_mg_per_ml
            if concentration_mg_per_ml is None
            else concentration_mg_per_ml
        )
        override = (
            None
            if override_reason is None
            else Override(override_reason, actor.user_id, actor.role.value, now)
        )
        checks = check_order(order, protocol.care_area, conc, override=override)
        pump = program_pump(order, conc, care_area=protocol.care_area)
        for old in self._rows(InfusionOrder, InfusionOrder.session_id == row.id):
            old.superseded = True
        order_row = InfusionOrder(
            session_id=row.id,
            order_ref=order.order_id,
            dose_text=order.dose_text,
            care_area=protocol.care_area,
            concentration_mg_per_ml=conc,
            rate_mg_per_h=order.rate_mg_per_h,
            dose_mg=order.dose_mg,
            order_json=json.dumps(order.to_dict(), default=str),
            pump_json=json.dumps(pump.to_dict(), default=str),
            limit_checks_json=json.dumps(checks.to_dict(), default=str),
            created_by=actor.user_id,
            created_at=now,
            superseded=False,
        )
        self._db.add(order_row)
        self._db.flush()
        if session.verification is not None:
            session.verification = None
            self._save(row, session)
        self._audit(
            actor,
            "create",
            "infusion_order",
            order_row.id,
            {"session_id": row.id, "overridden": override is not None},
        )
        view = self._order_view(order_row)
        assert view is not None
        return {**view, "titration": titration}

    def _protocol_dose(
        self, row: InfusionSession, protocol: Protocol
    ) -> tuple[str, dict[str, Any] | None]:
        """The protocol's dose text for this session: the first session's dose, then the
        protocol's between-session titration rules applied to the previous session."""
        start = protocol.session_dose_mg_per_kg
        if start is None:
            return protocol.dose_text, None
        previous = self._db.execute(
            select(InfusionSession)
            .where(
                InfusionSession.course_id == row.course_id,
                InfusionSession.session_number < row.session_number,
                InfusionSession.state.in_(["discharged", "aborted"]),
            )
            .order_by(InfusionSession.session_number.desc())
            .limit(1)
        ).scalar_one_or_none()
        prev_order = None if previous is None else self._current_order(previous.id)
        if previous is None or prev_order is None:
            return protocol.dose_text_for(start), None
        outcome = self._session_outcome(previous)
        current = float(_j(prev_order.order_json)["dose_mg_per_kg"])
        decision = protocol.decide_next_dose(outcome, current)
        return protocol.dose_text_for(decision.next_mg_per_kg), {
            "previous_session_id": previous.id,
            "current_mg_per_kg": decision.current_mg_per_kg,
            "next_mg_per_kg": decision.next_mg_per_kg,
            "action": decision.action.value,
            "rule_id": decision.rule_id,
            "rationale": decision.rationale,
            "requires_confirmation": True,
        }

    def _session_outcome(self, row: InfusionSession) -> SessionOutcome:
        """How a finished session went, as the titration rules see it (NaN = not assessed)."""
        course = self._course_row(row.course_id)
        goal_scale = str(_j(course.goal_json).get("scale_id", ""))
        vitals = self._rows(VitalSign, VitalSign.session_id == row.id)
        scales = self._rows(ScaleResult, ScaleResult.session_id == row.id)
        first_goal = self._db.execute(
            select(ScaleResult.total)
            .join(InfusionSession, InfusionSession.id == ScaleResult.session_id)
            .where(InfusionSession.course_id == course.id, ScaleResult.scale == goal_scale)
            .order_by(ScaleResult.recorded_at, ScaleResult.id)
            .limit(1)
        ).scalar_one_or_none()
        latest_goal = [s.total for s in scales if s.scale == goal_scale]
        response = math.nan
        if first_goal and latest_goal:
            response = 100.0 * (first_goal - latest_goal[-1]) / first_goal
        dissociation = [float(s.total) for s in scales if s.scale in ("cadss", "cadss6")]
        stops = self._db.execute(
            select(func.count())
            .select_from(AlarmRecord)
            .where(
                AlarmRecord.session_id == row.id,
                AlarmRecord.code.in_(
                    ["SBP_HIGH_STOP", "DBP_HIGH_STOP", "SBP_SEVERE", "DBP_SEVERE"]
                ),
            )
        ).scalar_one()

        def peak(kind: str) -> float:
            values = [v.value for v in vitals if v.kind == kind and not v.artefact_suspect]
            return max(values) if values else math.nan

        return SessionOutcome(
            session_number=row.session_number,
            tolerated=row.state == SessionState.DISCHARGED.value,
            response_pct=response,
            max_dissociation=max(dissociation) if dissociation else math.nan,
            max_sbp_mmhg=peak("sbp"),
            max_dbp_mmhg=peak("dbp"),
            stop_threshold_crossed=stops > 0,
        )

    def verify_order(self, actor: Actor, session_id: int) -> dict[str, Any]:
        """A physician verifies the order (the first of the two checks)."""
        if actor.role is not ClinicalRole.PHYSICIAN:
            raise AuthError("only a physician may verify an order.", field="role")
        row = self._session_row(session_id, lock=True)
        order = self._current_order(row.id)
        if order is None:
            raise StateError("there is no order to verify; write one first.")
        order.verified_by = actor.user_id
        order.verified_at = self._clock.now()
        self._audit(actor, "verify", "infusion_order", order.id, {"session_id": row.id})
        view = self._order_view(order)
        assert view is not None
        return view

    def double_check_order(
        self, actor: Actor, session_id: int, entry: BlindEntry
    ) -> dict[str, Any]:
        """Blind re-entry by a second clinician; a mismatch blocks the start."""
        row, session = self._load(session_id)
        order = self._current_order(row.id)
        if order is None or order.verified_by is None or order.verified_at is None:
            raise StateError("the order must be written and verified before the double check.")
        if actor.user_id == order.verified_by:
            raise AuthError(
                "the double check must be done by someone other than the verifier.",
                field="checked_by",
            )
        pump = _j(order.pump_json)
        program = _program_from(pump)
        record = double_check(
            program,
            entry,
            programmed_by=order.verified_by,
            checked_by=actor.user_id,
            at=self._clock.now(),
        )
        order.double_check_json = dumps(record)
        order.double_checked_by = actor.user_id
        order.double_check_status = record.status.value
        if not record.blocked:
            session.record_order_verification(
                actor,
                OrderVerification(
                    order_ref=order.order_ref,
                    verified_by=order.verified_by,
                    verified_role=ClinicalRole.PHYSICIAN,
                    double_checked_by=actor.user_id,
                    double_checked_role=actor.role,
                    matches=True,
                    verified_at=order.verified_at,
                ),
            )
            self._try_ready(actor, session)
        else:
            session.verification = None
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(
            actor,
            "double_check",
            "infusion_order",
            order.id,
            {"session_id": row.id, "status": record.status.value},
        )
        return {
            "status": record.status.value,
            "match": not record.blocked,
            "message": record.message(),
            "mismatches": [to_jsonable(m) for m in record.mismatches],
            "state": session.state.value,
        }

    # --- infusion ---------------------------------------------------------------------------------

    def start(self, actor: Actor, session_id: int, reason: str = "") -> dict[str, Any]:
        """The pump was started with the verified program."""
        row, session = self._load(session_id)
        order = self._current_order(row.id)
        if order is None or order.double_check_status != "verified":
            raise StateError("start: the order double check is missing or failed.")
        if session.state is not SessionState.READY:
            raise StateError(f"start: the session must be ready, not {session.state.value}.")
        pump = _j(order.pump_json)
        rate = pump.get("delivered_rate_mg_per_h") or order.rate_mg_per_h
        if rate is None:
            raise StateError("start: the order is a bolus; this service records infusions only.")
        session.start_infusion(
            actor,
            InfusionPlan(
                rate_mg_per_h=float(rate),
                concentration_mg_per_ml=order.concentration_mg_per_ml,
                planned_total_mg=float(pump["delivered_dose_mg"]),
            ),
            reason,
        )
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(actor, "start", "infusion_session", row.id)
        return self.get_session(actor, row.id, audit=False)

    def pause(self, actor: Actor, session_id: int, reason: str) -> dict[str, Any]:
        """The pump was paused (reason required)."""
        row, session = self._load(session_id)
        session.pause(actor, reason)
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(actor, "pause", "infusion_session", row.id)
        return self.get_session(actor, row.id, audit=False)

    def resume(
        self, actor: Actor, session_id: int, reason: str, rate_mg_per_h: float | None = None
    ) -> dict[str, Any]:
        """The pump was restarted (at the rate before the pause unless given)."""
        row, session = self._load(session_id)
        if rate_mg_per_h is not None:
            self._check_rate(row, rate_mg_per_h, actor, None)
        session.resume(actor, reason, rate_mg_per_h)
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(actor, "resume", "infusion_session", row.id)
        return self.get_session(actor, row.id, audit=False)

    def _check_rate(
        self, row: InfusionSession, rate_mg_per_h: float, actor: Actor, override: str | None
    ) -> list[dict[str, Any]]:
        order = self._current_order(row.id)
        if order is None:
            raise StateError("no order for this session.")
        area = load_library().care_area(order.care_area)
        dosing_weight = float(_j(order.order_json).get("dosing_weight_kg") or 0.0)
        values = [("rate_mg_per_h", rate_mg_per_h)]
        if dosing_weight > 0:
            values.append(("rate_mg_per_kg_per_h", rate_mg_per_h / dosing_weight))
        results = []
        soft = []
        for name, value in values:
            limit = area.limit(name)
            if limit is None:
                continue
            status, bound = limit.status_of(value)
            results.append(
                {"name": name, "value": value, "status": status.value, "limit": limit.describe()}
            )
            if status is LimitStatus.HARD_BREACH:
                raise HardLimitError(
                    f"{name}: {value:.4g} is {bound} ({limit.describe()}); hard limits cannot "
                    "be overridden.",
                    field="rate_mg_per_h",
                )
            if status is LimitStatus.SOFT_BREACH:
                soft.append(f"{name} {value:.4g} is {bound} ({limit.describe()})")
        if soft:
            if override is None:
                raise SoftLimitError(
                    "rate needs a physician's override: " + "; ".join(soft),
                    field="rate_mg_per_h",
                )
            if actor.role is not ClinicalRole.PHYSICIAN:
                raise AuthError("only a physician may override a soft limit.", field="override")
            Override(override, actor.user_id, actor.role.value, self._clock.now())
        return results

    def change_rate(
        self,
        actor: Actor,
        session_id: int,
        rate_mg_per_h: float,
        reason: str,
        override_reason: str | None,
    ) -> dict[str, Any]:
        """Record a rate change, checked against the drug library first."""
        row, session = self._load(session_id)
        if session.state is not SessionState.INFUSING:
            raise StateError(f"rate changes only while infusing, not {session.state.value}.")
        checks = self._check_rate(row, rate_mg_per_h, actor, override_reason)
        session.change_rate(actor, rate_mg_per_h, reason)
        self._save(row, session)
        if override_reason is not None:
            last = self._db.execute(
                select(RateChange)
                .where(RateChange.session_id == row.id)
                .order_by(RateChange.seq.desc())
                .limit(1)
            ).scalar_one()
            last.override_reason = override_reason
        self._audit(
            actor,
            "rate_change",
            "infusion_session",
            row.id,
            {"overridden": override_reason is not None},
        )
        return {**self.get_session(actor, row.id, audit=False), "limit_checks": checks}

    def confirm_pump(
        self,
        actor: Actor,
        session_id: int,
        *,
        running: bool,
        volume_delivered_ml: float | None,
        rate_mg_per_h: float | None,
        finished: bool,
        note: str,
    ) -> dict[str, Any]:
        """After a restart: a nurse read the pump; the session continues from what it shows."""
        row, session = self._load(session_id)
        rate = 0.0
        if running:
            record = session.infusion
            rate = (
                rate_mg_per_h
                if rate_mg_per_h is not None
                else (0.0 if record is None else record.current_rate_mg_per_h)
            )
            if rate <= 0 and record is not None:
                rate = max((e.rate_mg_per_h for e in record.entries), default=0.0)
        confirmation = PumpConfirmation(
            running=running,
            rate_mg_per_h=rate,
            volume_infused_ml=volume_delivered_ml,
            finished=finished,
            gap_assumption=None
            if volume_delivered_ml is not None
            else GapAssumption.CONTINUED_AT_LAST_RATE,
            note=note,
        )
        session.confirm_pump_state(actor, confirmation, note)
        self._save(row, session)
        self._sync_phase(row, session)
        self._audit(actor, "confirm_pump", "infusion_session", row.id, {"to": session.state.value})
        return self.get_session(actor, row.id, audit=False)

    # --- predictions -----------------------------------------------------------------------------

    def _forecast_view(self, f: ConcentrationForecast) -> dict[str, Any]:
        return {
            "model_id": f.model_id,
            "now_min": f.now_min,
            "times_min": list(f.times_min),
            "cp_ng_per_ml": list(f.cp_ng_per_ml),
            "ce_ng_per_ml": None if f.ce_ng_per_ml is None else list(f.ce_ng_per_ml),
            "rate_mg_per_h": list(f.rate_mg_per_h),
            "cp_now_ng_per_ml": f.cp_now_ng_per_ml,
            "ce_now_ng_per_ml": f.ce_now_ng_per_ml,
            "delivered_mg": f.delivered_mg,
            "future": f.future,
            "uncertain": f.uncertain,
            "validity_notes": list(f.validity_notes),
            # Racemic ketamine (the drug library's only drug): S-ketamine Emax on Ce.
            "dissociation_fraction": None
            if f.ce_ng_per_ml is None
            else [float(x) for x in DISSOCIATION.effect(f.ce_ng_per_ml, enantiomer="racemic")],
        }

    def _infusion(self, session_id: int) -> tuple[InfusionSession, Session, Any]:
        row, session = self._load(session_id, lock=False)
        if session.infusion is None:
            raise StateError("no infusion has started in this session.")
        covariates = self._domain_patient(self._patient(row.patient_id)).covariates(
            on=self._clock.now().date()
        )
        return row, session, covariates

    def prediction(self, actor: Actor, session_id: int, horizon_min: float) -> dict[str, Any]:
        """Cp/Ce from what was actually given, and for ``horizon_min`` minutes ahead."""
        row, session, cov = self._infusion(session_id)
        assert session.infusion is not None
        forecast = session.infusion.forecast(
            self._clock.now(), cov, horizon_min=horizon_min, include_history=True
        )
        self._audit(actor, "read", "infusion_session", row.id, {"part": "prediction"})
        return self._forecast_view(forecast)

    def what_if(
        self,
        actor: Actor,
        session_id: int,
        *,
        rate_mg_per_h: float | None,
        pause_min: float | None,
        horizon_min: float,
    ) -> dict[str, Any]:
        """The proposed change and the current course on one grid; nothing is saved."""
        row, session, cov = self._infusion(session_id)
        assert session.infusion is not None
        preview = session.infusion.preview(
            self._clock.now(),
            cov,
            rate_mg_per_h=rate_mg_per_h,
            pause_min=pause_min,
            horizon_min=horizon_min,
        )
        self._audit(actor, "read", "infusion_session", row.id, {"part": "what_if"})
        return {
            **self._forecast_view(preview.proposed),
            "current": self._forecast_view(preview.current),
        }

    # --- vitals ----------------------------------------------------------------------------------

    def _latest_vitals(self, session_id: int) -> dict[str, VitalSign]:
        """The newest reading of each kind (one indexed query per kind: a session collects
        tens of thousands of readings)."""
        out: dict[str, VitalSign] = {}
        for kind in VitalKind:
            latest = self._db.execute(
                select(VitalSign)
                .where(VitalSign.session_id == session_id, VitalSign.kind == kind.value)
                .order_by(VitalSign.measured_at.desc(), VitalSign.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is not None:
                out[kind.value] = latest
        return out

    @staticmethod
    def _vital_view(v: VitalSign) -> dict[str, Any]:
        return {
            "id": v.id,
            "reading_id": v.reading_id,
            "kind": v.kind,
            "value": v.value,
            "unit": v.unit,
            "loinc": v.loinc,
            "measured_at": v.measured_at,
            "received_at": v.received_at,
            "source": v.source,
            "artefact_suspect": v.artefact_suspect,
        }

    def _store_reading(
        self,
        session_id: int,
        reading: VitalReading,
        actor: Actor,
        reading_id: str | None,
        received_at: datetime,
    ) -> VitalSign:
        spec = vital_spec(reading.kind)
        row = VitalSign(
            session_id=session_id,
            reading_id=reading_id,
            kind=reading.kind.value,
            value=reading.value,
            unit=spec.ucum,
            loinc=spec.loinc,
            measured_at=reading.measured_at,
            received_at=received_at,
            source=reading.source.value,
            device_id=reading.device_id,
            artefact_suspect=reading.artefact_suspect,
            artefact_reasons=json.dumps(list(reading.artefact_reasons)),
            recorded_by=actor.user_id,
        )
        self._db.add(row)
        return row

    def _insert_readings(
        self,
        session_id: int,
        assessed: Sequence[tuple[NewReading, VitalReading]],
        actor: Actor,
        received_at: datetime,
    ) -> list[dict[str, Any]]:
        """Insert the readings with one multi-row INSERT ... RETURNING (the feed's hot path:
        about a third cheaper than ORM objects); their views, in order."""
        if not assessed:
            return []
        rows = []
        for new, reading in assessed:
            spec = vital_spec(reading.kind)
            rows.append(
                {
                    "session_id": session_id,
                    "reading_id": new.reading_id,
                    "kind": reading.kind.value,
                    "value": reading.value,
                    "unit": spec.ucum,
                    "loinc": spec.loinc,
                    "measured_at": reading.measured_at,
                    "received_at": received_at,
                    "source": reading.source.value,
                    "device_id": reading.device_id,
                    "artefact_suspect": reading.artefact_suspect,
                    "artefact_reasons": json.dumps(list(reading.artefact_reasons)),
                    "recorded_by": actor.user_id,
                }
            )
        ids = (
            self._db.execute(
                insert(VitalSign).returning(VitalSign.id, sort_by_parameter_order=True), rows
            )
            .scalars()
            .all()
        )
        return [
            {
                "id": vid,
                "reading_id": r["reading_id"],
                "kind": r["kind"],
                "value": r["value"],
                "unit": r["unit"],
                "loinc": r["loinc"],
                "measured_at": r["measured_at"],
                "received_at": r["received_at"],
                "source": r["source"],
                "artefact_suspect": r["artefact_suspect"],
            }
            for vid, r in zip(ids, rows, strict=True)
        ]

    def record_vitals(
        self, actor: Actor, session_id: int, readings: Sequence[NewReading]
    ) -> dict[str, Any]:
        """Validate and store readings (one commit), feed the alarm engine, publish.

        Impossible values refuse the whole request (422, nothing stored); implausible ones are
        stored with ``artefact_suspect``. A ``reading_id`` already stored for the session is
        not stored again and is listed in ``duplicates``.
        """
        if not readings:
            raise InputError("readings: give at least one reading.", field="readings")
        if len(readings) > MAX_VITALS_BATCH:
            raise InputError(f"readings: at most {MAX_VITALS_BATCH} per request.", field="readings")
        row = self._session_row(session_id)
        state = SessionState(row.state)
        if state in (SessionState.DISCHARGED, SessionState.ABORTED):
            raise StateError(f"the session has ended ({state.value}); vitals are not accepted.")
        now = self._clock.now()
        ids = [r.reading_id for r in readings if r.reading_id is not None]
        if len(ids) != len(set(ids)):
            raise InputError(
                "readings: a reading_id appears twice in the request.", field="reading_id"
            )
        existing: set[str] = set()
        if ids:
            existing = set(
                self._db.execute(
                    select(VitalSign.reading_id).where(
                        VitalSign.session_id == row.id, VitalSign.reading_id.in_(ids)
                    )
                )
                .scalars()
                .all()
            )
        fresh = [r for r in readings if r.reading_id is None or r.reading_id not in existing]
        session = None if self._runtime.get(row.id) else self._load(row.id, lock=False)[1]
        slot = self._runtime.get(row.id)
        if slot is None:
            assert session is not None
            slot = self._runtime.slot(self._uow, row, session)
        assessed: list[tuple[NewReading, VitalReading]] = []
        events: list[AlarmEvent] = []
        with slot.lock:
            previous = dict(slot.previous)
            for i, new in enumerate(fresh):
                kind = _vital_kind(new.kind, i)
                spec = vital_spec(kind)
                if new.unit != spec.ucum:
                    raise InputError(
                        f"readings[{i}].unit: {kind.value} is given in {spec.ucum!r}; got "
                        f"{new.unit!r}.",
                        field=f"readings[{i}].unit",
                    )
                try:
                    source = VitalSource(new.source)
                except ValueError:
                    raise InputError(
                        f"readings[{i}].source must be 'manual' or 'device'.",
                        field=f"readings[{i}].source",
                    ) from None
                if new.measured_at.tzinfo is None:
                    raise InputError(
                        "measured_at must carry a time zone offset.",
                        field=f"readings[{i}].measured_at",
                    )
                if new.measured_at > now + timedelta(minutes=5):
                    raise InputError(
                        "measured_at is in the future; check the device clock.",
                        field=f"readings[{i}].measured_at",
                    )
                reading = assess_reading(
                    kind,
                    new.value,
                    measured_at=new.measured_at,
                    source=source,
                    previous=previous.get(kind),
                    device_id=new.device_id,
                )
                previous[kind] = reading
                assessed.append((new, reading))
            for _new, reading in assessed:
                events.extend(slot.engine.feed(reading))
            slot.previous.update(previous)
        views = self._insert_readings(row.id, assessed, actor, now)
        if views:
            self._publish(
                row.id,
                "vitals",
                {
                    "session_id": row.id,
                    "readings": [
                        {
                            **v,
                            "measured_at": v["measured_at"].isoformat(),
                            "received_at": v["received_at"].isoformat(),
                        }
                        for v in views
                    ],
                },
            )
        # Alarms after the readings that raised them, in the stream as in time.
        self._store_alarm_events(row.id, events)
        self._audit(
            actor,
            "create",
            "vital_sign",
            None,
            {"session_id": row.id, "count": len(views), "duplicates": len(readings) - len(fresh)},
        )
        return {
            "accepted": views,
            "duplicates": sorted(existing),
            "artefact_suspect": sum(1 for v in views if v["artefact_suspect"]),
        }

    def list_vitals(
        self, actor: Actor, session_id: int, since: datetime | None, limit: int = 2000
    ) -> list[dict[str, Any]]:
        """Readings of the session, oldest first (``since`` by measurement time), at most
        ``limit``; page on with ``since`` = the last ``measured_at``."""
        row = self._session_row(session_id)
        where = [VitalSign.session_id == row.id]
        if since is not None:
            where.append(VitalSign.measured_at >= since)
        rows = list(
            self._db.execute(
                select(VitalSign)
                .where(*where)
                .order_by(VitalSign.measured_at, VitalSign.id)
                .limit(limit)
            )
            .scalars()
            .all()
        )
        self._audit(actor, "read", "infusion_session", row.id, {"part": "vitals"})
        return [self._vital_view(v) for v in rows]

    # --- alarms ----------------------------------------------------------------------------------

    @staticmethod
    def _alarm_view(a: AlarmRecord) -> dict[str, Any]:
        return {
            "id": a.id,
            "session_id": a.session_id,
            "code": a.code,
            "key": a.key,
            "category": a.category,
            "priority": a.priority,
            "state": a.state,
            "suggested_action": a.suggested_action,
            "message": a.message,
            "detail": a.detail,
            "vital": a.vital,
            "value": a.value,
            "artefact_suspect": a.artefact_suspect,
            "raised_at": a.raised_at,
            "escalation_level": a.escalation_level,
            "resolved_at": a.resolved_at,
        }

    def _store_alarm_events(self, session_id: int, events: Iterable[AlarmEvent]) -> None:
        for ev in events:
            a = ev.alarm
            row = self._db.execute(
                select(AlarmRecord).where(
                    AlarmRecord.session_id == session_id,
                    AlarmRecord.engine_alarm_id == a.alarm_id,
                )
            ).scalar_one_or_none()
            if row is None:
                row = AlarmRecord(
                    session_id=session_id,
                    engine_alarm_id=a.alarm_id,
                    key=a.key,
                    code=a.code,
                    category=a.category.value,
                    priority=a.priority.value,
                    state=a.state.value,
                    suggested_action=a.suggested_action.value,
                    message=a.message,
                    detail=a.detail,
                    vital=None if a.vital is None else a.vital.value,
                    value=a.value,
                    artefact_suspect=a.artefact_suspect,
                    raised_at=a.raised_at,
                    escalation_level=a.escalation_level,
                    resolved_at=a.resolved_at,
                )
                self._db.add(row)
                self._db.flush()
            else:
                row.state = a.state.value
                row.escalation_level = a.escalation_level
                row.resolved_at = a.resolved_at
                row.value = a.value
                row.detail = a.detail
            if ev.kind is AlarmEventKind.ESCALATED:
                self._db.add(AlarmEscalation(alarm_id=row.id, level=a.escalation_level, at=ev.at))
            view = self._alarm_view(row)
            view["raised_at"] = view["raised_at"].isoformat()
            view["resolved_at"] = None if row.resolved_at is None else row.resolved_at.isoformat()
            view["event"] = ev.kind.value
            self._publish(
                session_id,
                "alarm_ack" if ev.kind is AlarmEventKind.ACKNOWLEDGED else "alarm",
                view,
            )

    def list_alarms(self, actor: Actor, session_id: int) -> list[dict[str, Any]]:
        """Every alarm of the session, newest first."""
        row = self._session_row(session_id)
        alarms = self._rows(
            AlarmRecord, AlarmRecord.session_id == row.id, order=AlarmRecord.id.desc()
        )
        self._audit(actor, "read", "infusion_session", row.id, {"part": "alarms"})
        return [self._alarm_view(a) for a in alarms]

    def acknowledge_alarm(
        self, actor: Actor, alarm_id: int, reason: str, action_taken: str | None
    ) -> dict[str, Any]:
        """Acknowledge an alarm with a reason (and the action taken, if any)."""
        from ketaflow.clinical import SuggestedAction

        alarm = self._db.get(AlarmRecord, alarm_id)
        if alarm is None:
            raise NotFoundError(f"no alarm with id {alarm_id}.", field="alarm_id")
        assert isinstance(alarm, AlarmRecord)
        if not reason.strip():
            raise InputError("reason: say why in a few words.", field="reason")
        if alarm.state in ("acknowledged", "resolved"):
            raise StateError(f"alarm {alarm_id} is already {alarm.state}.")
        try:
            action = None if action_taken is None else SuggestedAction(action_taken)
        except ValueError:
            raise InputError("action_taken is not a known action.", field="action_taken") from None
        row, session = self._load(alarm.session_id, lock=False)
        slot = self._runtime.slot(self._uow, row, session)
        now = self._clock.now()
        engine_knows = False
        with slot.lock:
            if alarm.engine_alarm_id is not None:
                try:
                    slot.engine.alarm(alarm.engine_alarm_id)
                    engine_knows = True
                except NotFoundError:
                    engine_knows = False
            if engine_knows:
                assert alarm.engine_alarm_id is not None
                events = slot.engine.acknowledge(
                    alarm.engine_alarm_id, actor, reason, action_taken=action
                )
        if engine_knows:
            self._store_alarm_events(row.id, events)
        else:
            # Raised before a restart (or by the service itself): acknowledged and closed here.
            alarm.state = "resolved"
            alarm.resolved_at = now
            view = self._alarm_view(alarm)
            self._publish(
                row.id,
                "alarm_ack",
                {
                    **view,
                    "raised_at": alarm.raised_at.isoformat(),
                    "resolved_at": now.isoformat(),
                    "event": "acknowledged",
                },
            )
        self._db.add(
            AlarmAcknowledgement(
                alarm_id=alarm.id,
                by=actor.user_id,
                role=actor.role.value,
                at=now,
                reason=reason.strip(),
                action_taken=None if action is None else action.value,
            )
        )
        self._audit(actor, "acknowledge", "alarm", alarm.id, {"session_id": row.id})
        self._db.flush()
        return self._alarm_view(alarm)

    def tick_alarms(self, session_id: int) -> int:
        """Run the engine's time-driven checks for one session; returns how many events."""
        slot = self._runtime.get(session_id)
        if slot is None:
            return 0
        with slot.lock:
            events = slot.engine.tick()
        if events:
            self._session_row(session_id)
            self._store_alarm_events(session_id, events)
        return len(events)

    def _raise_service_alarm(
        self, session_id: int, *, code: str, priority: str, message: str, detail: str
    ) -> None:
        now = self._clock.now()
        row = AlarmRecord(
            session_id=session_id,
            engine_alarm_id=None,
            key=code,
            code=code,
            category="patient",
            priority=priority,
            state="active",
            suggested_action="assess_patient",
            message=message,
            detail=detail,
            vital=None,
            value=None,
            artefact_suspect=False,
            raised_at=now,
            escalation_level=0,
            resolved_at=None,
        )
        self._db.add(row)
        self._db.flush()
        view = self._alarm_view(row)
        self._publish(
            session_id, "alarm", {**view, "raised_at": now.isoformat(), "event": "raised"}
        )

    # --- check-ins and scales --------------------------------------------------------------------

    @staticmethod
    def _checkin_view(c: PatientCheckIn) -> dict[str, Any]:
        return {
            "id": c.id,
            "at": c.at,
            "comfort": c.comfort,
            "intensity": c.intensity,
            "anxiety": c.anxiety,
            "nausea": c.nausea,
            "need_help": c.need_help,
            "note": c.note,
        }

    def check_in(
        self,
        actor: Actor,
        session_id: int,
        *,
        comfort: int | None,
        intensity: int | None,
        anxiety: int | None,
        nausea: int | None,
        need_help: bool,
        note: str,
    ) -> dict[str, Any]:
        """A patient check-in; "need help" raises a high-priority alarm."""
        row, session = self._load(session_id, lock=False)
        if session.is_terminal:
            raise StateError("the session has ended; check-ins are closed.")
        now = self._clock.now()
        checkin = CheckIn(
            at=now,
            comfort=comfort,
            intensity=intensity,
            anxiety=anxiety,
            nausea=nausea,
            needs_help=need_help,
            note=note,
        )
        c = PatientCheckIn(
            session_id=row.id,
            at=now,
            comfort=comfort,
            intensity=intensity,
            anxiety=anxiety,
            nausea=nausea,
            need_help=need_help,
            note=note,
            recorded_by=actor.user_id,
        )
        self._db.add(c)
        self._db.flush()
        slot = self._runtime.slot(self._uow, row, session)
        with slot.lock:
            events = slot.engine.feed_check_in(checkin)
        self._store_alarm_events(row.id, events)
        if (
            need_help
            and not any(e.kind is AlarmEventKind.RAISED for e in events)
            and not any(
                a.code == "PATIENT_HELP_REQUEST" and a.state != "resolved"
                for a in self._rows(AlarmRecord, AlarmRecord.session_id == row.id)
            )
        ):
            # The rules watch help requests only in some phases; a request is never dropped.
            self._raise_service_alarm(
                row.id,
                code="PATIENT_HELP_REQUEST",
                priority="high",
                message="The patient asked for help: go to the chair now",
                detail=note,
            )
        view = self._checkin_view(c)
        self._publish(row.id, "checkin", {**view, "at": now.isoformat()})
        self._audit(actor, "create", "check_in", c.id, {"session_id": row.id})
        return view

    @staticmethod
    def _scale_view(s: ScaleResult) -> dict[str, Any]:
        return {
            "id": s.id,
            "scale": s.scale,
            "timing": s.timing,
            "items": _j(s.items_json),
            "total": s.total,
            "total_max": s.total_max,
            "band": s.band,
            "flags": _j(s.flags_json),
            "recorded_at": s.recorded_at,
            "recorded_by": s.recorded_by,
        }

    def record_scale(
        self, actor: Actor, session_id: int, scale: str, items: Sequence[int], timing: str
    ) -> dict[str, Any]:
        """Score a rating scale; flags become alarms (PHQ-9 item 9 > 0 included)."""
        row, session = self._load(session_id, lock=False)
        if scale == "modified_aldrete":
            names = ("activity", "respiration", "circulation", "consciousness", "oxygen_saturation")
            if len(items) != len(names):
                raise InputError("items: modified_aldrete has 5 items.", field="items")
            score = score_modified_aldrete(**dict(zip(names, items, strict=True)))
        else:
            score = score_items(scale, list(items))
        now = self._clock.now()
        s = ScaleResult(
            session_id=row.id,
            scale=score.scale_id,
            timing=timing,
            items_json=json.dumps(list(score.items)),
            total=score.total,
            total_max=score.total_max,
            band=score.band,
            flags_json=json.dumps(sorted(score.flags)),
            recorded_at=now,
            recorded_by=actor.user_id,
        )
        self._db.add(s)
        self._db.flush()
        slot = self._runtime.slot(self._uow, row, session)
        with slot.lock:
            events = slot.engine.record_scale(score, now)
        self._store_alarm_events(row.id, events)
        if score.scale_id == "phq9" and "suicide_risk_workflow" in score.flags:
            self._raise_service_alarm(
                row.id,
                code=PHQ9_ITEM9_CODE,
                priority="high",
                message="PHQ-9 item 9 answered above 0: start the suicide-risk workflow "
                "(C-SSRS screener, physician review) before discharge",
                detail=f"phq9 total {score.total}",
            )
        view = self._scale_view(s)
        self._publish(row.id, "scale", {**view, "recorded_at": now.isoformat()})
        self._audit(actor, "create", "scale_result", s.id, {"session_id": row.id})
        return view

    # --- discharge -------------------------------------------------------------------------------

    def _discharge_view(self, session_id: int) -> dict[str, Any] | None:
        d = self._db.execute(
            select(DischargeRecord).where(DischargeRecord.session_id == session_id)
        ).scalar_one_or_none()
        if d is None:
            return None
        return {
            "decided_by": d.decided_by,
            "decided_role": d.decided_role,
            "decided_at": d.decided_at,
            "overridden": d.overridden,
            "override_reason": d.override_reason,
            "evaluation": _j(d.evaluation_json),
        }

    def discharge(
        self,
        actor: Actor,
        session_id: int,
        *,
        escort_confirmed: bool,
        no_driving_acknowledged: bool,
        override_reason: str | None,
    ) -> dict[str, Any]:
        """Evaluate the discharge criteria and discharge (early only on a physician override)."""
        row, session = self._load(session_id)
        record = session.infusion
        if record is None or session.pre_assessment is None:
            raise StateError("discharge: the session has no infusion record.")
        aldrete_row = self._db.execute(
            select(ScaleResult)
            .where(ScaleResult.session_id == row.id, ScaleResult.scale == "modified_aldrete")
            .order_by(ScaleResult.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        aldrete = None
        if aldrete_row is not None:
            aldrete = ScaleScore(
                aldrete_row.scale,
                aldrete_row.total,
                aldrete_row.total_max,
                aldrete_row.band,
                frozenset(_j(aldrete_row.flags_json)),
                tuple(_j(aldrete_row.items_json)),
            )
        latest = {
            VitalKind(v.kind): VitalReading(
                VitalKind(v.kind), v.value, v.measured_at, VitalSource(v.source)
            )
            for v in self._latest_vitals(row.id).values()
        }
        baseline = session.pre_assessment.baseline_vitals
        assert baseline is not None
        evaluation = evaluate_discharge(
            now=self._clock.now(),
            dose_started_at=record.started_at,
            infusion_ended_at=record.ended_at,
            aldrete=aldrete,
            baseline=baseline,
            latest=latest,
            escort_confirmed=escort_confirmed,
            no_driving_acknowledged=no_driving_acknowledged,
        )
        session.discharge(actor, evaluation, override_reason=override_reason)
        decision = session.discharge_decision
        assert decision is not None
        self._save(row, session)
        self._db.add(
            DischargeRecord(
                session_id=row.id,
                evaluation_json=dumps(evaluation),
                decided_by=decision.decided_by,
                decided_role=decision.decided_role.value,
                decided_at=decision.decided_at,
                overridden=decision.overridden,
                override_reason=decision.override_reason,
            )
        )
        self._db.flush()
        self._audit(
            actor, "discharge", "infusion_session", row.id, {"overridden": decision.overridden}
        )
        return self.get_session(actor, row.id, audit=False)

    # --- report ----------------------------------------------------------------------------------

    def report_data(self, actor: Actor, session_id: int) -> dict[str, Any]:
        """Everything the printable report shows."""
        view = self.get_session(actor, session_id, audit=False)
        row = self._session_row(session_id)
        view["vitals"] = [
            self._vital_view(v)
            for v in self._rows(
                VitalSign, VitalSign.session_id == row.id, order=VitalSign.measured_at
            )
        ]
        alarms = self._rows(AlarmRecord, AlarmRecord.session_id == row.id)
        acks = {
            a.alarm_id: a
            for a in self._rows(
                AlarmAcknowledgement,
                AlarmAcknowledgement.alarm_id.in_([x.id for x in alarms] or [0]),
            )
        }
        view["all_alarms"] = [
            {
                **self._alarm_view(a),
                "ack": None
                if a.id not in acks
                else {
                    "by": acks[a.id].by,
                    "at": acks[a.id].at,
                    "reason": acks[a.id].reason,
                    "action_taken": acks[a.id].action_taken,
                },
            }
            for a in alarms
        ]
        view["generated_at"] = self._clock.now()
        self._audit(actor, "export", "infusion_session", row.id, {"part": "report"})
        return view

    # --- crash recovery --------------------------------------------------------------------------

    def recover_after_restart(self) -> list[int]:
        """Mark every session found infusing or paused as uncertain (pump unconfirmed)."""
        rows = self._rows(
            InfusionSession,
            InfusionSession.state.in_([s.value for s in _INFUSION_STATES]),
        )
        marked = []
        for row in rows:
            _, session = self._load(row.id)
            session.mark_uncertain(SYSTEM_ACTOR, RESTART_REASON)
            self._save(row, session)
            self._audit(SYSTEM_ACTOR, "mark_uncertain", "infusion_session", row.id)
            marked.append(row.id)
        return marked

    def open_session_ids(self) -> list[int]:
        """Sessions whose alarms the background ticker should watch."""
        active = [
            s.value
            for s in SessionState
            if s not in (SessionState.DISCHARGED, SessionState.ABORTED, SessionState.SCHEDULED)
        ]
        return list(
            self._db.execute(select(InfusionSession.id).where(InfusionSession.state.in_(active)))
            .scalars()
            .all()
        )

    def ensure_engine(self, session_id: int) -> None:
        """Build the session's alarm engine if this process has none yet."""
        if self._runtime.get(session_id) is None:
            row, session = self._load(session_id, lock=False)
            self._runtime.slot(self._uow, row, session)


def _vital_kind(kind: str, index: int) -> VitalKind:
    try:
        return VitalKind(kind)
    except ValueError:
        raise InputError(
            f"readings[{index}].kind must be one of {', '.join(k.value for k in VitalKind)}.",
            field=f"readings[{index}].kind",
        ) from None


def _program_from(pump: Mapping[str, Any]) -> Any:
    """A :class:`~ketaflow.dosing.pump.PumpProgram` rebuilt from its stored ``to_dict``."""
    from ketaflow.dosing.pump import PumpProgram

    return PumpProgram(
        order_id=pump["order_id"],
        mode=pump["mode"],
        concentration_mg_per_ml=pump["concentration_mg_per_ml"],
        resolution_ml_per_h=pump["resolution_ml_per_h"],
        rate_ml_per_h=pump["rate_ml_per_h"],
        rate_ml_per_h_exact=pump["rate_ml_per_h_exact"],
        vtbi_ml=pump["vtbi_ml"],
        vtbi_ml_exact=pump["vtbi_ml_exact"],
        ordered_dose_mg=pump["ordered_dose_mg"],
        delivered_dose_mg=pump["delivered_dose_mg"],
        ordered_rate_mg_per_h=pump["ordered_rate_mg_per_h"],
        delivered_rate_mg_per_h=pump["delivered_rate_mg_per_h"],
        ordered_duration_min=pump["ordered_duration_min"],
        delivered_duration_min=pump["delivered_duration_min"],
        dilution=None,
    )


__all__ = [
    "CLINICAL_ROLE_OF",
    "MAX_VITALS_BATCH",
    "SYSTEM_ACTOR",
    "TRANSITION_ACTIONS",
    "Baseline",
    "ClinicRuntime",
    "ClinicService",
    "ConflictError",
    "NewReading",
    "actor_of",
]
