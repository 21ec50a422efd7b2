from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ketaflow.clinical.actors import Actor, Role
from ketaflow.clinical.alarms import (
    AlarmCategory,
    AlarmEngine,
    AlarmEvent,
    AlarmEventKind,
    AlarmState,
    MonitoringSchedule,
    Phase,
    Priority,
    ScaleDue,
    SuggestedAction,
    load_alarm_rules,
    with_monitoring_schedule,
)
from ketaflow.clinical.checkins import CheckIn
from ketaflow.clinical.clock import ManualClock
from ketaflow.clinical.scales import score_cadss, score_moaas
from ketaflow.clinical.vitals import VitalKind, VitalReading, VitalSource, assess_reading
from ketaflow.errors import AuthError, InputError, NotFoundError, ProtocolError, StateError

from ._helpers import T0, vitals

K = AlarmEventKind
NURSE = Actor("nurse-1", Role.NURSE)


def reading(
    kind: VitalKind, value: float, at: datetime, source: VitalSource = VitalSource.MANUAL
) -> VitalReading:
    return assess_reading(kind, value, measured_at=at, source=source)


def kinds(events: list[AlarmEvent]) -> list[tuple[AlarmEventKind, str]]:
    return [(e.kind, e.code) for e in events]


@pytest.fixture
def engine(clock: ManualClock) -> AlarmEngine:
    e = AlarmEngine(clock=clock)
    e.set_baseline(vitals(T0, sbp=120, dbp=75, hr=70, spo2=98))
    e.set_phase(Phase.INFUSING)
    return e


def feed_bp(engine: AlarmEngine, clock: ManualClock, sbp: float, dbp: float) -> list[AlarmEvent]:
    return engine.feed_set(vitals(clock.now(), sbp=sbp, dbp=dbp, hr=75, spo2=98, rr=None))


def test_normal_readings_raise_nothing(engine: AlarmEngine, clock: ManualClock) -> None:
    for _ in range(5):
        clock.advance(minutes=1)
        assert feed_bp(engine, clock, 130, 80) == []
        assert engine.tick() == []


def test_sbp_over_180_consider_then_stop_on_second_reading(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    clock.advance(minutes=10)
    first = feed_bp(engine, clock, 185, 95)
    assert kinds(first) == [
        (K.RAISED, "SBP_HIGH_CONSIDER_STOP"),
        (K.RAISED, "SBP_RISE_FROM_BASELINE"),
    ]
    a = first[0].alarm
    assert a.priority is Priority.MEDIUM
    assert a.suggested_action is SuggestedAction.PAUSE_INFUSION
    assert a.vital is VitalKind.SBP
    assert a.value == 185
    clock.advance(minutes=5)
    second = feed_bp(engine, clock, 188, 96)
    assert kinds(second) == [(K.RAISED, "SBP_HIGH_STOP")]
    stop = second[0].alarm
    assert stop.priority is Priority.HIGH
    assert stop.suggested_action is SuggestedAction.STOP_INFUSION
    assert stop.category is AlarmCategory.PHYSIOLOGICAL


def test_two_high_readings_too_far_apart_do_not_confirm(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    feed_bp(engine, clock, 185, 95)
    clock.advance(minutes=16)  # window is 15 min
    assert (K.RAISED, "SBP_HIGH_STOP") not in kinds(feed_bp(engine, clock, 185, 95))
    clock.advance(minutes=5)
    assert (K.RAISED, "SBP_HIGH_STOP") in kinds(feed_bp(engine, clock, 185, 95))


def test_an_interrupting_normal_reading_resets_confirmation(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    feed_bp(engine, clock, 185, 95)
    clock.advance(minutes=2)
    feed_bp(engine, clock, 150, 85)
    clock.advance(minutes=2)
    assert (K.RAISED, "SBP_HIGH_STOP") not in kinds(feed_bp(engine, clock, 185, 95))


def test_severe_once_and_diastolic_rules(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = feed_bp(engine, clock, 205, 125)
    codes = {c for k, c in kinds(ev) if k is K.RAISED}
    assert {"SBP_SEVERE", "DBP_SEVERE", "SBP_HIGH_CONSIDER_STOP", "DBP_HIGH_CONSIDER_STOP"} <= codes
    assert "DBP_HIGH_STOP" not in codes  # needs two readings


def test_latching_alarm_stays_until_acknowledged(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = feed_bp(engine, clock, 205, 80)
    severe = next(e.alarm for e in ev if e.code == "SBP_SEVERE")
    clock.advance(minutes=5)
    ev = feed_bp(engine, clock, 130, 80)
    assert (K.CLEARED_BUT_LATCHED, "SBP_SEVERE") in kinds(ev)
    latched = engine.alarm(severe.alarm_id)
    assert latched.state is AlarmState.LATCHED
    assert not latched.condition_present
    assert severe.alarm_id in [a.alarm_id for a in engine.active_alarms()]
    clock.advance(seconds=30)
    ack = engine.acknowledge(
        severe.alarm_id, NURSE, "BP rechecked, paused", action_taken=SuggestedAction.PAUSE_INFUSION
    )
    assert kinds(ack) == [(K.ACKNOWLEDGED, "SBP_SEVERE"), (K.RESOLVED, "SBP_SEVERE")]
    done = engine.alarm(severe.alarm_id)
    assert done.state is AlarmState.RESOLVED
    assert (done.acknowledged_by, done.acknowledged_role, done.acknowledged_at) == (
        "nurse-1",
        Role.NURSE,
        clock.now(),
    )
    assert done.acknowledge_reason == "BP rechecked, paused"
    assert done.action_taken is SuggestedAction.PAUSE_INFUSION
    assert severe.alarm_id not in [a.alarm_id for a in engine.active_alarms()]


def test_acknowledged_alarm_resolves_when_the_condition_clears(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    ev = feed_bp(engine, clock, 205, 80)
    severe = next(e.alarm for e in ev if e.code == "SBP_SEVERE")
    assert kinds(engine.acknowledge(severe.alarm_id, NURSE, "seen")) == [
        (K.ACKNOWLEDGED, "SBP_SEVERE")
    ]
    assert engine.alarm(severe.alarm_id).state is AlarmState.ACKNOWLEDGED
    clock.advance(minutes=5)
    assert (K.RESOLVED, "SBP_SEVERE") in kinds(feed_bp(engine, clock, 130, 80))


def test_latched_condition_can_return(engine: AlarmEngine, clock: ManualClock) -> None:
    feed_bp(engine, clock, 205, 80)
    clock.advance(minutes=2)
    feed_bp(engine, clock, 130, 80)
    clock.advance(minutes=2)
    ev = feed_bp(engine, clock, 210, 80)
    assert (K.CONDITION_RETURNED, "SBP_SEVERE") in kinds(ev)
    severe = next(a for a in engine.active_alarms() if a.code == "SBP_SEVERE")
    assert severe.state is AlarmState.ACTIVE
    assert severe.value == 210


def test_non_latching_relative_alarm_clears_by_itself(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    # baseline SBP 120: 140 is +20 mmHg / +16.7 %: below both limits
    assert feed_bp(engine, clock, 140, 80) == []
    clock.advance(minutes=5)
    ev = feed_bp(engine, clock, 145, 80)  # +25 mmHg = +20.8 % > 20 %
    assert kinds(ev) == [(K.RAISED, "SBP_RISE_FROM_BASELINE")]
    assert ev[0].alarm.priority is Priority.LOW
    assert ev[0].alarm.suggested_action is SuggestedAction.SLOW_INFUSION
    clock.advance(minutes=5)
    assert kinds(feed_bp(engine, clock, 135, 80)) == [(K.RESOLVED, "SBP_RISE_FROM_BASELINE")]


def test_relative_rule_needs_a_baseline(clock: ManualClock) -> None:
    e = AlarmEngine(clock=clock)
    e.set_phase(Phase.INFUSING)
    assert e.feed_set(vitals(clock.now(), sbp=175, dbp=80)) == []


def test_escalation_until_acknowledged(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = feed_bp(engine, clock, 205, 80)
    severe = next(e.alarm for e in ev if e.code == "SBP_SEVERE")
    clock.advance(seconds=59)
    assert [e for e in engine.tick() if e.code == "SBP_SEVERE"] == []
    levels = []
    for _ in range(5):
        clock.advance(seconds=60)
        levels += [
            e.alarm.escalation_level
            for e in engine.tick()
            if e.code == "SBP_SEVERE" and e.kind is K.ESCALATED
        ]
    assert levels == [1, 2, 3]  # high: 60 s, then every 60 s, at most level 3
    engine.acknowledge(severe.alarm_id, NURSE, "at the chair")


def test_acknowledgement_stops_escalation(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = feed_bp(engine, clock, 205, 80)
    severe = next(e.alarm for e in ev if e.code == "SBP_SEVERE")
    clock.advance(seconds=30)
    engine.acknowledge(severe.alarm_id, NURSE, "at the chair")
    clock.advance(minutes=10)
    assert [e for e in engine.tick() if e.code == "SBP_SEVERE"] == []


def test_latched_but_unacknowledged_alarm_still_escalates(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    feed_bp(engine, clock, 205, 80)
    clock.advance(seconds=10)
    feed_bp(engine, clock, 130, 80)
    clock.advance(seconds=55)
    assert (K.ESCALATED, "SBP_SEVERE") in kinds(engine.tick())


def test_spo2_needs_15_seconds(engine: AlarmEngine, clock: ManualClock) -> None:
    dev = VitalSource.DEVICE
    assert engine.feed(reading(VitalKind.SPO2, 88, clock.now(), dev)) == []
    clock.advance(seconds=10)
    assert engine.tick() == []
    clock.advance(seconds=5)
    ev = engine.tick()
    assert kinds(ev) == [(K.RAISED, "SPO2_LOW")]
    assert ev[0].alarm.priority is Priority.HIGH
    assert ev[0].alarm.value == 88


def test_brief_spo2_dip_does_not_alarm(engine: AlarmEngine, clock: ManualClock) -> None:
    dev = VitalSource.DEVICE
    engine.feed(reading(VitalKind.SPO2, 88, clock.now(), dev))
    clock.advance(seconds=5)
    engine.feed(reading(VitalKind.SPO2, 96, clock.now(), dev))
    clock.advance(seconds=20)
    assert engine.tick() == []


def test_hr_over_120_sustained_5_min(engine: AlarmEngine, clock: ManualClock) -> None:
    raised: list[tuple[float, str]] = []
    start = clock.now()
    for _ in range(301):
        for e in engine.feed(reading(VitalKind.HR, 125, clock.now(), VitalSource.DEVICE)):
            if e.kind is K.RAISED:
                raised.append(((clock.now() - start).total_seconds(), e.code))
        clock.advance(seconds=1)
    assert raised == [(0.0, "HR_HIGH_CONSIDER_STOP"), (300.0, "HR_HIGH_SUSTAINED")]


@pytest.mark.parametrize(
    ("kind", "value", "code", "seconds"),
    [
        (VitalKind.RR, 6, "RR_LOW", 15),
        (VitalKind.HR, 45, "HR_LOW", 15),
        (VitalKind.SBP, 85, "SBP_LOW", 0),
    ],
)
def test_low_limits(
    engine: AlarmEngine, clock: ManualClock, kind: VitalKind, value: float, code: str, seconds: int
) -> None:
    if kind is VitalKind.SBP:
        ev = feed_bp(engine, clock, value, 50)
    else:
        ev = engine.feed(reading(kind, value, clock.now()))
        clock.advance(seconds=seconds)
        ev += engine.tick()
    assert (K.RAISED, code) in kinds(ev)


def test_phase_gates_rules(clock: ManualClock) -> None:
    e = AlarmEngine(clock=clock)
    assert e.feed_set(vitals(clock.now(), sbp=190, dbp=90)) == []  # idle: nothing
    e.set_phase(Phase.PRE_INFUSION)
    clock.advance(minutes=1)
    assert kinds(e.feed_set(vitals(clock.now(), sbp=190, dbp=90))) == []  # no stop rule pre
    clock.advance(minutes=1)
    assert kinds(e.feed_set(vitals(clock.now(), sbp=205, dbp=90))) == [(K.RAISED, "SBP_SEVERE")]


def test_signal_loss_technical_alarm(engine: AlarmEngine, clock: ManualClock) -> None:
    dev = VitalSource.DEVICE
    engine.feed(reading(VitalKind.SPO2, 97, clock.now(), dev))
    clock.advance(seconds=60)
    assert engine.tick() == []
    clock.advance(seconds=1)
    ev = engine.tick()
    assert kinds(ev) == [(K.RAISED, "VITALS_SIGNAL_LOSS")]
    alarm = ev[0].alarm
    assert alarm.key == "VITALS_SIGNAL_LOSS:spo2"
    assert alarm.category is AlarmCategory.TECHNICAL
    assert alarm.suggested_action is SuggestedAction.CHECK_SENSOR
    # a manual entry does not prove the monitor is back
    assert engine.feed(reading(VitalKind.SPO2, 97, clock.now(), VitalSource.MANUAL)) == []
    clock.advance(seconds=1)
    back = engine.feed(reading(VitalKind.SPO2, 97, clock.now(), dev))
    assert kinds(back) == [(K.RESOLVED, "VITALS_SIGNAL_LOSS")]


def test_expected_continuous_vitals_alarm_even_before_the_first_reading(
    clock: ManualClock,
) -> None:
    e = AlarmEngine(clock=clock, expected_continuous=[VitalKind.SPO2])
    e.set_phase(Phase.INFUSING)
    clock.advance(seconds=61)
    assert [a.key for a in (ev.alarm for ev in e.tick())] == ["VITALS_SIGNAL_LOSS:spo2"]
    # leaving the phases of a technical rule resolves it
    assert kinds(e.set_phase(Phase.RECOVERY)) == [(K.RESOLVED, "VITALS_SIGNAL_LOSS")]


def test_vitals_overdue_reminder(engine: AlarmEngine, clock: ManualClock) -> None:
    clock.advance(minutes=12)  # due every 10 min + 2 min grace
    assert engine.tick() == []
    clock.advance(seconds=1)
    ev = engine.tick()
    assert kinds(ev) == [(K.RAISED, "VITALS_OVERDUE")]
    assert ev[0].alarm.priority is Priority.LOW
    assert ev[0].alarm.category is AlarmCategory.REMINDER
    assert kinds(feed_bp(engine, clock, 130, 80)) == [(K.RESOLVED, "VITALS_OVERDUE")]
    # pausing does not restart the 10-min clock
    clock.advance(minutes=8)
    engine.set_phase(Phase.PAUSED)
    clock.advance(minutes=4, seconds=1)
    assert (K.RAISED, "VITALS_OVERDUE") in kinds(engine.tick())


def test_recovery_interval_is_15_min(engine: AlarmEngine, clock: ManualClock) -> None:
    engine.set_phase(Phase.RECOVERY)
    clock.advance(minutes=17)
    assert engine.tick() == []
    clock.advance(seconds=1)
    assert kinds(engine.tick()) == [(K.RAISED, "VITALS_OVERDUE")]


def test_cadss_reminder_at_40_min(clock: ManualClock) -> None:
    e = AlarmEngine(clock=clock)
    e.set_phase(Phase.INFUSING)
    start = clock.now()
    for m in range(1, 46):
        clock.set(start + timedelta(minutes=m))
        e.feed_set(vitals(clock.now()))  # vitals on time
        assert e.tick() == [], m
    clock.advance(seconds=1)
    ev = e.tick()
    assert kinds(ev) == [(K.RAISED, "SCALE_OVERDUE")]
    assert ev[0].alarm.suggested_action is SuggestedAction.RECORD_SCALE
    assert kinds(e.record_scale(score_cadss([0] * 23))) == [(K.RESOLVED, "SCALE_OVERDUE")]


def test_cadss_recorded_in_the_window_satisfies_the_reminder(clock: ManualClock) -> None:
    e = AlarmEngine(clock=clock)
    e.set_phase(Phase.INFUSING)
    start = clock.now()
    e.record_scale(score_cadss([0] * 23), at=start + timedelta(minutes=20))  # too early
    e.record_scale(score_cadss([0] * 23), at=start + timedelta(minutes=31))  # in the window
    clock.set(start + timedelta(minutes=50))
    assert "SCALE_OVERDUE" not in [c for _, c in kinds(e.tick())]


def test_sedation_flags(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = engine.record_scale(score_moaas(0))
    assert kinds(ev) == [
        (K.RAISED, "SEDATION_LOSS_OF_CONSCIOUSNESS"),
        (K.RAISED, "SEDATION_MODERATE"),
    ]
    assert ev[0].alarm.suggested_action is SuggestedAction.STOP_INFUSION
    clock.advance(minutes=2)
    ev = engine.record_scale(score_moaas(5))
    assert kinds(ev) == [
        (K.CLEARED_BUT_LATCHED, "SEDATION_LOSS_OF_CONSCIOUSNESS"),
        (K.CLEARED_BUT_LATCHED, "SEDATION_MODERATE"),
    ]


def test_help_request_is_high_priority_and_not_duplicated(
    engine: AlarmEngine, clock: ManualClock
) -> None:
    ev = engine.feed_check_in(CheckIn(at=clock.now(), needs_help=True, note="chest tight"))
    assert kinds(ev) == [(K.RAISED, "PATIENT_HELP_REQUEST")]
    alarm = ev[0].alarm
    assert alarm.priority is Priority.HIGH
    assert alarm.detail == "chest tight"
    assert alarm.category is AlarmCategory.PATIENT
    clock.advance(seconds=5)
    assert engine.feed_check_in(CheckIn(at=clock.now(), needs_help=True)) == []
    # a calm check-in does not clear a help request; only a clinician does
    assert engine.feed_check_in(CheckIn(at=clock.now(), comfort=9)) == []
    ack = engine.acknowledge(alarm.alarm_id, NURSE, "at the chair, reassured")
    assert kinds(ack) == [
        (K.ACKNOWLEDGED, "PATIENT_HELP_REQUEST"),
        (K.RESOLVED, "PATIENT_HELP_REQUEST"),
    ]


def test_distress_check_in(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = engine.feed_check_in(CheckIn(at=clock.now(), anxiety=9, nausea=2))
    assert kinds(ev) == [(K.RAISED, "PATIENT_DISTRESS")]
    assert ev[0].alarm.detail == "anxiety 9"
    clock.advance(minutes=5)
    assert kinds(engine.feed_check_in(CheckIn(at=clock.now(), anxiety=4))) == [
        (K.RESOLVED, "PATIENT_DISTRESS")
    ]


def test_acknowledge_validation(engine: AlarmEngine, clock: ManualClock) -> None:
    ev = feed_bp(engine, clock, 205, 80)
    alarm_id = next(e.alarm for e in ev if e.code == "SBP_SEVERE").alarm_id
    with pytest.raises(AuthError):
        engine.acknowledge(alarm_id, Actor("desk", Role.FRONT_DESK), "seen")
    with pytest.raises(InputError):
        engine.acknowledge(alarm_id, NURSE, " ")
    with pytest.raises(NotFoundError):
        engine.acknowledge(999, NURSE, "seen")
    engine.acknowledge(alarm_id, NURSE, "seen")
    with pytest.raises(StateError, match="already acknowledged"):
        engine.acknowledge(alarm_id, NURSE, "again")
    clock.advance(minutes=1)
    feed_bp(engine, clock, 130, 80)
    with pytest.raises(StateError, match="already resolved"):
        engine.acknowledge(alarm_id, NURSE, "again")


def test_out_of_order_reading_is_ignored(engine: AlarmEngine, clock: ManualClock) -> None:
    clock.advance(minutes=1)
    feed_bp(engine, clock, 130, 80)
    late = engine.feed(reading(VitalKind.SBP, 210, clock.now() - timedelta(minutes=5)))
    assert late == []


def test_artefact_flag_travels_with_the_alarm(engine: AlarmEngine, clock: ManualClock) -> None:
    r = reading(VitalKind.HR, 250, clock.now(), VitalSource.DEVICE)
    assert r.artefact_suspect
    ev = engine.feed(r)
    assert ev
    assert all(e.alarm.artefact_suspect for e in ev)


def test_active_alarms_are_sorted_by_priority(engine: AlarmEngine, clock: ManualClock) -> None:
    feed_bp(engine, clock, 185, 95)  # medium + low
    clock.advance(seconds=1)
    engine.feed_check_in(CheckIn(at=clock.now(), needs_help=True))  # high, later
    prios = [a.priority for a in engine.active_alarms()]
    assert prios == sorted(prios, key=lambda p: p.rank)
    assert prios[0] is Priority.HIGH


def _scenario(clock: ManualClock) -> list[tuple[str, str, int, str]]:
    e = AlarmEngine(clock=clock)
    e.set_baseline(vitals(clock.now(), sbp=120, dbp=75))
    e.set_phase(Phase.INFUSING)
    out: list[AlarmEvent] = []
    for i in range(1200):
        clock.advance(seconds=1)
        hr = 70 + (i % 90)  # crosses 110 and 120 repeatedly
        out += e.feed(reading(VitalKind.HR, hr, clock.now(), VitalSource.DEVICE))
        if i % 300 == 0:
            out += e.feed_set(vitals(clock.now(), sbp=150 + i // 20, dbp=90, hr=hr))
        out += e.tick()
    return [(ev.kind.value, ev.code, ev.alarm.alarm_id, ev.at.isoformat()) for ev in out]


def test_engine_is_deterministic() -> None:
    a = _scenario(ManualClock(T0))
    b = _scenario(ManualClock(T0))
    assert a == b
    assert len(a) > 10


def test_throughput_well_above_600_readings_per_second(clock: ManualClock) -> None:
    e = AlarmEngine(clock=clock)
    e.set_baseline(vitals(clock.now()))
    e.set_phase(Phase.INFUSING)
    readings = []
    at = clock.now()
    for i in range(6000):
        at += timedelta(milliseconds=200)
        kind = (VitalKind.HR, VitalKind.SPO2, VitalKind.RR)[i % 3]
        value = {VitalKind.HR: 80, VitalKind.SPO2: 97, VitalKind.RR: 14}[kind]
        readings.append(reading(kind, value, at, VitalSource.DEVICE))
    t0 = time.perf_counter()
    for i, r in enumerate(readings):
        e.feed(r)
        if i % 5 == 0:
            clock.set(r.measured_at)
            e.tick()
    elapsed = time.perf_counter() - t0
    # 6000 readings in under 1 s is 10x the 600/s requirement (shared 2-core CI machine).
    assert elapsed < 1.0, f"{6000 / elapsed:.0f} readings/s"


def test_rules_have_sources_and_priorities() -> None:
    rules = load_alarm_rules()
    assert len(rules.codes) == len(set(rules.codes))
    for r in rules.rules:
        assert r.spec.source
        assert r.spec.message
        assert r.spec.phases
    for p in Priority:
        assert rules.priorities[p].source


def test_clinic_rule_file(tmp_path: Path, clock: ManualClock) -> None:
    text = (Path(__file__).parents[3] / "src/ketaflow/clinical/data/alarm_rules.toml").read_text(
        encoding="utf-8"
    )
    custom = tmp_path / "rules.toml"
    custom.write_text(text.replace("above = 200.0", "above = 190.0"), encoding="utf-8")
    e = AlarmEngine(clock=clock, rules=load_alarm_rules(custom))
    e.set_phase(Phase.INFUSING)
    assert (K.RAISED, "SBP_SEVERE") in kinds(e.feed_set(vitals(clock.now(), sbp=195, dbp=80)))
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('vital = "sbp"', 'vital = "bp"', 1), encoding="utf-8")
    with pytest.raises(ProtocolError, match="vital must be one of"):
        load_alarm_rules(bad)
    bad.write_text(text.replace('priority = "high"', 'priority = "urgent"', 1), encoding="utf-8")
    with pytest.raises(ProtocolError, match="priority"):
        load_alarm_rules(bad)


def test_protocol_monitoring_schedule(clock: ManualClock) -> None:
    rules = with_monitoring_schedule(
        load_alarm_rules(),
        MonitoringSchedule(
            vitals_every_min={Phase.INFUSING: 5, Phase.RECOVERY: 30},
            scales_due=(ScaleDue(("cadss6",), 20), ScaleDue(("moaas",), 30)),
        ),
    )
    e = AlarmEngine(clock=clock, rules=rules)
    e.set_phase(Phase.INFUSING)
    start = clock.now()
    clock.advance(minutes=7, seconds=1)  # 5 min + 2 min grace
    assert kinds(e.tick()) == [(K.RAISED, "VITALS_OVERDUE")]
    for m in range(8, 36):
        clock.set(start + timedelta(minutes=m))
        e.feed_set(vitals(clock.now()))
        if m == 22:
            e.record_scale(score_cadss([0] * 23))  # the 23-item CADSS does not count for CADSS-6
    clock.set(start + timedelta(minutes=36))
    e.tick()
    keys = sorted(a.key for a in e.active_alarms())
    assert keys == ["SCALE_OVERDUE:cadss6@1200s", "SCALE_OVERDUE:moaas@1800s"]
    e.record_scale(score_moaas(5))
    assert [a.key for a in e.active_alarms()] == ["SCALE_OVERDUE:cadss6@1200s"]
    with pytest.raises(InputError):
        with_monitoring_schedule(rules, MonitoringSchedule({Phase.INFUSING: 0}))
    with pytest.raises(InputError):
        with_monitoring_schedule(
            rules, MonitoringSchedule({Phase.INFUSING: 5}, (ScaleDue(("bdi2",), 10),))
        )
