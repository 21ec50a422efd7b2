from __future__ import annotations

from datetime import date, datetime

import pytest

from ketaflow.clinical.patient import (
    Allergy,
    HeightMeasurement,
    Medication,
    Patient,
    Sex,
    WeightMeasurement,
    drug_classes,
    flag_interactions,
)
from ketaflow.errors import InputError


def make(**kw: object) -> Patient:
    base: dict[str, object] = dict(
        mrn="MRN-7",
        family_name="Roe",
        given_name="Sam",
        date_of_birth=date(1980, 2, 29),
        sex=Sex.MALE,
    )
    base.update(kw)
    return Patient(**base)  # type: ignore[arg-type]  # test builds kwargs dynamically


def test_age_in_completed_years_handles_birthdays_and_leap_days() -> None:
    p = make()
    assert p.age_years(on=date(2025, 2, 28)) == 44
    assert p.age_years(on=date(2025, 3, 1)) == 45
    assert p.age_years(on=date(2024, 2, 29)) == 44


def test_weight_history_latest_and_age() -> None:
    p = make()
    assert p.latest_weight() is None
    assert p.weight_age_days(on=date(2025, 1, 1)) is None
    p = p.with_weight(WeightMeasurement(82.0, date(2025, 1, 10)))
    p = p.with_weight(WeightMeasurement(80.0, date(2024, 12, 1)))  # older, entered later
    p = p.with_weight(WeightMeasurement(81.0, date(2025, 1, 10)))  # same day, entered later
    assert len(p.weights) == 3
    assert p.latest_weight_kg() == 81.0
    assert p.weight_age_days(on=date(2025, 2, 9)) == 30


def test_bmi_from_latest_measurements() -> None:
    p = make().with_weight(WeightMeasurement(90.0, date(2025, 1, 1)))
    assert p.bmi_kg_per_m2() is None
    p = p.with_height(HeightMeasurement(180.0, date(2020, 1, 1)))
    assert p.bmi_kg_per_m2() == pytest.approx(90.0 / 1.8**2, rel=1e-12)


@pytest.mark.parametrize(
    ("builder", "field"),
    [
        (lambda: WeightMeasurement(700.0, date(2025, 1, 1)), "weight_kg"),
        (lambda: WeightMeasurement(-1.0, date(2025, 1, 1)), "weight_kg"),
        (lambda: HeightMeasurement(1.8, date(2025, 1, 1)), "height_cm"),  # metres typed as cm
        (lambda: WeightMeasurement(70.0, datetime(2025, 1, 1)), "measured_on"),
        (lambda: make(mrn=" "), "mrn"),
        (lambda: make(sex="male"), "sex"),
    ],
)
def test_bad_input_names_the_field(builder: object, field: str) -> None:
    with pytest.raises(InputError) as err:
        builder()  # type: ignore[operator]  # the table holds lambdas
    assert err.value.field == field


def test_covariates_need_a_weight_and_map_sex() -> None:
    p = make(sex=Sex.OTHER)
    with pytest.raises(InputError, match="no weight"):
        p.covariates(on=date(2025, 1, 1))
    p = p.with_weight(WeightMeasurement(70.0, date(2025, 1, 1)))
    cov = p.covariates(on=date(2025, 3, 1))
    assert (cov.weight_kg, cov.age_y, cov.sex) == (70.0, 45.0, None)
    assert (
        make(sex=Sex.FEMALE)
        .with_weight(WeightMeasurement(60.0, date(2025, 1, 1)))
        .covariates(on=date(2025, 3, 1))
        .sex
        == "female"
    )


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("Xanax XR 1 mg", "benzodiazepine"),
        ("lorazepam 0.5mg prn", "benzodiazepine"),
        ("Zolpidem", "sedative_hypnotic"),
        ("ADDERALL 20 mg", "psychostimulant"),
        ("phenelzine", "maoi"),
        ("Emsam patch", "maoi"),
        ("oxycodone/acetaminophen", "opioid"),
        ("Lamictal", "lamotrigine"),
    ],
)
def test_interacting_medications_are_flagged_with_reason(name: str, cls: str) -> None:
    flags = flag_interactions([Medication(name)])
    assert [f.drug_class for f in flags] == [cls]
    assert flags[0].reason
    assert flags[0].source


def test_non_interacting_and_partial_words_are_not_flagged() -> None:
    assert flag_interactions([Medication("sertraline"), Medication("metformin")]) == ()
    # whole words only: "lamotrigineX" is not lamotrigine
    assert flag_interactions([Medication("lamotriginex")]) == ()


def test_every_drug_class_has_reason_source_and_examples() -> None:
    classes = drug_classes()
    assert {"benzodiazepine", "maoi", "psychostimulant", "lamotrigine"} <= set(classes)
    for dc in classes.values():
        assert dc.reason
        assert dc.source
        assert dc.examples


def test_allergy_and_medication_need_names() -> None:
    with pytest.raises(InputError):
        Allergy(" ")
    with pytest.raises(InputError):
        Medication("")
