"""The infusion session: an explicit state machine declared in one place.

States and every legal transition are listed in :data:`TRANSITIONS` (event, source, target,
roles allowed, whether a reason is required). :func:`verify_transition_table` checks the table
when this module is imported: every state reachable from ``scheduled``, no trap states (each
non-terminal state has a way out and a path to a terminal state), terminal states
(``discharged``, ``aborted``) without exits. A table that fails the check stops the import, so a
broken workflow never reaches a bedside.

::

    scheduled -> checked_in -> pre_assessment <-> ready -> infusing <-> paused
                                                                |         |
                                                                v         v
                                           recovery <- infusion_complete
                                              |
                                              v
                                          discharged        aborted (before the infusion; or
                                                            by a physician after it)

    ready / infusing / paused --mark_uncertain--> uncertain --confirm_pump_state-->
        ready | infusing | paused | infusion_complete (whatever the pump really shows)

``uncertain`` is the state after a server crash: the service calls
:meth:`Session.mark_uncertain` for each session whose pump might have been running, and nothing
else can happen until a nurse reads the pump and calls :meth:`Session.confirm_pump_state`; the
target state follows from what the pump shows.

Guards raise :class:`~ketaflow.errors.StateError` with the reason. Every transition appends a
:class:`TransitionEvent` (who, role, when, from, to, why). Time comes from the injected clock.
The session never starts, stops or changes a pump by itself; it records what clinicians did.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from ketaflow.clinical.actors import (
    CLINICAL_ROLES,
    Actor,
    Role,
    require_reason,
    require_role,
)
from ketaflow.clinical.alarms import Phase
from ketaflow.clinical.clock import Clock, require_aware
from ketaflow.clinical.discharge import DischargeDecision, DischargeEvaluation, authorize_discharge
from ketaflow.clinical.infusion import (
    InfusionEntry,
    InfusionRecord,
    InfusionStatus,
    PumpConfirmation,
)
from ketaflow.clinical.scales import ScaleScore
from ketaflow.clinical.vitals import VitalKind, VitalSet
from ketaflow.errors import AuthError, InputError, StateError


class SessionState(Enum):
    """States of an infusion session."""

    SCHEDULED = "scheduled"
    CHECKED_IN = "checked_in"
    PRE_ASSESSMENT = "pre_assessment"
    READY = "ready"
    INFUSING = "infusing"
    PAUSED = "paused"
    INFUSION_COMPLETE = "infusion_complete"
    RECOVERY = "recovery"
    DISCHARGED = "discharged"
    ABORTED = "aborted"
    UNCERTAIN = "uncertain"  # after a crash: pump state unknown until a nurse confirms


class SessionEvent(Enum):
    """Events that move a session."""

    CHECK_IN = "check_in"
    BEGIN_PRE_ASSESSMENT = "begin_pre_assessment"
    MARK_READY = "mark_ready"
    REOPEN_ASSESSMENT = "reopen_assessment"
    START_INFUSION = "start_infusion"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE_INFUSION = "complete_infusion"
    STOP_INFUSION = "stop_infusion"
    BEGIN_RECOVERY = "begin_recovery"
    DISCHARGE = "discharge"
    ABORT = "abort"
    MARK_UNCERTAIN = "mark_uncertain"
    CONFIRM_PUMP_STATE = "confirm_pump_state"


@dataclass(frozen=True, slots=True)
class Transition:
    """One legal move of the state machine."""

    event: SessionEvent
    source: SessionState
    target: SessionState
    roles: frozenset[Role]
    reason_required: bool = False


S = SessionState
E = SessionEvent
_CARE = CLINICAL_ROLES
_DESK = frozenset({Role.FRONT_DESK, Role.NURSE, Role.PHYSICIAN})
_MD = frozenset({Role.PHYSICIAN})
_RECOVERY_ROLES = frozenset({Role.SYSTEM, Role.NURSE, Role.PHYSICIAN})

#: THE transition table. Everything the session may do is here and nowhere else.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(E.CHECK_IN, S.SCHEDULED, S.CHECKED_IN, _DESK),
    Transition(E.BEGIN_PRE_ASSESSMENT, S.CHECKED_IN, S.PRE_ASSESSMENT, _CARE),
    Transition(E.MARK_READY, S.PRE_ASSESSMENT, S.READY, _CARE),
    Transition(E.REOPEN_ASSESSMENT, S.READY, S.PRE_ASSESSMENT, _CARE, reason_required=True),
    Transition(E.START_INFUSION, S.READY, S.INFUSING, _CARE),
    Transition(E.PAUSE, S.INFUSING, S.PAUSED, _CARE, reason_required=True),
    Transition(E.RESUME, S.PAUSED, S.INFUSING, _CARE),
    Transition(E.COMPLETE_INFUSION, S.INFUSING, S.INFUSION_COMPLETE, _CARE),
    Transition(E.COMPLETE_INFUSION, S.PAUSED, S.INFUSION_COMPLETE, _CARE),
    Transition(E.STOP_INFUSION, S.INFUSING, S.INFUSION_COMPLETE, _CARE, reason_required=True),
    Transition(E.STOP_INFUSION, S.PAUSED, S.INFUSION_COMPLETE, _CARE, reason_required=True),
    Transition(E.BEGIN_RECOVERY, S.INFUSION_COMPLETE, S.RECOVERY, _CARE),
    Transition(E.DISCHARGE, S.RECOVERY, S.DISCHARGED, _CARE),
    Transition(E.ABORT, S.SCHEDULED, S.ABORTED, _DESK, reason_required=True),
    Transition(E.ABORT, S.CHECKED_IN, S.ABORTED, _DESK, reason_required=True),
    Transition(E.ABORT, S.PRE_ASSESSMENT, S.ABORTED, _CARE, reason_required=True),
    Transition(E.ABORT, S.READY, S.ABORTED, _CARE, reason_required=True),
    # After the drug was given only a physician ends a session other than by discharge
    # (transfer to emergency care, patient left against advice).
    Transition(E.ABORT, S.INFUSION_COMPLETE, S.ABORTED, _MD, reason_required=True),
    Transition(E.ABORT, S.RECOVERY, S.ABORTED, _MD, reason_required=True),
    Transition(E.MARK_UNCERTAIN, S.READY, S.UNCERTAIN, _RECOVERY_ROLES, reason_required=True),
    Transition(E.MARK_UNCERTAIN, S.INFUSING, S.UNCERTAIN, _RECOVERY_ROLES, reason_required=True),
    Transition(E.MARK_UNCERTAIN, S.PAUSED, S.UNCERTAIN, _RECOVERY_ROLES, reason_required=True),
    Transition(E.CONFIRM_PUMP_STATE, S.UNCERTAIN, S.READY, _CARE),
    Transition(E.CONFIRM_PUMP_STATE, S.UNCERTAIN, S.INFUSING, _CARE),
    Transition(E.CONFIRM_PUMP_STATE, S.UNCERTAIN, S.PAUSED, _CARE),
    Transition(E.CONFIRM_PUMP_STATE, S.UNCERTAIN, S.INFUSION_COMPLETE, _CARE),
)

INITIAL_STATE = SessionState.SCHEDULED
TERMINAL_STATES = frozenset({SessionState.DISCHARGED, SessionState.ABORTED})


def verify_transition_table(
    transitions: Iterable[Transition],
    states: Iterable[SessionState],
    initial: SessionState,
    terminal: Iterable[SessionState],
) -> None:
    """Raise StateError listing every defect of a transition table.

    Defects: a state not reachable from ``initial``; a non-terminal state with no way out; a
    state from which no terminal state can be reached (a closed loop is a trap too); a
    terminal state with an exit; two rows with the same event, source and target.
    """
    table = tuple(transitions)
    all_states = frozenset(states)
    finals = frozenset(terminal)
    problems: list[str] = []
    seen: set[tuple[SessionEvent, SessionState, SessionState]] = set()
    succ: dict[SessionState, set[SessionState]] = {s: set() for s in all_states}
    pred: dict[SessionState, set[SessionState]] = {s: set() for s in all_states}
    for t in table:
        key = (t.event, t.source, t.target)
        if key in seen:
            problems.append(
                f"duplicate transition {t.event.value}: {t.source.value} -> {t.target.value}"
            )
        seen.add(key)
        if t.source not in all_states or t.target not in all_states:
            problems.append(f"transition {t.event.value} uses a state outside the machine")
            continue
        if not t.roles:
            problems.append(f"transition {t.event.value} from {t.source.value} has no roles")
        succ[t.source].add(t.target)
        pred[t.target].add(t.source)

    def closure(
        start: Iterable[SessionState], edges: Mapping[SessionState, set[SessionState]]
    ) -> set[SessionState]:
        found = set(start)
        queue = deque(found)
        while queue:
            s = queue.popleft()
            for n in edges[s]:
                if n not in found:
                    found.add(n)
                    queue.append(n)
        return found

    reachable = closure([initial], succ)
    for s in sorted(all_states - reachable, key=lambda x: x.value):
        problems.append(f"state {s.value!r} is unreachable from {initial.value!r}")
    for s in sorted(finals, key=lambda x: x.value):
        if succ[s]:
            problems.append(f"terminal state {s.value!r} has outgoing transitions")
    can_finish = closure(finals, pred)
    for s in sorted(all_states - finals, key=lambda x: x.value):
        if not succ[s]:
            problems.append(f"state {s.value!r} is a trap: no way out")
        elif s not in can_finish:
            problems.append(f"state {s.value!r} is a trap: no path to a terminal state")
    if problems:
        raise StateError("session state machine is invalid: " + "; ".join(problems))


verify_transition_table(TRANSITIONS, SessionState, INITIAL_STATE, TERMINAL_STATES)

_BY_EVENT_SOURCE: dict[tuple[SessionEvent, SessionState], tuple[Transition, ...]] = {}
for _t in TRANSITIONS:
    _BY_EVENT_SOURCE[(_t.event, _t.source)] = (*_BY_EVENT_SOURCE.get((_t.event, _t.source), ()), _t)


def legal_transitions(state: SessionState) -> tuple[Transition, ...]:
    """Every row of the table leaving ``state``."""
    return tuple(t for t in TRANSITIONS if t.source is state)


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    """The record of one transition."""

    event: SessionEvent
    who: str
    role: Role
    when: datetime
    from_state: SessionState
    to_state: SessionState
    why: str


@dataclass(frozen=True, slots=True)
class OrderVerification:
    """The order was checked against the pump programme by two different clinicians.

    Produced from the dosing module's order verification (kept as a plain record here so the
    clinical rules do not depend on dosing internals).
    """

    order_ref: str
    verified_by: str
    verified_role: Role
    double_checked_by: str
    double_checked_role: Role
    matches: bool
    verified_at: datetime

    def problems(self) -> list[str]:
        """Why this verification does not allow the session to become ready (empty = fine)."""
        out = []
        if not self.order_ref.strip():
            out.append("no order reference")
        if not self.matches:
            out.append("the double check found a mismatch")
        if not self.verified_by.strip() or not self.double_checked_by.strip():
            out.append("verifier and double-checker must both be named")
        elif self.verified_by == self.double_checked_by:
            out.append("the double check must be done by a second person")
        allowed = {Role.NURSE, Role.PHYSICIAN, Role.PHARMACIST}
        if self.verified_role not in allowed or self.double_checked_role not in allowed:
            out.append("verification needs nurses, physicians or pharmacists")
        return out


@dataclass(frozen=True, slots=True)
class PreAssessment:
    """Everything checked before the infusion."""

    baseline_vitals: VitalSet | None
    fasting_confirmed: bool
    consent_confirmed: bool
    escort_confirmed: bool
    pre_scales: tuple[ScaleScore, ...] = ()
    recorded_by: str = ""
    recorded_at: datetime | None = None
    notes: str = ""

    def missing(self, required_pre_scales: Iterable[str] = ()) -> list[str]:
        """What is still missing before the session may become ready."""
        out = []
        if self.baseline_vitals is None:
            out.append("baseline vitals")
        else:
            for kind in (VitalKind.SBP, VitalKind.DBP, VitalKind.HR, VitalKind.SPO2):
                if self.baseline_vitals.get(kind) is None:
                    out.append(f"baseline {kind.value}")
        if not self.fasting_confirmed:
            out.append("fasting confirmation")
        if not self.consent_confirmed:
            out.append("informed consent")
        if not self.escort_confirmed:
            out.append("escort confirmation")
        have = {s.scale_id for s in self.pre_scales}
        out.extend(f"pre-infusion {sid}" for sid in required_pre_scales if sid not in have)
        return out


@dataclass(frozen=True, slots=True)
class SessionRequirements:
    """Clinic-configurable requirements checked by the guards."""

    required_pre_scales: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class InfusionPlan:
    """What the pump was programmed with at the start."""

    rate_mg_per_h: float
    concentration_mg_per_ml: float | None = None
    planned_total_mg: float | None = None


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """Everything needed to store a session and rebuild it (:meth:`Session.restore`)."""

    session_id: str
    patient_mrn: str
    scheduled_for: datetime
    course_id: str | None
    state: SessionState
    history: tuple[TransitionEvent, ...]
    pre_assessment: PreAssessment | None
    verification: OrderVerification | None
    infusion_entries: tuple[InfusionEntry, ...]
    concentration_mg_per_ml: float | None
    planned_total_mg: float | None
    uncertain_since: datetime | None
    state_before_uncertain: SessionState | None
    discharge: DischargeDecision | None
    requirements: SessionRequirements = field(default_factory=SessionRequirements)


_PHASE: dict[SessionState, Phase] = {
    S.SCHEDULED: Phase.IDLE,
    S.CHECKED_IN: Phase.PRE_INFUSION,
    S.PRE_ASSESSMENT: Phase.PRE_INFUSION,
    S.READY: Phase.PRE_INFUSION,
    S.INFUSING: Phase.INFUSING,
    S.PAUSED: Phase.PAUSED,
    # Monitoring continues as during the infusion until a nurse has confirmed the pump.
    S.UNCERTAIN: Phase.INFUSING,
    S.INFUSION_COMPLETE: Phase.RECOVERY,
    S.RECOVERY: Phase.RECOVERY,
    S.DISCHARGED: Phase.IDLE,
    S.ABORTED: Phase.IDLE,
}


class Session:
    """One infusion session (mutable aggregate). Every change goes through the table."""

    def __init__(
        self,
        session_id: str,
        patient_mrn: str,
        *,
        clock: Clock,
        scheduled_for: datetime,
        course_id: str | None = None,
        requirements: SessionRequirements | None = None,
    ) -> None:
        for name, value in (("session_id", session_id), ("patient_mrn", patient_mrn)):
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{name}: must be a non-empty string", field=name)
        self.session_id = session_id
        self.patient_mrn = patient_mrn
        self.course_id = course_id
        self.scheduled_for = require_aware(scheduled_for, "scheduled_for")
        self.requirements = requirements or SessionRequirements()
        self._clock = clock
        self._state = INITIAL_STATE
        self._history: list[TransitionEvent] = []
        self.pre_assessment: PreAssessment | None = None
        self.verification: OrderVerification | None = None
        self.infusion: InfusionRecord | None = None
        self.uncertain_since: datetime | None = None
        self.state_before_uncertain: SessionState | None = None
        self.discharge_decision: DischargeDecision | None = None

    # --- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def history(self) -> tuple[TransitionEvent, ...]:
        """Every transition so far, oldest first."""
        return tuple(self._history)

    @property
    def is_terminal(self) -> bool:
        """Whether the session has ended (discharged or aborted)."""
        return self._state in TERMINAL_STATES

    @property
    def alarm_phase(self) -> Phase:
        """The monitoring phase the alarm engine should be in for this state."""
        return _PHASE[self._state]

    def allowed_events(self, role: Role | None = None) -> frozenset[SessionEvent]:
        """Events the table allows from the current state (for ``role`` if given).

        Guards are not evaluated here: an allowed event may still be refused with a reason.
        """
        return frozenset(
            t.event for t in legal_transitions(self._state) if role is None or role in t.roles
        )

    # --- the one way to move -----------------------------------------------------------------

    def _row(
        self, event: SessionEvent, actor: Actor, target: SessionState | None = None
    ) -> Transition:
        """The table row for ``event`` now (raises StateError/AuthError when there is none)."""
        rows = _BY_EVENT_SOURCE.get((event, self._state), ())
        if target is not None:
            rows = tuple(t for t in rows if t.target is target)
        if not rows:
            allowed = ", ".join(sorted(e.value for e in self.allowed_events())) or "none"
            raise StateError(
                f"{event.value}: not allowed in state {self._state.value!r}"
                + (f" to {target.value!r}" if target is not None else "")
                + f"; allowed now: {allowed}"
            )
        row = rows[0]
        if actor.role not in row.roles:
            raise AuthError(
                f"{event.value}: role {actor.role.value!r} may not do this; allowed roles: "
                f"{', '.join(sorted(r.value for r in row.roles))}",
                field="actor.role",
            )
        return row

    def _transition(
        self, event: SessionEvent, actor: Actor, why: str, target: SessionState | None = None
    ) -> TransitionEvent:
        row = self._row(event, actor, target)
        why = why.strip() if isinstance(why, str) else ""
        if row.reason_required:
            why = require_reason(why, "why")
        record = TransitionEvent(
            event=event,
            who=actor.user_id,
            role=actor.role,
            when=self._clock.now(),
            from_state=self._state,
            to_state=row.target,
            why=why,
        )
        self._history.append(record)
        self._state = row.target
        return record

    def _check(self, event: SessionEvent, actor: Actor) -> None:
        """Refuse before any side effect when the table forbids ``event`` now."""
        self._row(event, actor)

    # --- events ------------------------------------------------------------------------------

    def check_in(self, actor: Actor, why: str = "") -> TransitionEvent:
        """The patient arrived."""
        return self._transition(E.CHECK_IN, actor, why)

    def begin_pre_assessment(self, actor: Actor, why: str = "") -> TransitionEvent:
        """A nurse starts the pre-infusion assessment."""
        return self._transition(E.BEGIN_PRE_ASSESSMENT, actor, why)

    def record_pre_assessment(self, actor: Actor, assessment: PreAssessment) -> PreAssessment:
        """Store (or replace) the pre-assessment; only in ``pre_assessment``."""
        if self._state is not S.PRE_ASSESSMENT:
            raise StateError(
                f"record_pre_assessment: only in state 'pre_assessment', not {self._state.value!r}"
            )
        require_role(actor, _CARE, "record_pre_assessment")
        stamped = PreAssessment(
            baseline_vitals=assessment.baseline_vitals,
            fasting_confirmed=assessment.fasting_confirmed,
            consent_confirmed=assessment.consent_confirmed,
            escort_confirmed=assessment.escort_confirmed,
            pre_scales=assessment.pre_scales,
            recorded_by=actor.user_id,
            recorded_at=self._clock.now(),
            notes=assessment.notes,
        )
        self.pre_assessment = stamped
        return stamped

    def record_order_verification(self, actor: Actor, verification: OrderVerification) -> None:
        """Store the order double check; only before the infusion starts."""
        if self._state not in (S.PRE_ASSESSMENT, S.CHECKED_IN):
            raise StateError(
                "record_order_verification: only in 'checked_in' or 'pre_assessment', not "
                f"{self._state.value!r}"
            )
        require_role(actor, {Role.NURSE, Role.PHYSICIAN, Role.PHARMACIST}, "verify order")
        require_aware(verification.verified_at, "verification.verified_at")
        self.verification = verification

    def mark_ready(self, actor: Actor, why: str = "") -> TransitionEvent:
        """Ready to start: the pre-assessment is complete and the order double-checked."""
        self._check(E.MARK_READY, actor)
        problems: list[str] = []
        if self.pre_assessment is None:
            problems.append("no pre-assessment recorded")
        else:
            problems.extend(
                f"missing {m}"
                for m in self.pre_assessment.missing(self.requirements.required_pre_scales)
            )
        if self.verification is None:
            problems.append("the order has not been verified and double-checked")
        else:
            problems.extend(self.verification.problems())
        if problems:
            raise StateError("mark_ready: not ready: " + "; ".join(problems))
        return self._transition(E.MARK_READY, actor, why)

    def reopen_assessment(self, actor: Actor, why: str) -> TransitionEvent:
        """Go back from ``ready`` to the assessment (e.g. the blood pressure rose)."""
        return self._transition(E.REOPEN_ASSESSMENT, actor, why)

    def start_infusion(self, actor: Actor, plan: InfusionPlan, why: str = "") -> TransitionEvent:
        """The pump was started with ``plan``; opens the infusion record."""
        self._check(E.START_INFUSION, actor)
        if self.verification is None or self.verification.problems():
            raise StateError("start_infusion: the order double check is missing or failed")
        record = InfusionRecord(
            started_at=self._clock.now(),
            rate_mg_per_h=plan.rate_mg_per_h,
            actor=actor,
            reason=why,
            concentration_mg_per_ml=plan.concentration_mg_per_ml,
            planned_total_mg=plan.planned_total_mg,
        )
        event = self._transition(E.START_INFUSION, actor, why)
        self.infusion = record
        return event

    def _record(self) -> InfusionRecord:
        if self.infusion is None:
            raise StateError("the infusion has not started")
        return self.infusion

    def change_rate(self, actor: Actor, rate_mg_per_h: float, why: str) -> None:
        """Record a rate change (not a state transition; only while infusing)."""
        if self._state is not S.INFUSING:
            raise StateError(f"change_rate: only while infusing, not {self._state.value!r}")
        require_role(actor, _CARE, "change_rate")
        self._record().change_rate(self._clock.now(), rate_mg_per_h, actor, why)

    def give_bolus(self, actor: Actor, amount_mg: float, why: str) -> None:
        """Record a bolus (only while infusing or paused)."""
        if self._state not in (S.INFUSING, S.PAUSED):
            raise StateError(
                f"give_bolus: only while infusing or paused, not {self._state.value!r}"
            )
        require_role(actor, _CARE, "give_bolus")
        self._record().give_bolus(self._clock.now(), amount_mg, actor, why)

    def pause(self, actor: Actor, why: str) -> TransitionEvent:
        """The pump was paused."""
        self._check(E.PAUSE, actor)
        reason = require_reason(why, "why")
        self._record().pause(self._clock.now(), actor, reason)
        return self._transition(E.PAUSE, actor, reason)

    def resume(
        self, actor: Actor, why: str = "", rate_mg_per_h: float | None = None
    ) -> TransitionEvent:
        """The pump was restarted (at ``rate_mg_per_h`` or the rate before the pause)."""
        self._check(E.RESUME, actor)
        self._record().resume(self._clock.now(), actor, why, rate_mg_per_h)
        return self._transition(E.RESUME, actor, why)

    def complete_infusion(self, actor: Actor, why: str = "") -> TransitionEvent:
        """The planned infusion is finished."""
        self._check(E.COMPLETE_INFUSION, actor)
        self._record().stop(self._clock.now(), actor, why, completed=True)
        return self._transition(E.COMPLETE_INFUSION, actor, why)

    def stop_infusion(self, actor: Actor, why: str) -> TransitionEvent:
        """The infusion was stopped early (reason required)."""
        self._check(E.STOP_INFUSION, actor)
        reason = require_reason(why, "why")
        self._record().stop(self._clock.now(), actor, reason, completed=False)
        return self._transition(E.STOP_INFUSION, actor, reason)

    def begin_recovery(self, actor: Actor, why: str = "") -> TransitionEvent:
        """Observation after the infusion begins."""
        return self._transition(E.BEGIN_RECOVERY, actor, why)

    @property
    def recovery_started_at(self) -> datetime | None:
        """When the session entered recovery (None before)."""
        for ev in reversed(self._history):
            if ev.to_state is S.RECOVERY:
                return ev.when
        return None

    def discharge(
        self,
        actor: Actor,
        evaluation: DischargeEvaluation,
        *,
        override_reason: str | None = None,
        why: str = "",
    ) -> TransitionEvent:
        """Discharge on met criteria, or on a physician's override with a reason.

        The evaluation must have been made during this recovery.
        """
        self._check(E.DISCHARGE, actor)
        started = self.recovery_started_at
        if started is not None and evaluation.evaluated_at < started:
            raise StateError(
                "discharge: the criteria were evaluated before recovery began; evaluate again"
            )
        decision = authorize_discharge(
            evaluation, actor, at=self._clock.now(), override_reason=override_reason
        )
        note = why or (f"override: {decision.override_reason}" if decision.overridden else "")
        event = self._transition(E.DISCHARGE, actor, note)
        self.discharge_decision = decision
        return event

    def abort(self, actor: Actor, why: str) -> TransitionEvent:
        """End the session without discharge (before the infusion; after it, physician only)."""
        return self._transition(E.ABORT, actor, why)

    def mark_uncertain(self, actor: Actor, why: str) -> TransitionEvent:
        """After a crash: the pump state is unknown until a nurse confirms it.

        Called by the service (role ``system``) for each session in ``ready``, ``infusing`` or
        ``paused`` when it restarts. The infusion record assumes the last rate continued until
        the confirmation.
        """
        self._check(E.MARK_UNCERTAIN, actor)
        reason = require_reason(why, "why")
        prior = self._state
        now = self._clock.now()
        if self.infusion is not None and self.infusion.status in (
            InfusionStatus.RUNNING,
            InfusionStatus.PAUSED,
        ):
            self.infusion.mark_uncertain(now, actor, reason)
        event = self._transition(E.MARK_UNCERTAIN, actor, reason)
        self.uncertain_since = now
        self.state_before_uncertain = prior
        return event

    def confirm_pump_state(
        self,
        actor: Actor,
        confirmation: PumpConfirmation,
        why: str = "",
        *,
        plan: InfusionPlan | None = None,
    ) -> TransitionEvent:
        """A nurse read the pump; the session moves to whatever the pump shows.

        running -> ``infusing``; finished -> ``infusion_complete``; stopped after drug was
        given -> ``paused``; never started -> ``ready``. When the pump was started during the
        outage (the session was ``ready``), ``plan`` gives its concentration and planned total so
        that a pump volume can be converted to mg.
        """
        self._check(E.CONFIRM_PUMP_STATE, actor)
        if self.uncertain_since is None:
            raise StateError("confirm_pump_state: the session has no uncertain period")
        now = self._clock.now()
        record = self.infusion
        if record is None:
            nothing_given = (
                not confirmation.running
                and not confirmation.finished
                and not confirmation.volume_infused_ml
            )
            if nothing_given:
                self._row(E.CONFIRM_PUMP_STATE, actor, S.READY)
                return self._finish_uncertain(actor, confirmation, why, S.READY)
            record = InfusionRecord.started_during_outage(
                outage_since=self.uncertain_since,
                actor=actor,
                concentration_mg_per_ml=None if plan is None else plan.concentration_mg_per_ml,
                planned_total_mg=None if plan is None else plan.planned_total_mg,
            )
        record.reconcile(now, actor, confirmation)
        if record.status is InfusionStatus.RUNNING:
            target = S.INFUSING
        elif record.status is InfusionStatus.STOPPED:
            target = S.INFUSION_COMPLETE
        else:
            target = S.PAUSED
        self.infusion = record
        return self._finish_uncertain(actor, confirmation, why, target)

    def _finish_uncertain(
        self, actor: Actor, confirmation: PumpConfirmation, why: str, target: SessionState
    ) -> TransitionEvent:
        note = why or confirmation.note or "pump state confirmed"
        event = self._transition(E.CONFIRM_PUMP_STATE, actor, note, target=target)
        self.uncertain_since = None
        self.state_before_uncertain = None
        return event

    # --- storage -----------------------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """Everything needed to store the session."""
        return SessionSnapshot(
            session_id=self.session_id,
            patient_mrn=self.patient_mrn,
            scheduled_for=self.scheduled_for,
            course_id=self.course_id,
            state=self._state,
            history=tuple(self._history),
            pre_assessment=self.pre_assessment,
            verification=self.verification,
            infusion_entries=() if self.infusion is None else self.infusion.entries,
            concentration_mg_per_ml=None
            if self.infusion is None
            else self.infusion.concentration_mg_per_ml,
            planned_total_mg=None if self.infusion is None else self.infusion.planned_total_mg,
            uncertain_since=self.uncertain_since,
            state_before_uncertain=self.state_before_uncertain,
            discharge=self.discharge_decision,
            requirements=self.requirements,
        )

    @classmethod
    def restore(cls, snapshot: SessionSnapshot, *, clock: Clock) -> Session:
        """Rebuild a session from storage; the history must replay through the table."""
        session = cls(
            snapshot.session_id,
            snapshot.patient_mrn,
            clock=clock,
            scheduled_for=snapshot.scheduled_for,
            course_id=snapshot.course_id,
            requirements=snapshot.requirements,
        )
        state = INITIAL_STATE
        for ev in snapshot.history:
            rows = [
                t for t in _BY_EVENT_SOURCE.get((ev.event, state), ()) if t.target is ev.to_state
            ]
            if ev.from_state is not state or not rows:
                raise StateError(
                    f"restore: history step {ev.event.value} {ev.from_state.value} -> "
                    f"{ev.to_state.value} does not follow the transition table"
                )
            state = ev.to_state
        if state is not snapshot.state:
            raise StateError(
                f"restore: history ends in {state.value!r} but the snapshot says "
                f"{snapshot.state.value!r}"
            )
        session._state = state
        session._history = list(snapshot.history)
        session.pre_assessment = snapshot.pre_assessment
        session.verification = snapshot.verification
        if snapshot.infusion_entries:
            session.infusion = InfusionRecord.from_entries(
                snapshot.infusion_entries,
                concentration_mg_per_ml=snapshot.concentration_mg_per_ml,
                planned_total_mg=snapshot.planned_total_mg,
            )
        session.uncertain_since = snapshot.uncertain_since
        session.state_before_uncertain = snapshot.state_before_uncertain
        session.discharge_decision = snapshot.discharge
        return session
