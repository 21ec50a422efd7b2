"""Trial arms: what a protocol orders and how staff adjust the pump during a session.

An in-silico trial runs every arm on the same virtual patients. An arm (:class:`TrialArm`) is a
protocol's order (dose text, dosing-weight policy), its monitoring cadence and its
within-session rules (:class:`WithinSessionRules`), which see what a clinician sees at each cuff
reading during the infusion (:class:`Observation`, vectorised over patients) and return the pump
settings they would confirm (:class:`Adjustment`).

:func:`protocol_arm` makes an arm from a protocol of :mod:`ketaflow.dosing.protocols`, and its
in-session decisions (:class:`ProtocolRules`) are made by the dosing package's own
:func:`~ketaflow.dosing.titration.suggest_in_session`, the function the clinic uses. That
function takes one event at a time; because every rule condition is a threshold comparison,
patients whose values fall between the same thresholds get the same suggestion, so it is called
once per such class (a handful per decision time), not once per patient.

**Assumptions** (stated in every report):

* A suggestion is applied at the reading that triggers it, exactly as suggested, as if the
  clinician confirmed it at once.
* When several events of one reading (blood pressure, heart rate, check-in intensity) suggest
  something, the most severe suggestion wins (stop > pause > slow > continue); two slows apply
  the larger percentage.
* A paused infusion is re-checked at the suggested re-check time and resumes at its previous
  rate when no rule suggests a pause or a stop any more.
* "I need help" at a check-in is counted but not acted on by the rules (staff attend).

Pump model: the pump follows the order's rate profile on its own *plan clock*. Slowing to a
fraction ``speed`` runs the plan clock (and every planned rate) at that fraction, so the whole
ordered dose is still given, over a longer time; a pause stops the clock; a stop ends the
infusion for good. The infusion also stops at ``max_infusion_factor`` x the planned duration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from ketaflow.dosing.body_size import DosingWeightPolicy, DosingWeightRule, dosing_weight
from ketaflow.dosing.protocols import Protocol as DosingProtocol
from ketaflow.dosing.protocols import load_protocol, load_protocol_file
from ketaflow.dosing.titration import (
    IN_SESSION_CONDITIONS,
    BetweenSessionRule,
    BloodPressureEvent,
    EventKind,
    HeartRateEvent,
    InSessionAction,
    InSessionRule,
    IntensityEvent,
    SessionEvent,
    TitrationBounds,
    suggest_in_session,
)
from ketaflow.errors import InputError, ProtocolError
from ketaflow.pk.population import VirtualPopulation
from ketaflow.pk.schedule import DoseInstruction, parse_dose
from ketaflow.sim.reducers import unique_rows

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Action codes recorded per patient and decision (for counting what the rules did).
ACTION_NONE: Final = 0
ACTION_SLOW: Final = 1
ACTION_PAUSE: Final = 2
ACTION_RESUME: Final = 3
ACTION_STOP: Final = 4


@dataclass(frozen=True)
class Observation:
    """What the clinician sees at a cuff reading during the infusion (arrays over patients).

    Vital signs are the cuff reading just taken (mmHg, /min); ``bp_consecutive`` counts the
    readings in a row (this one included) above the arm's BP confirmation thresholds and
    ``hr_sustained_min`` how long HR has been above the arm's HR threshold (0 at the first such
    reading). ``dissociation`` is the system's *predicted* dissociation (0-1) from what was
    actually given; check-in scores are 0-10. ``speed`` is the pump's current fraction of the
    ordered rate, ``paused`` whether it is held.
    """

    time_min: float
    sbp_mm_hg: FloatArray
    dbp_mm_hg: FloatArray
    hr_per_min: FloatArray
    bp_consecutive: IntArray
    hr_sustained_min: FloatArray
    sbp0_mm_hg: FloatArray
    dbp0_mm_hg: FloatArray
    dissociation: FloatArray
    intensity: IntArray
    need_help: BoolArray
    speed: FloatArray
    paused: BoolArray
    delivered_mg: FloatArray
    ordered_mg: FloatArray

    @property
    def n_patients(self) -> int:
        """Number of patients observed."""
        return int(self.speed.shape[0])


@dataclass(frozen=True)
class Adjustment:
    """The pump settings after a decision, per patient, what was done (action codes) and when
    to take the next reading (``recheck_after_min``; NaN: the regular cadence)."""

    speed: FloatArray
    paused: BoolArray
    stopped: BoolArray
    action: IntArray
    recheck_after_min: FloatArray


class WithinSessionRules(Protocol):
    """Vectorised within-session rules: observation in, confirmed pump settings out."""

    @property
    def description(self) -> str:
        """One paragraph saying what the rules do (shown in the trial report)."""
        ...

    def decide(self, obs: Observation) -> Adjustment:
        """The settings a clinician would confirm after ``obs`` (no per-patient loop)."""
        ...


@dataclass(frozen=True)
class NoRules:
    """No within-session adjustments: the order runs as written."""

    @property
    def description(self) -> str:
        """What the rules do, in words."""
        return "No within-session adjustments: the order runs as written."

    def decide(self, obs: Observation) -> Adjustment:
        """Keep every setting."""
        n = obs.n_patients
        return Adjustment(
            speed=obs.speed.copy(),
            paused=obs.paused.copy(),
            stopped=np.zeros(n, dtype=np.bool_),
            action=np.zeros(n, dtype=np.int64),
            recheck_after_min=np.full(n, np.nan),
        )


# --- the dosing package's in-session rules, vectorised by equivalence classes --------------------

#: Condition key -> (event variable, comparison) for every key the dosing rules may use. The
#: comparison is read from the key's documented suffix ("_above": >, "_at_least": >=).
_CONDITION_VARIABLES: Final[dict[str, tuple[str, str]]] = {
    "score_at_least": ("score", ">="),
    "sbp_above": ("sbp", ">"),
    "dbp_above": ("dbp", ">"),
    "consecutive_at_least": ("consecutive", ">="),
    "hr_above": ("hr", ">"),
    "sustained_min_at_least": ("sustained", ">="),
}
#: Valid range of each event variable (the dosing event constructors' checks) and a neutral
#: value used when no rule looks at the variable.
_VARIABLE_RANGE: Final[dict[str, tuple[float, float, float]]] = {
    "score": (0.0, 10.0, 0.0),
    "sbp": (20.0, 300.0, 120.0),
    "dbp": (20.0, 200.0, 80.0),
    "consecutive": (1.0, 1e6, 1.0),
    "hr": (20.0, 300.0, 70.0),
    "sustained": (0.0, 1e6, 0.0),
}
_EVENT_VARIABLES: Final[dict[EventKind, tuple[str, ...]]] = {
    EventKind.INTENSITY: ("score",),
    EventKind.BLOOD_PRESSURE: ("sbp", "dbp", "consecutive"),
    EventKind.HEART_RATE: ("hr", "sustained"),
}
_SEVERITY: Final[dict[InSessionAction, int]] = {
    InSessionAction.CONTINUE: 0,
    InSessionAction.SLOW: 1,
    InSessionAction.PAUSE: 2,
    InSessionAction.STOP: 3,
}


def _check_condition_keys() -> None:
    known = {key for keys in IN_SESSION_CONDITIONS.values() for key in keys}
    missing = known - set(_CONDITION_VARIABLES)
    if missing:
        raise ProtocolError(
            f"in-session condition(s) {sorted(missing)} are not known to the trial simulator; "
            "add them to ketaflow.sim.arms._CONDITION_VARIABLES"
        )


def _representatives(
    values: FloatArray, thresholds: Sequence[float], op: str, var: str
) -> FloatArray:
    """Map each value to one value of its class (same side of every threshold)."""
    lo, hi, neutral = _VARIABLE_RANGE[var]
    if not thresholds:
        return np.full(values.shape[0], neutral)
    t = np.array(sorted(set(thresholds)))
    v = np.clip(values, lo, hi)
    if op == ">":
        # Class k: t[k-1] < v <= t[k]; represented by t[k] (by t[-1] + 1 above the top).
        k = np.searchsorted(t, v, side="left")
        reps = np.append(t, t[-1] + 1.0)
    else:
        # Class k: t[k-1] <= v < t[k]; represented by t[k-1] (by t[0] - 1 below the bottom).
        k = np.searchsorted(t, v, side="right")
        reps = np.insert(t, 0, t[0] - 1.0)
    return np.asarray(np.clip(reps[k], lo, hi), dtype=np.float64)


def _event(kind: EventKind, row: Sequence[float]) -> SessionEvent:
    if kind is EventKind.INTENSITY:
        return IntensityEvent(score=float(row[0]))
    if kind is EventKind.BLOOD_PRESSURE:
        return BloodPressureEvent(
            sbp_mmhg=float(row[0]), dbp_mmhg=float(row[1]), consecutive_readings=round(row[2])
        )
    return HeartRateEvent(hr_bpm=float(row[0]), sustained_min=float(row[1]))


@dataclass(frozen=True)
class ProtocolRules:
    """A dosing protocol's ``[[in_session]]`` rules, applied to many patients at once."""

    protocol_name: str
    rules: tuple[InSessionRule, ...]

    def __post_init__(self) -> None:
        _check_condition_keys()

    @property
    def description(self) -> str:
        """What the rules do, in words."""
        parts = []
        for r in self.rules:
            cond = ", ".join(f"{k} {v:g}" for k, v in r.when.items())
            what = f"slow by {r.slow_by_pct:g} %" if r.slow_by_pct is not None else r.action.value
            parts.append(f"{r.event.value} ({cond}): {what}")
        return (
            f"In-session rules of protocol {self.protocol_name} (ketaflow.dosing, evaluated by "
            f"suggest_in_session): {'; '.join(parts) or 'none'}."
        )

    def _suggest(
        self, kind: EventKind, variables: dict[str, FloatArray]
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        """Severity, slow % and re-check (min) per patient for one event kind."""
        names = _EVENT_VARIABLES[kind]
        thresholds: dict[str, list[float]] = {v: [] for v in names}
        ops: dict[str, str] = {}
        for rule in self.rules:
            if rule.event is not kind:
                continue
            for key, value in rule.when.items():
                var, op = _CONDITION_VARIABLES[key]
                thresholds[var].append(float(value))
                ops[var] = op
        reps = np.stack(
            [_representatives(variables[v], thresholds[v], ops.get(v, ">"), v) for v in names],
            axis=1,
        )
        classes, inverse = unique_rows(reps)
        sev = np.zeros(len(classes), dtype=np.int64)
        slow = np.zeros(len(classes))
        recheck = np.full(len(classes), np.nan)
        for i, row in enumerate(classes):
            s = suggest_in_session(_event(kind, row.tolist()), self.rules)
            sev[i] = _SEVERITY[s.action]
            if s.slow_by_pct is not None and s.action is InSessionAction.SLOW:
                slow[i] = s.slow_by_pct
            if s.recheck_after_min is not None:
                recheck[i] = s.recheck_after_min
        return sev[inverse], slow[inverse], recheck[inverse]

    def decide(self, obs: Observation) -> Adjustment:
        """Most severe suggestion per patient, turned into pump settings."""
        n = obs.n_patients
        severity = np.zeros(n, dtype=np.int64)
        slow_pct = np.zeros(n)
        recheck = np.full(n, np.nan)
        events = {
            EventKind.INTENSITY: {"score": obs.intensity.astype(np.float64)},
            EventKind.BLOOD_PRESSURE: {
                "sbp": obs.sbp_mm_hg,
                "dbp": obs.dbp_mm_hg,
                "consecutive": obs.bp_consecutive.astype(np.float64),
            },
            EventKind.HEART_RATE: {"hr": obs.hr_per_min, "sustained": obs.hr_sustained_min},
        }
        for kind, variables in events.items():
            sev, slow, rc = self._suggest(kind, variables)
            severity = np.maximum(severity, sev)
            slow_pct = np.maximum(slow_pct, slow)
            recheck = np.fmin(recheck, rc)
        speed = obs.speed.copy()
        paused = obs.paused.copy()
        stopped = severity == _SEVERITY[InSessionAction.STOP]
        pause = severity == _SEVERITY[InSessionAction.PAUSE]
        slow = severity == _SEVERITY[InSessionAction.SLOW]
        action = np.zeros(n, dtype=np.int64)
        resume = paused & ~stopped & ~pause
        action[resume] = ACTION_RESUME
        paused[resume] = False
        new_pause = pause & ~paused
        action[new_pause] = ACTION_PAUSE
        paused |= pause
        speed[slow] *= 1.0 - slow_pct[slow] / 100.0
        action[slow] = ACTION_SLOW
        action[stopped] = ACTION_STOP
        return Adjustment(
            speed=speed, paused=paused, stopped=stopped, action=action, recheck_after_min=recheck
        )


# --- arms ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialArm:
    """One protocol as a trial arm: order, dosing weight, monitoring cadence and rules.

    ``doses`` are dose texts (the one grammar of :mod:`ketaflow.pk.schedule`). Cuff readings are
    taken every ``vitals_during_infusion_every_min`` while the infusion runs (or is paused) and
    every ``vitals_after_infusion_every_min`` after it; ``confirm_*`` and ``sustained_hr_above``
    say which readings count as consecutive high BP or sustained high HR for the rules.

    A course has ``course_sessions`` sessions. A titrating arm (``titration`` bounds and
    ``between_sessions`` rules of :mod:`ketaflow.dosing.titration`) doses session 1 at
    ``dose_mg_per_kg`` (the dose of ``doses``, a per-kg order) and later sessions at the dose
    its rules choose; the order is then scaled by dose / ``dose_mg_per_kg``.
    """

    name: str
    doses: tuple[str, ...]
    rules: WithinSessionRules = field(default_factory=NoRules)
    dosing_weight_rule: DosingWeightRule = field(
        default_factory=lambda: DosingWeightRule(DosingWeightPolicy.ACTUAL)
    )
    vitals_during_infusion_every_min: float = 10.0
    vitals_after_infusion_every_min: float = 15.0
    min_observation_after_infusion_min: float = 60.0
    confirm_sbp_above: float = 180.0
    confirm_dbp_above: float = 110.0
    sustained_hr_above: float = 120.0
    max_infusion_factor: float = 2.0
    source: str = "custom"
    course_sessions: int = 1
    dose_mg_per_kg: float | None = None
    titration: TitrationBounds | None = None
    between_sessions: tuple[BetweenSessionRule, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InputError("arm name must not be empty", field="protocol")
        if not self.doses:
            raise ProtocolError(f"arm {self.name!r} has no dose", field="protocol")
        if not 1 <= self.course_sessions <= 100:
            raise ProtocolError(
                f"arm {self.name!r}: course_sessions must lie in 1-100, got {self.course_sessions}",
                field="course_sessions",
            )
        if self.titration is not None and not (
            self.dose_mg_per_kg is not None
            and math.isfinite(self.dose_mg_per_kg)
            and self.dose_mg_per_kg > 0
        ):
            raise ProtocolError(
                f"arm {self.name!r}: a titrating arm needs its per-kg session dose "
                "(dose_mg_per_kg)",
                field="dose_mg_per_kg",
            )
        if not self.max_infusion_factor >= 1.0:
            raise ProtocolError(
                f"max_infusion_factor must be >= 1, got {self.max_infusion_factor}",
                field="max_infusion_factor",
            )
        for name in ("vitals_during_infusion_every_min", "vitals_after_infusion_every_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 5.0):
                raise ProtocolError(
                    f"arm {self.name!r}: {name} must be >= 5 min for the trial's noise slots, "
                    f"got {value}",
                    field=name,
                )
        parsed = self.instructions()  # parse now, so a bad dose text fails at definition
        if self.titration is not None and not all(i.per_kg for i in parsed):
            raise ProtocolError(
                f"arm {self.name!r}: a titrating arm needs per-kg dose texts (mg/kg)",
                field="doses",
            )

    def instructions(self) -> list[DoseInstruction]:
        """The parsed dose texts."""
        return [parse_dose(text) for text in self.doses]

    def dosing_weight_kg(self, pop: VirtualPopulation) -> FloatArray:
        """Dosing weight of every patient under the arm's policy (dosing package rules).

        ``actual`` and ``actual_capped`` are computed for all patients at once; ``ideal`` and
        ``adjusted`` call :func:`ketaflow.dosing.body_size.dosing_weight` per patient.
        """
        rule = self.dosing_weight_rule
        if rule.policy is DosingWeightPolicy.ACTUAL:
            return pop.weight_kg.copy()
        if rule.policy is DosingWeightPolicy.ACTUAL_CAPPED:
            assert rule.cap_kg is not None
            return np.asarray(np.minimum(pop.weight_kg, rule.cap_kg), dtype=np.float64)

        def one(w: float, h: float, s: str) -> float:
            return dosing_weight(rule, weight_kg=w, height_cm=h, sex=s).weight_kg

        rows = zip(pop.weight_kg, pop.height_cm, pop.sex, strict=True)
        return np.array([one(float(w), float(h), str(s)) for w, h, s in rows], dtype=np.float64)


def protocol_arm(protocol: DosingProtocol, *, max_infusion_factor: float = 2.0) -> TrialArm:
    """The trial arm of a dosing protocol: its dose, policy, monitoring and in-session rules."""
    return TrialArm(
        name=protocol.name,
        doses=(protocol.dose_text,),
        rules=ProtocolRules(protocol.name, tuple(protocol.in_session)),
        dosing_weight_rule=protocol.dosing_weight.rule,
        vitals_during_infusion_every_min=protocol.monitoring.vitals_during_infusion_every_min,
        vitals_after_infusion_every_min=protocol.monitoring.vitals_after_infusion_every_min,
        min_observation_after_infusion_min=protocol.monitoring.min_observation_after_infusion_min,
        confirm_sbp_above=protocol.alarms.stop_sbp_mmhg,
        confirm_dbp_above=protocol.alarms.stop_dbp_mmhg,
        sustained_hr_above=protocol.alarms.hr_above_bpm,
        max_infusion_factor=max_infusion_factor,
        source=f"ketaflow.dosing protocol {protocol.name} v{protocol.version}",
        course_sessions=protocol.course.sessions,
        dose_mg_per_kg=protocol.session_dose_mg_per_kg,
        titration=protocol.titration,
        between_sessions=tuple(protocol.between_sessions),
    )


def resolve_arms(names: Sequence[str]) -> list[TrialArm]:
    """Trial arms for protocol names (shipped protocols) or paths to protocol TOML files."""
    if not names:
        raise InputError("give at least one --protocol", field="protocol")
    arms: list[TrialArm] = []
    for n in names:
        looks_like_file = n.endswith(".toml") or "/" in n
        protocol = load_protocol_file(Path(n)) if looks_like_file else load_protocol(n)
        arm = protocol_arm(protocol)
        if any(a.name == arm.name for a in arms):
            raise InputError(f"protocol {arm.name!r} is given twice", field="protocol")
        arms.append(arm)
    return arms
