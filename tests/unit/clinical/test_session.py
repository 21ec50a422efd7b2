from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from ketaflow.clinical.actors import Actor, Role
from ketaflow.clinical.alarms import Phase
from ketaflow.clinical.clock import ManualClock
from ketaflow.clinical.discharge import evaluate_discharge
from ketaflow.clinical.infusion import GapAssumption, InfusionStatus, PumpConfirmation
from ketaflow.clinical.scales import score_cadss, score_modified_aldrete
from ketaflow.clinical.session import (
    INITIAL_STATE,
    TERMINAL_STATES,
    TRANSITIONS,
    InfusionPlan,
    OrderVerification,
    PreAssessment,
    Session,
    SessionEvent,
    SessionRequirements,
    SessionState,
    Transition,
    verify_transition_table,
)
from ketaflow.errors import AuthError, InputError, StateError

from ._helpers import T0, vitals

S = SessionState
E = SessionEvent
NURSE = Actor("nurse-1", Role.NURSE)
NURSE2 = Actor("nurse-2", Role.NURSE)
MD = Actor("md-1", Role.PHYSICIAN)
SYSTEM = Actor("service", Role.SYSTEM)
PLAN = InfusionPlan(rate_mg_per_h=52.5, concentration_mg_per_ml=1.0, planned_total_mg=35.0)


def verification(clock: ManualClock, **kw: object) -> OrderVerification:
    args: dict[str, object] = dict(
        order_ref="ORD-1",
        verified_by="nurse-1",
        verified_role=Role.NURSE,
        double_checked_by="nurse-2",
        double_checked_role=Role.NURSE,
        matches=True,
        verified_at=clock.now(),
    )
    args.update(kw)
    return OrderVerification(**args)  # type: ignore[arg-type]  # assembled above


def assessment(clock: ManualClock, **kw: object) -> PreAssessment:
    args: dict[str, object] = dict(
        baseline_vitals=vitals(clock.now()),
        fasting_confirmed=True,
        consent_confirmed=True,
        escort_confirmed=True,
    )
    args.update(kw)
    return PreAssessment(**args)  # type: ignore[arg-type]  # assembled above


def new(clock: ManualClock, **kw: object) -> Session:
    return Session("S-1", "MRN-1", clock=clock, scheduled_for=T0, **kw)  # type: ignore[arg-type]  # optional kwargs


def ready(s: Session, clock: ManualClock) -> None:
    s.record_pre_assessment(NURSE, assessment(clock))
    s.record_order_verification(NURSE, verification(clock))
    s.mark_ready(NURSE)


def state(s: Session) -> SessionState:
    """Read the state afresh (it changes with every transition)."""
    return s.state


def drive(clock: ManualClock, target: SessionState) -> Session:
    """A session brought to ``target`` along the normal path."""
    s = new(clock)
    path: list[tuple[SessionState, Callable[[], object]]] = [
        (S.CHECKED_IN, lambda: s.check_in(NURSE)),
        (S.PRE_ASSESSMENT, lambda: s.begin_pre_assessment(NURSE)),
        (S.READY, lambda: ready(s, clock)),
        (S.INFUSING, lambda: s.start_infusion(NURSE, PLAN)),
        (S.PAUSED, lambda: s.pause(NURSE, "nausea")),
        (S.INFUSION_COMPLETE, lambda: s.complete_infusion(NURSE)),
        (S.RECOVERY, lambda: s.begin_recovery(NURSE)),
    ]
    for state, step in path:
        if s.state is target:
            return s
        clock.advance(minutes=5)
        step()
        assert s.state is state
    assert s.state is target
    return s


def test_the_shipped_table_is_valid_and_covers_every_state() -> None:
    verify_transition_table(TRANSITIONS, SessionState, INITIAL_STATE, TERMINAL_STATES)
    used = {t.source for t in TRANSITIONS} | {t.target for t in TRANSITIONS}
    assert used == set(SessionState)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (TRANSITIONS[1:], "'checked_in' is unreachable"),
        (
            (
                *(
                    t
                    for t in TRANSITIONS
                    if t.source not in (S.RECOVERY, S.INFUSION_COMPLETE)
                    or t.event is E.BEGIN_RECOVERY
                ),
                Transition(
                    E.REOPEN_ASSESSMENT, S.RECOVERY, S.INFUSION_COMPLETE, frozenset({Role.NURSE})
                ),
            ),
            "'infusion_complete' is a trap: no path to a terminal state",
        ),
        (
            (
                *TRANSITIONS,
                Transition(E.CHECK_IN, S.DISCHARGED, S.CHECKED_IN, frozenset({Role.NURSE})),
            ),
            "terminal state 'discharged' has outgoing",
        ),
        ((*TRANSITIONS, TRANSITIONS[0]), "duplicate transition"),
        (
            tuple(t for t in TRANSITIONS if t.target is not S.UNCERTAIN),
            "'uncertain' is unreachable",
        ),
        (
            tuple(t for t in TRANSITIONS if t.source is not S.UNCERTAIN),
            "'uncertain' is a trap: no way out",
        ),
    ],
)
def test_broken_tables_are_refused(table: tuple[Transition, ...], problem: str) -> None:
    with pytest.raises(StateError, match=problem):
        verify_transition_table(table, SessionState, INITIAL_STATE, TERMINAL_STATES)


def _fire(s: Session, clock: ManualClock, t: Transition) -> None:
    """Perform transition ``t`` on a session in ``t.source`` with valid inputs."""
    actor = MD if Role.PHYSICIAN in t.roles and Role.NURSE not in t.roles else NURSE
    if t.event is E.MARK_UNCERTAIN:
        actor = SYSTEM
    ev = t.event
    if ev is E.CHECK_IN:
        s.check_in(actor)
    elif ev is E.BEGIN_PRE_ASSESSMENT:
        s.begin_pre_assessment(actor)
    elif ev is E.MARK_READY:
        s.record_pre_assessment(actor, assessment(clock))
        s.record_order_verification(actor, verification(clock))
        s.mark_ready(actor)
    elif ev is E.REOPEN_ASSESSMENT:
        s.reopen_assessment(actor, "BP rose before start")
    elif ev is E.START_INFUSION:
        s.start_infusion(actor, PLAN)
    elif ev is E.PAUSE:
        s.pause(actor, "nausea")
    elif ev is E.RESUME:
        s.resume(actor)
    elif ev is E.COMPLETE_INFUSION:
        s.complete_infusion(actor)
    elif ev is E.STOP_INFUSION:
        s.stop_infusion(actor, "SBP 190 twice")
    elif ev is E.BEGIN_RECOVERY:
        s.begin_recovery(actor)
    elif ev is E.DISCHARGE:
        clock.advance(minutes=60)
        ev_ = evaluate_discharge(
            now=clock.now(),
            dose_started_at=T0,
            infusion_ended_at=T0,
            aldrete=score_modified_aldrete(
                activity=2, respiration=2, circulation=2, consciousness=2, oxygen_saturation=2
            ),
            baseline=vitals(T0),
            latest=vitals(clock.now()),
            escort_confirmed=True,
            no_driving_acknowledged=True,
        )
        s.discharge(actor, ev_)
    elif ev is E.ABORT:
        s.abort(actor, "patient unwell")
    elif ev is E.MARK_UNCERTAIN:
        s.mark_uncertain(actor, "server restart")
    elif ev is E.CONFIRM_PUMP_STATE:
        conf = {
            S.READY: PumpConfirmation(
                running=False, gap_assumption=GapAssumption.STOPPED_AT_OUTAGE
            ),
            S.INFUSING: PumpConfirmation(running=True, rate_mg_per_h=52.5, volume_infused_ml=20),
            S.PAUSED: PumpConfirmation(running=False, volume_infused_ml=20),
            S.INFUSION_COMPLETE: PumpConfirmation(
                running=False, finished=True, volume_infused_ml=35
            ),
        }[t.target]
        s.confirm_pump_state(actor, conf)
    else:  # pragma: no cover - every event is listed above
        raise AssertionError(ev)


def _session_in(clock: ManualClock, state: SessionState, before_uncertain: SessionState) -> Session:
    if state is not S.UNCERTAIN:
        return drive(clock, state)
    s = drive(clock, before_uncertain)
    clock.advance(minutes=5)
    s.mark_uncertain(SYSTEM, "server restart")
    return s


def _cases() -> list[tuple[Transition, SessionState]]:
    cases = []
    for t in TRANSITIONS:
        if t.source is S.UNCERTAIN:
            prior = S.READY if t.target is S.READY else S.INFUSING
            cases.append((t, prior))
        else:
            cases.append((t, S.INFUSING))
    return cases


@pytest.mark.parametrize(
    ("t", "prior"),
    _cases(),
    ids=[f"{t.event.value}:{t.source.value}->{t.target.value}" for t, _ in _cases()],
)
def test_every_legal_transition(clock: ManualClock, t: Transition, prior: SessionState) -> None:
    s = _session_in(clock, t.source, prior)
    before = len(s.history)
    clock.advance(minutes=1)
    _fire(s, clock, t)
    assert s.state is t.target
    ev = s.history[-1]
    assert len(s.history) == before + 1
    assert (ev.event, ev.from_state, ev.to_state) == (t.event, t.source, t.target)
    assert ev.when == clock.now()
    assert ev.who in {"nurse-1", "md-1", "service"}


ILLEGAL = [
    (S.SCHEDULED, lambda s, c: s.start_infusion(NURSE, PLAN)),
    (S.SCHEDULED, lambda s, c: s.discharge(NURSE, None)),
    (S.CHECKED_IN, lambda s, c: s.mark_ready(NURSE)),
    (S.READY, lambda s, c: s.pause(NURSE, "x")),
    (S.INFUSING, lambda s, c: s.begin_recovery(NURSE)),
    (S.INFUSING, lambda s, c: s.abort(NURSE, "x")),  # stop the infusion first
    (S.INFUSING, lambda s, c: s.check_in(NURSE)),
    (S.PAUSED, lambda s, c: s.change_rate(NURSE, 10.0, "x")),
    (S.INFUSION_COMPLETE, lambda s, c: s.mark_uncertain(SYSTEM, "crash")),
    (S.RECOVERY, lambda s, c: s.resume(NURSE)),
    (S.RECOVERY, lambda s, c: s.record_pre_assessment(NURSE, assessment(c))),
]


@pytest.mark.parametrize(("state", "action"), ILLEGAL)
def test_illegal_transitions_raise_state_error(
    clock: ManualClock, state: SessionState, action: Callable[[Session, ManualClock], object]
) -> None:
    s = drive(clock, state)
    before = s.history
    with pytest.raises(StateError):
        action(s, clock)
    assert s.state is state
    assert s.history == before


def test_terminal_states_allow_nothing(clock: ManualClock) -> None:
    s = drive(clock, S.CHECKED_IN)
    s.abort(NURSE, "patient left")
    assert s.is_terminal
    assert s.allowed_events() == frozenset()
    with pytest.raises(StateError, match="allowed now: none"):
        s.check_in(NURSE)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.SCHEDULED, lambda s: s.check_in(Actor("p", Role.PATIENT))),
        (S.CHECKED_IN, lambda s: s.begin_pre_assessment(Actor("d", Role.FRONT_DESK))),
        (S.RECOVERY, lambda s: s.abort(NURSE, "left against advice")),  # physician only
        (S.INFUSING, lambda s: s.pause(Actor("p", Role.PATIENT), "x")),
    ],
)
def test_roles_are_enforced(
    clock: ManualClock, state: SessionState, action: Callable[[Session], object]
) -> None:
    s = drive(clock, state) if state is not S.SCHEDULED else new(clock)
    with pytest.raises(AuthError):
        action(s)


def test_reasons_are_required(clock: ManualClock) -> None:
    s = drive(clock, S.INFUSING)
    with pytest.raises(InputError):
        s.pause(NURSE, "  ")
    with pytest.raises(InputError):
        s.stop_infusion(NURSE, "")
    assert s.state is S.INFUSING
    assert s.infusion is not None
    assert s.infusion.status is InfusionStatus.RUNNING


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"fasting_confirmed": False}, "fasting"),
        ({"consent_confirmed": False}, "consent"),
        ({"escort_confirmed": False}, "escort"),
        ({"baseline_vitals": None}, "baseline vitals"),
    ],
)
def test_ready_guard_needs_complete_pre_assessment(
    clock: ManualClock, kw: dict[str, object], message: str
) -> None:
    s = drive(clock, S.PRE_ASSESSMENT)
    s.record_pre_assessment(NURSE, assessment(clock, **kw))
    s.record_order_verification(NURSE, verification(clock))
    with pytest.raises(StateError, match=message):
        s.mark_ready(NURSE)
    assert s.state is S.PRE_ASSESSMENT


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"matches": False}, "mismatch"),
        ({"double_checked_by": "nurse-1"}, "second person"),
        ({"double_checked_role": Role.FRONT_DESK}, "nurses, physicians or pharmacists"),
    ],
)
def test_ready_guard_needs_independent_double_check(
    clock: ManualClock, kw: dict[str, object], message: str
) -> None:
    s = drive(clock, S.PRE_ASSESSMENT)
    s.record_pre_assessment(NURSE, assessment(clock))
    s.record_order_verification(NURSE, verification(clock, **kw))
    with pytest.raises(StateError, match=message):
        s.mark_ready(NURSE)


def test_ready_guard_without_verification_and_required_scales(clock: ManualClock) -> None:
    s = new(clock, requirements=SessionRequirements(required_pre_scales=frozenset({"cadss"})))
    s.check_in(NURSE)
    s.begin_pre_assessment(NURSE)
    s.record_pre_assessment(NURSE, assessment(clock))
    with pytest.raises(StateError, match="not been verified"):
        s.mark_ready(NURSE)
    s.record_order_verification(NURSE, verification(clock))
    with pytest.raises(StateError, match="pre-infusion cadss"):
        s.mark_ready(NURSE)
    s.record_pre_assessment(NURSE, assessment(clock, pre_scales=(score_cadss([0] * 23),)))
    s.mark_ready(NURSE)
    assert s.state is S.READY


def test_infusion_record_follows_the_session(clock: ManualClock) -> None:
    s = drive(clock, S.INFUSING)
    start = clock.now()
    clock.advance(minutes=10)
    s.change_rate(NURSE, 30.0, "BP 175")
    clock.advance(minutes=10)
    s.pause(NURSE, "nausea")
    clock.advance(minutes=5)
    s.resume(NURSE)
    clock.advance(minutes=5)
    s.stop_infusion(NURSE, "SBP 185 on two readings")
    assert s.infusion is not None
    # 52.5 mg/h x 10 min + 30 mg/h x 10 min + 30 mg/h x 5 min = 8.75 + 5 + 2.5
    assert s.infusion.dose_delivered_mg(clock.now()) == pytest.approx(16.25, abs=1e-12)
    assert s.infusion.started_at == start
    assert s.history[-1].why == "SBP 185 on two readings"
    assert s.alarm_phase is Phase.RECOVERY


def test_discharge_override_is_physician_only(clock: ManualClock) -> None:
    s = drive(clock, S.RECOVERY)
    clock.advance(minutes=10)
    ev = evaluate_discharge(
        now=clock.now(),
        dose_started_at=T0,
        infusion_ended_at=clock.now(),
        aldrete=None,
        baseline=vitals(T0),
        latest=vitals(clock.now()),
        escort_confirmed=True,
        no_driving_acknowledged=True,
    )
    with pytest.raises(StateError, match="criteria not met"):
        s.discharge(NURSE, ev)
    with pytest.raises(AuthError):
        s.discharge(NURSE, ev, override_reason="family insists")
    s.discharge(MD, ev, override_reason="transfer to inpatient unit with escort")
    assert s.state is S.DISCHARGED
    assert s.discharge_decision is not None
    assert s.discharge_decision.overridden
    assert s.history[-1].why.startswith("override:")


def test_stale_discharge_evaluation_is_refused(clock: ManualClock) -> None:
    s = drive(clock, S.INFUSION_COMPLETE)
    old = evaluate_discharge(
        now=clock.now(),
        dose_started_at=T0,
        infusion_ended_at=T0,
        aldrete=None,
        baseline=vitals(T0),
        latest=vitals(clock.now()),
        escort_confirmed=True,
        no_driving_acknowledged=True,
    )
    clock.advance(minutes=1)
    s.begin_recovery(NURSE)
    with pytest.raises(StateError, match="before recovery began"):
        s.discharge(MD, old, override_reason="x")


def test_crash_recovery_while_infusing(clock: ManualClock) -> None:
    s = drive(clock, S.INFUSING)
    clock.advance(minutes=10)  # 8.75 mg recorded
    s.mark_uncertain(SYSTEM, "server restarted after a crash")
    assert s.state is S.UNCERTAIN
    assert s.alarm_phase is Phase.INFUSING
    assert s.allowed_events(Role.NURSE) == frozenset({E.CONFIRM_PUMP_STATE})
    with pytest.raises(StateError):
        s.change_rate(NURSE, 10.0, "x")
    with pytest.raises(StateError):
        s.pause(NURSE, "x")
    clock.advance(minutes=4)
    s.confirm_pump_state(
        NURSE, PumpConfirmation(running=True, rate_mg_per_h=52.5, volume_infused_ml=12.25)
    )
    assert state(s) is S.INFUSING
    assert s.uncertain_since is None
    assert s.infusion is not None
    assert s.infusion.dose_delivered_mg(clock.now()) == pytest.approx(12.25, abs=1e-12)
    assert s.history[-2].to_state is S.UNCERTAIN
    assert s.history[-1].event is E.CONFIRM_PUMP_STATE


def test_crash_while_ready_with_pump_started_during_the_outage(clock: ManualClock) -> None:
    s = drive(clock, S.READY)
    s.mark_uncertain(SYSTEM, "restart")
    clock.advance(minutes=6)
    s.confirm_pump_state(
        NURSE,
        PumpConfirmation(running=True, rate_mg_per_h=52.5, volume_infused_ml=5.25),
        plan=PLAN,
    )
    assert s.state is S.INFUSING
    assert s.infusion is not None
    assert s.infusion.dose_delivered_mg(clock.now()) == pytest.approx(5.25, abs=1e-12)


def test_snapshot_and_restore(clock: ManualClock) -> None:
    s = drive(clock, S.PAUSED)
    snap = s.snapshot()
    copy = Session.restore(snap, clock=clock)
    assert copy.state is S.PAUSED
    assert copy.history == s.history
    assert copy.infusion is not None
    assert s.infusion is not None
    assert copy.infusion.entries == s.infusion.entries
    copy.resume(NURSE)
    assert state(copy) is S.INFUSING
    assert s.state is S.PAUSED


def test_restore_refuses_a_history_outside_the_table(clock: ManualClock) -> None:
    s = drive(clock, S.CHECKED_IN)
    snap = s.snapshot()
    bad = dataclasses.replace(snap, state=S.READY)
    with pytest.raises(StateError, match="history ends"):
        Session.restore(bad, clock=clock)
    forged = dataclasses.replace(
        snap,
        history=(dataclasses.replace(snap.history[0], to_state=S.INFUSING),),
        state=S.INFUSING,
    )
    with pytest.raises(StateError, match="does not follow"):
        Session.restore(forged, clock=clock)
