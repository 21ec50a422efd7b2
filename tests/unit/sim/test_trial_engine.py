"""Trial engine: exactness against the PK solver, pump semantics, rules, outcomes, reducers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ketaflow.errors import InputError, ProtocolError
from ketaflow.pk.population import PopulationSpec
from ketaflow.pk.schedule import BatchSchedule
from ketaflow.pk.solve import simulate
from ketaflow.sim.arms import (
    ACTION_NONE,
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_SLOW,
    Adjustment,
    NoRules,
    Observation,
    StandInRules,
    TrialArm,
    resolve_arms,
    stand_in_arm,
)
from ketaflow.sim.cohort import Cohort
from ketaflow.sim.engine import SessionSettings, TimeGrid, TrialNoise, run_arm
from ketaflow.sim.reducers import (
    Bins,
    Histogram,
    Moments,
    TimeHistogram,
    quantile_ci95,
    time_counts,
    wilson_ci95,
)

SPEC = PopulationSpec.create(seed=77)
SETTINGS = SessionSettings(grid=TimeGrid(horizon_min=240.0, dt_min=0.5))
N = 300


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return Cohort.generate(SPEC, 0, N)


@pytest.fixture(scope="module")
def noise() -> TrialNoise:
    return TrialNoise.generate(SPEC.seed, 0, N, SETTINGS.n_slots)


def test_engine_equals_the_pk_solver_without_rules(cohort: Cohort, noise: TrialNoise) -> None:
    arm = TrialArm("plain", ("bolus 0.1 mg/kg at 2 min", "0.5 mg/kg over 40 min"), rules=NoRules())
    res = run_arm(cohort, arm, SETTINGS, noise)
    batch = BatchSchedule.from_instructions(arm.instructions(), cohort.population.weight_kg)
    ref = simulate(cohort.population.pk_parameters(), batch, SETTINGS.grid.times_min())
    assert ref.ce_ng_per_ml is not None
    # Same exact discretisation, same operation order: equal to rounding (1e-12 relative).
    np.testing.assert_allclose(res.cp_ng_per_ml.T, ref.cp_ng_per_ml, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.ce_ng_per_ml.T, ref.ce_ng_per_ml, rtol=1e-12, atol=1e-12)
    o = res.outcomes
    np.testing.assert_allclose(o["total_dose_mg"], batch.total_mg(), rtol=1e-12)
    np.testing.assert_array_equal(o["infusion_end_min"], 40.0)
    np.testing.assert_allclose(o["peak_cp_ng_per_ml"], ref.cp_ng_per_ml.max(axis=1), rtol=1e-12)
    assert not o["stopped_early"].any()


def test_slowing_stretches_the_order_and_still_gives_the_full_dose(
    cohort: Cohort, noise: TrialNoise
) -> None:
    # Rules that halve the rate at the first reading after the start, once.
    class HalveAt10:
        description = "halve at 10 min"

        def decide(self, obs: Observation) -> Adjustment:
            slow = np.full(obs.n_patients, obs.time_min == 10.0)
            return Adjustment(
                speed=np.where(slow, 0.5, obs.speed),
                paused=obs.paused.copy(),
                stopped=np.zeros(obs.n_patients, dtype=bool),
                action=np.where(slow, ACTION_SLOW, ACTION_NONE),
            )

    arm = TrialArm("halved", ("0.5 mg/kg over 40 min",), rules=HalveAt10())
    o = run_arm(cohort, arm, SETTINGS, noise).outcomes
    # 10 min at full rate + 30 min of the plan at half speed = 70 min.
    np.testing.assert_allclose(o["infusion_end_min"], 70.0)
    np.testing.assert_allclose(o["total_dose_mg"], o["ordered_dose_mg"], rtol=1e-12)
    assert (o["n_slowdowns"] == 1).all()


def test_pause_holds_and_the_infusion_stops_at_the_maximum_time(
    cohort: Cohort, noise: TrialNoise
) -> None:
    class PauseForever:
        description = "pause at 20 min"

        def decide(self, obs: Observation) -> Adjustment:
            now = obs.time_min >= 20.0
            return Adjustment(
                speed=obs.speed.copy(),
                paused=np.full(obs.n_patients, now) | obs.paused,
                stopped=np.zeros(obs.n_patients, dtype=bool),
                action=np.full(obs.n_patients, ACTION_PAUSE if now else ACTION_NONE),
            )

    arm = TrialArm(
        "paused", ("0.5 mg/kg over 40 min",), rules=PauseForever(), max_infusion_factor=1.5
    )
    o = run_arm(cohort, arm, SETTINGS, noise).outcomes
    np.testing.assert_allclose(o["total_dose_mg"], 0.5 * o["ordered_dose_mg"], rtol=1e-12)
    np.testing.assert_array_equal(o["infusion_end_min"], 60.0)  # 1.5 x 40 min
    assert o["stopped_early"].all()


def test_stand_in_rules_table() -> None:
    rules = StandInRules()
    n = 5
    obs = Observation(
        time_min=20.0,
        sbp_mm_hg=np.array([150.0, 190.0, 150.0, 150.0, 150.0]),
        dbp_mm_hg=np.array([90.0, 90.0, 90.0, 90.0, 90.0]),
        hr_per_min=np.full(n, 80.0),
        sbp0_mm_hg=np.full(n, 130.0),
        dbp0_mm_hg=np.full(n, 80.0),
        dissociation=np.array([0.3, 0.3, 0.9, 0.3, 0.3]),
        intensity=np.array([3, 3, 5, 3, 3]),
        need_help=np.array([False, False, False, False, True]),
        speed=np.ones(n),
        paused=np.array([False, False, False, True, False]),
        delivered_mg=np.full(n, 10.0),
        ordered_mg=np.full(n, 35.0),
    )
    adj = rules.decide(obs)
    # nothing / BP high -> pause / too intense -> slow 25 % / paused and BP fine -> resume at
    # 75 % / "I need help" -> pause
    np.testing.assert_array_equal(
        adj.action, [ACTION_NONE, ACTION_PAUSE, ACTION_SLOW, ACTION_RESUME, ACTION_PAUSE]
    )
    np.testing.assert_allclose(adj.speed, [1.0, 1.0, 0.75, 0.75, 1.0])
    np.testing.assert_array_equal(adj.paused, [False, True, False, False, True])
    assert "Stand-in" in rules.description


def test_stand_in_protocols_and_errors() -> None:
    arms = resolve_arms(["depression-standard", "depression-slow"])
    assert [a.doses for a in arms] == [("0.5 mg/kg over 40 min",), ("0.5 mg/kg over 100 min",)]
    with pytest.raises(ProtocolError, match="unknown protocol"):
        stand_in_arm("nope")
    with pytest.raises(InputError, match="twice"):
        resolve_arms(["depression-standard", "depression-standard"])
    with pytest.raises(InputError, match="over"):
        TrialArm("bad", ("0.5 mg/kg",))


def test_outcomes_are_plausible_for_the_standard_regimen(cohort: Cohort, noise: TrialNoise) -> None:
    o = run_arm(cohort, stand_in_arm("depression-standard"), SETTINGS, noise).outcomes
    # Section 1.14 of the PK notes: adult models give 177-253 ng/mL at the end of the standard
    # infusion for a typical 70-kg patient; the virtual population scatters around that.
    assert 180 < np.median(o["peak_cp_ng_per_ml"]) < 320
    assert np.all(o["peak_ce_ng_per_ml"] < o["peak_cp_ng_per_ml"])
    assert 0.2 < np.median(o["peak_dissociation"]) < 0.7
    ready = o["discharge_ready_after_end_min"]
    assert np.nanmin(ready) >= SETTINGS.discharge.min_observation_min
    assert 30 <= np.nanmedian(ready) <= 120
    assert np.all(o["total_dose_mg"] <= o["ordered_dose_mg"] * (1 + 1e-12))
    assert np.all(o["max_sbp_mm_hg"] > o["max_dbp_mm_hg"])
    assert 0.0 <= o["alarm_sbp_gt_180"].mean() < 0.1


def test_common_random_numbers_make_identical_arms_identical(
    cohort: Cohort, noise: TrialNoise
) -> None:
    a = run_arm(cohort, stand_in_arm("depression-standard"), SETTINGS, noise).outcomes
    b = run_arm(cohort, stand_in_arm("depression-standard"), SETTINGS, noise).outcomes
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_dose_times_off_the_grid_are_refused(cohort: Cohort, noise: TrialNoise) -> None:
    arm = TrialArm("odd", ("0.5 mg/kg over 40.25 min",), rules=NoRules())
    with pytest.raises(ProtocolError, match="multiples"):
        run_arm(cohort, arm, SETTINGS, noise)
    with pytest.raises(InputError, match="multiple of dt_min"):
        TimeGrid(horizon_min=100.0, dt_min=0.3)


# --- reducers ---------------------------------------------------------------------------------


def test_time_histogram_percentiles_within_one_bin() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(np.log(150.0), 0.4, size=(4, 50_000))
    values[0] = 0.0
    bins = Bins("log", 0.1, 1e4, 500)
    th = TimeHistogram(bins, 4)
    for part in np.array_split(values, 5, axis=1):  # merged from chunks
        th.add_counts(time_counts(bins, part))
    q = th.quantiles(np.array([0.05, 0.5, 0.95]))
    exact = np.percentile(values, [5, 50, 95], axis=1)
    ratio = (1e4 / 0.1) ** (1 / 500)  # one bin: 2.3 %
    np.testing.assert_array_equal(q[:, 0], 0.0)
    np.testing.assert_allclose(q[:, 1:], exact[:, 1:], rtol=ratio - 1)


def test_histogram_quantiles_moments_and_intervals() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(50.0, 10.0, 20_000)
    h = Histogram(Bins("linear", 0.0, 100.0, 1000))
    m = Moments()
    for part in np.array_split(v, 7):
        h.add(part)
        m.add(part)
    assert abs(float(h.quantiles(np.array([0.5]))[0]) - np.median(v)) <= 0.1  # one bin
    assert m.mean == pytest.approx(v.mean(), rel=1e-12)
    assert m.sd == pytest.approx(v.std(ddof=1), rel=1e-9)
    lo, hi = m.mean_ci95()
    assert lo < 50.0 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 10.0 / math.sqrt(20_000), rel=0.05)
    qlo, qhi = quantile_ci95(h, 0.5)
    assert qlo < np.median(v) < qhi
    # Wilson interval, e.g. 0 of 100 -> (0, 0.037) and 50 of 100 -> (0.404, 0.596).
    assert wilson_ci95(0, 100) == pytest.approx((0.0, 0.03699), abs=1e-4)
    assert wilson_ci95(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_censored_values_count_as_longest_for_quantiles() -> None:
    h = Histogram(Bins("linear", 0.0, 100.0, 100))
    values = np.concatenate([np.linspace(0.0, 50.0, 1000), np.full(1500, np.nan)])
    h.add(values)
    assert h.n_nan == 1500
    assert h.quantiles(np.array([0.5]))[0] == pytest.approx(25.0, abs=1.0)  # one bin
    # 60 % censored: the median is beyond the horizon, read as the last edge.
    assert h.quantiles(np.array([0.5]), nan_as_overflow=True)[0] == 100.0
