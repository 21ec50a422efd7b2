"""Titration: between sessions (next dose) and within a session (slow, pause, stop).

The rules are data, declared in each protocol file (``[[between_sessions]]`` and
``[[in_session]]`` tables, see ``docs/dosing.md``); this module parses them and evaluates them.
Everything here is pure: plain values in, plain values out, no clock, no I/O.

**Between sessions.** A rule has an ``action`` (``raise``, ``hold``, ``lower``) and a ``when``
table of conditions, all of which must hold. Every rule is evaluated; when several match, the
most conservative action wins (lower > hold > raise), so a safety rule can never be shadowed by
the order of the file. No match means hold. Raising stops at the protocol's ceiling and
lowering at its floor. :func:`decide_next_dose_mg_per_kg` does this for arrays of patients at
once (for in-silico trials); :func:`decide_next_dose` is the one-patient form built on it, so
both always agree.

**Within a session.** An event (a patient-reported intensity score, a blood-pressure reading,
a heart rate) is matched against the ``in_session`` rules of its kind; the most severe matching
action wins (stop > pause > slow > continue). The result is a :class:`Suggestion` that a
clinician confirms: ``requires_confirmation`` is always True and nothing here changes a pump.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ketaflow.datafile import check_keys
from ketaflow.errors import InputError, ProtocolError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# --- between sessions --------------------------------------------------------------------------


class TitrationAction(StrEnum):
    """What to do with the dose of the next session."""

    RAISE = "raise"
    HOLD = "hold"
    LOWER = "lower"


#: Numeric codes used by the batch function: -1 lower, 0 hold, +1 raise.
ACTION_CODES: Final[dict[TitrationAction, int]] = {
    TitrationAction.LOWER: -1,
    TitrationAction.HOLD: 0,
    TitrationAction.RAISE: 1,
}
#: Precedence when several rules match: the most conservative wins.
_CONSERVATISM: Final[dict[TitrationAction, int]] = {
    TitrationAction.RAISE: 0,
    TitrationAction.HOLD: 1,
    TitrationAction.LOWER: 2,
}

#: Condition keys of a between-session rule and their types.
BETWEEN_CONDITIONS: Final[dict[str, type]] = {
    "tolerated": bool,
    "stop_threshold_crossed": bool,
    "session_at_least": int,
    "response_pct_below": float,
    "response_pct_at_least": float,
    "max_dissociation_above": float,
    "max_sbp_above": float,
    "max_dbp_above": float,
}
_RULE_KEYS: Final = {"id", "when", "action", "rationale", "source"}
_IN_SESSION_KEYS: Final = _RULE_KEYS | {"event", "slow_by_pct", "recheck_after_min"}
#: Dose arithmetic is rounded to this many decimals of mg/kg (0.5 + 0.1 + 0.1 is 0.7, not
#: 0.7000000000000001); a millionth of a mg/kg is far below any measurable dose.
_DOSE_DECIMALS: Final = 6


@dataclass(frozen=True, slots=True)
class BetweenSessionRule:
    """If every condition in ``when`` holds after a session, do ``action`` next session."""

    id: str
    action: TitrationAction
    when: Mapping[str, float | bool]
    rationale: str
    source: str


@dataclass(frozen=True, slots=True)
class TitrationBounds:
    """Dose steps of a titrating protocol, mg/kg per session."""

    start_mg_per_kg: float
    step_mg_per_kg: float
    ceiling_mg_per_kg: float
    floor_mg_per_kg: float
    source: str = ""
    rationale: str = ""


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """What happened in one session, as the titration rules see it.

    ``response_pct`` is the % improvement of the outcome score from baseline (NaN when not
    assessed: no rule that needs it will match). ``max_dissociation`` is the highest
    dissociation score (the protocol names the scale). ``stop_threshold_crossed`` says whether the
    protocol's confirmed stop threshold (e.g. BP) was crossed.
    """

    session_number: int
    tolerated: bool
    response_pct: float
    max_dissociation: float
    max_sbp_mmhg: float
    max_dbp_mmhg: float
    stop_threshold_crossed: bool


@dataclass(frozen=True, slots=True)
class TitrationDecision:
    """A suggested dose for the next session, for a clinician to confirm."""

    current_mg_per_kg: float
    next_mg_per_kg: float
    action: TitrationAction
    rule_id: str
    rationale: str
    requires_confirmation: Literal[True] = True

    def __post_init__(self) -> None:
        if self.requires_confirmation is not True:
            raise InputError(
                "requires_confirmation: a titration decision is always a suggestion",
                field="requires_confirmation",
            )


@dataclass(frozen=True, slots=True)
class BatchTitration:
    """Decisions for N patients: next dose, effective action code (-1/0/+1), matched rule."""

    next_mg_per_kg: FloatArray
    action_code: IntArray
    rule_index: IntArray


def _as_float(name: str, value: npt.ArrayLike) -> FloatArray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a scalar or 1-D array, got shape {arr.shape}")
    return arr


def decide_next_dose_mg_per_kg(
    current_mg_per_kg: npt.ArrayLike,
    session_number: npt.ArrayLike,
    tolerated: npt.ArrayLike,
    response_pct: npt.ArrayLike,
    max_dissociation: npt.ArrayLike,
    max_sbp_mmhg: npt.ArrayLike,
    max_dbp_mmhg: npt.ArrayLike,
    stop_threshold_crossed: npt.ArrayLike,
    *,
    rules: Sequence[BetweenSessionRule],
    bounds: TitrationBounds | None,
) -> BatchTitration:
    """Next-session doses for N patients at once (arrays broadcast to a common length N).

    ``current_mg_per_kg`` is this session's dose; the other arrays summarise the session as in
    :class:`SessionOutcome`. Returns the next dose (mg/kg), the effective action code (-1 lower,
    0 hold, +1 raise; a raise at the ceiling is a hold) and the index of the deciding rule in
    ``rules`` (-1 when none matched). Without ``bounds`` (a fixed-dose protocol) the dose never
    changes, but the deciding rule is still reported.
    """
    arrays = np.broadcast_arrays(
        _as_float("current_mg_per_kg", current_mg_per_kg),
        _as_float("session_number", session_number),
        _as_float("tolerated", tolerated),
        _as_float("response_pct", response_pct),
        _as_float("max_dissociation", max_dissociation),
        _as_float("max_sbp_mmhg", max_sbp_mmhg),
        _as_float("max_dbp_mmhg", max_dbp_mmhg),
        _as_float("stop_threshold_crossed", stop_threshold_crossed),
    )
    current, session, tol, resp, diss, sbp, dbp, crossed = arrays
    if np.any(~np.isfinite(current)) or np.any(current <= 0):
        raise InputError("current_mg_per_kg: every dose must be a positive number")
    fields: dict[str, FloatArray] = {
        "session": session,
        "tolerated": tol,
        "response": resp,
        "dissociation": diss,
        "sbp": sbp,
        "dbp": dbp,
        "crossed": crossed,
    }
    n = current.shape[0]
    n_rules = len(rules)
    # Score = conservatism x n_rules + (n_rules - index): the most conservative matching rule
    # wins, the earliest of equally conservative ones breaks the tie; -1 means no match.
    scores = np.full((max(n_rules, 1), n), -1, dtype=np.int64)
    for i, rule in enumerate(rules):
        mask = _between_mask(rule.when, fields, n)
        score = _CONSERVATISM[rule.action] * n_rules + (n_rules - i)
        scores[i] = np.where(mask, score, -1)
    best = np.argmax(scores, axis=0)
    matched = scores[best, np.arange(n)] >= 0
    rule_index = np.where(matched, best, -1).astype(np.int64)
    codes = np.array([ACTION_CODES[r.action] for r in rules] or [0], dtype=np.int64)
    code = np.where(matched, codes[best], 0)
    if bounds is None:
        return BatchTitration(current.copy(), np.zeros(n, dtype=np.int64), rule_index)
    # A raise never lowers (a dose already above the ceiling is kept) and a lowering never raises.
    raised = np.maximum(
        current, np.minimum(current + bounds.step_mg_per_kg, bounds.ceiling_mg_per_kg)
    )
    lowered = np.minimum(
        current, np.maximum(current - bounds.step_mg_per_kg, bounds.floor_mg_per_kg)
    )
    nxt = np.select([code > 0, code < 0], [raised, lowered], current)
    nxt = np.round(nxt, _DOSE_DECIMALS)
    effective = np.sign(np.round(nxt - np.round(current, _DOSE_DECIMALS), _DOSE_DECIMALS))
    return BatchTitration(nxt, effective.astype(np.int64), rule_index)


def _between_mask(
    when: Mapping[str, float | bool], f: Mapping[str, FloatArray], n: int
) -> npt.NDArray[np.bool_]:
    mask = np.ones(n, dtype=bool)
    for key, value in when.items():
        v = float(value)
        if key == "tolerated":
            mask &= (f["tolerated"] != 0) == bool(value)
        elif key == "stop_threshold_crossed":
            mask &= (f["crossed"] != 0) == bool(value)
        elif key == "session_at_least":
            mask &= f["session"] >= v
        elif key == "response_pct_below":
            mask &= f["response"] < v
        elif key == "response_pct_at_least":
            mask &= f["response"] >= v
        elif key == "max_dissociation_above":
            mask &= f["dissociation"] > v
        elif key == "max_sbp_above":
            mask &= f["sbp"] > v
        elif key == "max_dbp_above":
            mask &= f["dbp"] > v
        else:  # parse_between_rule admits only the keys above
            raise ProtocolError(f"unknown between-session condition {key!r}")
    return mask


def decide_next_dose(
    outcome: SessionOutcome,
    current_mg_per_kg: float,
    *,
    rules: Sequence[BetweenSessionRule],
    bounds: TitrationBounds | None,
) -> TitrationDecision:
    """The next-session dose for one patient, with the deciding rule and its rationale."""
    batch = decide_next_dose_mg_per_kg(
        current_mg_per_kg,
        outcome.session_number,
        outcome.tolerated,
        outcome.response_pct,
        outcome.max_dissociation,
        outcome.max_sbp_mmhg,
        outcome.max_dbp_mmhg,
        outcome.stop_threshold_crossed,
        rules=rules,
        bounds=bounds,
    )
    nxt = float(batch.next_mg_per_kg[0])
    idx = int(batch.rule_index[0])
    code = int(batch.action_code[0])
    action = {-1: TitrationAction.LOWER, 0: TitrationAction.HOLD, 1: TitrationAction.RAISE}[code]
    if idx < 0:
        return TitrationDecision(
            current_mg_per_kg,
            nxt,
            action,
            "no-rule-matched",
            "No titration rule matched this session; keep the dose.",
        )
    rule = rules[idx]
    rationale = rule.rationale
    if bounds is None:
        rationale += " (fixed-dose protocol: the dose is not changed.)"
    elif rule.action is TitrationAction.RAISE and action is TitrationAction.HOLD:
        rationale += f" The ceiling {bounds.ceiling_mg_per_kg:g} mg/kg is reached."
    elif rule.action is TitrationAction.LOWER and action is TitrationAction.HOLD:
        rationale += f" The floor {bounds.floor_mg_per_kg:g} mg/kg is reached."
    return TitrationDecision(current_mg_per_kg, nxt, action, rule.id, rationale)


# --- within a session --------------------------------------------------------------------------


class InSessionAction(StrEnum):
    """What the infusion should do now."""

    CONTINUE = "continue"
    SLOW = "slow"
    PAUSE = "pause"
    STOP = "stop"


_SEVERITY: Final[dict[InSessionAction, int]] = {
    InSessionAction.CONTINUE: 0,
    InSessionAction.SLOW: 1,
    InSessionAction.PAUSE: 2,
    InSessionAction.STOP: 3,
}


class EventKind(StrEnum):
    """Kinds of in-session events the rules can react to."""

    INTENSITY = "intensity"
    BLOOD_PRESSURE = "bp"
    HEART_RATE = "hr"


#: Condition keys per event kind.
IN_SESSION_CONDITIONS: Final[dict[EventKind, dict[str, type]]] = {
    EventKind.INTENSITY: {"score_at_least": float},
    EventKind.BLOOD_PRESSURE: {
        "sbp_above": float,
        "dbp_above": float,
        "consecutive_at_least": int,
    },
    EventKind.HEART_RATE: {"hr_above": float, "sustained_min_at_least": float},
}


@dataclass(frozen=True, slots=True)
class InSessionRule:
    """If an event of kind ``event`` meets every condition in ``when``, suggest ``action``."""

    id: str
    event: EventKind
    when: Mapping[str, float]
    action: InSessionAction
    rationale: str
    source: str
    slow_by_pct: float | None = None
    recheck_after_min: float | None = None


@dataclass(frozen=True, slots=True)
class IntensityEvent:
    """The patient reports the experience as too intense, score 0 (none) to 10 (worst)."""

    score: float

    def __post_init__(self) -> None:
        if not (isinstance(self.score, int | float) and 0 <= self.score <= 10):
            raise InputError(f"score: expected 0 to 10, got {self.score!r}", field="score")


@dataclass(frozen=True, slots=True)
class BloodPressureEvent:
    """A blood-pressure reading; ``consecutive_readings`` counts readings in a row over a limit."""

    sbp_mmhg: float
    dbp_mmhg: float
    consecutive_readings: int = 1

    def __post_init__(self) -> None:
        for name, v, hi in (("sbp_mmhg", self.sbp_mmhg, 300), ("dbp_mmhg", self.dbp_mmhg, 200)):
            if not (isinstance(v, int | float) and 20 <= v <= hi):
                raise InputError(f"{name}: expected 20 to {hi} mmHg, got {v!r}", field=name)
        if not isinstance(self.consecutive_readings, int) or self.consecutive_readings < 1:
            raise InputError(
                "consecutive_readings: expected a whole number >= 1", field="consecutive_readings"
            )


@dataclass(frozen=True, slots=True)
class HeartRateEvent:
    """A heart rate held for ``sustained_min`` minutes."""

    hr_bpm: float
    sustained_min: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.hr_bpm, int | float) and 20 <= self.hr_bpm <= 300):
            raise InputError(
                f"hr_bpm: expected 20 to 300 /min, got {self.hr_bpm!r}", field="hr_bpm"
            )
        if not (isinstance(self.sustained_min, int | float) and self.sustained_min >= 0):
            raise InputError("sustained_min: expected >= 0 min", field="sustained_min")


SessionEvent = IntensityEvent | BloodPressureEvent | HeartRateEvent


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A suggested in-session change, always for a clinician to confirm; never auto-applied."""

    action: InSessionAction
    rule_id: str
    rationale: str
    slow_by_pct: float | None = None
    new_rate_mg_per_h: float | None = None
    recheck_after_min: float | None = None
    requires_confirmation: Literal[True] = True

    def __post_init__(self) -> None:
        if self.requires_confirmation is not True:
            raise InputError(
                "requires_confirmation: an in-session suggestion always needs a clinician",
                field="requires_confirmation",
            )


def _event_values(event: SessionEvent) -> tuple[EventKind, dict[str, float]]:
    if isinstance(event, IntensityEvent):
        return EventKind.INTENSITY, {"score": float(event.score)}
    if isinstance(event, BloodPressureEvent):
        return EventKind.BLOOD_PRESSURE, {
            "sbp": float(event.sbp_mmhg),
            "dbp": float(event.dbp_mmhg),
            "consecutive": float(event.consecutive_readings),
        }
    if isinstance(event, HeartRateEvent):
        return EventKind.HEART_RATE, {
            "hr": float(event.hr_bpm),
            "sustained": float(event.sustained_min),
        }
    raise InputError(f"event: unknown event type {type(event).__name__}", field="event")


_IN_SESSION_TESTS: Final[dict[str, tuple[str, str]]] = {
    "score_at_least": ("score", ">="),
    "sbp_above": ("sbp", ">"),
    "dbp_above": ("dbp", ">"),
    "consecutive_at_least": ("consecutive", ">="),
    "hr_above": ("hr", ">"),
    "sustained_min_at_least": ("sustained", ">="),
}


def _in_session_match(rule: InSessionRule, values: Mapping[str, float]) -> bool:
    for key, threshold in rule.when.items():
        name, op = _IN_SESSION_TESTS[key]
        v = values[name]
        if not (v >= threshold if op == ">=" else v > threshold):
            return False
    return True


def suggest_in_session(
    event: SessionEvent,
    rules: Sequence[InSessionRule],
    *,
    current_rate_mg_per_h: float | None = None,
) -> Suggestion:
    """The most severe matching rule's suggestion for ``event`` (continue when none matches).

    With ``current_rate_mg_per_h`` the suggestion carries the new rate (slowed, or 0 for a
    pause or stop) for the clinician to confirm.
    """
    if current_rate_mg_per_h is not None and not (
        math.isfinite(current_rate_mg_per_h) and current_rate_mg_per_h >= 0
    ):
        raise InputError(
            "current_rate_mg_per_h: expected a rate >= 0 mg/h", field="current_rate_mg_per_h"
        )
    kind, values = _event_values(event)
    best: InSessionRule | None = None
    for rule in rules:
        if rule.event is not kind or not _in_session_match(rule, values):
            continue
        if best is None or _SEVERITY[rule.action] > _SEVERITY[best.action]:
            best = rule
    if best is None:
        return Suggestion(
            InSessionAction.CONTINUE,
            "no-rule-matched",
            "No in-session rule matched; continue and follow the monitoring schedule.",
            new_rate_mg_per_h=current_rate_mg_per_h,
        )
    new_rate: float | None = None
    if current_rate_mg_per_h is not None:
        if best.action is InSessionAction.SLOW:
            assert best.slow_by_pct is not None
            new_rate = current_rate_mg_per_h * (1.0 - best.slow_by_pct / 100.0)
        elif best.action is InSessionAction.CONTINUE:
            new_rate = current_rate_mg_per_h
        else:
            new_rate = 0.0
    return Suggestion(
        best.action,
        best.id,
        best.rationale,
        slow_by_pct=best.slow_by_pct,
        new_rate_mg_per_h=new_rate,
        recheck_after_min=best.recheck_after_min,
    )


# --- parsing (used by ketaflow.dosing.protocols) -----------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    check_keys(table, allowed, where, error=ProtocolError)


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    if key not in table:
        raise ProtocolError(f"{where}: missing required key {key!r}")
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _condition_value(key: str, value: Any, kind: type, where: str) -> float | bool:
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: {key!r} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{where}: {key!r} must be a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise ProtocolError(f"{where}: {key!r} must be a whole number, got {value!r}")
    return float(value)


def _when(raw: Any, allowed: Mapping[str, type], where: str) -> dict[str, float | bool]:
    if not isinstance(raw, dict) or not raw:
        raise ProtocolError(f"{where}: 'when' must be a non-empty table of conditions")
    _check_keys(raw, set(allowed), f"{where}.when")
    return {k: _condition_value(k, v, allowed[k], f"{where}.when") for k, v in raw.items()}


def parse_between_rule(raw: Any, where: str) -> BetweenSessionRule:
    """Validate one ``[[between_sessions]]`` table."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be a table")
    _check_keys(raw, _RULE_KEYS, where)
    rule_id = _text(raw, "id", where)
    action_text = _text(raw, "action", where)
    try:
        action = TitrationAction(action_text)
    except ValueError:
        allowed = ", ".join(a.value for a in TitrationAction)
        raise ProtocolError(
            f"{where}: action must be one of {allowed}, got {action_text!r}"
        ) from None
    when = _when(raw.get("when"), BETWEEN_CONDITIONS, where)
    return BetweenSessionRule(
        rule_id, action, when, _text(raw, "rationale", where), _text(raw, "source", where)
    )


def parse_in_session_rule(raw: Any, where: str) -> InSessionRule:
    """Validate one ``[[in_session]]`` table."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be a table")
    _check_keys(raw, _IN_SESSION_KEYS, where)
    rule_id = _text(raw, "id", where)
    event_text = _text(raw, "event", where)
    try:
        kind = EventKind(event_text)
    except ValueError:
        allowed = ", ".join(e.value for e in EventKind)
        raise ProtocolError(
            f"{where}: event must be one of {allowed}, got {event_text!r}"
        ) from None
    action_text = _text(raw, "action", where)
    try:
        action = InSessionAction(action_text)
    except ValueError:
        allowed = ", ".join(a.value for a in InSessionAction)
        raise ProtocolError(
            f"{where}: action must be one of {allowed}, got {action_text!r}"
        ) from None
    when = {
        k: float(v) for k, v in _when(raw.get("when"), IN_SESSION_CONDITIONS[kind], where).items()
    }
    slow = raw.get("slow_by_pct")
    if action is InSessionAction.SLOW:
        if slow is None:
            raise ProtocolError(f"{where}: a 'slow' rule needs slow_by_pct")
        slow = _condition_value("slow_by_pct", slow, float, where)
        if not 0 < float(slow) < 100:
            raise ProtocolError(f"{where}: slow_by_pct must be between 0 and 100, got {slow!r}")
    elif slow is not None:
        raise ProtocolError(f"{where}: slow_by_pct is only for 'slow' rules")
    recheck = raw.get("recheck_after_min")
    if recheck is not None:
        recheck = _condition_value("recheck_after_min", recheck, float, where)
        if float(recheck) <= 0:
            raise ProtocolError(f"{where}: recheck_after_min must be > 0")
    return InSessionRule(
        id=rule_id,
        event=kind,
        when=when,
        action=action,
        rationale=_text(raw, "rationale", where),
        source=_text(raw, "source", where),
        slow_by_pct=None if slow is None else float(slow),
        recheck_after_min=None if recheck is None else float(recheck),
    )
