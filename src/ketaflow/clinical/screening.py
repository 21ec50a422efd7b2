"""Screening before a course is scheduled: hard stops and soft warnings, decided by a physician.

A clinician answers :class:`ScreeningAnswers` (every hard-stop question must be answered yes or
no; none may be left blank). :func:`screen` adds what it can compute itself (screening blood
pressure, BMI, age, weight date, interacting medications, a recorded ketamine allergy) and
returns a :class:`ScreeningResult` that records who decided and when. ``can_schedule(result)``
is False on any hard stop. Criteria texts, kinds and sources are data
(``clinical/data/screening.toml``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from ketaflow.clinical._data import check_keys, get_number, get_str, read_packaged
from ketaflow.clinical.actors import Actor, Role, require_role
from ketaflow.clinical.clock import Clock
from ketaflow.clinical.patient import Patient
from ketaflow.clinical.vitals import VitalKind, VitalSet
from ketaflow.errors import InputError, ProtocolError


class FindingKind(Enum):
    """Whether a finding blocks scheduling."""

    HARD_STOP = "hard_stop"
    SOFT_WARNING = "soft_warning"


@dataclass(frozen=True, slots=True)
class Criterion:
    """A screening criterion from ``screening.toml``."""

    code: str
    kind: FindingKind
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class ScreeningThresholds:
    """Numbers used by the computed criteria (``[thresholds]`` in ``screening.toml``)."""

    bp_stop_sbp_mmhg: float
    bp_stop_dbp_mmhg: float
    bp_caution_sbp_mmhg: float
    bp_caution_dbp_mmhg: float
    bmi_note_min_kg_per_m2: float
    age_adult_min_y: float
    age_older_min_y: float
    weight_max_age_days: float


@dataclass(frozen=True, slots=True)
class ScreeningRules:
    """All criteria and thresholds."""

    criteria: Mapping[str, Criterion]
    thresholds: ScreeningThresholds


@dataclass(frozen=True, slots=True)
class ScreeningAnswers:
    """The clinician's answers. Hard-stop questions have no default: each must be answered."""

    active_psychosis: bool
    uncontrolled_hypertension: bool
    unstable_cardiovascular_disease: bool
    aneurysm_or_avm: bool
    intracerebral_haemorrhage: bool
    pregnancy: bool
    severe_hepatic_disease: bool
    active_ketamine_misuse: bool
    ketamine_hypersensitivity: bool
    history_of_psychosis: bool = False
    bipolar_without_mood_stabiliser: bool = False
    controlled_hypertension: bool = False
    moderate_hepatic_disease: bool = False
    history_of_substance_misuse: bool = False
    raised_intracranial_pressure: bool = False
    raised_intraocular_pressure: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, bool):
                raise InputError(
                    f"screening.{f.name}: answer yes (true) or no (false), got {value!r}",
                    field=f"screening.{f.name}",
                )


#: Criteria whose finding comes from a ScreeningAnswers field of the same name.
ANSWER_CODES = tuple(f.name for f in dataclasses.fields(ScreeningAnswers))
#: Criteria that screen() computes from the patient record and screening vitals.
COMPUTED_CODES = (
    "screening_bp_above_stop",
    "screening_bp_elevated",
    "bmi_dosing_note",
    "age_below_adult",
    "age_older",
    "interacting_medication",
    "weight_outdated",
    "weight_missing",
)


def parse_screening_rules(data: Mapping[str, Any], where: str) -> ScreeningRules:
    """Validate a decoded screening TOML document."""
    check_keys(data, ("criteria", "thresholds"), (), where)
    criteria: dict[str, Criterion] = {}
    for code, t in data["criteria"].items():
        cw = f"{where} [criteria.{code}]"
        check_keys(t, ("kind", "text", "source"), (), cw)
        kind_text = get_str(t, "kind", cw)
        try:
            kind = FindingKind(kind_text)
        except ValueError:
            raise ProtocolError(f"{cw}: kind must be 'hard_stop' or 'soft_warning'") from None
        criteria[code] = Criterion(code, kind, get_str(t, "text", cw), get_str(t, "source", cw))
    expected = set(ANSWER_CODES) | set(COMPUTED_CODES)
    if set(criteria) != expected:
        missing = sorted(expected - set(criteria))
        extra = sorted(set(criteria) - expected)
        raise ProtocolError(f"{where}: criteria mismatch; missing {missing}, unknown {extra}")
    tw = f"{where} [thresholds]"
    th = data["thresholds"]
    names = [f.name for f in dataclasses.fields(ScreeningThresholds)]
    check_keys(th, names, (), tw)
    thresholds = ScreeningThresholds(**{n: get_number(th, n, tw, minimum=0) for n in names})
    return ScreeningRules(criteria, thresholds)


@cache
def default_screening_rules() -> ScreeningRules:
    """The shipped criteria (``clinical/data/screening.toml``)."""
    return parse_screening_rules(read_packaged("screening.toml"), "screening.toml")


@dataclass(frozen=True, slots=True)
class Finding:
    """One hard stop or soft warning, with the detail that triggered it."""

    code: str
    kind: FindingKind
    text: str
    source: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    """The outcome of a screening, with who decided and when."""

    patient_mrn: str
    findings: tuple[Finding, ...]
    decided_by: str
    decided_role: Role
    decided_at: datetime
    answers: ScreeningAnswers
    notes: str = ""

    @property
    def hard_stops(self) -> tuple[Finding, ...]:
        """Findings that block scheduling."""
        return tuple(f for f in self.findings if f.kind is FindingKind.HARD_STOP)

    @property
    def soft_warnings(self) -> tuple[Finding, ...]:
        """Findings the physician must see but that do not block scheduling."""
        return tuple(f for f in self.findings if f.kind is FindingKind.SOFT_WARNING)


def can_schedule(result: ScreeningResult) -> bool:
    """False when the screening has any hard stop."""
    return not result.hard_stops


_KETAMINE_NAMES = ("ketamine", "esketamine", "ketalar", "spravato")


def screen(
    patient: Patient,
    answers: ScreeningAnswers,
    *,
    decided_by: Actor,
    clock: Clock,
    screening_vitals: VitalSet | None = None,
    notes: str = "",
    rules: ScreeningRules | None = None,
) -> ScreeningResult:
    """Evaluate every criterion and record the physician's decision (time from ``clock``).

    Only a physician may decide (AuthError otherwise): eligibility is a medical judgement.
    """
    require_role(decided_by, {Role.PHYSICIAN}, "screening decision")
    if not isinstance(answers, ScreeningAnswers):
        raise InputError("answers: must be ScreeningAnswers", field="answers")
    r = default_screening_rules() if rules is None else rules
    th = r.thresholds
    now = clock.now()
    found: list[tuple[str, str]] = []
    for code in ANSWER_CODES:
        if getattr(answers, code):
            found.append((code, "answered yes"))

    allergy_hits = [
        a.substance
        for a in patient.allergies
        if any(n in a.substance.lower() for n in _KETAMINE_NAMES)
    ]
    if allergy_hits and not answers.ketamine_hypersensitivity:
        found.append(("ketamine_hypersensitivity", f"recorded allergy: {allergy_hits[0]}"))

    if screening_vitals is not None:
        sbp = screening_vitals.value(VitalKind.SBP)
        dbp = screening_vitals.value(VitalKind.DBP)
        if sbp is not None and dbp is not None:
            bp = f"{sbp:g}/{dbp:g} mmHg"
            if sbp >= th.bp_stop_sbp_mmhg or dbp >= th.bp_stop_dbp_mmhg:
                found.append(
                    (
                        "screening_bp_above_stop",
                        f"{bp} (stop at {th.bp_stop_sbp_mmhg:g}/{th.bp_stop_dbp_mmhg:g})",
                    )
                )
            elif sbp > th.bp_caution_sbp_mmhg or dbp > th.bp_caution_dbp_mmhg:
                found.append(("screening_bp_elevated", bp))

    bmi = patient.bmi_kg_per_m2()
    if bmi is not None and bmi >= th.bmi_note_min_kg_per_m2:
        found.append(("bmi_dosing_note", f"BMI {bmi:.1f} kg/m2"))

    age = patient.age_years(on=now.date())
    if age < th.age_adult_min_y:
        found.append(("age_below_adult", f"age {age} y"))
    elif age >= th.age_older_min_y:
        found.append(("age_older", f"age {age} y"))

    for flag in patient.interaction_flags():
        found.append(("interacting_medication", f"{flag.medication}: {flag.class_name}"))

    weight_age = patient.weight_age_days(on=now.date())
    if weight_age is None:
        found.append(("weight_missing", "no weight recorded"))
    elif weight_age > th.weight_max_age_days:
        found.append(("weight_outdated", f"latest weight is {weight_age} days old"))

    findings = tuple(
        Finding(
            code=code,
            kind=r.criteria[code].kind,
            text=r.criteria[code].text,
            source=r.criteria[code].source,
            detail=detail,
        )
        for code, detail in found
    )
    return ScreeningResult(
        patient_mrn=patient.mrn,
        findings=findings,
        decided_by=decided_by.user_id,
        decided_role=decided_by.role,
        decided_at=now,
        answers=answers,
        notes=notes,
    )
