"""Body-size formulas against values worked by hand, input validation, dosing-weight policies."""

from __future__ import annotations

import math

import pytest

from ketaflow.dosing.body_size import (
    DosingWeightPolicy,
    DosingWeightRule,
    adjusted_body_weight_kg,
    bmi_kg_per_m2,
    bsa_mosteller_m2,
    dosing_weight,
    ideal_body_weight_kg,
    lean_body_mass_james_kg,
    lean_body_mass_janmahasatian_kg,
    parse_sex,
    validate_body,
)
from ketaflow.errors import InputError

# Worked by hand (tolerances state how many digits the hand arithmetic carries):
#   70 kg, 175 cm, male
#   BMI   = 70 / 1.75^2 = 70 / 3.0625 = 22.857142857
#   IBW   = 50 + 2.3 x (175/2.54 - 60) = 50 + 2.3 x 8.8976378 = 70.4645669 kg
#   IBW f = 45.5 + 20.4645669 = 65.9645669 kg
#   James = 1.1 x 70 - 128 x (70/175)^2 = 77 - 128 x 0.16 = 56.52 kg
#   Janm. = 9270 x 70 / (6680 + 216 x 22.857142857) = 648900 / 11617.142857 = 55.857 kg
#   BSA   = sqrt(175 x 70 / 3600) = sqrt(3.4027778) = 1.8446619 m^2
#   100 kg, 175 cm, male: AdjBW = 70.4645669 + 0.4 x (100 - 70.4645669) = 82.2787402 kg
#   60 kg, 165 cm, female
#   James = 1.07 x 60 - 148 x (60/165)^2 = 64.2 - 148 x 0.1322314 = 44.629752 kg
#   Janm. = 9270 x 60 / (8780 + 244 x 22.038567) = 556200 / 14157.410 = 39.287 kg
#   BSA   = sqrt(165 x 60 / 3600) = sqrt(2.75) = 1.6583124 m^2


@pytest.mark.parametrize(
    ("func", "args", "expected", "tol"),
    [
        (bmi_kg_per_m2, (70.0, 175.0), 22.857142857, 1e-8),
        (ideal_body_weight_kg, (175.0, "male"), 70.4645669, 1e-6),
        (ideal_body_weight_kg, (175.0, "female"), 65.9645669, 1e-6),
        (adjusted_body_weight_kg, (100.0, 175.0, "male"), 82.2787402, 1e-6),
        (lean_body_mass_james_kg, (70.0, 175.0, "male"), 56.52, 1e-9),
        (lean_body_mass_james_kg, (60.0, 165.0, "female"), 44.629752, 1e-5),
        (lean_body_mass_janmahasatian_kg, (70.0, 175.0, "male"), 55.857, 1e-3),
        (lean_body_mass_janmahasatian_kg, (60.0, 165.0, "female"), 39.287, 1e-3),
        (bsa_mosteller_m2, (70.0, 175.0), 1.8446619, 1e-6),
        (bsa_mosteller_m2, (60.0, 165.0), 1.6583124, 1e-6),
    ],
)
def test_formulas_match_hand_worked_values(
    func: object, args: tuple[object, ...], expected: float, tol: float
) -> None:
    assert callable(func)
    assert func(*args) == pytest.approx(expected, abs=tol)


def test_ideal_weight_at_60_inches_is_the_base_weight() -> None:
    assert ideal_body_weight_kg(60 * 2.54, "male") == pytest.approx(50.0, abs=1e-9)
    assert ideal_body_weight_kg(60 * 2.54, "female") == pytest.approx(45.5, abs=1e-9)


def test_adjusted_weight_factor_is_configurable() -> None:
    ibw = ideal_body_weight_kg(175.0, "male")
    assert adjusted_body_weight_kg(100.0, 175.0, "male", factor=0.0) == pytest.approx(ibw)
    assert adjusted_body_weight_kg(100.0, 175.0, "male", factor=1.0) == pytest.approx(100.0)
    with pytest.raises(InputError, match="factor"):
        adjusted_body_weight_kg(100.0, 175.0, "male", factor=1.5)


def test_james_refuses_weights_past_its_maximum() -> None:
    # Peak at W = 1.1 x 175^2 / 256 = 131.6 kg for a 175 cm man.
    assert lean_body_mass_james_kg(130.0, 175.0, "male") > 0
    with pytest.raises(InputError, match="Janmahasatian"):
        lean_body_mass_james_kg(150.0, 175.0, "male")


@pytest.mark.parametrize(
    ("weight", "height", "fragment"),
    [
        (0.0, 175.0, "weight_kg: 0 kg is outside"),
        (math.nan, 175.0, "finite number"),
        (70000.0, 175.0, "grams, enter 70 kg"),
        (70.0, 1.75, "metres, enter 175 cm"),
        (70.0, 69.0, "inches, enter 175.3 cm"),
        (300.0, 130.0, "BMI 177.5"),
        (True, 175.0, "finite number"),
    ],
)
def test_implausible_body_input_is_refused_with_a_fix(
    weight: float, height: float, fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        validate_body(weight, height)


@pytest.mark.parametrize(
    ("text", "expected"), [("M", "male"), (" female ", "female"), ("f", "female")]
)
def test_parse_sex(text: str, expected: str) -> None:
    assert parse_sex(text) == expected


def test_parse_sex_refuses_unknown() -> None:
    with pytest.raises(InputError, match="sex"):
        parse_sex("x")


# --- dosing-weight policies --------------------------------------------------------------------


def test_actual_policy_uses_the_measured_weight_and_says_so() -> None:
    dw = dosing_weight(DosingWeightRule.parse("actual"), weight_kg=100.0, height_cm=175.0, sex="m")
    assert dw.weight_kg == 100.0
    assert dw.policy is DosingWeightPolicy.ACTUAL
    assert "actual body weight" in dw.explanation
    assert dw.bmi_kg_per_m2 == pytest.approx(100 / 1.75**2)


def test_ideal_policy_uses_devine_weight_when_heavier() -> None:
    dw = dosing_weight(DosingWeightRule.parse("ideal"), weight_kg=100.0, height_cm=175.0, sex="m")
    assert dw.weight_kg == pytest.approx(70.4645669, abs=1e-6)
    assert "ideal body weight (Devine, male, 175 cm)" in dw.explanation
    assert "actual 100.0 kg" in dw.explanation


def test_ideal_and_adjusted_never_dose_above_actual() -> None:
    for policy in ("ideal", "adjusted"):
        dw = dosing_weight(
            DosingWeightRule.parse(policy), weight_kg=60.0, height_cm=175.0, sex="male"
        )
        assert dw.weight_kg == 60.0
        assert "not above the ideal" in dw.explanation


def test_adjusted_policy() -> None:
    dw = dosing_weight(
        DosingWeightRule.parse("adjusted"), weight_kg=100.0, height_cm=175.0, sex="male"
    )
    assert dw.weight_kg == pytest.approx(82.2787402, abs=1e-6)
    assert "adjusted body weight" in dw.explanation


def test_actual_capped_policy() -> None:
    rule = DosingWeightRule.parse("actual-capped", cap_kg=120.0)
    heavy = dosing_weight(rule, weight_kg=140.0, height_cm=None, sex="male")
    light = dosing_weight(rule, weight_kg=100.0, height_cm=None, sex="male")
    assert heavy.weight_kg == 120.0
    assert "capped at 120 kg" in heavy.explanation
    assert light.weight_kg == 100.0
    assert "below the 120 kg cap" in light.explanation


def test_ideal_policy_needs_height() -> None:
    with pytest.raises(InputError, match="needs the height"):
        dosing_weight(DosingWeightRule.parse("ideal"), weight_kg=80.0, height_cm=None, sex="m")


@pytest.mark.parametrize(
    ("policy", "cap", "fragment"),
    [
        ("actual_capped", None, "needs a ceiling"),
        ("actual", 120.0, "only the 'actual_capped'"),
        ("lean", None, "expected one of actual, ideal, adjusted, actual_capped"),
        ("actual_capped", 5.0, "cap_kg"),
    ],
)
def test_rule_validation(policy: str, cap: float | None, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        DosingWeightRule.parse(policy, cap)
