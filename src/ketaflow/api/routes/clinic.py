"""The clinic endpoints: patient record extras, screening, courses, infusion sessions, vitals,
alarms, check-ins, scales, discharge and the session report (see docs/api.md).

Each route authorises with one ``require(...)``, maps the principal onto a clinical
:class:`~ketaflow.clinical.Actor`, and calls :class:`~ketaflow.services.clinic.ClinicService`
inside the request's one transaction, committed before the answer is sent.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from ketaflow.api.deps import (
    ClinicServiceDep,
    ContextDep,
    IdPath,
    UowDep,
    require,
    require_own_transaction,
)
from ketaflow.api.schemas import KioskTokenOut
from ketaflow.api.security import token_from
from ketaflow.clinical import Actor
from ketaflow.dosing.library import load_library
from ketaflow.dosing.protocols import list_protocols
from ketaflow.dosing.pump import BlindEntry
from ketaflow.services.auth import Principal
from ketaflow.services.clinic import (
    MAX_VITALS_BATCH,
    Baseline,
    ClinicService,
    NewReading,
    actor_of,
)
from ketaflow.services.codec import to_jsonable
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

router = APIRouter(tags=["clinic"])

CLINICIANS: Final = (Role.NURSE, Role.PHYSICIAN)
STAFF: Final = (Role.FRONT_DESK, Role.NURSE, Role.PHYSICIAN)
PHYSICIAN: Final = (Role.PHYSICIAN,)

Clinician = Annotated[Principal, require(*CLINICIANS)]
Staff = Annotated[Principal, require(*STAFF)]
Physician = Annotated[Principal, require(*PHYSICIAN)]
KioskOrNurse = Annotated[
    Principal, require(Role.KIOSK, Role.NURSE, Role.PHYSICIAN, session_param="session_id")
]
KioskOnly = Annotated[Principal, require(Role.KIOSK, session_param="session_id")]

Reason = Annotated[str, Field(max_length=500)]
Text = Annotated[str, Field(max_length=2000)]
Answer = dict[str, Any]

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def _actor(principal: Principal) -> Actor:
    return actor_of(principal.role, principal.actor)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul_characters(self) -> _Body:
        # PostgreSQL text cannot hold NUL; refuse it here (422) rather than at the database.
        for name, value in self:
            texts = [value] if isinstance(value, str) else []
            if isinstance(value, dict):
                texts = [k for k in value if isinstance(k, str)]
            if any("\x00" in t for t in texts):
                raise ValueError(f"{name} must not contain NUL characters")
        return self


class HeightCreate(_Body):
    height_cm: float = Field(gt=0, lt=300)
    measured_on: date


class AllergyCreate(_Body):
    substance: str = Field(min_length=1, max_length=200)
    reaction: str = Field(default="", max_length=500)
    severity: Literal["mild", "moderate", "severe", "anaphylaxis", "unknown"] = "unknown"


class MedicationCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    dose_text: str = Field(default="", max_length=200)


class ScreeningCreate(_Body):
    findings: dict[Annotated[str, Field(max_length=64)], bool] = Field(max_length=64)
    notes: Text = ""


class GoalIn(_Body):
    scale: str = Field(min_length=1, max_length=32)
    kind: Literal["response", "remission", "target_total"]
    target_total: float | None = Field(default=None, ge=0, le=1000)


class CourseCreate(_Body):
    indication: str = Field(min_length=1, max_length=32)
    protocol: str = Field(min_length=1, max_length=64)
    planned_sessions: int = Field(ge=1, le=100)
    goal: GoalIn


class SessionCreate(_Body):
    scheduled_for: datetime
    chair: str = Field(min_length=1, max_length=32)


class TransitionIn(_Body):
    action: Literal[
        "check_in",
        "start_pre_assessment",
        "mark_ready",
        "reopen_assessment",
        "complete",
        "stop",
        "start_recovery",
        "abort",
    ]
    reason: Reason = ""


class BaselineIn(_Body):
    sbp_mmhg: float = Field(ge=0, le=400)
    dbp_mmhg: float = Field(ge=0, le=300)
    hr_per_min: float = Field(ge=0, le=400)
    spo2_percent: float = Field(ge=0, le=100)
    rr_per_min: float | None = Field(default=None, ge=0, le=100)


class PreAssessmentIn(_Body):
    fasting_confirmed: bool
    consent_confirmed: bool
    escort_name: str = Field(default="", max_length=100)
    baseline: BaselineIn
    notes: Text = ""


class OverrideIn(_Body):
    reason: Reason


class OrderIn(_Body):
    dose_text: str | None = Field(default=None, min_length=1, max_length=200)
    concentration_mg_per_ml: float | None = Field(default=None, gt=0, le=1000)
    override: OverrideIn | None = None


class DoubleCheckIn(_Body):
    rate_ml_per_h: float | None = Field(default=None, ge=0, le=10_000)
    vtbi_ml: float = Field(ge=0, le=10_000)
    concentration_mg_per_ml: float = Field(gt=0, le=1000)
    dose_mg: float = Field(ge=0, le=100_000)


class ReasonIn(_Body):
    reason: Reason = ""


class ResumeIn(_Body):
    reason: Reason = ""
    rate_mg_per_h: float | None = Field(default=None, gt=0, le=10_000)


class RateIn(_Body):
    rate_mg_per_h: float = Field(gt=0, le=10_000)
    reason: Reason
    override: OverrideIn | None = None


class ConfirmPumpIn(_Body):
    running: bool
    volume_delivered_ml: float | None = Field(default=None, ge=0, le=10_000)
    rate_mg_per_h: float | None = Field(default=None, ge=0, le=10_000)
    finished: bool = False
    note: Reason = ""


class WhatIfIn(_Body):
    rate_mg_per_h: float | None = Field(default=None, ge=0, le=10_000)
    pause_min: float | None = Field(default=None, gt=0, le=1440)
    horizon_min: float = Field(default=30.0, gt=0, le=1440)


class ReadingIn(_Body):
    kind: str = Field(min_length=1, max_length=8)
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=16)
    measured_at: datetime
    source: Literal["manual", "device"] = "manual"
    reading_id: str | None = Field(default=None, min_length=1, max_length=64)
    device_id: str | None = Field(default=None, max_length=64)


class ReadingsIn(_Body):
    readings: list[ReadingIn] = Field(min_length=1, max_length=MAX_VITALS_BATCH)


class AckIn(_Body):
    reason: Reason
    action_taken: str | None = Field(default=None, max_length=32)


class CheckInIn(_Body):
    comfort: int | None = Field(default=None, ge=0, le=10)
    intensity: int | None = Field(default=None, ge=0, le=10)
    anxiety: int | None = Field(default=None, ge=0, le=10)
    nausea: int | None = Field(default=None, ge=0, le=10)
    need_help: bool = False
    note: str = Field(default="", max_length=500)


class ScaleIn(_Body):
    scale: str = Field(min_length=1, max_length=32)
    items: list[int] = Field(max_length=100)
    timing: Literal["pre", "during", "post"] = "post"


class DischargeIn(_Body):
    escort_confirmed: bool
    no_driving_acknowledged: bool
    override: OverrideIn | None = None


def _reading(r: ReadingIn) -> NewReading:
    return NewReading(
        kind=r.kind,
        value=r.value,
        unit=r.unit,
        measured_at=r.measured_at,
        source=r.source,
        reading_id=r.reading_id,
        device_id=r.device_id,
    )


# --- patient record ------------------------------------------------------------------------------


@router.get("/patients/{patient_id}/clinical")
def patient_clinical(patient_id: IdPath, principal: Staff, clinic: ClinicServiceDep) -> Answer:
    """Heights, allergies, medications with interaction flags, latest screening, courses."""
    return clinic.clinical_record(_actor(principal), patient_id)


@router.post("/patients/{patient_id}/heights", status_code=status.HTTP_201_CREATED)
def add_height(
    patient_id: IdPath, body: HeightCreate, principal: Staff, clinic: ClinicServiceDep
) -> Answer:
    """Record a body height (cm)."""
    return clinic.add_height(_actor(principal), patient_id, body.height_cm, body.measured_on)


@router.post("/patients/{patient_id}/allergies", status_code=status.HTTP_201_CREATED)
def add_allergy(
    patient_id: IdPath, body: AllergyCreate, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Record an allergy."""
    return clinic.add_allergy(
        _actor(principal), patient_id, body.substance, body.reaction, body.severity
    )


@router.post("/patients/{patient_id}/medications", status_code=status.HTTP_201_CREATED)
def add_medication(
    patient_id: IdPath, body: MedicationCreate, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Record a current medication; the answer carries its interaction flags."""
    return clinic.add_medication(_actor(principal), patient_id, body.name, body.dose_text)


@router.post("/patients/{patient_id}/screenings", status_code=status.HTTP_201_CREATED)
def add_screening(
    patient_id: IdPath, body: ScreeningCreate, principal: Physician, clinic: ClinicServiceDep
) -> Answer:
    """Screen the patient (a physician decides); hard stops block course planning."""
    return clinic.record_screening(_actor(principal), patient_id, body.findings, body.notes)


@router.post("/patients/{patient_id}/courses", status_code=status.HTTP_201_CREATED)
def create_course(
    patient_id: IdPath, body: CourseCreate, principal: Physician, clinic: ClinicServiceDep
) -> Answer:
    """Plan a course of sessions (409 while the latest screening has a hard stop)."""
    return clinic.create_course(
        _actor(principal),
        patient_id,
        indication=body.indication,
        protocol=body.protocol,
        planned_sessions=body.planned_sessions,
        goal_scale=body.goal.scale,
        goal_kind=body.goal.kind,
        goal_target_total=body.goal.target_total,
    )


@router.get("/courses/{course_id}")
def get_course(course_id: IdPath, principal: Clinician, clinic: ClinicServiceDep) -> Answer:
    """The course, its sessions with dose and scales, response/remission per scale."""
    return clinic.get_course(_actor(principal), course_id)


@router.get("/protocols")
def protocols(principal: Staff) -> list[Answer]:
    """The treatment protocols (read-only)."""
    return [
        {
            "name": p.name,
            "title": p.title,
            "version": p.version,
            "care_area": p.care_area,
            "indication": p.indication,
            "dose_text": p.dose_text,
            "standard_concentration_mg_per_ml": p.standard_concentration_mg_per_ml,
            "sessions": p.course.sessions,
        }
        for p in list_protocols()
    ]


@router.get("/drug-library")
def drug_library(principal: Staff) -> Answer:
    """The drug library: care areas, concentrations and limits (read-only)."""
    lib = load_library()
    data = to_jsonable(lib)
    assert isinstance(data, dict)
    return data


# --- sessions -------------------------------------------------------------------------------------


@router.post("/courses/{course_id}/sessions", status_code=status.HTTP_201_CREATED)
def create_session(
    course_id: IdPath, body: SessionCreate, principal: Staff, clinic: ClinicServiceDep
) -> Answer:
    """Schedule a session of the course."""
    return clinic.create_session(
        _actor(principal), course_id, scheduled_for=body.scheduled_for, chair=body.chair
    )


@router.get("/sessions")
def session_board(
    principal: Staff, clinic: ClinicServiceDep, day: Annotated[date, Query(alias="date")]
) -> list[Answer]:
    """The board of one day (UTC): chair, patient, state, elapsed, alarms by priority."""
    return clinic.board(_actor(principal), day)


@router.get("/sessions/{session_id}")
def get_session(session_id: IdPath, principal: Staff, clinic: ClinicServiceDep) -> Answer:
    """The full session with its allowed actions (each with enabled and reason)."""
    return clinic.get_session(_actor(principal), session_id)


@router.post("/sessions/{session_id}/transitions")
def transition(
    session_id: IdPath, body: TransitionIn, principal: Staff, clinic: ClinicServiceDep
) -> Answer:
    """Move the session (check in, start pre-assessment, complete, recovery, abort ...)."""
    return clinic.transition(_actor(principal), session_id, body.action, body.reason)


@router.post("/sessions/{session_id}/pre-assessment")
def pre_assessment(
    session_id: IdPath, body: PreAssessmentIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Record the pre-assessment and baseline vitals."""
    b = body.baseline
    return clinic.pre_assessment(
        _actor(principal),
        session_id,
        fasting_confirmed=body.fasting_confirmed,
        consent_confirmed=body.consent_confirmed,
        escort_name=body.escort_name,
        baseline=Baseline(b.sbp_mmhg, b.dbp_mmhg, b.hr_per_min, b.spo2_percent, b.rr_per_min),
        notes=body.notes,
    )


@router.post("/sessions/{session_id}/order", status_code=status.HTTP_201_CREATED)
def write_order(
    session_id: IdPath, body: OrderIn, principal: Physician, clinic: ClinicServiceDep
) -> Answer:
    """Write the order (default: protocol and titration), checked against the drug library."""
    return clinic.write_order(
        _actor(principal),
        session_id,
        dose_text=body.dose_text,
        concentration_mg_per_ml=body.concentration_mg_per_ml,
        override_reason=None if body.override is None else body.override.reason,
    )


@router.post("/sessions/{session_id}/order/verify")
def verify_order(session_id: IdPath, principal: Physician, clinic: ClinicServiceDep) -> Answer:
    """A physician verifies the order."""
    return clinic.verify_order(_actor(principal), session_id)


@router.post("/sessions/{session_id}/order/double-check")
def double_check(
    session_id: IdPath, body: DoubleCheckIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Blind re-entry of the pump numbers by a second clinician; a mismatch blocks the start."""
    entry = BlindEntry(body.rate_ml_per_h, body.vtbi_ml, body.concentration_mg_per_ml, body.dose_mg)
    return clinic.double_check_order(_actor(principal), session_id, entry)


@router.post("/sessions/{session_id}/start")
def start(
    session_id: IdPath,
    principal: Clinician,
    clinic: ClinicServiceDep,
    body: ReasonIn | None = None,
) -> Answer:
    """The pump was started (the session must be ready)."""
    return clinic.start(_actor(principal), session_id, "" if body is None else body.reason)


@router.post("/sessions/{session_id}/pause")
def pause(
    session_id: IdPath, body: ReasonIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """The pump was paused (reason required)."""
    return clinic.pause(_actor(principal), session_id, body.reason)


@router.post("/sessions/{session_id}/resume")
def resume(
    session_id: IdPath, body: ResumeIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """The pump was restarted."""
    return clinic.resume(_actor(principal), session_id, body.reason, body.rate_mg_per_h)


@router.post("/sessions/{session_id}/rate")
def change_rate(
    session_id: IdPath, body: RateIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Record a rate change; drug-library limits are checked first."""
    return clinic.change_rate(
        _actor(principal),
        session_id,
        body.rate_mg_per_h,
        body.reason,
        None if body.override is None else body.override.reason,
    )


@router.post("/sessions/{session_id}/confirm-pump")
def confirm_pump(
    session_id: IdPath, body: ConfirmPumpIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """After a restart: what the pump shows; the session continues from there."""
    return clinic.confirm_pump(
        _actor(principal),
        session_id,
        running=body.running,
        volume_delivered_ml=body.volume_delivered_ml,
        rate_mg_per_h=body.rate_mg_per_h,
        finished=body.finished,
        note=body.note,
    )


@router.get("/sessions/{session_id}/prediction")
def prediction(
    session_id: IdPath,
    principal: Clinician,
    clinic: ClinicServiceDep,
    horizon_min: Annotated[float, Query(gt=0, le=1440)] = 30.0,
) -> Answer:
    """Predicted concentrations from what was actually given."""
    return clinic.prediction(_actor(principal), session_id, horizon_min)


@router.post("/sessions/{session_id}/what-if")
def what_if(
    session_id: IdPath, body: WhatIfIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """What a rate change or a pause would do (not saved)."""
    return clinic.what_if(
        _actor(principal),
        session_id,
        rate_mg_per_h=body.rate_mg_per_h,
        pause_min=body.pause_min,
        horizon_min=body.horizon_min,
    )


# --- vitals, alarms ------------------------------------------------------------------------------


@router.post("/sessions/{session_id}/vitals", status_code=status.HTTP_201_CREATED)
async def post_vitals(
    session_id: IdPath,
    body: ReadingIn | ReadingsIn,
    principal: Annotated[Principal, require_own_transaction(*CLINICIANS)],
    context: ContextDep,
    request: Request,
) -> Answer:
    """One reading or ``{readings: [...]}``; stored and committed before the answer.

    The hot path of the bedside feed: authentication and the work each run in one short
    transaction inside one worker-thread call (see ``OwnTransactionRequirement``).
    """
    readings = [_reading(r) for r in ([body] if isinstance(body, ReadingIn) else body.readings)]
    token = token_from(request)

    def work() -> Answer:
        with UnitOfWork(context.session_factory) as uow:
            # Again, with the idle-timeout touch, in the same transaction as the readings.
            current = context.auth.authenticate(uow, token)
            service = ClinicService(uow, context.clock, context.broker, context.clinic)
            return service.record_vitals(_actor(current), session_id, readings)

    return await run_in_threadpool(work)


@router.get("/sessions/{session_id}/vitals")
def list_vitals(
    session_id: IdPath,
    principal: Clinician,
    clinic: ClinicServiceDep,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 2000,
) -> list[Answer]:
    """Readings of the session, oldest first (at most ``limit``; page on with ``since``)."""
    return clinic.list_vitals(_actor(principal), session_id, since, limit)


@router.get("/sessions/{session_id}/alarms")
def list_alarms(session_id: IdPath, principal: Clinician, clinic: ClinicServiceDep) -> list[Answer]:
    """Every alarm of the session, newest first."""
    return clinic.list_alarms(_actor(principal), session_id)


@router.post("/alarms/{alarm_id}/acknowledge")
def acknowledge(
    alarm_id: IdPath, body: AckIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Acknowledge an alarm with a reason."""
    return clinic.acknowledge_alarm(_actor(principal), alarm_id, body.reason, body.action_taken)


# --- patient, scales, discharge, report ----------------------------------------------------------


@router.post("/sessions/{session_id}/checkins", status_code=status.HTTP_201_CREATED)
def post_checkin(
    session_id: IdPath, body: CheckInIn, principal: KioskOrNurse, clinic: ClinicServiceDep
) -> Answer:
    """A patient check-in (kiosk bound to this session, or a nurse)."""
    return clinic.check_in(
        _actor(principal),
        session_id,
        comfort=body.comfort,
        intensity=body.intensity,
        anxiety=body.anxiety,
        nausea=body.nausea,
        need_help=body.need_help,
        note=body.note,
    )


@router.get("/sessions/{session_id}/kiosk")
def kiosk_view(session_id: IdPath, principal: KioskOnly, clinic: ClinicServiceDep) -> Answer:
    """What the patient's tablet shows: the session state and its check-ins."""
    view = clinic.get_session(_actor(principal), session_id)
    return {"id": view["id"], "state": view["state"], "checkins": view["checkins"]}


@router.post("/sessions/{session_id}/scales", status_code=status.HTTP_201_CREATED)
def post_scale(
    session_id: IdPath, body: ScaleIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Score a rating scale; flags become alarms."""
    return clinic.record_scale(_actor(principal), session_id, body.scale, body.items, body.timing)


@router.post("/sessions/{session_id}/discharge")
def discharge(
    session_id: IdPath, body: DischargeIn, principal: Clinician, clinic: ClinicServiceDep
) -> Answer:
    """Discharge on met criteria, or early on a physician's override with a reason."""
    return clinic.discharge(
        _actor(principal),
        session_id,
        escort_confirmed=body.escort_confirmed,
        no_driving_acknowledged=body.no_driving_acknowledged,
        override_reason=None if body.override is None else body.override.reason,
    )


@router.post(
    "/sessions/{session_id}/kiosk-token",
    response_model=KioskTokenOut,
    status_code=status.HTTP_201_CREATED,
)
def kiosk_token(
    session_id: IdPath, principal: Clinician, uow: UowDep, context: ContextDep
) -> KioskTokenOut:
    """A token for the patient tablet, bound to this session."""
    issued = context.auth.issue_kiosk_token(uow, principal, session_id)
    return KioskTokenOut(
        token=issued.token, expires_at=issued.expires_at, bound_session_id=session_id
    )


@router.get("/sessions/{session_id}/report", response_class=HTMLResponse)
def report(session_id: IdPath, principal: Clinician, clinic: ClinicServiceDep) -> HTMLResponse:
    """The printable session report (HTML)."""
    data = clinic.report_data(_actor(principal), session_id)
    html = _TEMPLATES.get_template("session_report.html").render(s=data)
    return HTMLResponse(html)
