"""Trial engine: exactness against the PK solver, pump semantics, rules, outcomes, reducers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

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
    ACTION_STOP,
    Adjustment,
    NoRules,
    Observation,
    TrialArm,
    resolve_arms,
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
                recheck_after_min=np.full(obs.n_patients, np.nan),
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
                recheck_after_min=np.full(obs.n_patients, np.nan),
            )

    arm = TrialArm(
        "paused", ("0.5 mg/kg over 40 min",), rules=PauseForever(), max_infusion_factor=1.5
    )
    o = run_arm(cohort, arm, SETTINGS, noise).outcomes
    np.testing.assert_allclose(o["total_dose_mg"], 0.5 * o["ordered_dose_mg"], rtol=1e-12)
    np.testing.assert_array_equal(o["infusion_end_min"], 60.0)  # 1.5 x 40 min
    assert o["stopped_early"].all()


def _obs(**kw: Sequence[float] | np.ndarray) -> Observation:
    n = len(kw["sbp"])

    def arr(key: str, default: float) -> np.ndarray:
        return np.asarray(kw.get(key, [default] * n), dtype=float)

    return Observation(
        time_min=20.0,
        sbp_mm_hg=arr("sbp", 150),
        dbp_mm_hg=arr("dbp", 90),
        hr_per_min=arr("hr", 80),
        bp_consecutive=arr("consecutive", 1).astype(np.int64),
        hr_sustained_min=arr("sustained", 0),
        sbp0_mm_hg=np.full(n, 130.0),
        dbp0_mm_hg=np.full(n, 80.0),
        dissociation=np.full(n, 0.3),
        intensity=arr("intensity", 3).astype(np.int64),
        need_help=np.zeros(n, dtype=bool),
        speed=arr("speed", 1.0),
        paused=np.asarray(kw.get("paused", [False] * n), dtype=bool),
        delivered_mg=np.full(n, 10.0),
        ordered_mg=np.full(n, 35.0),
    )


def test_protocol_rules_table() -> None:
    rules = resolve_arms(["depression-standard"])[0].rules
    obs = _obs(
        sbp=[150, 185, 185, 205, 150, 150, 150, 150, 150],
        consecutive=[1, 1, 2, 1, 1, 1, 1, 1, 1],
        intensity=[3, 3, 3, 3, 6, 9, 3, 3, 3],
        hr=[80, 80, 80, 80, 80, 80, 80, 125, 80],
        sustained=[0, 0, 0, 0, 0, 0, 0, 10, 0],
        paused=[False, False, False, False, False, False, True, False, False],
    )
    adj = rules.decide(obs)
    # nothing / first SBP > 180 -> pause, recheck 5 / confirmed -> stop / > 200 -> stop /
    # intensity 6 -> slow 25 %, recheck 10 / intensity 9 -> pause / paused and all fine -> resume /
    # HR > 120 for 10 min -> pause / nothing
    np.testing.assert_array_equal(
        adj.action,
        [
            ACTION_NONE,
            ACTION_PAUSE,
            ACTION_STOP,
            ACTION_STOP,
            ACTION_SLOW,
            ACTION_PAUSE,
            ACTION_RESUME,
            ACTION_PAUSE,
            ACTION_NONE,
        ],
    )
    np.testing.assert_allclose(adj.speed, [1, 1, 1, 1, 0.75, 1, 1, 1, 1])
    np.testing.assert_array_equal(adj.stopped, [0, 0, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(adj.paused, [0, 1, 0, 0, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(
        adj.recheck_after_min, [np.nan, 5, np.nan, np.nan, 10, 5, np.nan, 5, np.nan]
    )
    assert "suggest_in_session" in rules.description


def test_vectorised_rules_agree_with_the_dosing_function_patient_by_patient() -> None:
    from ketaflow.dosing.protocols import load_protocol
    from ketaflow.dosing.titration import (
        BloodPressureEvent,
        HeartRateEvent,
        InSessionAction,
        IntensityEvent,
    )

    protocol = load_protocol("depression-standard")
    rules = resolve_arms(["depression-standard"])[0].rules
    rng = np.random.default_rng(3)
    n = 400
    obs = _obs(
        sbp=rng.integers(100, 230, n),
        dbp=rng.integers(60, 130, n),
        consecutive=rng.integers(1, 4, n),
        hr=rng.integers(50, 140, n),
        sustained=rng.choice([0.0, 5.0, 10.0], n),
        intensity=rng.integers(0, 11, n),
    )
    adj = rules.decide(obs)
    severity = {"continue": 0, "slow": 1, "pause": 2, "stop": 3}
    expected_action = {0: ACTION_NONE, 1: ACTION_SLOW, 2: ACTION_PAUSE, 3: ACTION_STOP}
    for i in range(n):
        suggestions = [
            protocol.suggest(IntensityEvent(float(obs.intensity[i]))),
            protocol.suggest(
                BloodPressureEvent(
                    float(obs.sbp_mm_hg[i]), float(obs.dbp_mm_hg[i]), int(obs.bp_consecutive[i])
                )
            ),
            protocol.suggest(
                HeartRateEvent(float(obs.hr_per_min[i]), float(obs.hr_sustained_min[i]))
            ),
        ]
        worst = max(severity[s.action.value] for s in suggestions)
        assert adj.action[i] == expected_action[worst], i
        if worst == 1:
            pct = max(s.slow_by_pct or 0 for s in suggestions if s.action is InSessionAction.SLOW)
            assert adj.speed[i] == pytest.approx(1 - pct / 100)


def test_protocol_arms_and_errors(protocol_file: Callable[[str, str], Path]) -> None:
    arms = resolve_arms(["depression-standard", "depression-titration"])
    assert [a.doses for a in arms] == [("0.5 mg/kg over 40 min",)] * 2
    assert arms[0].vitals_during_infusion_every_min == 10.0
    assert arms[0].source.startswith("ketaflow.dosing protocol depression-standard")
    with pytest.raises(ProtocolError, match="unknown protocol"):
        resolve_arms(["nope"])
    with pytest.raises(InputError, match="twice"):
        resolve_arms(["depression-standard", "depression-standard"])
    with pytest.raises(InputError, match="over"):
        TrialArm("bad", ("0.5 mg/kg",))
    path = protocol_file("depression-slow", "0.5 mg/kg over 100 min")
    [slow] = resolve_arms([str(path)])
    assert slow.name == "depression-slow"
    assert slow.doses == ("0.5 mg/kg over 100 min",)


def test_alarm_rules_of_the_clinic_on_readings() -> None:
    from ketaflow.sim.engine import alarm_fired, trial_alarm_rules

    rules = {r.spec.code: r for r in trial_alarm_rules()}
    times = np.array([[0, 10, 20, 30], [0, 10, 20, 30], [0, 10, 20, 30], [0, 10, 40, 55]], float)
    phases = np.array([[0, 1, 1, 3]] * 4, float)
    sbp = np.array(
        [[150, 185, 150, 150], [150, 185, 186, 150], [210, 150, 150, 150], [150, 185, 186, 150]],
        float,
    )
    base = sbp[:, 0]
    # One reading above 180 (consider stop) / two in a row within 15 min (stop) / > 200 before
    # the infusion (severe watches pre_infusion too) / two in a row but 30 min apart.
    np.testing.assert_array_equal(
        alarm_fired(rules["SBP_HIGH_CONSIDER_STOP"], times, phases, sbp, base), [1, 1, 0, 1]
    )
    np.testing.assert_array_equal(
        alarm_fired(rules["SBP_HIGH_STOP"], times, phases, sbp, base), [0, 1, 0, 0]
    )
    np.testing.assert_array_equal(
        alarm_fired(rules["SBP_SEVERE"], times, phases, sbp, base), [0, 0, 1, 0]
    )
    hr = np.array(
        [[80, 125, 80, 80], [80, 125, 126, 80], [80, 80, 80, 80], [80, 80, 80, 80]], float
    )
    np.testing.assert_array_equal(
        alarm_fired(rules["HR_HIGH_SUSTAINED"], times, phases, hr, hr[:, 0]), [0, 1, 0, 0]
    )


def test_outcomes_are_plausible_for_the_standard_regimen(cohort: Cohort, noise: TrialNoise) -> None:
    o = run_arm(cohort, resolve_arms(["depression-standard"])[0], SETTINGS, noise).outcomes
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
    assert 0.0 <= o["alarm_SBP_HIGH_STOP"].mean() <= o["alarm_SBP_HIGH_CONSIDER_STOP"].mean() < 0.1


def test_common_random_numbers_make_identical_arms_identical(
    cohort: Cohort, noise: TrialNoise
) -> None:
    a = run_arm(cohort, resolve_arms(["depression-standard"])[0], SETTINGS, noise).outcomes
    b = run_arm(cohort, resolve_arms(["depression-standard"])[0], SETTINGS, noise).outcomes
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
