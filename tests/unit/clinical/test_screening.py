from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest

from ketaflow.clinical.actors import Actor
from ketaflow.clinical.clock import ManualClock
from ketaflow.clinical.patient import (
    Allergy,
    HeightMeasurement,
    Medication,
    Patient,
    Sex,
    WeightMeasurement,
)
from ketaflow.clinical.screening import (
    ANSWER_CODES,
    FindingKind,
    ScreeningAnswers,
    ScreeningResult,
    can_schedule,
    default_screening_rules,
    screen,
)
from ketaflow.errors import AuthError, InputError

from ._helpers import T0, vitals

NO = {f.name: False for f in dataclasses.fields(ScreeningAnswers)}


def healthy(**kw: object) -> Patient:
    p = Patient(
        mrn="MRN-1",
        family_name="Doe",
        given_name="Jo",
        date_of_birth=date(1985, 6, 1),
        sex=Sex.FEMALE,
    )
    p = p.with_weight(WeightMeasurement(68.0, T0.date() - timedelta(days=3)))
    p = p.with_height(HeightMeasurement(170.0, date(2024, 1, 1)))
    return dataclasses.replace(p, **kw)  # type: ignore[arg-type]  # test overrides


def answers(**yes: bool) -> ScreeningAnswers:
    return ScreeningAnswers(**{**NO, **yes})


def codes(result: ScreeningResult, kind: FindingKind) -> set[str]:
    return {f.code for f in result.findings if f.kind is kind}


def test_clean_screening_can_schedule_and_records_decision(
    clock: ManualClock, physician: Actor
) -> None:
    r = screen(healthy(), answers(), decided_by=physician, clock=clock)
    assert r.findings == ()
    assert can_schedule(r)
    assert (r.decided_by, r.decided_at, r.patient_mrn) == ("md-1", T0, "MRN-1")


HARD = [
    "active_psychosis",
    "uncontrolled_hypertension",
    "unstable_cardiovascular_disease",
    "aneurysm_or_avm",
    "intracerebral_haemorrhage",
    "pregnancy",
    "severe_hepatic_disease",
    "active_ketamine_misuse",
    "ketamine_hypersensitivity",
]


@pytest.mark.parametrize("code", HARD)
def test_each_hard_stop_blocks_scheduling(code: str, clock: ManualClock, physician: Actor) -> None:
    r = screen(healthy(), answers(**{code: True}), decided_by=physician, clock=clock)
    assert codes(r, FindingKind.HARD_STOP) == {code}
    assert not can_schedule(r)


@pytest.mark.parametrize(
    "code",
    [
        "history_of_psychosis",
        "bipolar_without_mood_stabiliser",
        "controlled_hypertension",
        "moderate_hepatic_disease",
        "history_of_substance_misuse",
        "raised_intracranial_pressure",
        "raised_intraocular_pressure",
    ],
)
def test_soft_warnings_do_not_block(code: str, clock: ManualClock, physician: Actor) -> None:
    r = screen(healthy(), answers(**{code: True}), decided_by=physician, clock=clock)
    assert codes(r, FindingKind.SOFT_WARNING) == {code}
    assert can_schedule(r)


def test_recorded_ketamine_allergy_is_a_hard_stop(clock: ManualClock, physician: Actor) -> None:
    p = healthy().with_allergy(Allergy("Ketamine", reaction="rash"))
    r = screen(p, answers(), decided_by=physician, clock=clock)
    assert codes(r, FindingKind.HARD_STOP) == {"ketamine_hypersensitivity"}


@pytest.mark.parametrize(
    ("sbp", "dbp", "hard", "soft"),
    [
        (130, 85, set(), set()),
        (145, 85, set(), {"screening_bp_elevated"}),
        (135, 92, set(), {"screening_bp_elevated"}),
        (182, 95, {"screening_bp_above_stop"}, set()),
        (170, 112, {"screening_bp_above_stop"}, set()),
    ],
)
def test_screening_blood_pressure(
    sbp: float, dbp: float, hard: set[str], soft: set[str], clock: ManualClock, physician: Actor
) -> None:
    r = screen(
        healthy(),
        answers(),
        decided_by=physician,
        clock=clock,
        screening_vitals=vitals(T0, sbp=sbp, dbp=dbp),
    )
    assert codes(r, FindingKind.HARD_STOP) == hard
    assert codes(r, FindingKind.SOFT_WARNING) == soft


def test_computed_soft_warnings(clock: ManualClock, physician: Actor) -> None:
    p = healthy(date_of_birth=date(1955, 1, 1), medications=(Medication("clonazepam"),))
    p = p.with_weight(WeightMeasurement(95.0, T0.date()))  # BMI 95/1.7^2 = 32.9
    r = screen(p, answers(), decided_by=physician, clock=clock)
    soft = codes(r, FindingKind.SOFT_WARNING)
    assert soft == {"bmi_dosing_note", "age_older", "interacting_medication"}
    assert can_schedule(r)
    detail = next(f.detail for f in r.findings if f.code == "bmi_dosing_note")
    assert detail == "BMI 32.9 kg/m2"


def test_minor_missing_and_outdated_weight(clock: ManualClock, physician: Actor) -> None:
    young = healthy(date_of_birth=date(2010, 1, 1))
    assert "age_below_adult" in codes(
        screen(young, answers(), decided_by=physician, clock=clock), FindingKind.SOFT_WARNING
    )
    no_weight = healthy(weights=())
    assert "weight_missing" in codes(
        screen(no_weight, answers(), decided_by=physician, clock=clock), FindingKind.SOFT_WARNING
    )
    old = healthy(weights=(WeightMeasurement(68.0, T0.date() - timedelta(days=31)),))
    assert "weight_outdated" in codes(
        screen(old, answers(), decided_by=physician, clock=clock), FindingKind.SOFT_WARNING
    )


def test_only_a_physician_decides(clock: ManualClock, nurse: Actor) -> None:
    with pytest.raises(AuthError):
        screen(healthy(), answers(), decided_by=nurse, clock=clock)


def test_hard_stop_questions_must_be_answered() -> None:
    partial = {k: v for k, v in NO.items() if k != "pregnancy"}
    with pytest.raises(TypeError):
        ScreeningAnswers(**partial)
    with pytest.raises(InputError) as err:
        ScreeningAnswers(**{**NO, "pregnancy": None})  # type: ignore[arg-type]  # None = unanswered
    assert err.value.field == "screening.pregnancy"


def test_every_criterion_has_text_and_source() -> None:
    rules = default_screening_rules()
    for c in rules.criteria.values():
        assert c.text
        assert c.source
    for code in ANSWER_CODES:
        assert code in rules.criteria
