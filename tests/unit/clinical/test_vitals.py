from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ketaflow.clinical.vitals import (
    VitalKind,
    VitalLog,
    VitalSource,
    assess_reading,
    kind_for_loinc,
    kind_for_mdc,
    make_vital_set,
    vital_spec,
)
from ketaflow.errors import InputError

from ._helpers import T0


@pytest.mark.parametrize(
    ("kind", "loinc", "ucum", "mdc"),
    [
        (VitalKind.HR, "8867-4", "/min", 147842),
        (VitalKind.SBP, "8480-6", "mm[Hg]", 150021),
        (VitalKind.DBP, "8462-4", "mm[Hg]", 150022),
        (VitalKind.MAP, "8478-0", "mm[Hg]", 150023),
        (VitalKind.SPO2, "59408-5", "%", 150456),
        (VitalKind.RR, "9279-1", "/min", 151562),
        (VitalKind.ETCO2, "19889-5", "mm[Hg]", 151708),
        (VitalKind.TEMP, "8310-5", "Cel", 150364),
    ],
)
def test_codes_match_the_reference_table(kind: VitalKind, loinc: str, ucum: str, mdc: int) -> None:
    spec = vital_spec(kind)
    assert (spec.loinc, spec.ucum, spec.mdc_code) == (loinc, ucum, mdc)
    assert kind_for_mdc(mdc) is kind
    assert kind_for_loinc(loinc) is kind


def test_alternate_codes_map_to_the_kind() -> None:
    assert kind_for_mdc(149530) is VitalKind.HR  # oximeter pulse rate
    assert kind_for_mdc(151578) is VitalKind.RR  # impedance respiration
    assert kind_for_loinc("2708-6") is VitalKind.SPO2
    assert kind_for_mdc(1) is None


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        (VitalKind.SPO2, 101, "vitals.spo2"),
        (VitalKind.SPO2, -1, "vitals.spo2"),
        (VitalKind.HR, 0, "vitals.hr"),
        (VitalKind.HR, -5, "vitals.hr"),
        (VitalKind.HR, 301, "vitals.hr"),
        (VitalKind.SBP, 400, "vitals.sbp"),
        (VitalKind.TEMP, 98.6, "vitals.temp"),  # Fahrenheit typed into a Celsius field
        (VitalKind.RR, float("nan"), "vitals.rr"),
    ],
)
def test_impossible_values_are_rejected_naming_the_field(
    kind: VitalKind, value: float, field: str
) -> None:
    with pytest.raises(InputError) as err:
        assess_reading(kind, value, measured_at=T0, source=VitalSource.DEVICE)
    assert err.value.field == field


def test_boolean_is_not_a_number() -> None:
    with pytest.raises(InputError):
        assess_reading(VitalKind.HR, True, measured_at=T0, source=VitalSource.DEVICE)


def test_naive_time_is_rejected() -> None:
    with pytest.raises(InputError, match="timezone"):
        assess_reading(
            VitalKind.HR, 70, measured_at=datetime(2025, 1, 1, 9), source=VitalSource.DEVICE
        )


@pytest.mark.parametrize(
    ("kind", "value", "suspect"),
    [
        (VitalKind.HR, 250, True),
        (VitalKind.HR, 220, False),
        (VitalKind.HR, 25, True),
        (VitalKind.SPO2, 65, True),
        (VitalKind.SPO2, 90, False),
        (VitalKind.RR, 0, False),  # apnoea is real: never an "artefact"
        (VitalKind.RR, 45, True),
    ],
)
def test_implausible_values_are_stored_and_flagged(
    kind: VitalKind, value: float, suspect: bool
) -> None:
    r = assess_reading(kind, value, measured_at=T0, source=VitalSource.DEVICE)
    assert r.value == value
    assert r.artefact_suspect is suspect
    assert bool(r.artefact_reasons) is suspect


def test_sudden_jump_is_flagged_only_within_the_window() -> None:
    first = assess_reading(VitalKind.HR, 70, measured_at=T0, source=VitalSource.DEVICE)
    jump = assess_reading(
        VitalKind.HR,
        130,
        measured_at=T0 + timedelta(seconds=5),
        source=VitalSource.DEVICE,
        previous=first,
    )
    assert jump.artefact_suspect
    assert "changed by +60" in jump.artefact_reasons[0]
    slow = assess_reading(
        VitalKind.HR,
        130,
        measured_at=T0 + timedelta(seconds=120),
        source=VitalSource.DEVICE,
        previous=first,
    )
    assert not slow.artefact_suspect


def test_map_is_computed_from_sbp_and_dbp() -> None:
    s = make_vital_set(measured_at=T0, source=VitalSource.MANUAL, sbp_mmhg=150, dbp_mmhg=90)
    m = s.get(VitalKind.MAP)
    assert m is not None
    assert m.derived
    assert m.value == pytest.approx(110.0, abs=1e-12)  # 90 + 60/3


def test_given_map_is_kept_and_checked() -> None:
    s = make_vital_set(
        measured_at=T0, source=VitalSource.DEVICE, sbp_mmhg=150, dbp_mmhg=90, map_mmhg=105
    )
    assert s.value(VitalKind.MAP) == 105
    with pytest.raises(InputError) as err:
        make_vital_set(
            measured_at=T0, source=VitalSource.DEVICE, sbp_mmhg=150, dbp_mmhg=90, map_mmhg=160
        )
    assert err.value.field == "vitals.map"


def test_sbp_below_dbp_is_rejected() -> None:
    with pytest.raises(InputError, match="swapped") as err:
        make_vital_set(measured_at=T0, source=VitalSource.MANUAL, sbp_mmhg=80, dbp_mmhg=120)
    assert err.value.field == "vitals.sbp"


def test_half_a_blood_pressure_is_rejected() -> None:
    with pytest.raises(InputError) as err:
        make_vital_set(measured_at=T0, source=VitalSource.MANUAL, sbp_mmhg=120)
    assert err.value.field == "vitals.dbp"


def test_empty_set_is_rejected() -> None:
    with pytest.raises(InputError):
        make_vital_set(measured_at=T0, source=VitalSource.MANUAL)


def test_vital_log_keeps_latest_by_measurement_time() -> None:
    log = VitalLog()
    log.assess(VitalKind.HR, 70, measured_at=T0 + timedelta(minutes=1), source=VitalSource.DEVICE)
    log.assess(VitalKind.HR, 90, measured_at=T0, source=VitalSource.MANUAL)  # late entry
    latest = log.latest(VitalKind.HR)
    assert latest is not None
    assert latest.value == 70
    assert len(log.readings) == 2
    jumped = log.assess(
        VitalKind.HR,
        140,
        measured_at=T0 + timedelta(minutes=1, seconds=10),
        source=VitalSource.DEVICE,
    )
    assert jumped.artefact_suspect
