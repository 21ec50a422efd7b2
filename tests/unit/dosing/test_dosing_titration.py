"""Titration rules: between sessions (scalar and batch agree) and in-session suggestions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ketaflow.dosing.protocols import load_protocol
from ketaflow.dosing.titration import (
    BatchTitration,
    BetweenSessionRule,
    BloodPressureEvent,
    HeartRateEvent,
    InSessionAction,
    IntensityEvent,
    SessionOutcome,
    Suggestion,
    TitrationAction,
    TitrationDecision,
    decide_next_dose,
    decide_next_dose_mg_per_kg,
    suggest_in_session,
)
from ketaflow.errors import InputError

TITRATION = load_protocol("depression-titration")
STANDARD = load_protocol("depression-standard")


def outcome(
    session: int = 2,
    *,
    tolerated: bool = True,
    response: float = 20.0,
    dissociation: float = 8.0,
    sbp: float = 150.0,
    dbp: float = 90.0,
    crossed: bool = False,
) -> SessionOutcome:
    return SessionOutcome(session, tolerated, response, dissociation, sbp, dbp, crossed)


@pytest.mark.parametrize(
    ("label", "o", "current", "action", "next_dose", "rule_id"),
    [
        ("too early to raise", outcome(1), 0.5, "hold", 0.5, "no-rule-matched"),
        ("inadequate after session 2", outcome(2), 0.5, "raise", 0.6, "raise-if-inadequate"),
        ("raise is clamped to the ceiling", outcome(4), 0.7, "raise", 0.75, "raise-if-inadequate"),
        ("at the ceiling", outcome(5), 0.75, "hold", 0.75, "raise-if-inadequate"),
        ("responding", outcome(3, response=55.0), 0.6, "hold", 0.6, "hold-if-responding"),
        ("not tolerated", outcome(3, tolerated=False), 0.6, "lower", 0.5, "lower-if-not-tolerated"),
        (
            "stop threshold beats raise",
            outcome(3, crossed=True, sbp=190.0),
            0.6,
            "lower",
            0.5,
            "lower-after-stop-threshold",
        ),
        (
            "high dissociation blocks a raise",
            outcome(3, dissociation=20.0),
            0.6,
            "hold",
            0.6,
            "hold-if-dissociation-high",
        ),
        (
            "one high systolic reading blocks a raise",
            outcome(3, sbp=185.0),
            0.6,
            "hold",
            0.6,
            "hold-if-systolic-above-stop",
        ),
        (
            "one high diastolic reading blocks a raise",
            outcome(3, dbp=112.0),
            0.6,
            "hold",
            0.6,
            "hold-if-diastolic-above-stop",
        ),
        (
            "response not assessed",
            outcome(3, response=math.nan),
            0.6,
            "hold",
            0.6,
            "no-rule-matched",
        ),
        ("floor", outcome(3, tolerated=False), 0.1, "hold", 0.1, "lower-if-not-tolerated"),
    ],
)
def test_between_session_rules(
    label: str, o: SessionOutcome, current: float, action: str, next_dose: float, rule_id: str
) -> None:
    d = TITRATION.decide_next_dose(o, current)
    assert d.action is TitrationAction(action), label
    assert d.next_mg_per_kg == pytest.approx(next_dose, abs=1e-12)
    assert d.rule_id == rule_id
    assert d.requires_confirmation is True
    if label == "at the ceiling":
        assert "ceiling 0.75 mg/kg is reached" in d.rationale
    if label == "floor":
        assert "floor 0.1 mg/kg is reached" in d.rationale


def test_fixed_dose_protocol_never_changes_the_dose() -> None:
    d = STANDARD.decide_next_dose(outcome(3, tolerated=False), 0.5)
    assert d.next_mg_per_kg == 0.5
    assert d.action is TitrationAction.HOLD
    assert d.rule_id == "review-if-not-tolerated"
    assert "fixed-dose protocol" in d.rationale


def _random_outcomes(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    response = rng.uniform(0, 100, n)
    response[rng.random(n) < 0.05] = np.nan
    return {
        "current": rng.choice([0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.9], n),
        "session": rng.integers(1, 8, n),
        "tolerated": rng.random(n) < 0.8,
        "response": response,
        "dissociation": rng.uniform(0, 40, n),
        "sbp": rng.uniform(110, 210, n),
        "dbp": rng.uniform(60, 125, n),
        "crossed": rng.random(n) < 0.1,
    }


def _batch(a: dict[str, np.ndarray], rules: tuple[BetweenSessionRule, ...]) -> BatchTitration:
    return decide_next_dose_mg_per_kg(
        a["current"],
        a["session"],
        a["tolerated"],
        a["response"],
        a["dissociation"],
        a["sbp"],
        a["dbp"],
        a["crossed"],
        rules=rules,
        bounds=TITRATION.titration,
    )


def test_batch_agrees_with_one_patient_at_a_time() -> None:
    a = _random_outcomes(1500, seed=20250310)
    batch = _batch(a, TITRATION.between_sessions)
    codes = {TitrationAction.LOWER: -1, TitrationAction.HOLD: 0, TitrationAction.RAISE: 1}
    for i in range(len(a["current"])):
        o = SessionOutcome(
            int(a["session"][i]),
            bool(a["tolerated"][i]),
            float(a["response"][i]),
            float(a["dissociation"][i]),
            float(a["sbp"][i]),
            float(a["dbp"][i]),
            bool(a["crossed"][i]),
        )
        d = TITRATION.decide_next_dose(o, float(a["current"][i]))
        assert batch.next_mg_per_kg[i] == pytest.approx(d.next_mg_per_kg, abs=1e-12)
        assert batch.action_code[i] == codes[d.action]
    # Every action occurs in this sample, so the comparison covered all branches.
    assert set(np.unique(batch.action_code)) == {-1, 0, 1}


def test_rule_order_in_the_file_does_not_matter() -> None:
    a = _random_outcomes(3000, seed=7)
    forward = _batch(a, TITRATION.between_sessions)
    backward = _batch(a, tuple(reversed(TITRATION.between_sessions)))
    np.testing.assert_array_equal(forward.next_mg_per_kg, backward.next_mg_per_kg)


def test_batch_broadcasts_scalars_and_never_lowers_on_raise() -> None:
    b = decide_next_dose_mg_per_kg(
        [0.5, 0.9],
        3,
        True,
        10.0,
        0.0,
        120.0,
        80.0,
        False,
        rules=TITRATION.between_sessions,
        bounds=TITRATION.titration,
    )
    # 0.9 is above the 0.75 ceiling: a raise keeps it, never lowers it.
    np.testing.assert_allclose(b.next_mg_per_kg, [0.6, 0.9], atol=1e-12)
    np.testing.assert_array_equal(b.action_code, [1, 0])
    with pytest.raises(InputError, match="positive"):
        decide_next_dose_mg_per_kg(
            [0.0], 3, True, 10.0, 0.0, 120.0, 80.0, False, rules=(), bounds=None
        )


def test_no_rules_means_hold() -> None:
    d = decide_next_dose(outcome(), 0.5, rules=(), bounds=TITRATION.titration)
    assert (d.action, d.next_mg_per_kg, d.rule_id) == (
        TitrationAction.HOLD,
        0.5,
        "no-rule-matched",
    )


def test_decisions_are_always_suggestions() -> None:
    with pytest.raises(InputError, match="always a suggestion"):
        TitrationDecision(0.5, 0.6, TitrationAction.RAISE, "r", "x", requires_confirmation=False)  # type: ignore[arg-type]  # the test feeds the forbidden value
    with pytest.raises(InputError, match="needs a clinician"):
        Suggestion(InSessionAction.STOP, "r", "x", requires_confirmation=False)  # type: ignore[arg-type]  # as above


# --- within a session --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "action", "rule_id", "new_rate", "recheck"),
    [
        (IntensityEvent(9), "pause", "intensity-severe", 0.0, 5.0),
        (IntensityEvent(6), "slow", "intensity-moderate", 52.5 * 0.75, 10.0),
        (IntensityEvent(3), "continue", "no-rule-matched", 52.5, None),
        (BloodPressureEvent(185, 95), "pause", "bp-stop-first-systolic", 0.0, 5.0),
        (BloodPressureEvent(185, 95, 2), "stop", "bp-stop-confirmed-systolic", 0.0, None),
        (BloodPressureEvent(170, 115), "pause", "bp-stop-first-diastolic", 0.0, 5.0),
        (BloodPressureEvent(170, 115, 3), "stop", "bp-stop-confirmed-diastolic", 0.0, None),
        (BloodPressureEvent(205, 100), "stop", "bp-emergency-systolic", 0.0, None),
        (BloodPressureEvent(150, 125), "stop", "bp-emergency-diastolic", 0.0, None),
        (BloodPressureEvent(180, 110, 2), "continue", "no-rule-matched", 52.5, None),
        (HeartRateEvent(125, 6), "pause", "hr-sustained", 0.0, 5.0),
        (HeartRateEvent(125, 2), "continue", "no-rule-matched", 52.5, None),
    ],
)
def test_in_session_suggestions(
    event: IntensityEvent | BloodPressureEvent | HeartRateEvent,
    action: str,
    rule_id: str,
    new_rate: float,
    recheck: float | None,
) -> None:
    s = STANDARD.suggest(event, current_rate_mg_per_h=52.5)
    assert s.action is InSessionAction(action)
    assert s.rule_id == rule_id
    assert s.new_rate_mg_per_h == pytest.approx(new_rate, abs=1e-12)
    assert s.recheck_after_min == recheck
    assert s.requires_confirmation is True
    assert s.rationale


def test_most_severe_in_session_rule_wins_regardless_of_order() -> None:
    rules = tuple(reversed(STANDARD.in_session))
    assert suggest_in_session(BloodPressureEvent(205, 125, 2), rules).action is InSessionAction.STOP
    assert suggest_in_session(IntensityEvent(10), rules).action is InSessionAction.PAUSE


def test_suggestion_without_current_rate() -> None:
    s = STANDARD.suggest(IntensityEvent(6))
    assert s.slow_by_pct == 25.0
    assert s.new_rate_mg_per_h is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: IntensityEvent(11),
        lambda: BloodPressureEvent(400, 80),
        lambda: BloodPressureEvent(120, 80, 0),
        lambda: HeartRateEvent(500),
        lambda: HeartRateEvent(80, -1),
    ],
)
def test_implausible_events_are_refused(make: object) -> None:
    assert callable(make)
    with pytest.raises(InputError):
        make()
