"""The classic dosing errors, table-driven: each case must give its own code and message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from dosing_helpers import NOW, TODAY, make_order

from ketaflow.dosing.checks import (
    Finding,
    FindingCode,
    Severity,
    WeightRecord,
    check_dose_text_units,
    check_weight_entry,
    run_checks,
)
from ketaflow.dosing.library import load_library
from ketaflow.dosing.orders import DoseOrder


@dataclass(frozen=True)
class Case:
    """One row of the dosing-error table."""

    id: str
    text: str = "0.5 mg/kg over 40 min"
    weight_kg: float = 70.0
    height_cm: float = 175.0
    area: str = "depression_suite"
    concentration: float = 1.0
    prepared: float | None = None
    history: Sequence[WeightRecord] = ()
    existing: Sequence[str] = ()  # dose texts of existing orders for the same patient
    existing_start_offset_min: float = 0.0
    measured_days_ago: int = 2
    checked_days_later: int = 0
    expect: FindingCode | None = None
    severity: Severity | None = None
    fragments: tuple[str, ...] = field(default_factory=tuple)


def _run(case: Case) -> tuple[Finding, ...]:
    order = make_order(
        case.text,
        weight_kg=case.weight_kg,
        height_cm=case.height_cm,
        measured_on=TODAY - timedelta(days=case.measured_days_ago),
        order_id="o-new",
        patient_ref="p-1",
    )
    existing: list[DoseOrder] = [
        make_order(
            text,
            order_id=f"o-old-{i}",
            patient_ref="p-1",
            scheduled_start=NOW + timedelta(minutes=case.existing_start_offset_min),
        )
        for i, text in enumerate(case.existing)
    ]
    now: datetime = NOW + timedelta(days=case.checked_days_later)
    return run_checks(
        order,
        care_area=load_library().care_area(case.area),
        concentration_mg_per_ml=case.concentration,
        prepared_mg_per_ml=case.prepared,
        existing_orders=existing,
        weight_history=case.history,
        now=now,
        max_weight_age_days=30.0,
    )


ERROR_TABLE = [
    Case(
        "decimal slip: 5 mg/kg for 0.5",
        text="5 mg/kg over 40 min",
        expect=FindingCode.DECIMAL_SLIP,
        severity=Severity.BLOCK,
        fragments=("session dose 5 mg/kg is 10 times the usual 0.5 mg/kg", "0.5 mg/kg?"),
    ),
    Case(
        "decimal slip: 0.05 mg/kg for 0.5",
        text="0.05 mg/kg over 40 min",
        expect=FindingCode.DECIMAL_SLIP,
        severity=Severity.WARNING,
        fragments=("10 times less than the usual 0.5 mg/kg", "did you mean 0.5 mg/kg?"),
    ),
    Case(
        "decimal slip in the duration: over 4 min for 40",
        text="0.5 mg/kg over 4 min",
        expect=FindingCode.DECIMAL_SLIP,
        severity=Severity.BLOCK,
        fragments=("infusion rate 7.5 mg/kg/h is 10 times the usual 0.75 mg/kg/h", "duration"),
    ),
    Case(
        "decimal slip in a pain rate: 3.5 mg/kg/h for 0.35",
        text="3.5 mg/kg/h for 4 h",
        area="pain_suite",
        expect=FindingCode.DECIMAL_SLIP,
        severity=Severity.BLOCK,
        fragments=("10 times the usual 1.4 mg/kg",),
    ),
    Case(
        "decimal slip in a pain bolus: 1.5 mg/kg for 0.15",
        text="bolus 1.5 mg/kg",
        area="pain_suite",
        expect=FindingCode.DECIMAL_SLIP,
        severity=Severity.BLOCK,
        fragments=("bolus 1.5 mg/kg is 10 times the usual 0.15 mg/kg",),
    ),
    Case(
        "mg entered as mg/kg in a pain bolus: 10.5 mg/kg",
        text="bolus 10.5 mg/kg",
        area="pain_suite",
        expect=FindingCode.MG_AS_MG_PER_KG,
        severity=Severity.BLOCK,
        fragments=("10.5 mg/kg looks like a total in mg",),
    ),
    Case(
        "mg entered as mg/kg: 35 mg/kg for 35 mg",
        text="35 mg/kg over 40 min",
        expect=FindingCode.MG_AS_MG_PER_KG,
        severity=Severity.BLOCK,
        fragments=("35 mg/kg looks like a total in mg", "35 mg is 0.5 mg/kg", "2450 mg"),
    ),
    Case(
        "mg/h entered as mg/kg/h: 52.5 mg/kg/h",
        text="52.5 mg/kg/h for 40 min",
        expect=FindingCode.MG_AS_MG_PER_KG,
        severity=Severity.BLOCK,
        fragments=("looks like a total in mg",),
    ),
    Case(
        "mg/kg entered as mg: 0.5 mg for 0.5 mg/kg",
        text="0.5 mg over 40 min",
        expect=FindingCode.MG_PER_KG_AS_MG,
        severity=Severity.WARNING,
        fragments=("did you mean '0.5 mg/kg' (35.0 mg)?",),
    ),
    Case(
        "weight in lb entered as kg (history)",
        weight_kg=154.0,
        history=(WeightRecord(70.0, TODAY - timedelta(days=9)),),
        expect=FindingCode.WEIGHT_LB_AS_KG,
        severity=Severity.BLOCK,
        fragments=("2.20 times the 70 kg", "154 lb = 69.9 kg", "Re-enter the weight in kg"),
    ),
    Case(
        "weight in lb entered as kg (BMI only)",
        weight_kg=154.0,
        expect=FindingCode.WEIGHT_LB_AS_KG,
        severity=Severity.WARNING,
        fragments=("BMI 50.3 at 175 cm", "69.9 kg (BMI 22.8)"),
    ),
    Case(
        "history older than 180 days: only the BMI warning",
        weight_kg=154.0,
        history=(WeightRecord(70.0, TODAY - timedelta(days=400)),),
        expect=FindingCode.WEIGHT_LB_AS_KG,
        severity=Severity.WARNING,
        fragments=("if the scale showed pounds",),
    ),
    Case(
        "earlier weight was lb entered as kg",
        weight_kg=70.0,
        history=(WeightRecord(154.3, TODAY - timedelta(days=20)),),
        expect=FindingCode.WEIGHT_LB_AS_KG,
        severity=Severity.BLOCK,
        fragments=("the earlier weight looks like pounds",),
    ),
    Case(
        "weight jumped 14 % in 10 days",
        weight_kg=80.0,
        history=(WeightRecord(70.0, TODAY - timedelta(days=12)),),
        expect=FindingCode.WEIGHT_CHANGED,
        severity=Severity.WARNING,
        fragments=("+14 %", "re-weigh"),
    ),
    Case(
        "concentration not stocked in the care area",
        concentration=2.0,
        expect=FindingCode.CONCENTRATION_NOT_ALLOWED,
        severity=Severity.BLOCK,
        fragments=("2 mg/mL is not a standard concentration in the depression infusion suite",),
    ),
    Case(
        "undiluted vial selected",
        concentration=100.0,
        expect=FindingCode.CONCENTRATION_UNDILUTED,
        severity=Severity.BLOCK,
        fragments=("must not be given IV undiluted",),
    ),
    Case(
        "pump concentration differs from the prepared syringe",
        concentration=1.0,
        prepared=10.0,
        expect=FindingCode.CONCENTRATION_MISMATCH,
        severity=Severity.BLOCK,
        fragments=("labelled 10 mg/mL", "10 times the ordered dose"),
    ),
    Case(
        "duplicated order, overlapping window",
        existing=("0.5 mg/kg over 40 min",),
        existing_start_offset_min=20.0,
        expect=FindingCode.DUPLICATE_ORDER,
        severity=Severity.BLOCK,
        fragments=("order o-old-0 already gives ketamine", "cancel one"),
    ),
    Case(
        "dose for the wrong weight: weight too old at check time",
        measured_days_ago=25,
        checked_days_later=10,
        expect=FindingCode.WEIGHT_OUTDATED,
        severity=Severity.BLOCK,
        fragments=("35 days ago", "30-day limit", "re-weigh"),
    ),
]


@pytest.mark.parametrize("case", ERROR_TABLE, ids=[c.id for c in ERROR_TABLE])
def test_dosing_error_table(case: Case) -> None:
    findings = _run(case)
    codes = [f.code for f in findings]
    assert case.expect in codes, f"{case.id}: got {codes}"
    finding = next(f for f in findings if f.code is case.expect)
    assert finding.severity is case.severity
    for fragment in case.fragments:
        assert fragment in finding.message, f"{fragment!r} not in {finding.message!r}"
    # Each error gives one specific message: a total typed as mg/kg is not also a decimal slip.
    assert len(codes) == len(set(codes))
    if case.expect is FindingCode.MG_AS_MG_PER_KG:
        assert FindingCode.DECIMAL_SLIP not in codes


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("30 mL/h for 40 min", ("'30 mL/h' is a pump volume rate", "at 10 mg/mL 300 mg/h")),
        ("52.5 ml/hr for 40 min", ("at 1 mg/mL 52.5 mL/h delivers 52.5 mg/h",)),
        ("1 mL/min for 40 min", ("at 1 mg/mL 60 mL/h delivers 60 mg/h",)),
        ("35 mL over 40 min", ("'35 mL' is a fluid volume", "drug amount (mg or mg/kg)")),
    ],
)
def test_volume_units_where_drug_units_are_needed(text: str, fragments: tuple[str, ...]) -> None:
    finding = check_dose_text_units(text)
    assert finding is not None
    assert finding.code is FindingCode.VOLUME_RATE_FOR_MASS_RATE
    assert finding.severity is Severity.BLOCK
    assert finding.field == "dose"
    for fragment in fragments:
        assert fragment in finding.message


@pytest.mark.parametrize(
    "text", ["0.5 mg/kg over 40 min", "52.5 mg/h for 40 min", "bolus 0.1 mg/kg at 5 min"]
)
def test_drug_units_are_not_flagged(text: str) -> None:
    assert check_dose_text_units(text) is None


CLEAN = [
    Case("standard dose", text="0.5 mg/kg over 40 min"),
    Case("lowest studied dose 0.1 mg/kg", text="0.1 mg/kg over 40 min"),
    Case("highest studied dose 1.0 mg/kg", text="1 mg/kg over 40 min"),
    Case("titrated 0.75 mg/kg", text="0.75 mg/kg over 40 min"),
    Case("slow variant over 100 min", text="0.5 mg/kg over 100 min"),
    Case("dose written in mg", text="35 mg over 40 min"),
    Case("CRPS regimen", text="0.35 mg/kg/h for 4 h", area="pain_suite"),
    Case("pain bolus 0.2 mg/kg", text="bolus 0.2 mg/kg", area="pain_suite"),
    Case("pain bolus in mg", text="bolus 10 mg", area="pain_suite"),
    Case("pain at 2 mg/mL", text="0.35 mg/kg/h for 4 h", area="pain_suite", concentration=2.0),
    Case(
        "heavy patient with consistent history",
        weight_kg=130.0,
        history=(WeightRecord(128.0, TODAY - timedelta(days=14)),),
    ),
    Case(
        "small weight change",
        weight_kg=72.0,
        history=(WeightRecord(70.0, TODAY - timedelta(days=14)),),
    ),
    Case("tall heavy patient", weight_kg=120.0, height_cm=190.0),
    Case("prepared syringe matches", prepared=1.0),
    Case(
        "next-day order is not a duplicate",
        existing=("0.5 mg/kg over 40 min",),
        existing_start_offset_min=24 * 60.0,
    ),
]


@pytest.mark.parametrize("case", CLEAN, ids=[c.id for c in CLEAN])
def test_no_false_alarms(case: Case) -> None:
    assert _run(case) == ()


def test_duplicate_ignores_other_patients_and_the_same_order() -> None:
    from ketaflow.dosing.checks import check_duplicate

    order = make_order(order_id="o-1", patient_ref="p-1")
    other_patient = make_order(order_id="o-2", patient_ref="p-2")
    same_order = make_order(order_id="o-1", patient_ref="p-1")
    no_patient = make_order(order_id="o-3")
    assert check_duplicate(order, [other_patient, same_order]) is None
    assert check_duplicate(no_patient, [make_order(order_id="o-4")]) is None
    # A margin widens the window: an order 60 min after the end overlaps with a 90 min margin.
    later = make_order(
        order_id="o-5", patient_ref="p-1", scheduled_start=NOW + timedelta(minutes=100)
    )
    assert check_duplicate(order, [later]) is None
    assert check_duplicate(order, [later], margin_min=90.0) is not None


def test_weight_entry_without_history_or_height_is_silent() -> None:
    assert check_weight_entry(154.0, measured_on=TODAY) == ()
