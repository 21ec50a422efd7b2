"""Alarm rules as data and a deterministic alarm engine.

Rules live in ``clinical/data/alarm_rules.toml`` (every number with its source); a clinic may
load its own file with :func:`load_alarm_rules`. One :class:`AlarmEngine` watches one session.
It is fed readings (:meth:`AlarmEngine.feed`), scale scores, patient check-ins, phase changes
and clock ticks (:meth:`AlarmEngine.tick`), and returns :class:`AlarmEvent` items:

``raised``               a new alarm (condition present)
``escalated``            not acknowledged within the priority's time; level goes up
``cleared_but_latched``  the condition cleared but a latching alarm stays until acknowledged
``condition_returned``   a latched alarm's condition came back before acknowledgement
``acknowledged``         a clinician acknowledged it (who, role, reason, action taken)
``resolved``             the alarm is closed (condition gone and acknowledged, or non-latching)

Alarm life cycle (IEC 60601-1-8 vocabulary: latching, acknowledged)::

    active --condition clears--> latched (latching) | resolved (non-latching)
    active --acknowledge-------> acknowledged --condition clears--> resolved
    latched --acknowledge------> resolved        latched --condition returns--> active

Each alarm carries a ``suggested_action`` (slow, pause, stop, call physician, ...). The engine
never acts on the infusion: a clinician confirms (``action_taken`` on acknowledgement) and the
service applies it through the session.

Determinism: no randomness and no wall clock (the injected clock gives "now"; readings bring
their own measurement time). Alarm ids are sequential per engine. A reading older than the
latest of its kind is stored nowhere and ignored (it cannot describe the present).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from ketaflow.clinical._data import (
    check_keys,
    get_bool,
    get_number,
    get_str,
    get_str_list,
    read_file,
    read_packaged,
)
from ketaflow.clinical.actors import CLINICAL_ROLES, Actor, Role, require_reason, require_role
from ketaflow.clinical.checkins import CHECK_IN_ITEMS, CheckIn
from ketaflow.clinical.clock import Clock
from ketaflow.clinical.scales import ScaleScore, scale_definitions
from ketaflow.clinical.vitals import VitalKind, VitalReading, VitalSet, VitalSource
from ketaflow.errors import InputError, NotFoundError, ProtocolError, StateError
from ketaflow.units import S_PER_MIN


class Phase(Enum):
    """Monitoring phase of a session (set by the service from the session state)."""

    IDLE = "idle"
    PRE_INFUSION = "pre_infusion"
    INFUSING = "infusing"
    PAUSED = "paused"
    RECOVERY = "recovery"


class Priority(Enum):
    """IEC 60601-1-8 alarm priorities."""

    HIGH = "high"  # immediate response
    MEDIUM = "medium"  # prompt response
    LOW = "low"  # awareness

    @property
    def rank(self) -> int:
        """0 for high, 1 for medium, 2 for low (for sorting)."""
        return ("high", "medium", "low").index(self.value)


class AlarmCategory(Enum):
    """What kind of condition raised the alarm."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"
    REMINDER = "reminder"
    PATIENT = "patient"


class SuggestedAction(Enum):
    """What the rule suggests; a clinician decides."""

    SLOW_INFUSION = "slow_infusion"
    PAUSE_INFUSION = "pause_infusion"
    STOP_INFUSION = "stop_infusion"
    CALL_PHYSICIAN = "call_physician"
    ASSESS_PATIENT = "assess_patient"
    CHECK_SENSOR = "check_sensor"
    RECORD_READING = "record_reading"
    RECORD_SCALE = "record_scale"
    NONE = "none"  # acknowledgement only: nothing done beyond assessing


class AlarmState(Enum):
    """Where an alarm is in its life cycle."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    LATCHED = "latched"
    RESOLVED = "resolved"


class AlarmEventKind(Enum):
    """What happened to an alarm."""

    RAISED = "raised"
    ESCALATED = "escalated"
    CLEARED_BUT_LATCHED = "cleared_but_latched"
    CONDITION_RETURNED = "condition_returned"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# --- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    """What every rule has: identity, priority, behaviour, text and source."""

    code: str
    category: AlarmCategory
    priority: Priority
    latching: bool
    action: SuggestedAction
    message: str
    source: str
    phases: frozenset[Phase]


@dataclass(frozen=True, slots=True)
class VitalRule:
    """``threshold`` (above/below) or ``relative`` (rise over baseline) rule on one vital."""

    spec: AlarmSpec
    vital: VitalKind
    above: float | None = None
    below: float | None = None
    rise_abs: float | None = None
    rise_pct: float | None = None
    confirm_readings: int = 1
    confirm_window_s: float = 0.0
    sustain_s: float = 0.0

    @property
    def relative(self) -> bool:
        """Whether the rule compares with the baseline."""
        return self.rise_abs is not None or self.rise_pct is not None

    def violates(self, value: float, baseline: float | None) -> bool:
        """Whether ``value`` breaks the rule (a relative rule without baseline never does)."""
        if self.above is not None and value > self.above:
            return True
        if self.below is not None and value < self.below:
            return True
        if baseline is not None:
            rise = value - baseline
            if self.rise_abs is not None and rise > self.rise_abs:
                return True
            if (
                self.rise_pct is not None
                and baseline > 0
                and 100.0 * rise / baseline > self.rise_pct
            ):
                return True
        return False


@dataclass(frozen=True, slots=True)
class SignalLossRule:
    """Technical alarm: no device reading of a vital for more than ``max_gap_s``."""

    spec: AlarmSpec
    vitals: tuple[VitalKind, ...]
    max_gap_s: float


@dataclass(frozen=True, slots=True)
class VitalsOverdueRule:
    """Reminder: no reading of ``vitals`` within the phase's interval plus grace."""

    spec: AlarmSpec
    vitals: tuple[VitalKind, ...]
    every_s: Mapping[Phase, float]
    grace_s: float


@dataclass(frozen=True, slots=True)
class ScaleOverdueRule:
    """Reminder: a scale due ``due_after_start_s`` after the infusion start."""

    spec: AlarmSpec
    scales: tuple[str, ...]
    due_after_start_s: float
    window_before_s: float
    grace_s: float

    @property
    def key(self) -> str:
        """Alarm key: one reminder per scale group and due time (several may share a code)."""
        return f"{self.spec.code}:{'/'.join(self.scales)}@{self.due_after_start_s:g}s"


@dataclass(frozen=True, slots=True)
class ScaleFlagRule:
    """Alarm while the latest score of ``scale`` carries ``flag``."""

    spec: AlarmSpec
    scale: str
    flag: str


@dataclass(frozen=True, slots=True)
class CheckInRule:
    """Alarm while the latest check-in has an item at or above its threshold."""

    spec: AlarmSpec
    thresholds: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class HelpRequestRule:
    """High-priority call when the patient asks for help; stays until acknowledged."""

    spec: AlarmSpec


Rule = (
    VitalRule
    | SignalLossRule
    | VitalsOverdueRule
    | ScaleOverdueRule
    | ScaleFlagRule
    | CheckInRule
    | HelpRequestRule
)


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    """Escalation timing of one priority."""

    escalate_after_s: float
    repeat_escalation_s: float
    max_escalation_level: int
    source: str


@dataclass(frozen=True, slots=True)
class AlarmRules:
    """A validated rule set."""

    version: str
    priorities: Mapping[Priority, PriorityPolicy]
    rules: tuple[Rule, ...]

    def rule(self, code: str) -> Rule:
        """The rule with ``code``."""
        for r in self.rules:
            if r.spec.code == code:
                return r
        raise NotFoundError(f"no alarm rule {code!r}")

    @property
    def codes(self) -> tuple[str, ...]:
        """Every rule code, in file order."""
        return tuple(r.spec.code for r in self.rules)


def _enum(enum: type[Any], value: str, where: str, key: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(e.value) for e in enum)
        raise ProtocolError(f"{where}: {key} must be one of {allowed}, got {value!r}") from None


_COMMON = (
    "code",
    "type",
    "category",
    "priority",
    "latching",
    "action",
    "message",
    "source",
    "phases",
)
_TYPE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "threshold": (
        ("vital",),
        ("above", "below", "confirm_readings", "confirm_window_s", "sustain_s"),
    ),
    "relative": (
        ("vital",),
        ("rise_abs", "rise_pct", "confirm_readings", "confirm_window_s", "sustain_s"),
    ),
    "signal_loss": (("vitals", "max_gap_s"), ()),
    "vitals_overdue": (("vitals", "every_s", "grace_s"), ()),
    "scale_overdue": (("scales", "due_after_start_s", "window_before_s", "grace_s"), ()),
    "scale_flag": (("scale", "flag"), ()),
    "check_in": (("thresholds",), ()),
    "help_request": ((), ()),
}


def _parse_rule(t: Mapping[str, Any], where: str) -> Rule:
    rtype = get_str(t, "type", where)
    if rtype not in _TYPE_KEYS:
        raise ProtocolError(f"{where}: type must be one of {', '.join(_TYPE_KEYS)}, got {rtype!r}")
    req, opt = _TYPE_KEYS[rtype]
    check_keys(t, (*_COMMON, *req), opt, where)
    code = get_str(t, "code", where)
    where = f"{where} ({code})"
    if not code.replace("_", "").isalnum() or code.upper() != code:
        raise ProtocolError(f"{where}: code must be UPPER_SNAKE_CASE")
    phases = frozenset(_enum(Phase, p, where, "phases") for p in get_str_list(t, "phases", where))
    spec = AlarmSpec(
        code=code,
        category=_enum(AlarmCategory, get_str(t, "category", where), where, "category"),
        priority=_enum(Priority, get_str(t, "priority", where), where, "priority"),
        latching=get_bool(t, "latching", where, False),
        action=_enum(SuggestedAction, get_str(t, "action", where), where, "action"),
        message=get_str(t, "message", where),
        source=get_str(t, "source", where),
        phases=phases,
    )

    def vital(v: str) -> VitalKind:
        kind: VitalKind = _enum(VitalKind, v, where, "vital")
        return kind

    if rtype in ("threshold", "relative"):
        num = {k: get_number(t, k, where) for k in opt if k in t}
        if rtype == "threshold" and "above" not in num and "below" not in num:
            raise ProtocolError(f"{where}: a threshold rule needs 'above' or 'below'")
        if rtype == "relative" and "rise_abs" not in num and "rise_pct" not in num:
            raise ProtocolError(f"{where}: a relative rule needs 'rise_abs' or 'rise_pct'")
        confirm = int(num.get("confirm_readings", 1))
        if confirm < 1 or confirm != num.get("confirm_readings", 1):
            raise ProtocolError(f"{where}: confirm_readings must be a whole number >= 1")
        if confirm > 1 and num.get("confirm_window_s", 0) <= 0:
            raise ProtocolError(f"{where}: confirm_readings > 1 needs confirm_window_s > 0")
        if num.get("sustain_s", 0) < 0:
            raise ProtocolError(f"{where}: sustain_s must be >= 0")
        return VitalRule(
            spec,
            vital(get_str(t, "vital", where)),
            above=num.get("above"),
            below=num.get("below"),
            rise_abs=num.get("rise_abs"),
            rise_pct=num.get("rise_pct"),
            confirm_readings=confirm,
            confirm_window_s=num.get("confirm_window_s", 0.0),
            sustain_s=num.get("sustain_s", 0.0),
        )
    if rtype == "signal_loss":
        return SignalLossRule(
            spec,
            tuple(vital(v) for v in get_str_list(t, "vitals", where)),
            get_number(t, "max_gap_s", where, minimum=1),
        )
    if rtype == "vitals_overdue":
        every = t["every_s"]
        if not isinstance(every, dict) or not every:
            raise ProtocolError(f"{where}: every_s must be a table phase = seconds")
        return VitalsOverdueRule(
            spec,
            tuple(vital(v) for v in get_str_list(t, "vitals", where)),
            {
                _enum(Phase, p, where, "every_s"): get_number(every, p, where, minimum=1)
                for p in every
            },
            get_number(t, "grace_s", where, minimum=0),
        )
    if rtype == "scale_overdue":
        scales = get_str_list(t, "scales", where)
        known = scale_definitions()
        for s in scales:
            if s not in known:
                raise ProtocolError(f"{where}: unknown scale {s!r}")
        return ScaleOverdueRule(
            spec,
            scales,
            get_number(t, "due_after_start_s", where, minimum=0),
            get_number(t, "window_before_s", where, minimum=0),
            get_number(t, "grace_s", where, minimum=0),
        )
    if rtype == "scale_flag":
        scale = get_str(t, "scale", where)
        flag = get_str(t, "flag", where)
        defs = scale_definitions()
        if scale not in defs:
            raise ProtocolError(f"{where}: unknown scale {scale!r}")
        if flag not in {f.code for f in defs[scale].flags}:
            raise ProtocolError(f"{where}: scale {scale!r} has no flag {flag!r}")
        return ScaleFlagRule(spec, scale, flag)
    if rtype == "check_in":
        th = t["thresholds"]
        if not isinstance(th, dict) or not th:
            raise ProtocolError(f"{where}: thresholds must be a table item = 0..10")
        out: dict[str, int] = {}
        for item, v in th.items():
            if item not in CHECK_IN_ITEMS:
                raise ProtocolError(f"{where}: unknown check-in item {item!r}")
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
                raise ProtocolError(f"{where}: threshold for {item!r} must be 0..10")
            out[item] = v
        return CheckInRule(spec, out)
    return HelpRequestRule(spec)


def parse_alarm_rules(data: Mapping[str, Any], where: str) -> AlarmRules:
    """Validate a decoded alarm-rule TOML document."""
    check_keys(data, ("version", "priorities", "rule"), (), where)
    pri: dict[Priority, PriorityPolicy] = {}
    for p in Priority:
        pw = f"{where} [priorities.{p.value}]"
        t = data["priorities"].get(p.value)
        if not isinstance(t, dict):
            raise ProtocolError(f"{pw}: missing")
        check_keys(
            t, ("escalate_after_s", "repeat_escalation_s", "max_escalation_level", "source"), (), pw
        )
        level = get_number(t, "max_escalation_level", pw, minimum=0)
        if level != int(level):
            raise ProtocolError(f"{pw}: max_escalation_level must be a whole number")
        pri[p] = PriorityPolicy(
            get_number(t, "escalate_after_s", pw, minimum=1),
            get_number(t, "repeat_escalation_s", pw, minimum=1),
            int(level),
            get_str(t, "source", pw),
        )
    rules = tuple(_parse_rule(t, f"{where} [[rule]] #{i + 1}") for i, t in enumerate(data["rule"]))
    codes = [r.spec.code for r in rules]
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise ProtocolError(f"{where}: duplicate rule codes {dupes}")
    return AlarmRules(get_str(data, "version", where), pri, rules)


@dataclass(frozen=True, slots=True)
class ScaleDue:
    """A scale due at a time after the infusion start (any of ``scales`` satisfies it)."""

    scales: tuple[str, ...]
    due_after_start_min: float


@dataclass(frozen=True, slots=True)
class MonitoringSchedule:
    """A protocol's monitoring schedule: vital-sign intervals per phase and scales due.

    The default rules encode BP every 10 min during and every 15 min after the infusion and a
    CADSS at 40 min; a protocol with another schedule passes its own to
    :func:`with_monitoring_schedule`.
    """

    vitals_every_min: Mapping[Phase, float]
    scales_due: tuple[ScaleDue, ...] = ()


def with_monitoring_schedule(rules: AlarmRules, schedule: MonitoringSchedule) -> AlarmRules:
    """A copy of ``rules`` whose reminders follow ``schedule``.

    The ``vitals_overdue`` rules take the schedule's intervals; the ``scale_overdue`` rules are
    replaced by one reminder per scheduled scale, keeping the first one's code, priority, grace
    and window. Raises InputError for a non-positive interval or an unknown scale.
    """
    for phase, minutes in schedule.vitals_every_min.items():
        if not isinstance(phase, Phase) or not minutes > 0:
            raise InputError(
                "vitals_every_min: give a positive number of minutes per Phase",
                field="vitals_every_min",
            )
    known = scale_definitions()
    for due in schedule.scales_due:
        unknown = [s for s in due.scales if s not in known]
        if unknown or not due.scales or due.due_after_start_min < 0:
            raise InputError(
                f"scales_due: unknown scale or negative time in {due!r}", field="scales_due"
            )
    every_s = {p: m * S_PER_MIN for p, m in schedule.vitals_every_min.items()}
    template = next((r for r in rules.rules if isinstance(r, ScaleOverdueRule)), None)
    out: list[Rule] = []
    for r in rules.rules:
        if isinstance(r, VitalsOverdueRule):
            phases = frozenset(every_s) & r.spec.phases or frozenset(every_s)
            out.append(
                VitalsOverdueRule(
                    replace(r.spec, phases=frozenset(phases)), r.vitals, every_s, r.grace_s
                )
            )
        elif isinstance(r, ScaleOverdueRule):
            if r is template:
                out.extend(
                    ScaleOverdueRule(
                        replace(
                            r.spec,
                            message=f"{'/'.join(d.scales)} due "
                            f"{d.due_after_start_min:g} min after the infusion start",
                        ),
                        tuple(d.scales),
                        d.due_after_start_min * S_PER_MIN,
                        r.window_before_s,
                        r.grace_s,
                    )
                    for d in schedule.scales_due
                )
        else:
            out.append(r)
    return AlarmRules(rules.version + "+schedule", rules.priorities, tuple(out))


@cache
def _packaged_rules() -> AlarmRules:
    return parse_alarm_rules(read_packaged("alarm_rules.toml"), "alarm_rules.toml")


def load_alarm_rules(path: str | Path | None = None) -> AlarmRules:
    """The shipped default rules, or a clinic's rule file."""
    if path is None:
        return _packaged_rules()
    return parse_alarm_rules(read_file(path), Path(path).name)


# --- alarms and events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alarm:
    """A snapshot of one alarm."""

    alarm_id: int
    key: str  # code plus qualifier, e.g. "VITALS_SIGNAL_LOSS:spo2"
    code: str
    category: AlarmCategory
    priority: Priority
    state: AlarmState
    suggested_action: SuggestedAction
    message: str
    source: str
    raised_at: datetime
    condition_present: bool
    escalation_level: int
    vital: VitalKind | None = None
    value: float | None = None
    artefact_suspect: bool = False
    detail: str = ""
    acknowledged_by: str | None = None
    acknowledged_role: Role | None = None
    acknowledged_at: datetime | None = None
    acknowledge_reason: str = ""
    action_taken: SuggestedAction | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """Something that happened to an alarm, with the alarm as it is afterwards."""

    kind: AlarmEventKind
    at: datetime
    alarm: Alarm

    @property
    def alarm_id(self) -> int:
        """The alarm's id."""
        return self.alarm.alarm_id

    @property
    def code(self) -> str:
        """The alarm's rule code."""
        return self.alarm.code


@dataclass(slots=True)
class _Open:
    """Mutable state of an open alarm inside the engine."""

    alarm_id: int
    key: str
    spec: AlarmSpec
    raised_at: datetime
    state: AlarmState = AlarmState.ACTIVE
    condition_present: bool = True
    escalation_level: int = 0
    vital: VitalKind | None = None
    value: float | None = None
    artefact_suspect: bool = False
    detail: str = ""
    one_shot: bool = False
    acknowledged_by: str | None = None
    acknowledged_role: Role | None = None
    acknowledged_at: datetime | None = None
    acknowledge_reason: str = ""
    action_taken: SuggestedAction | None = None
    resolved_at: datetime | None = None

    def snapshot(self) -> Alarm:
        s = self.spec
        return Alarm(
            alarm_id=self.alarm_id,
            key=self.key,
            code=s.code,
            category=s.category,
            priority=s.priority,
            state=self.state,
            suggested_action=s.action,
            message=s.message,
            source=s.source,
            raised_at=self.raised_at,
            condition_present=self.condition_present,
            escalation_level=self.escalation_level,
            vital=self.vital,
            value=self.value,
            artefact_suspect=self.artefact_suspect,
            detail=self.detail,
            acknowledged_by=self.acknowledged_by,
            acknowledged_role=self.acknowledged_role,
            acknowledged_at=self.acknowledged_at,
            acknowledge_reason=self.acknowledge_reason,
            action_taken=self.action_taken,
            resolved_at=self.resolved_at,
        )


@dataclass(slots=True)
class _Tracker:
    """Condition tracking of one vital rule."""

    violating_since: datetime | None = None
    recent: deque[datetime] = field(default_factory=deque)
    last_value: float | None = None
    last_artefact: bool = False


class AlarmEngine:
    """Alarm state of one session. Not thread-safe: one engine per session, one caller."""

    def __init__(
        self,
        *,
        clock: Clock,
        rules: AlarmRules | None = None,
        expected_continuous: Iterable[VitalKind] = (),
        first_alarm_id: int = 1,
    ) -> None:
        """``expected_continuous``: vitals the bedside monitor streams, watched for signal loss
        from the start of a phase even before their first reading (other vitals are watched once
        a device reading has arrived)."""
        self._clock = clock
        self.rules = load_alarm_rules() if rules is None else rules
        self._expected = frozenset(expected_continuous)
        self._next_id = first_alarm_id
        self._phase = Phase.IDLE
        self._phase_since = clock.now()
        self._infusion_started_at: datetime | None = None
        self._baseline: dict[VitalKind, float] = {}
        self._last_at: dict[VitalKind, datetime] = {}
        self._last_device_at: dict[VitalKind, datetime] = {}
        self._open: dict[str, _Open] = {}
        self._closed: list[Alarm] = []
        self._by_vital: dict[VitalKind, list[VitalRule]] = {}
        self._trackers: dict[str, _Tracker] = {}
        self._sustained: list[VitalRule] = []
        self._overdue_since: dict[str, datetime] = {}
        self._scale_done: set[str] = set()
        for r in self.rules.rules:
            if isinstance(r, VitalRule):
                self._by_vital.setdefault(r.vital, []).append(r)
                self._trackers[r.spec.code] = _Tracker()
                if r.sustain_s > 0:
                    self._sustained.append(r)
            elif isinstance(r, VitalsOverdueRule):
                self._overdue_since[r.spec.code] = self._phase_since
        self._signal_loss = [r for r in self.rules.rules if isinstance(r, SignalLossRule)]
        self._vitals_overdue = [r for r in self.rules.rules if isinstance(r, VitalsOverdueRule)]
        self._scale_overdue = [r for r in self.rules.rules if isinstance(r, ScaleOverdueRule)]
        self._scale_flag = [r for r in self.rules.rules if isinstance(r, ScaleFlagRule)]
        self._check_in = [r for r in self.rules.rules if isinstance(r, CheckInRule)]
        self._help = [r for r in self.rules.rules if isinstance(r, HelpRequestRule)]
        self._clear_on_reading: dict[VitalKind, list[VitalsOverdueRule]] = {}
        for ro in self._vitals_overdue:
            for k in ro.vitals:
                self._clear_on_reading.setdefault(k, []).append(ro)

    # --- reading state -----------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current monitoring phase."""
        return self._phase

    @property
    def baseline(self) -> Mapping[VitalKind, float]:
        """The pre-infusion baseline used by relative rules."""
        return dict(self._baseline)

    def active_alarms(self) -> tuple[Alarm, ...]:
        """Open alarms (active, acknowledged or latched), highest priority first, then oldest."""
        return tuple(
            sorted(
                (a.snapshot() for a in self._open.values()),
                key=lambda a: (a.priority.rank, a.raised_at, a.alarm_id),
            )
        )

    def resolved_alarms(self) -> tuple[Alarm, ...]:
        """Closed alarms, in the order they closed."""
        return tuple(self._closed)

    def alarm(self, alarm_id: int) -> Alarm:
        """One alarm (open or closed) by id."""
        for a in self._open.values():
            if a.alarm_id == alarm_id:
                return a.snapshot()
        for c in self._closed:
            if c.alarm_id == alarm_id:
                return c
        raise NotFoundError(f"no alarm with id {alarm_id}")

    # --- inputs ------------------------------------------------------------------------------

    def set_baseline(self, vitals: VitalSet | Mapping[VitalKind, float]) -> None:
        """The pre-infusion baseline for relative rules (replaces the previous one)."""
        if isinstance(vitals, VitalSet):
            self._baseline = {r.kind: r.value for r in vitals.readings}
        else:
            self._baseline = {VitalKind(k): float(v) for k, v in vitals.items()}

    def set_phase(self, phase: Phase) -> list[AlarmEvent]:
        """Enter ``phase`` now (from the session state). Technical alarms and reminders whose
        rule does not apply in the new phase are resolved."""
        if not isinstance(phase, Phase):
            raise InputError("phase: must be a Phase", field="phase")
        now = self._clock.now()
        events: list[AlarmEvent] = []
        if phase is self._phase:
            return events
        old = self._phase
        self._phase = phase
        self._phase_since = now
        if phase is Phase.INFUSING and self._infusion_started_at is None:
            self._infusion_started_at = now
        for ro in self._vitals_overdue:
            if ro.every_s.get(old) != ro.every_s.get(phase):
                self._overdue_since[ro.spec.code] = now
        for r in self.rules.rules:
            if r.spec.category in (AlarmCategory.TECHNICAL, AlarmCategory.REMINDER) and (
                phase not in r.spec.phases
            ):
                for key in [k for k, a in self._open.items() if a.spec.code == r.spec.code]:
                    self._resolve(key, now, events)
        return events

    def feed(self, reading: VitalReading) -> list[AlarmEvent]:
        """Evaluate one reading. Fast path: a few dict lookups and the rules of its vital."""
        kind = reading.kind
        at = reading.measured_at
        last = self._last_at.get(kind)
        if last is not None and at < last:
            return []
        self._last_at[kind] = at
        events: list[AlarmEvent] = []
        if reading.source is VitalSource.DEVICE:
            self._last_device_at[kind] = at
            if self._open:
                for rs in self._signal_loss:
                    self._condition_off(f"{rs.spec.code}:{kind.value}", at, events)
        if self._open:
            for ro in self._clear_on_reading.get(kind, ()):
                self._condition_off(ro.spec.code, at, events)
        rules = self._by_vital.get(kind)
        if rules:
            phase = self._phase
            for rule in rules:
                if phase in rule.spec.phases:
                    self._evaluate(rule, reading, events)
        return events

    def feed_set(self, vitals: VitalSet) -> list[AlarmEvent]:
        """Evaluate every reading of a set."""
        events: list[AlarmEvent] = []
        for r in vitals.readings:
            events.extend(self.feed(r))
        return events

    def record_scale(self, score: ScaleScore, at: datetime | None = None) -> list[AlarmEvent]:
        """A scale was scored at ``at`` (default now): satisfies reminders, evaluates flags."""
        when = self._clock.now() if at is None else at
        events: list[AlarmEvent] = []
        for rs in self._scale_overdue:
            if score.scale_id in rs.scales:
                due = self._scale_due_at(rs)
                if due is not None and when >= due - timedelta(seconds=rs.window_before_s):
                    self._scale_done.add(rs.key)
                    self._resolve(rs.key, when, events)
        for rf in self._scale_flag:
            if rf.scale != score.scale_id or self._phase not in rf.spec.phases:
                continue
            if rf.flag in score.flags:
                self._condition_on(
                    rf.spec,
                    rf.spec.code,
                    when,
                    events,
                    value=float(score.total),
                    detail=f"{score.scale_id} total {score.total}",
                )
            else:
                self._condition_off(rf.spec.code, when, events)
        return events

    def feed_check_in(self, check_in: CheckIn) -> list[AlarmEvent]:
        """Evaluate a patient check-in (help request, distress thresholds)."""
        events: list[AlarmEvent] = []
        at = check_in.at
        if check_in.needs_help:
            for rh in self._help:
                if self._phase in rh.spec.phases:
                    key = rh.spec.code
                    if key not in self._open:
                        self._condition_on(
                            rh.spec, key, at, events, detail=check_in.note, one_shot=True
                        )
        for rc in self._check_in:
            if self._phase not in rc.spec.phases:
                continue
            high = [
                f"{item} {v}"
                for item, limit in rc.thresholds.items()
                if (v := check_in.value(item)) is not None and v >= limit
            ]
            if high:
                self._condition_on(rc.spec, rc.spec.code, at, events, detail=", ".join(high))
            elif any(check_in.value(item) is not None for item in rc.thresholds):
                self._condition_off(rc.spec.code, at, events)
        return events

    def tick(self) -> list[AlarmEvent]:
        """Time-driven checks at the clock's now: sustained conditions, signal loss, overdue
        readings and scales, escalation. Call it regularly (e.g. every second)."""
        now = self._clock.now()
        events: list[AlarmEvent] = []
        phase = self._phase
        for rule in self._sustained:
            tr = self._trackers[rule.spec.code]
            if (
                tr.violating_since is not None
                and phase in rule.spec.phases
                and len(tr.recent) >= rule.confirm_readings
                and (now - tr.violating_since).total_seconds() >= rule.sustain_s
            ):
                self._condition_on(
                    rule.spec,
                    rule.spec.code,
                    now,
                    events,
                    vital=rule.vital,
                    value=tr.last_value,
                    artefact=tr.last_artefact,
                )
        for rs in self._signal_loss:
            if phase not in rs.spec.phases:
                continue
            for kind in rs.vitals:
                ref = self._last_device_at.get(kind)
                if ref is None and kind in self._expected:
                    ref = self._phase_since
                if ref is not None and (now - ref).total_seconds() > rs.max_gap_s:
                    self._condition_on(
                        rs.spec,
                        f"{rs.spec.code}:{kind.value}",
                        now,
                        events,
                        vital=kind,
                        detail=f"no {kind.value} reading for {(now - ref).total_seconds():.0f} s",
                    )
        for ro in self._vitals_overdue:
            every = ro.every_s.get(phase)
            if every is None or phase not in ro.spec.phases:
                continue
            ref = self._overdue_since[ro.spec.code]
            for k in ro.vitals:
                t = self._last_at.get(k)
                if t is not None and t > ref:
                    ref = t
            if (now - ref).total_seconds() > every + ro.grace_s:
                self._condition_on(
                    ro.spec,
                    ro.spec.code,
                    now,
                    events,
                    detail=f"last reading {(now - ref).total_seconds() / 60:.0f} min ago "
                    f"(due every {every / 60:g} min)",
                )
        for rsd in self._scale_overdue:
            if phase not in rsd.spec.phases or rsd.key in self._scale_done:
                continue
            due = self._scale_due_at(rsd)
            if due is not None and now > due + timedelta(seconds=rsd.grace_s):
                self._condition_on(
                    rsd.spec,
                    rsd.key,
                    now,
                    events,
                    detail=f"{'/'.join(rsd.scales)} due at {due.isoformat()}",
                )
        for a in list(self._open.values()):
            if a.state not in (AlarmState.ACTIVE, AlarmState.LATCHED):
                continue
            policy = self.rules.priorities[a.spec.priority]
            while a.escalation_level < policy.max_escalation_level:
                due_s = policy.escalate_after_s + a.escalation_level * policy.repeat_escalation_s
                if (now - a.raised_at).total_seconds() < due_s:
                    break
                a.escalation_level += 1
                events.append(AlarmEvent(AlarmEventKind.ESCALATED, now, a.snapshot()))
        return events

    def acknowledge(
        self,
        alarm_id: int,
        actor: Actor,
        reason: str,
        *,
        action_taken: SuggestedAction | None = None,
    ) -> list[AlarmEvent]:
        """A nurse or physician acknowledges an alarm (reason required).

        ``action_taken`` records what the clinician decided (it may differ from the suggested
        action). A latched alarm, a one-shot help request, or an alarm whose condition has gone
        is resolved at once.
        """
        require_role(actor, CLINICAL_ROLES, "acknowledge alarm")
        why = require_reason(reason)
        if action_taken is not None and not isinstance(action_taken, SuggestedAction):
            raise InputError("action_taken: must be a SuggestedAction", field="action_taken")
        entry = next((a for a in self._open.values() if a.alarm_id == alarm_id), None)
        if entry is None:
            if any(c.alarm_id == alarm_id for c in self._closed):
                raise StateError(f"acknowledge: alarm {alarm_id} is already resolved")
            raise NotFoundError(f"no alarm with id {alarm_id}")
        if entry.state is AlarmState.ACKNOWLEDGED:
            raise StateError(f"acknowledge: alarm {alarm_id} is already acknowledged")
        now = self._clock.now()
        entry.state = AlarmState.ACKNOWLEDGED
        entry.acknowledged_by = actor.user_id
        entry.acknowledged_role = actor.role
        entry.acknowledged_at = now
        entry.acknowledge_reason = why
        entry.action_taken = action_taken
        events = [AlarmEvent(AlarmEventKind.ACKNOWLEDGED, now, entry.snapshot())]
        if not entry.condition_present or entry.one_shot:
            self._resolve(entry.key, now, events)
        return events

    # --- internals ---------------------------------------------------------------------------

    def _scale_due_at(self, rule: ScaleOverdueRule) -> datetime | None:
        if self._infusion_started_at is None:
            return None
        return self._infusion_started_at + timedelta(seconds=rule.due_after_start_s)

    def _evaluate(self, rule: VitalRule, reading: VitalReading, events: list[AlarmEvent]) -> None:
        tr = self._trackers[rule.spec.code]
        at = reading.measured_at
        if rule.violates(reading.value, self._baseline.get(rule.vital)):
            if tr.violating_since is None:
                tr.violating_since = at
            recent = tr.recent
            recent.append(at)
            if rule.confirm_readings > 1:
                window = timedelta(seconds=rule.confirm_window_s)
                while recent and at - recent[0] > window:
                    recent.popleft()
                while len(recent) > rule.confirm_readings:
                    recent.popleft()
            else:
                while len(recent) > 1:
                    recent.popleft()
            tr.last_value = reading.value
            tr.last_artefact = reading.artefact_suspect
            if len(recent) >= rule.confirm_readings and (
                (at - tr.violating_since).total_seconds() >= rule.sustain_s
            ):
                self._condition_on(
                    rule.spec,
                    rule.spec.code,
                    at,
                    events,
                    vital=rule.vital,
                    value=reading.value,
                    artefact=reading.artefact_suspect,
                )
            elif rule.spec.code in self._open:
                a = self._open[rule.spec.code]
                a.value = reading.value
        else:
            tr.violating_since = None
            tr.recent.clear()
            self._condition_off(rule.spec.code, at, events)

    def _condition_on(
        self,
        spec: AlarmSpec,
        key: str,
        at: datetime,
        events: list[AlarmEvent],
        *,
        vital: VitalKind | None = None,
        value: float | None = None,
        artefact: bool = False,
        detail: str = "",
        one_shot: bool = False,
    ) -> None:
        a = self._open.get(key)
        if a is None:
            a = _Open(
                alarm_id=self._next_id,
                key=key,
                spec=spec,
                raised_at=at,
                vital=vital,
                value=value,
                artefact_suspect=artefact,
                detail=detail,
                one_shot=one_shot,
            )
            self._next_id += 1
            self._open[key] = a
            events.append(AlarmEvent(AlarmEventKind.RAISED, at, a.snapshot()))
            return
        if value is not None:
            a.value = value
            a.artefact_suspect = artefact
        if detail:
            a.detail = detail
        if not a.condition_present:
            a.condition_present = True
            if a.state is AlarmState.LATCHED:
                a.state = AlarmState.ACTIVE
            events.append(AlarmEvent(AlarmEventKind.CONDITION_RETURNED, at, a.snapshot()))

    def _condition_off(self, key: str, at: datetime, events: list[AlarmEvent]) -> None:
        a = self._open.get(key)
        if a is None or not a.condition_present or a.one_shot:
            return
        a.condition_present = False
        if a.state is AlarmState.ACKNOWLEDGED or not a.spec.latching:
            self._resolve(key, at, events)
        else:
            a.state = AlarmState.LATCHED
            events.append(AlarmEvent(AlarmEventKind.CLEARED_BUT_LATCHED, at, a.snapshot()))

    def _resolve(self, key: str, at: datetime, events: list[AlarmEvent]) -> None:
        a = self._open.pop(key, None)
        if a is None:
            return
        a.state = AlarmState.RESOLVED
        a.condition_present = False
        a.resolved_at = at
        snap = a.snapshot()
        self._closed.append(snap)
        events.append(AlarmEvent(AlarmEventKind.RESOLVED, at, snap))
