"""Gentle-start planner: lowest effect-site peak for a dose, checked in the exact engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ketaflow.errors import InputError
from ketaflow.pk.effect import DISSOCIATION
from ketaflow.pk.library import load_model
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import BatchSchedule
from ketaflow.pk.solve import simulate
from ketaflow.pk.tci_planner import plan_gentle_start, plan_shortest_under_cap, time_above

DOSE_MG = 35.0  # 0.5 mg/kg for 70 kg
DURATION_MIN = 40.0


def _params(model_id: str = "kamp-2020") -> PKParameters:
    return load_model(model_id).parameters(weight_kg=70.0)


@pytest.mark.parametrize("model_id", ["domino-1984", "kamp-2020"])
def test_lowest_peak_plan_delivers_the_dose_and_beats_the_constant_rate(model_id: str) -> None:
    plan = plan_gentle_start(
        _params(model_id), total_mg=DOSE_MG, duration_min=DURATION_MIN, threshold_ce_ng_per_ml=100.0
    )
    assert plan.n_segments == 40
    assert float(plan.rates_mg_per_min.sum() * plan.segment_min) == pytest.approx(DOSE_MG, rel=1e-9)
    assert np.all(plan.rates_mg_per_min >= 0)
    # About 22 % lower than the constant rate for both models (measured 0.78 ratio).
    assert plan.peak_ce_ng_per_ml < 0.85 * plan.constant_peak_ce_ng_per_ml
    assert plan.peak_effect < plan.constant_peak_effect
    assert plan.constant_peak_effect == pytest.approx(
        float(DISSOCIATION.effect(plan.constant_peak_ce_ng_per_ml, enantiomer="racemic"))
    )
    assert plan.time_above_min is not None
    assert plan.constant_time_above_min is not None


def test_no_feasible_profile_has_a_lower_peak() -> None:
    """Random profiles with the same dose, replayed exactly, never go below the LP's peak."""
    params = _params()
    plan = plan_gentle_start(params, total_mg=DOSE_MG, duration_min=DURATION_MIN)
    rng = np.random.default_rng(20261121)
    n = plan.n_segments
    shares = rng.dirichlet(np.full(n, 0.3), size=300)
    shares = np.vstack([shares, plan.rates_mg_per_min / plan.rates_mg_per_min.sum()])
    rates = shares * DOSE_MG / plan.segment_min
    sched = BatchSchedule(
        np.arange(n + 1, dtype=float) * plan.segment_min,
        rates,
        np.zeros(0),
        np.zeros((len(rates), 0)),
    )
    many = params.take(np.zeros(len(rates), dtype=np.intp))
    ce = simulate(many, sched, plan.times_min).ce_ng_per_ml
    assert ce is not None
    peaks = ce.max(axis=1)
    assert peaks[-1] == pytest.approx(plan.peak_ce_ng_per_ml, rel=1e-9)  # same replay
    assert np.all(peaks[:-1] >= plan.peak_ce_ng_per_ml * (1 - 1e-6))


def test_reported_peak_survives_a_fine_replay() -> None:
    params = _params("domino-1984")
    plan = plan_gentle_start(params, total_mg=DOSE_MG, duration_min=DURATION_MIN)
    fine = np.arange(0.0, 200.0, 1.0 / 60.0)  # 1 s grid
    ce = simulate(params, plan.schedule(), fine).ce_ng_per_ml
    assert ce is not None
    assert float(ce.max()) == pytest.approx(plan.peak_ce_ng_per_ml, rel=1e-3)


def test_cap_above_the_constant_peak_gives_the_constant_rate() -> None:
    params = _params()
    free = plan_gentle_start(params, total_mg=DOSE_MG, duration_min=DURATION_MIN)
    cap = free.constant_peak_ce_ng_per_ml * 1.05
    plan = plan_gentle_start(
        params, total_mg=DOSE_MG, duration_min=DURATION_MIN, cap_ce_ng_per_ml=cap
    )
    assert plan.feasible
    np.testing.assert_allclose(plan.rates_mg_per_min, DOSE_MG / DURATION_MIN, rtol=1e-6)


def test_cap_between_optimum_and_constant_is_met_smoothly() -> None:
    params = _params()
    plan = plan_gentle_start(
        params, total_mg=DOSE_MG, duration_min=DURATION_MIN, cap_ce_ng_per_ml=200.0
    )
    assert plan.feasible
    assert plan.peak_ce_ng_per_ml <= 200.0 * 1.001
    assert plan.constant_peak_ce_ng_per_ml > 200.0
    # The smoothest profile under the cap changes rate only a few times.
    changes = np.sum(np.abs(np.diff(plan.rates_mg_per_min)) > 1e-6)
    assert changes <= 3
    assert float(plan.rates_mg_per_min.sum()) == pytest.approx(DOSE_MG / plan.segment_min)


def test_unreachable_cap_is_reported_not_hidden() -> None:
    params = _params()
    free = plan_gentle_start(params, total_mg=DOSE_MG, duration_min=DURATION_MIN)
    plan = plan_gentle_start(
        params,
        total_mg=DOSE_MG,
        duration_min=DURATION_MIN,
        cap_ce_ng_per_ml=free.peak_ce_ng_per_ml * 0.95,
    )
    assert not plan.feasible
    assert plan.peak_ce_ng_per_ml == pytest.approx(free.peak_ce_ng_per_ml, rel=1e-6)
    assert plan.lowest_peak_ce_ng_per_ml == pytest.approx(free.peak_ce_ng_per_ml, rel=1e-3)


def test_shortest_duration_under_a_cap_is_minimal() -> None:
    params = _params()
    cap = 150.0
    plan = plan_shortest_under_cap(
        params, total_mg=DOSE_MG, cap_ce_ng_per_ml=cap, max_duration_min=120.0, segment_min=2.0
    )
    assert plan.feasible
    assert plan.duration_min < 120.0
    shorter = plan_gentle_start(
        params,
        total_mg=DOSE_MG,
        duration_min=plan.duration_min - 2.0,
        segment_min=2.0,
        cap_ce_ng_per_ml=cap,
    )
    assert not shorter.feasible


def test_shortest_reports_infeasible_when_even_the_longest_duration_fails() -> None:
    plan = plan_shortest_under_cap(
        _params(), total_mg=DOSE_MG, cap_ce_ng_per_ml=20.0, max_duration_min=30.0
    )
    assert not plan.feasible
    assert plan.duration_min == 30.0


def test_max_rate_bounds_the_load() -> None:
    params = _params()
    r_max = 1.5 * DOSE_MG / DURATION_MIN
    plan = plan_gentle_start(
        params, total_mg=DOSE_MG, duration_min=DURATION_MIN, max_rate_mg_per_min=r_max
    )
    free = plan_gentle_start(params, total_mg=DOSE_MG, duration_min=DURATION_MIN)
    assert np.all(plan.rates_mg_per_min <= r_max * (1 + 1e-9))
    assert free.rates_mg_per_min.max() > r_max
    assert free.peak_ce_ng_per_ml < plan.peak_ce_ng_per_ml < plan.constant_peak_ce_ng_per_ml


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"total_mg": 0.0}, "dose"),
        ({"duration_min": 40.5}, "whole number of segments"),
        ({"max_rate_mg_per_min": 0.5}, "cannot be given"),
        ({"segment_min": 0.01}, "too many"),
        ({"cap_ce_ng_per_ml": -1.0}, "cap"),
    ],
)
def test_planner_input_errors(kwargs: dict[str, float], fragment: str) -> None:
    args: dict[str, float] = {"total_mg": DOSE_MG, "duration_min": DURATION_MIN}
    args.update(kwargs)
    with pytest.raises(InputError, match=fragment):
        plan_gentle_start(_params(), **args)


def test_planner_needs_an_effect_site() -> None:
    with pytest.raises(InputError, match="effect site"):
        plan_gentle_start(
            PKParameters.create(v1_l=10.0, k10_per_min=0.1), total_mg=10.0, duration_min=10.0
        )


def test_time_above_interpolates_crossings() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0])
    v = np.array([0.0, 2.0, 2.0, 0.0])
    # Above 1 from t = 0.5 to t = 2.5.
    assert time_above(t, v, 1.0) == pytest.approx(2.0)
    assert time_above(t, v, 5.0) == 0.0
    assert math.isclose(time_above(t, v, -1.0), 3.0)
