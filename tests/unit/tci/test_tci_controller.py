"""Plasma and effect-site TCI, checked by replaying the commanded rates in the exact engine.

Acceptance (issue: target-controlled infusion): over 5-60 min after each target change the
median absolute performance error is < 0.5 %, the overshoot < 1 %, and at most 2 update
intervals between 30 and 60 min have rate zero; the time to 95 % of target is reported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ketaflow.errors import InputError, StateError
from ketaflow.pk.library import load_model
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import Infusion, Schedule
from ketaflow.pk.solve import simulate
from ketaflow.pk.tci import (
    PumpLimits,
    TargetSchedule,
    TciConfig,
    TciController,
    TciMode,
    TciResult,
    assess,
    run_tci,
)

MODELS = ("domino-1984", "kamp-2020")
MODES: tuple[TciMode, ...] = ("plasma", "effect")
STEP_UP = ("200 ng/mL from 0 min", "400 ng/mL from 60 min")
PUMP = PumpLimits.from_text(syringe="10 mg/mL", max_rate="1200 mL/h", resolution="0.1 mL/h")


def _params(model_id: str) -> PKParameters:
    return load_model(model_id).parameters(weight_kg=70.0)


def _check_acceptance(params: PKParameters, result: TciResult) -> None:
    report = assess(params, result)
    assert report.segments, "no target segment was scored"
    for seg in report.segments:
        assert seg.mdape_pct < 0.5, seg
        assert seg.max_overshoot_pct < 1.0, seg
        assert seg.zero_intervals_30_60 <= 2, seg
        assert seg.time_to_95_s is not None, seg


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_step_up_meets_acceptance_with_pump_limits(model_id: str, mode: TciMode) -> None:
    params = _params(model_id)
    result = run_tci(params, STEP_UP, duration_min=120.0, mode=mode, pump=PUMP)
    assert result.n_updates == 720
    _check_acceptance(params, result)
    # Pump limits hold: never above the maximum, always on the 0.1 mL/h grid.
    ml_h = result.rate_ml_per_h
    assert ml_h is not None
    assert np.all(ml_h <= 1200.0 + 1e-9)
    steps = ml_h / 0.1
    assert np.allclose(steps, np.round(steps), atol=1e-6)
    # Plasma mode reaches 95 % in one update; effect mode needs the effect-site peak.
    t95 = [s.time_to_95_s for s in assess(params, result).segments]
    if mode == "plasma":
        assert all(t is not None and t <= 10.0 for t in t95)
    else:
        assert all(t is not None and 30.0 < t < 600.0 for t in t95)


@pytest.mark.parametrize("model_id", MODELS)
def test_first_plasma_rate_is_bailey_shafer(model_id: str) -> None:
    """One update from an empty body puts Cp exactly on target at the end of the interval."""
    params = _params(model_id)
    ctl = TciController(params, mode="plasma")
    cmd = ctl.command(200.0)
    sched = Schedule.from_events([Infusion(0.0, 10 / 60, cmd.rate_mg_per_min)])
    cp = simulate(params, sched, [10 / 60]).cp_ng_per_ml[0, 0]
    assert cp == pytest.approx(200.0, rel=1e-10)
    assert ctl.cp_ng_per_ml == pytest.approx(200.0, rel=1e-10)


def test_domino_first_plasma_rate_matches_published_reference() -> None:
    # peer-tci-software.md section 4.4: 0.10057 mg/s for Domino 70 kg, 0.2 ug/mL, 10 s.
    cmd = TciController(_params("domino-1984"), mode="plasma").command(200.0)
    assert cmd.rate_mg_per_min / 60.0 == pytest.approx(0.10057, abs=5e-6)


def _peak_ce(params: PKParameters, x0: np.ndarray, rate: float, dt: float) -> float:
    times = np.arange(0.0, 30.0, 0.1 / 60)  # 0.1 s grid over 30 min (peaks come at 3-9 min)
    sched = Schedule.from_events([Infusion(0.0, dt, rate)]) if rate > 0 else Schedule(())
    ce = simulate(params, sched, times, initial_state=x0[None, :]).ce_ng_per_ml
    assert ce is not None
    return float(ce.max())


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("engine", ["modal", "matrix"])
def test_effect_rate_makes_the_predicted_peak_equal_the_target(model_id: str, engine: str) -> None:
    """Shafer-Gregg, from empty and from a state with drug on board (brute-force replay)."""
    params = _params(model_id)
    config = TciConfig(engine=engine)  # type: ignore[arg-type]  # str from parametrize
    dt = 10 / 60
    for x0 in (np.zeros(4), np.array([2.0, 1.5, 0.5, 0.05])):
        ctl = TciController(params, mode="effect", config=config, initial_state=x0)
        cmd = ctl.command(300.0)
        assert cmd.control == "effect"
        assert cmd.rate_mg_per_min > 0
        assert _peak_ce(params, x0, cmd.rate_mg_per_min, dt) == pytest.approx(300.0, rel=1e-6)


def test_effect_rate_is_zero_when_the_free_peak_exceeds_the_target() -> None:
    params = _params("domino-1984")
    x0 = np.array([2.0, 0.0, 0.0, 0.0])  # a bolus just given: Cp high, Ce still zero
    free_peak = _peak_ce(params, x0, 0.0, 10 / 60)
    ctl = TciController(params, mode="effect", initial_state=x0)
    cmd = ctl.command(0.9 * free_peak)
    assert cmd.rate_mg_per_min == 0.0
    assert cmd.control == "effect"


def test_modal_and_exact_matrix_engines_agree() -> None:
    params = _params("kamp-2020")
    sched = TargetSchedule.from_texts(STEP_UP)
    for mode in MODES:
        a = TciController(params, mode=mode, config=TciConfig(engine="modal")).run(sched, 120.0)
        b = TciController(params, mode=mode, config=TciConfig(engine="matrix")).run(sched, 120.0)
        assert a.engine == "modal"
        assert b.engine == "matrix"
        np.testing.assert_allclose(a.rate_mg_per_min, b.rate_mg_per_min, rtol=1e-9, atol=1e-12)


def test_repeated_eigenvalues_fall_back_to_the_exact_matrices() -> None:
    """ke0 equal to k10 makes the system defective: the modal form is refused, TCI still works."""
    params = PKParameters.create(v1_l=10.0, k10_per_min=0.2, ke0_per_min=0.2)
    with pytest.raises(InputError, match="modal form"):
        TciController(params, config=TciConfig(engine="modal"))
    for mode in MODES:
        ctl = TciController(params, mode=mode)
        assert ctl.engine_kind == "matrix"
        result = ctl.run(TargetSchedule.from_texts(["200 ng/mL", "400 ng/mL from 30 min"]), 60.0)
        for seg in assess(params, result).segments:
            assert seg.mdape_pct < 0.5
            assert seg.max_overshoot_pct < 1.0


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_binding_max_rate_is_never_exceeded_and_delays_the_target(
    model_id: str, mode: TciMode
) -> None:
    params = _params(model_id)
    free = run_tci(params, STEP_UP, duration_min=120.0, mode=mode, pump=PUMP)
    # Well below the first commands of either mode (about 180-8000 mg/h here).
    tight = PumpLimits.from_text(syringe="10 mg/mL", max_rate="15 mL/h")
    slow = run_tci(params, STEP_UP, duration_min=120.0, mode=mode, pump=tight)
    assert slow.limited.any()
    assert np.all(slow.rate_mg_per_h <= 150.0 + 1e-9)
    assert np.all(slow.requested_rate_mg_per_min[slow.limited] > slow.rate_mg_per_min[slow.limited])
    fast_t95 = assess(params, free).segments[0].time_to_95_s
    slow_seg = assess(params, slow).segments[0]
    assert fast_t95 is not None
    assert slow_seg.time_to_95_s is not None
    assert slow_seg.time_to_95_s > fast_t95
    assert slow_seg.max_overshoot_pct < 1.0


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_target_decrease_stops_then_resumes_without_undershoot(
    model_id: str, mode: TciMode
) -> None:
    params = _params(model_id)
    targets = ("400 ng/mL from 0 min", "200 ng/mL from 60 min")
    result = run_tci(params, targets, duration_min=120.0, mode=mode, pump=PUMP)
    after = result.rate_mg_per_min[360:720]
    assert after[0] == 0.0  # the pump stops at the decrease
    resumed = np.flatnonzero(after > 0)
    assert resumed.size > 0  # ... and restarts once the concentration has fallen
    report = assess(params, result)
    down = report.segments[1]
    assert down.target_ng_per_ml == 200.0
    assert down.max_overshoot_pct < 1.0  # never more than 1 % below the new target
    # How fast the concentration can fall is pharmacology (elimination and, for Ce, ke0), not
    # control: once it is within 5 % the controller holds it there.
    assert down.time_to_95_s is not None
    held = report.times_min >= 60.0 + down.time_to_95_s / 60.0
    error = np.abs(report.concentration_ng_per_ml[held] - 200.0) / 200.0
    assert error.max() < 0.05
    assert np.median(error) < 0.005


def test_pure_shafer_gregg_chatters_and_the_plasma_switch_removes_it() -> None:
    params = _params("kamp-2020")
    pure = TciConfig(plasma_band=None)
    chatter = run_tci(params, STEP_UP, duration_min=120.0, mode="effect", pump=PUMP, config=pure)
    smooth = run_tci(params, STEP_UP, duration_min=120.0, mode="effect", pump=PUMP)
    assert assess(params, chatter).segments[0].zero_intervals_30_60 > 20
    assert assess(params, smooth).segments[0].zero_intervals_30_60 == 0
    assert "plasma" not in chatter.control
    assert "plasma" in smooth.control


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ["modal", "matrix"])
def test_command_by_command_equals_run(mode: TciMode, engine: str) -> None:
    """``run`` inlines the plasma rule for speed; it must decide exactly as ``command``."""
    params = _params("domino-1984")
    sched = TargetSchedule.from_texts([*STEP_UP, "0 ng/mL from 80 min"])
    config = TciConfig(engine=engine)  # type: ignore[arg-type]  # str from parametrize
    planned = TciController(params, mode=mode, pump=PUMP, config=config).run(sched, 90.0)
    ctl = TciController(params, mode=mode, pump=PUMP, config=config)
    rates = [
        ctl.command(sched.target_ng_per_ml_at(t)).rate_mg_per_min for t in planned.time_min[:-1]
    ]
    np.testing.assert_array_equal(rates, planned.rate_mg_per_min[:-1])
    assert planned.control[-2] == "stop"
    assert ctl.time_min == pytest.approx(90.0)
    assert ctl.volume_ml == pytest.approx(float(planned.volume_ml[-1]), rel=1e-12)  # type: ignore[index]  # pump given


def test_continuing_from_a_saved_state_is_seamless() -> None:
    params = _params("kamp-2020")
    sched = TargetSchedule.from_texts(STEP_UP)
    whole = TciController(params, mode="effect").run(sched, 120.0)
    first = TciController(params, mode="effect")
    part1 = first.run(sched, 60.0)
    second = TciController(params, mode="effect", initial_state=first.state, start_time_min=60.0)
    part2 = second.run(sched, 60.0)
    joined = np.concatenate([part1.rate_mg_per_min[:-1], part2.rate_mg_per_min])
    np.testing.assert_allclose(joined, whole.rate_mg_per_min, rtol=1e-9, atol=1e-12)
    # The replay of a run that starts later uses its initial state.
    assert assess(params, part2).segments[0].mdape_pct < 0.5


def _actual_state(params: PKParameters, segments: list[tuple[float, float, float]]) -> np.ndarray:
    sched = Schedule.from_events([Infusion(a, b, r) for a, b, r in segments if r > 0])
    return simulate(params, sched, [segments[-1][1]]).state_final[0]


def test_report_delivered_rebases_on_what_the_pump_gave() -> None:
    """A pump that delivers 90 % of each command: reports keep the prediction exact."""
    params = _params("kamp-2020")
    pump = PumpLimits(syringe_mg_per_ml=10.0, resolution_ml_per_h=0.0)
    dt = 10 / 60
    ctl = TciController(params, mode="plasma", pump=pump)
    blind = TciController(params, mode="plasma", pump=pump)
    actual: list[tuple[float, float, float]] = []
    blind_actual: list[tuple[float, float, float]] = []
    volume = 0.0
    for _ in range(180):
        cmd = ctl.command(200.0)
        given = 0.9 * cmd.rate_mg_per_min
        actual.append((cmd.time_min, cmd.time_min + dt, given))
        volume += given * dt / pump.syringe_mg_per_ml
        ctl.report_delivered(volume, ctl.time_min)
        b = blind.command(200.0)
        blind_actual.append((b.time_min, b.time_min + dt, 0.9 * b.rate_mg_per_min))
    truth = _actual_state(params, actual)
    np.testing.assert_allclose(ctl.state, truth, rtol=1e-9)
    assert ctl.volume_ml == pytest.approx(volume, rel=1e-12)
    true_cp = truth[0] / params.v1_l[0] * 1000.0
    blind_cp = _actual_state(params, blind_actual)[0] / params.v1_l[0] * 1000.0
    assert abs(true_cp - 200.0) / 200.0 < 0.01  # re-planned from the real delivery
    assert abs(blind_cp - 200.0) / 200.0 > 0.05  # without reports the error accumulates


def test_report_mid_interval_and_after_several_intervals() -> None:
    params = _params("domino-1984")
    pump = PumpLimits(syringe_mg_per_ml=10.0, resolution_ml_per_h=0.0)
    dt = 10 / 60
    ctl = TciController(params, mode="plasma", pump=pump)
    cmds = [ctl.command(300.0) for _ in range(6)]
    assert all(c.rate_mg_per_min > 0 for c in cmds)
    # The pump reports at 0.75 intervals into the 5th interval: 80 % of the commanded amount.
    t_report = 4.75 * dt
    commanded = sum(
        c.rate_mg_per_min * max(0.0, min(c.time_min + dt, t_report) - c.time_min) for c in cmds
    )
    ctl.report_delivered(0.8 * commanded / 10.0, t_report)
    segments = []
    for c in cmds:
        a, b = c.time_min, c.time_min + dt
        if b <= t_report + 1e-12:
            segments.append((a, b, 0.8 * c.rate_mg_per_min))
        elif a < t_report:
            segments.append((a, t_report, 0.8 * c.rate_mg_per_min))
            segments.append((t_report, b, c.rate_mg_per_min))
        else:
            segments.append((a, b, c.rate_mg_per_min))
    np.testing.assert_allclose(ctl.state, _actual_state(params, segments), rtol=1e-9)
    # A second report at the current time: the pump delivered nothing more since the first.
    ctl.report_delivered(0.8 * commanded / 10.0, ctl.time_min)
    segments[-2:] = [(s[0], s[1], 0.0) for s in segments[-2:]]
    np.testing.assert_allclose(ctl.state, _actual_state(params, segments), rtol=1e-9, atol=1e-15)


def test_report_delivered_rejects_impossible_reports() -> None:
    params = _params("domino-1984")
    ctl = TciController(params, mode="plasma", pump=PUMP)
    ctl.command(200.0)
    ctl.command(200.0)
    ctl.report_delivered(0.1, ctl.time_min)
    with pytest.raises(InputError, match="cannot decrease"):
        ctl.report_delivered(0.05, ctl.time_min)
    with pytest.raises(InputError, match="between the last report"):
        ctl.report_delivered(0.2, ctl.time_min + 1.0)
    with pytest.raises(InputError, match="between the last report"):
        ctl.report_delivered(0.2, 0.0)
    with pytest.raises(StateError, match="syringe"):
        TciController(params, mode="plasma").report_delivered(0.1, 0.0)


def test_zero_target_stops_the_pump() -> None:
    params = _params("domino-1984")
    result = run_tci(params, ["200 ng/mL", "0 ng/mL from 10 min"], duration_min=20.0, mode="effect")
    assert np.all(result.rate_mg_per_min[60:] == 0.0)
    assert set(result.control[60:]) == {"stop"}


def test_effect_mode_needs_an_effect_site() -> None:
    params = PKParameters.create(v1_l=10.0, k10_per_min=0.2)
    with pytest.raises(InputError, match="effect site"):
        TciController(params, mode="effect")
    result = run_tci(params, ["200 ng/mL"], duration_min=10.0, mode="plasma")
    assert result.ce_ng_per_ml is None
    assert result.cp_ng_per_ml[-1] == pytest.approx(200.0, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda p: TciController(p.take([0, 0])), "one patient"),
        (lambda p: TciController(p, mode="blood"), "mode"),  # type: ignore[arg-type]  # bad on purpose
        (lambda p: TciController(p, initial_state=[1.0, 2.0]), "initial_state"),
        (lambda p: TciController(p).run(TargetSchedule.from_pairs([(0, 200)]), 0.25), "whole"),
        (lambda p: TciController(p).run(TargetSchedule.from_pairs([(0, 200)]), math.inf), "whole"),
        (lambda p: TciController(p).command(-5.0), "target"),
    ],
)
def test_controller_input_errors(call: object, fragment: str) -> None:
    params = _params("domino-1984")
    with pytest.raises(InputError, match=fragment):
        call(params)  # type: ignore[operator]  # the lambdas above


@pytest.mark.parametrize("model_id", MODELS)
def test_plasma_limit_bounds_cp_in_effect_mode(model_id: str) -> None:
    params = _params(model_id)
    free = run_tci(params, STEP_UP, duration_min=120.0, mode="effect", pump=PUMP)
    limited = run_tci(
        params,
        STEP_UP,
        duration_min=120.0,
        mode="effect",
        pump=PUMP,
        config=TciConfig(cp_limit_factor=1.5),
    )
    # Without a limit the effect-site bolus drives Cp to several times the target.
    assert free.cp_ng_per_ml.max() > 4 * 200.0
    # With it, the replayed Cp (1 s grid) stays within 1.5 x target, allowing for rounding.
    cp = assess(params, limited, site="plasma").concentration_ng_per_ml
    target = limited.target_ng_per_ml[np.minimum(np.arange(len(cp)) // 10, 720)]
    assert np.all(cp <= 1.5 * target * 1.005)
    report = assess(params, limited)
    slow, fast = report.segments[0].time_to_95_s, assess(params, free).segments[0].time_to_95_s
    assert slow is not None
    assert fast is not None
    assert slow > fast
    for seg in report.segments:
        assert seg.mdape_pct < 0.5
        assert seg.max_overshoot_pct < 1.0


def test_external_rates_are_scored_like_our_own() -> None:
    params = _params("domino-1984")
    sched = TargetSchedule.from_texts(STEP_UP)
    ours = TciController(params, mode="effect").run(sched, 120.0)
    again = TciResult.from_rates(
        params, ours.rate_mg_per_min[:-1], update_min=10 / 60, targets=sched, mode="effect"
    )
    np.testing.assert_allclose(again.cp_ng_per_ml, ours.cp_ng_per_ml, rtol=1e-9, atol=1e-9)
    a, b = assess(params, ours), assess(params, again)
    assert [s.mdape_pct for s in a.segments] == pytest.approx([s.mdape_pct for s in b.segments])
    with pytest.raises(InputError, match="rates"):
        TciResult.from_rates(params, [-1.0], update_min=1.0, targets=sched, mode="plasma")
