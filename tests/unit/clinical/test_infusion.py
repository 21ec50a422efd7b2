from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from ketaflow.clinical.actors import Actor
from ketaflow.clinical.infusion import (
    GapAssumption,
    InfusionEntryKind,
    InfusionRecord,
    InfusionStatus,
    PumpConfirmation,
)
from ketaflow.clinical.patient import PatientCovariates
from ketaflow.errors import InputError, StateError
from ketaflow.pk.library import default_model, load_model
from ketaflow.pk.schedule import Bolus, Infusion, Schedule
from ketaflow.pk.solve import simulate

from ._helpers import T0

COV = PatientCovariates(weight_kg=70.0, age_y=40.0, sex="female")


def at(minutes: float) -> object:
    return T0 + timedelta(minutes=minutes)


def status(r: InfusionRecord) -> InfusionStatus:
    """Read the status afresh (it changes as entries are added)."""
    return r.status


def titrated(nurse: Actor, planned: float | None = None) -> InfusionRecord:
    """52.5 mg/h for 10 min, 30 mg/h to 20 min, paused 20-25, 30 mg/h from 25 min."""
    r = InfusionRecord(
        started_at=T0,
        rate_mg_per_h=52.5,
        actor=nurse,
        concentration_mg_per_ml=1.0,
        planned_total_mg=planned,
    )
    r.change_rate(T0 + timedelta(minutes=10), 30.0, nurse, "BP rising")
    r.pause(T0 + timedelta(minutes=20), nurse, "nausea")
    r.resume(T0 + timedelta(minutes=25), nurse)
    return r


def test_dose_integrates_the_piecewise_rate(nurse: Actor) -> None:
    r = titrated(nurse)
    now = T0 + timedelta(minutes=30)
    # 52.5/60*10 = 8.75; 30/60*10 = 5; pause 0; 30/60*5 = 2.5 -> 16.25 mg
    assert r.dose_delivered_mg(now) == pytest.approx(16.25, abs=1e-12)
    assert r.dose_delivered_mg(T0 + timedelta(minutes=22)) == pytest.approx(13.75, abs=1e-12)
    assert r.volume_infused_ml(now) == pytest.approx(16.25, abs=1e-12)
    assert r.current_rate_mg_per_h == 30.0  # resumed at the rate before the pause
    kinds = [e.kind for e in r.entries]
    assert kinds == [
        InfusionEntryKind.START,
        InfusionEntryKind.RATE_CHANGE,
        InfusionEntryKind.PAUSE,
        InfusionEntryKind.RESUME,
    ]
    assert r.entries[1].reason == "BP rising"
    assert r.entries[1].who == "nurse-1"


def test_schedule_matches_the_record(nurse: Actor) -> None:
    r = titrated(nurse)
    r.give_bolus(T0 + timedelta(minutes=27), 5.0, nurse, "rescue per protocol")
    s = r.to_schedule(T0 + timedelta(minutes=30))
    assert s.events == (
        Infusion(0.0, 10.0, 0.875),
        Infusion(10.0, 20.0, 0.5),
        Infusion(25.0, 30.0, 0.5),
        Bolus(27.0, 5.0),
    )
    assert s.total_mg == pytest.approx(r.dose_delivered_mg(T0 + timedelta(minutes=30)), abs=1e-12)


def test_forecast_equals_direct_simulation_of_the_same_schedule(nurse: Actor) -> None:
    r = titrated(nurse)
    now = T0 + timedelta(minutes=30)
    f = r.forecast(now, COV, horizon_min=30, step_min=1)
    # What really happened plus 30 mg/h continuing for the whole horizon (no planned total).
    expected = Schedule.from_events(
        [
            Infusion(0, 10, 0.875),
            Infusion(10, 20, 0.5),
            Infusion(25, 30, 0.5),
            Infusion(30, 60, 0.5),
        ]
    )
    model = default_model()
    params = model.parameters(weight_kg=70.0, age_y=40.0, sex="female", warn=False)
    times = 30.0 + np.arange(0.0, 30.5, 1.0)
    direct = simulate(params, expected, times)
    np.testing.assert_allclose(f.cp_ng_per_ml, direct.cp_ng_per_ml[0], rtol=1e-12, atol=0)
    assert direct.ce_ng_per_ml is not None
    assert f.ce_ng_per_ml is not None
    np.testing.assert_allclose(f.ce_ng_per_ml, direct.ce_ng_per_ml[0], rtol=1e-12, atol=0)
    assert f.cp_now_ng_per_ml == pytest.approx(direct.cp_ng_per_ml[0, 0], rel=1e-12)
    assert f.times_min[0] == 30.0
    assert len(f.times_min) == 31
    assert f.model_id == model.id
    assert f.delivered_mg == pytest.approx(16.25, abs=1e-12)
    assert f.rate_mg_per_h[0] == pytest.approx(30.0, rel=1e-12)


def test_forecast_with_another_model_and_history(nurse: Actor) -> None:
    r = titrated(nurse)
    now = T0 + timedelta(minutes=30)
    model = load_model("domino-1984")
    f = r.forecast(now, COV, model=model, include_history=True, horizon_min=10, step_min=2)
    assert f.model_id == model.id
    assert f.times_min[0] == 0.0
    assert f.times_min[15] == 30.0
    params = model.parameters(weight_kg=70.0, age_y=40.0, sex="female", warn=False)
    direct = simulate(params, f.schedule, np.array(f.times_min))
    np.testing.assert_allclose(f.cp_ng_per_ml, direct.cp_ng_per_ml[0], rtol=1e-12)


def test_planned_total_stops_the_projection_like_the_pump(nurse: Actor) -> None:
    r = titrated(nurse, planned=20.0)
    now = T0 + timedelta(minutes=30)
    f = r.forecast(now, COV)
    # 16.25 given, 3.75 mg left at 0.5 mg/min -> pump stops at 37.5 min.
    assert f.schedule.events[-1] == Infusion(30.0, 37.5, 0.5)
    assert f.schedule.total_mg == pytest.approx(20.0, abs=1e-12)
    # The record itself never delivers beyond the planned total.
    assert r.dose_delivered_mg(T0 + timedelta(hours=2)) == pytest.approx(20.0, abs=1e-12)


def test_preview_rate_change_and_pause(nurse: Actor) -> None:
    r = titrated(nurse)
    now = T0 + timedelta(minutes=30)
    params = default_model().parameters(weight_kg=70.0, age_y=40.0, sex="female", warn=False)
    past = [Infusion(0, 10, 0.875), Infusion(10, 20, 0.5), Infusion(25, 30, 0.5)]
    times = 30.0 + np.arange(0.0, 30.5, 1.0)

    slower = r.preview(now, COV, rate_mg_per_h=12.0)
    want = simulate(params, Schedule.from_events([*past, Infusion(30, 60, 0.2)]), times)
    np.testing.assert_allclose(slower.proposed.cp_ng_per_ml, want.cp_ng_per_ml[0], rtol=1e-12)
    assert slower.proposed.cp_ng_per_ml[-1] < slower.current.cp_ng_per_ml[-1]

    paused = r.preview(now, COV, pause_min=10)
    want = simulate(params, Schedule.from_events([*past, Infusion(40, 70, 0.5)]), times)
    np.testing.assert_allclose(paused.proposed.cp_ng_per_ml, want.cp_ng_per_ml[0], rtol=1e-12)
    assert paused.proposed.future.startswith("pause 10 min")
    # The preview changed nothing.
    assert r.status is InfusionStatus.RUNNING
    assert len(r.entries) == 4

    with pytest.raises(InputError):
        r.preview(now, COV)
    with pytest.raises(InputError):
        r.preview(now, COV, rate_mg_per_h=10, pause_min=5)


def test_forecast_when_paused_gives_nothing_more(nurse: Actor) -> None:
    r = titrated(nurse)
    r.pause(T0 + timedelta(minutes=30), nurse, "BP")
    f = r.forecast(T0 + timedelta(minutes=31), COV)
    assert all(v == 0 for v in f.rate_mg_per_h)
    assert f.cp_ng_per_ml[-1] < f.cp_ng_per_ml[0]


def test_validity_notes_for_patients_outside_the_model(nurse: Actor) -> None:
    r = titrated(nurse)
    f = r.forecast(T0 + timedelta(minutes=30), PatientCovariates(weight_kg=170.0, age_y=40.0))
    assert f.validity_notes
    assert "weight_kg" in f.validity_notes[0]


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (lambda r, n: r.resume(T0 + timedelta(minutes=1), n), StateError),
        (lambda r, n: r.change_rate(T0 + timedelta(minutes=1), 0.0, n, "x"), InputError),
        (lambda r, n: r.change_rate(T0 + timedelta(minutes=1), 10.0, n, " "), InputError),
        (lambda r, n: r.pause(T0 - timedelta(minutes=1), n, "early"), InputError),
        (lambda r, n: r.give_bolus(T0 + timedelta(minutes=1), -1.0, n, "x"), InputError),
    ],
)
def test_invalid_changes(action: object, error: type[Exception], nurse: Actor) -> None:
    r = InfusionRecord(started_at=T0, rate_mg_per_h=30.0, actor=nurse)
    with pytest.raises(error):
        action(r, nurse)  # type: ignore[operator]  # the table holds lambdas


def test_nothing_after_stop(nurse: Actor) -> None:
    r = InfusionRecord(started_at=T0, rate_mg_per_h=30.0, actor=nurse)
    r.stop(T0 + timedelta(minutes=40), nurse, "", completed=True)
    assert r.ended_at == T0 + timedelta(minutes=40)
    with pytest.raises(StateError):
        r.change_rate(T0 + timedelta(minutes=41), 10.0, nurse, "x")
    with pytest.raises(InputError):  # an early stop needs a reason
        InfusionRecord(started_at=T0, rate_mg_per_h=30.0, actor=nurse).stop(
            T0 + timedelta(minutes=5), nurse, "", completed=False
        )


def test_uncertain_period_assumes_the_last_rate_until_confirmed(
    nurse: Actor, system: Actor
) -> None:
    r = InfusionRecord(started_at=T0, rate_mg_per_h=60.0, actor=nurse, concentration_mg_per_ml=1.0)
    r.mark_uncertain(T0 + timedelta(minutes=10), system, "server restart")
    assert r.status is InfusionStatus.UNCERTAIN
    # 10 min at 1 mg/min recorded, then the assumption: still 1 mg/min.
    assert r.dose_delivered_mg(T0 + timedelta(minutes=16)) == pytest.approx(16.0, abs=1e-12)
    assert r.forecast(T0 + timedelta(minutes=16), COV).uncertain
    with pytest.raises(StateError):
        r.change_rate(T0 + timedelta(minutes=16), 30.0, nurse, "x")
    # The pump says 13 mL (= 13 mg) in total: 3 mg over the 6-min gap, and it is now paused.
    e = r.reconcile(
        T0 + timedelta(minutes=16),
        nurse,
        PumpConfirmation(running=False, volume_infused_ml=13.0),
    )
    assert e.gap_mg == pytest.approx(3.0, abs=1e-12)
    assert e.discrepancy_mg == 0
    assert status(r) is InfusionStatus.PAUSED
    assert r.dose_delivered_mg(T0 + timedelta(minutes=30)) == pytest.approx(13.0, abs=1e-12)
    assert r.segments(T0 + timedelta(minutes=30))[-1].rate_mg_per_min == pytest.approx(0.5)


def test_pump_reporting_less_than_the_record_is_a_discrepancy(nurse: Actor, system: Actor) -> None:
    r = InfusionRecord(started_at=T0, rate_mg_per_h=60.0, actor=nurse, concentration_mg_per_ml=1.0)
    r.mark_uncertain(T0 + timedelta(minutes=10), system, "server restart")
    e = r.reconcile(
        T0 + timedelta(minutes=12),
        nurse,
        PumpConfirmation(running=True, rate_mg_per_h=60.0, volume_infused_ml=7.0),
    )
    assert e.gap_mg == 0
    assert e.discrepancy_mg == pytest.approx(-3.0, abs=1e-12)
    assert r.discrepancies == (e,)
    assert r.status is InfusionStatus.RUNNING


def test_gap_assumptions(nurse: Actor, system: Actor) -> None:
    for assumption, expected in (
        (GapAssumption.CONTINUED_AT_LAST_RATE, 20.0),
        (GapAssumption.STOPPED_AT_OUTAGE, 10.0),
    ):
        r = InfusionRecord(started_at=T0, rate_mg_per_h=60.0, actor=nurse)
        r.mark_uncertain(T0 + timedelta(minutes=10), system, "restart")
        r.reconcile(
            T0 + timedelta(minutes=20),
            nurse,
            PumpConfirmation(running=False, finished=True, gap_assumption=assumption),
        )
        assert r.status is InfusionStatus.STOPPED
        assert r.dose_delivered_mg(T0 + timedelta(minutes=30)) == pytest.approx(expected)


def test_pump_confirmation_validation(nurse: Actor, system: Actor) -> None:
    with pytest.raises(InputError):
        PumpConfirmation(running=True, rate_mg_per_h=30.0)  # neither volume nor assumption
    with pytest.raises(InputError):
        PumpConfirmation(running=False, rate_mg_per_h=30.0, volume_infused_ml=1.0)
    with pytest.raises(InputError):
        PumpConfirmation(running=True, finished=True, rate_mg_per_h=1.0, volume_infused_ml=1.0)
    r = InfusionRecord(started_at=T0, rate_mg_per_h=60.0, actor=nurse)  # no concentration
    r.mark_uncertain(T0 + timedelta(minutes=10), system, "restart")
    with pytest.raises(InputError, match="concentration"):
        r.reconcile(
            T0 + timedelta(minutes=12),
            nurse,
            PumpConfirmation(running=False, volume_infused_ml=12.0),
        )


def test_rebuild_from_entries(nurse: Actor) -> None:
    r = titrated(nurse, planned=30.0)
    copy = InfusionRecord.from_entries(
        r.entries, concentration_mg_per_ml=1.0, planned_total_mg=30.0
    )
    now = T0 + timedelta(minutes=50)
    assert copy.segments(now) == r.segments(now)
    assert copy.status is r.status
    with pytest.raises(StateError):  # a tampered order of entries does not replay
        InfusionRecord.from_entries([r.entries[0], r.entries[3]])
