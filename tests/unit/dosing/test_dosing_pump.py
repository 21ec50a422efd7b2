"""Pump programming (rate, VTBI, rounding error, dilution) and the independent double check."""

from __future__ import annotations

import pytest
from dosing_helpers import NOW, make_order

from ketaflow.config import Settings
from ketaflow.dosing.pump import (
    BlindEntry,
    DoubleCheckRecord,
    DoubleCheckStatus,
    PumpProgram,
    double_check,
    plan_dilution,
    program_pump,
    round_to_step,
)
from ketaflow.errors import AuthError, HardLimitError, InputError


def test_standard_order_at_1_mg_per_ml() -> None:
    p = program_pump(make_order(), 1.0, care_area="depression_suite")
    assert p.mode == "infusion"
    assert p.rate_ml_per_h == 52.5
    assert p.vtbi_ml == 35.0
    assert p.delivered_dose_mg == pytest.approx(35.0, abs=1e-9)
    assert p.dose_difference_mg == pytest.approx(0.0, abs=1e-9)
    assert p.delivered_duration_min == pytest.approx(40.0, abs=1e-9)
    assert p.resolution_ml_per_h == 0.1  # Settings default
    d = p.dilution
    assert d is not None
    # 35 mL fits a 50 mL syringe: 50 mg = 5 mL of the 10 mg/mL vial + 45 mL diluent.
    assert (d.container_ml, d.vial_mg_per_ml, d.vial_volume_ml, d.diluent_ml) == (
        50.0,
        10.0,
        5.0,
        45.0,
    )
    assert "Label: ketamine 50 mg in 50 mL (1 mg/mL)" in d.instructions()


def test_rounding_is_shown_not_hidden() -> None:
    # 73.3 kg: 36.65 mg over 40 min = 54.975 mL/h at 1 mg/mL -> 55.0 mL/h; VTBI 36.65 -> 36.7 mL.
    p = program_pump(make_order(weight_kg=73.3), 1.0, care_area="depression_suite")
    assert p.rate_ml_per_h_exact == pytest.approx(54.975, abs=1e-9)
    assert p.rate_ml_per_h == 55.0
    assert p.vtbi_ml == 36.7
    assert p.delivered_dose_mg == pytest.approx(36.7, abs=1e-9)
    assert p.dose_difference_mg == pytest.approx(0.05, abs=1e-9)
    assert p.dose_difference_pct == pytest.approx(100 * 0.05 / 36.65, abs=1e-9)
    assert p.delivered_duration_min == pytest.approx(36.7 / 55.0 * 60.0, abs=1e-9)
    assert p.rate_difference_pct == pytest.approx(100 * (55.0 / 54.975 - 1), abs=1e-9)


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [(0.1, 53.3), (0.5, 53.5), (1.0, 53.0)],
)
def test_pump_resolution_is_configurable(resolution: float, expected: float) -> None:
    # 71 kg: 0.75 mg/kg/h x 71 kg = 53.25 mL/h at 1 mg/mL; halves round up.
    order = make_order(weight_kg=71.0)
    by_argument = program_pump(order, 1.0, resolution_ml_per_h=resolution)
    by_settings = program_pump(
        order, 1.0, settings=Settings(pump_rate_resolution_ml_per_h=resolution)
    )
    assert by_argument.rate_ml_per_h == expected
    assert by_settings.rate_ml_per_h == expected


@pytest.mark.parametrize(
    ("value", "step", "expected"),
    [
        (52.25, 0.1, 52.3),
        (52.24, 0.1, 52.2),
        (0.05, 0.1, 0.1),
        (7.5, 5.0, 10.0),
        (3.3, 1.0, 3.0),
        # 0.35 x 70 / 2 in floating point; the half is real, the 1e-15 is noise.
        (12.249999999999998, 0.1, 12.3),
    ],
)
def test_round_to_step(value: float, step: float, expected: float) -> None:
    assert round_to_step(value, step) == expected


def test_pain_order_at_2_mg_per_ml() -> None:
    # 0.35 mg/kg/h x 80 kg x 4 h = 112 mg; at 2 mg/mL: 56 mL at 14 mL/h, in a 100 mL bag made
    # from 4 mL of the 50 mg/mL vial (200 mg) + 96 mL.
    p = program_pump(
        make_order("0.35 mg/kg/h for 4 h", weight_kg=80.0), 2.0, care_area="pain_suite"
    )
    assert p.rate_ml_per_h == 14.0
    assert p.vtbi_ml == 56.0
    d = p.dilution
    assert d is not None
    assert (d.container_ml, d.vial_mg_per_ml, d.vial_volume_ml, d.diluent_ml, d.drug_mg) == (
        100.0,
        50.0,
        4.0,
        96.0,
        200.0,
    )


@pytest.mark.parametrize(
    ("conc", "vial", "final", "vial_ml"),
    [
        # Label dilution facts (ketamine-pkpd.md §4.6): 1 mg/mL = 10 mL of 50 mg/mL or 5 mL of
        # 100 mg/mL in 500 mL; 2 mg/mL = the same amount in 250 mL.
        (1.0, 50.0, 500.0, 10.0),
        (1.0, 100.0, 500.0, 5.0),
        (2.0, 50.0, 250.0, 10.0),
        (2.0, 100.0, 250.0, 5.0),
        # Practice example (clinical.md §4.2): 100 mg in 100 mL = 1 mg/mL.
        (1.0, 10.0, 100.0, 10.0),
    ],
)
def test_dilution_matches_the_label(conc: float, vial: float, final: float, vial_ml: float) -> None:
    d = plan_dilution(conc, vial_mg_per_ml=vial, final_volume_ml=final)
    assert d.vial_volume_ml == pytest.approx(vial_ml, abs=1e-12)
    assert d.diluent_ml == pytest.approx(final - vial_ml, abs=1e-12)
    assert d.drug_mg == pytest.approx(conc * final, abs=1e-12)
    assert d.warnings == ()


def test_small_draw_volume_warns() -> None:
    d = plan_dilution(1.0, vial_mg_per_ml=100.0, final_volume_ml=50.0)
    assert d.vial_volume_ml == pytest.approx(0.5)
    assert "measuring error" in d.warnings[0]


def test_vial_weaker_than_the_concentration_is_refused() -> None:
    with pytest.raises(InputError, match="cannot be diluted"):
        plan_dilution(2.0, vial_mg_per_ml=1.0, final_volume_ml=50.0)


def test_unstocked_vial_is_refused() -> None:
    with pytest.raises(InputError, match="not a stocked vial"):
        program_pump(make_order(), 1.0, vial_mg_per_ml=25.0)


def test_undiluted_100_mg_per_ml_is_never_programmed() -> None:
    with pytest.raises(HardLimitError, match="never given IV undiluted"):
        program_pump(make_order(), 100.0)


def test_dose_larger_than_every_container() -> None:
    # 1.0 mg/kg/h x 150 kg x 4 h = 600 mg = 600 mL at 1 mg/mL > 500 mL bag.
    order = make_order("1 mg/kg/h for 4 h", weight_kg=150.0, height_cm=190.0)
    with pytest.raises(InputError, match="does not fit the largest container"):
        program_pump(order, 1.0)


def test_bolus_program() -> None:
    p = program_pump(make_order("bolus 0.2 mg/kg"), 1.0, care_area="pain_suite")
    assert p.mode == "bolus"
    assert p.rate_ml_per_h is None
    assert p.vtbi_ml == 14.0
    assert any("at least 1 min" in w for w in p.warnings)


# --- double check ------------------------------------------------------------------------------


@pytest.fixture
def program() -> PumpProgram:
    return program_pump(make_order(order_id="o-dc"), 1.0, care_area="depression_suite")


def _check(program: PumpProgram, entry: BlindEntry, second: str = "rn.b") -> DoubleCheckRecord:
    return double_check(program, entry, programmed_by="rn.a", checked_by=second, at=NOW)


def test_matching_blind_entry_is_verified(program: PumpProgram) -> None:
    rec = _check(program, BlindEntry(52.5, 35.0, 1.0, 35.0))
    assert rec.status is DoubleCheckStatus.VERIFIED
    assert not rec.blocked
    assert rec.mismatches == ()
    assert (rec.order_id, rec.programmed_by, rec.checked_by, rec.at) == (
        "o-dc",
        "rn.a",
        "rn.b",
        NOW,
    )


@pytest.mark.parametrize(
    ("entry", "fields"),
    [
        (BlindEntry(525.0, 35.0, 1.0, 35.0), ["rate_ml_per_h"]),
        (BlindEntry(52.5, 350.0, 1.0, 35.0), ["vtbi_ml"]),
        (BlindEntry(52.5, 35.0, 10.0, 35.0), ["concentration_mg_per_ml"]),
        (BlindEntry(52.5, 35.0, 1.0, 3.5), ["dose_mg"]),
        (
            BlindEntry(5.25, 3.5, 10.0, 35.0),
            ["rate_ml_per_h", "vtbi_ml", "concentration_mg_per_ml"],
        ),
        (BlindEntry(53.1, 35.0, 1.0, 35.0), ["rate_ml_per_h"]),
        (BlindEntry(None, 35.0, 1.0, 35.0), ["rate_ml_per_h"]),
    ],
)
def test_mismatch_blocks_and_names_the_fields(
    program: PumpProgram, entry: BlindEntry, fields: list[str]
) -> None:
    rec = _check(program, entry)
    assert rec.status is DoubleCheckStatus.BLOCKED
    assert [m.field for m in rec.mismatches] == fields
    assert "BLOCKED" in rec.message()
    assert fields[0] in rec.message()


def test_tolerance_accepts_last_digit_differences(program: PumpProgram) -> None:
    # 1 % of 52.5 mL/h is 0.525 mL/h; of 35 mL, 0.35 mL.
    assert not _check(program, BlindEntry(53.0, 35.3, 1.0, 35.3)).blocked


def test_same_user_cannot_double_check(program: PumpProgram) -> None:
    with pytest.raises(AuthError, match="second clinician"):
        _check(program, BlindEntry(52.5, 35.0, 1.0, 35.0), second=" RN.A ")


def test_bolus_double_check_has_no_rate() -> None:
    bolus = program_pump(make_order("bolus 0.2 mg/kg"), 1.0, care_area="pain_suite")
    assert not _check(bolus, BlindEntry(None, 14.0, 1.0, 14.0)).blocked
    assert _check(bolus, BlindEntry(14.0, 14.0, 1.0, 14.0)).blocked
