"""DoseOrder construction: derived quantities, validation first, immutability."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from dosing_helpers import NOW, TODAY, make_order

from ketaflow.config import Settings
from ketaflow.dosing.body_size import DosingWeightPolicy, DosingWeightRule
from ketaflow.dosing.orders import DoseOrder
from ketaflow.errors import DoseTextError, InputError, UnitError


def test_standard_order_quantities(standard_order: DoseOrder) -> None:
    o = standard_order
    assert o.kind == "infusion"
    assert o.written_per_kg
    assert o.dose_mg == pytest.approx(35.0, abs=1e-9)
    assert o.dose_mg_per_kg == pytest.approx(0.5, abs=1e-12)
    assert o.rate_mg_per_h == pytest.approx(52.5, abs=1e-9)
    assert o.rate_mg_per_kg_per_h == pytest.approx(0.75, abs=1e-12)
    assert o.duration_min == 40.0
    assert o.dosing_weight_kg == 70.0
    assert o.policy is DosingWeightPolicy.ACTUAL
    assert o.weight_measured_on == TODAY - timedelta(days=2)
    assert o.created_at == NOW
    assert o.window() == (NOW, NOW + timedelta(minutes=40))
    assert o.schedule().total_mg == pytest.approx(35.0, abs=1e-9)
    assert "35 mg (0.5 mg/kg) over 40 min at 52.5 mg/h" in o.summary()


@pytest.mark.parametrize(
    ("text", "dose_mg", "rate_mg_per_h", "per_kg"),
    [
        ("35 mg over 40 min", 35.0, 52.5, False),
        ("0.75 mg/kg/h for 40 min", 35.0, 52.5, True),
        ("52.5 mg/h for 40 min", 35.0, 52.5, False),
        ("0.35 mg/kg/h for 4 h", 98.0, 24.5, True),
        ("bolus 0.1 mg/kg at 5 min", 7.0, None, True),
    ],
)
def test_dose_text_forms(
    text: str, dose_mg: float, rate_mg_per_h: float | None, per_kg: bool
) -> None:
    o = make_order(text)
    assert o.dose_mg == pytest.approx(dose_mg, abs=1e-9)
    assert o.written_per_kg is per_kg
    if rate_mg_per_h is None:
        assert o.rate_mg_per_h is None
        assert o.kind == "bolus"
    else:
        assert o.rate_mg_per_h == pytest.approx(rate_mg_per_h, abs=1e-9)


def test_ideal_policy_changes_the_dose() -> None:
    o = make_order(weight_kg=100.0, policy="ideal")
    # 0.5 mg/kg x Devine IBW 70.4645669 kg
    assert o.dose_mg == pytest.approx(35.23228, abs=1e-4)
    assert o.actual_weight_kg == 100.0
    assert "ideal body weight" in o.dosing_weight.explanation


def test_rule_object_is_accepted() -> None:
    o = make_order(weight_kg=140.0, policy=DosingWeightRule.parse("actual_capped", 120.0))
    assert o.dosing_weight_kg == 120.0


def test_weight_older_than_the_setting_is_refused() -> None:
    old = TODAY - timedelta(days=31)
    with pytest.raises(InputError, match="31 days ago") as exc:
        make_order(measured_on=old)
    assert exc.value.field == "weight_measured_on"
    # The limit comes from Settings.weight_max_age_days.
    assert make_order(measured_on=old, settings=Settings(weight_max_age_days=45)).dose_mg > 0
    with pytest.raises(InputError, match="7-day limit"):
        make_order(measured_on=TODAY - timedelta(days=10), settings=Settings(weight_max_age_days=7))


def test_weight_measured_in_the_future_is_refused() -> None:
    with pytest.raises(InputError, match="after today"):
        make_order(measured_on=TODAY + timedelta(days=1))


def test_naive_clock_is_refused() -> None:
    with pytest.raises(InputError, match="timezone"):
        make_order(now=datetime(2025, 3, 10, 9, 0))


def test_volume_rate_text_is_refused_with_the_explanation() -> None:
    with pytest.raises(DoseTextError, match="pump volume rate") as exc:
        make_order("30 mL/h for 40 min")
    assert "at 10 mg/mL 300 mg/h" in exc.value.message
    assert exc.value.field == "dose"


@pytest.mark.parametrize("text", ["", "0.5 mg/kg", "0.5 kg over 40 min", "fast"])
def test_bad_dose_text_is_refused(text: str) -> None:
    with pytest.raises((DoseTextError, UnitError)):
        make_order(text)


def test_everything_is_validated_before_the_dose_text() -> None:
    # Both the weight and the text are wrong; the weight is reported (validated first).
    with pytest.raises(InputError, match="weight_kg"):
        make_order("nonsense", weight_kg=700.0)


def test_ideal_policy_without_height_is_refused() -> None:
    with pytest.raises(InputError, match="needs the height"):
        make_order(height_cm=None, policy="ideal")


def test_order_is_immutable(standard_order: DoseOrder) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        standard_order.drug = "esketamine"  # type: ignore[misc]  # the test asserts the freeze


def test_to_dict_round_numbers(standard_order: DoseOrder) -> None:
    d = standard_order.to_dict()
    assert d["order_id"] == "o-standard"
    assert d["dosing_weight_policy"] == "actual"
    assert d["weight_measured_on"] == (TODAY - timedelta(days=2)).isoformat()
    assert d["rate_mg_per_h"] == pytest.approx(52.5)
