"""Target grammar, target schedules, pump limits and controller settings."""

from __future__ import annotations

import math

import pytest

from ketaflow.errors import InputError
from ketaflow.pk.effect import DISSOCIATION
from ketaflow.pk.tci import (
    MAX_TARGET_NG_PER_ML,
    PumpLimits,
    TargetSchedule,
    TargetStep,
    TciConfig,
    parse_target,
)


@pytest.mark.parametrize(
    ("text", "start_min", "value", "key"),
    [
        ("200 ng/mL from 0 min", 0.0, 200.0, None),
        ("400 ng/mL from 60 min", 60.0, 400.0, None),
        ("0.4 ug/mL from 1 h", 60.0, 400.0, None),
        ("0.4 µg/mL FROM 90s", 1.5, 400.0, None),
        ("0.2mg/L", 0.0, 200.0, None),
        ("0.3 dissociation from 0 min", 0.0, 0.3, "dissociation"),
        ("0.25 analgesia from 10 min", 10.0, 0.25, "analgesia"),
        ("0 ng/mL from 100 min", 100.0, 0.0, None),
    ],
)
def test_parse_target_forms(text: str, start_min: float, value: float, key: str | None) -> None:
    step = parse_target(text)
    assert step.start_min == pytest.approx(start_min, rel=1e-12)
    assert step.value == pytest.approx(value, rel=1e-12)
    assert step.effect_key == key


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("200 from 0 min", "no unit"),
        ("200 mg from 0 min", "concentration"),
        ("200 ng/mL from", "needs a time"),
        ("200 ng/mL from 5 mg", "time"),
        ("200 ng/mL from 0 min from 5 min", "twice"),
        ("from 5 min", "does not start"),
        ("0.3 euphoria from 0 min", "unknown unit"),
        ("-1 dissociation", "finite number >= 0"),
    ],
)
def test_parse_target_rejects_with_a_named_problem(text: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_target(text)
    assert exc.value.field == "target"
    assert fragment in exc.value.message


def test_effect_target_goes_through_the_pd_inverse_for_the_enantiomer() -> None:
    racemic = TargetSchedule.from_texts(["0.3 dissociation"], enantiomer="racemic")
    s_only = TargetSchedule.from_texts(["0.3 dissociation"], enantiomer="S")
    expected = float(DISSOCIATION.inverse(0.3, enantiomer="racemic"))
    assert racemic.targets_ng_per_ml[0] == pytest.approx(expected, rel=1e-12)
    # Only S-ketamine is active: a racemic concentration must be twice the S one.
    assert racemic.targets_ng_per_ml[0] == pytest.approx(2 * s_only.targets_ng_per_ml[0])
    assert float(DISSOCIATION.effect(racemic.targets_ng_per_ml[0], enantiomer="racemic")) == (
        pytest.approx(0.3, rel=1e-12)
    )


def test_unreachable_effect_target_is_an_input_error() -> None:
    with pytest.raises(InputError, match="must lie in"):
        TargetSchedule.from_texts(["1.0 dissociation"])


def test_schedule_sorts_and_looks_up_step_targets() -> None:
    sched = TargetSchedule.from_texts(["400 ng/mL from 60 min", "200 ng/mL from 5 min"])
    assert sched.starts_min == (5.0, 60.0)
    assert sched.target_ng_per_ml_at(0.0) == 0.0
    assert sched.target_ng_per_ml_at(5.0) == 200.0
    assert sched.target_ng_per_ml_at(59.99) == 200.0
    assert sched.target_ng_per_ml_at(60.0) == 400.0
    on = sched.target_ng_per_ml_on([0.0, 5.0, 59.99, 60.0, 500.0])
    assert on.tolist() == [0.0, 200.0, 200.0, 400.0, 400.0]
    assert isinstance(sched.steps[0], TargetStep)


@pytest.mark.parametrize(
    ("texts", "fragment"),
    [
        (["200 ng/mL from 0 min", "300 ng/mL from 0 min"], "increase strictly"),
        (["20 mg/L"], "check the unit"),
        ([], "at least one target"),
    ],
)
def test_bad_schedules(texts: list[str], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        TargetSchedule.from_texts(texts)


def test_target_bound_is_an_input_plausibility_check() -> None:
    TargetSchedule.from_pairs([(0.0, MAX_TARGET_NG_PER_ML)])
    with pytest.raises(InputError):
        TargetSchedule.from_pairs([(0.0, MAX_TARGET_NG_PER_ML * 1.01)])


def test_pump_limits_from_text_and_conversions() -> None:
    pump = PumpLimits.from_text(syringe="10 mg/mL", max_rate="1200 mL/h", resolution="0.1 mL/h")
    assert pump.syringe_mg_per_ml == pytest.approx(10.0)
    assert pump.max_rate_ml_per_h == pytest.approx(1200.0)
    assert pump.max_rate_mg_per_min == pytest.approx(200.0)  # 1200 mL/h x 10 mg/mL / 60
    assert pump.resolution_mg_per_min == pytest.approx(1.0 / 60.0)
    assert pump.ml_per_h(1.0) == pytest.approx(6.0)
    by_mass = PumpLimits.from_text(syringe="10 mg/mL", max_rate="200 mg/min")
    assert by_mass.max_rate_ml_per_h == pytest.approx(1200.0)
    assert math.isinf(PumpLimits(10.0).max_rate_mg_per_min)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"syringe": "10 mg/h"}, "syringe"),
        ({"syringe": "0 mg/mL"}, "syringe"),
        ({"syringe": "10 mg/mL", "max_rate": "1200 mL"}, "max_rate"),
        ({"syringe": "10 mg/mL", "resolution": "1 mg/h"}, "resolution"),
        ({"syringe": "10 mg/mL", "max_rate": "1 mL/h", "resolution": "2 mL/h"}, "resolution"),
    ],
)
def test_pump_limits_reject_bad_text(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as exc:
        PumpLimits.from_text(**kwargs)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"update_s": 0.0}, "update"),
        ({"update_s": 3600.0}, "update"),
        ({"plasma_band": 1.5}, "plasma_band"),
        ({"equilibrium_band": -0.1}, "equilibrium_band"),
        ({"search_step_s": 20.0}, "search_step_s"),
        ({"horizon_min": 0.0}, "horizon_min"),
        ({"engine": "fast"}, "engine"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as exc:
        TciConfig(**kwargs)  # type: ignore[arg-type]  # deliberately wrong types are the test
    assert exc.value.field == field
