from __future__ import annotations

from datetime import date, timedelta

import pytest

from ketaflow.clinical.course import (
    CourseGoal,
    GoalKind,
    Indication,
    ScaleAssessment,
    TreatmentCourse,
    goal_met,
    track_outcomes,
)
from ketaflow.clinical.scales import score_phq9
from ketaflow.errors import InputError

from ._helpers import T0


def a(scale: str, total: float, session: int) -> ScaleAssessment:
    return ScaleAssessment(scale, total, session, T0 + timedelta(days=2 * session))


@pytest.mark.parametrize(
    ("scale", "baseline", "later", "response", "remission"),
    [
        ("madrs", 30, 15, True, False),  # exactly 50%
        ("madrs", 30, 16, False, False),
        ("madrs", 30, 10, True, True),  # remission <= 10
        ("madrs", 30, 11, True, False),
        ("phq9", 20, 5, True, False),  # PHQ-9 remission is < 5
        ("phq9", 20, 4, True, True),
        ("qids_sr16", 16, 5, True, True),  # QIDS remission <= 5
        ("qids_sr16", 16, 6, True, False),
        ("gad7", 12, 4, True, True),
        ("nrs_pain", 8, 6, False, None),  # 25% fall; pain response needs 30%
        ("nrs_pain", 10, 7, True, None),  # 30% fall
    ],
)
def test_response_and_remission(
    scale: str, baseline: float, later: float, response: bool, remission: bool | None
) -> None:
    out = track_outcomes([a(scale, baseline, 0), a(scale, later, 3)])
    p = out[scale].points[0]
    assert (p.response, p.remission) == (response, remission)
    assert p.change_from_baseline == later - baseline


def test_series_per_scale_per_session() -> None:
    out = track_outcomes(
        [a("madrs", 9, 6), a("madrs", 32, 0), a("madrs", 20, 2), a("phq9", 18, 0), a("phq9", 12, 2)]
    )
    madrs = out["madrs"]
    assert madrs.baseline_total == 32
    assert [p.session_number for p in madrs.points] == [2, 6]
    assert madrs.points[0].pct_change == pytest.approx(-37.5, abs=1e-12)
    assert out["phq9"].latest is not None
    assert out["phq9"].latest.total == 12


def test_zero_baseline_has_no_percentage() -> None:
    p = track_outcomes([a("phq9", 0, 0), a("phq9", 0, 1)])["phq9"].points[0]
    assert p.pct_change is None
    assert not p.response
    assert p.remission


def test_goal() -> None:
    course = TreatmentCourse(
        course_id="C1",
        patient_mrn="MRN-1",
        indication=Indication.MAJOR_DEPRESSION,
        protocol_name="0.5 mg/kg over 40 min x6",
        planned_sessions=6,
        goal=CourseGoal("madrs", GoalKind.REMISSION),
        started_on=date(2025, 3, 3),
    )
    assert not goal_met(course, track_outcomes([a("madrs", 30, 0)]))
    assert goal_met(course, track_outcomes([a("madrs", 30, 0), a("madrs", 8, 6)]))
    assert course.remaining_sessions(4) == 2
    assert course.remaining_sessions(9) == 0


def test_invalid_course_and_goal() -> None:
    with pytest.raises(InputError):
        CourseGoal("nrs_pain", GoalKind.REMISSION)  # pain has no remission cut-off
    with pytest.raises(InputError):
        CourseGoal("madrs", GoalKind.TARGET_TOTAL, target_total=61)
    with pytest.raises(InputError) as err:
        TreatmentCourse(
            course_id="C1",
            patient_mrn="M",
            indication=Indication.PTSD,
            protocol_name="p",
            planned_sessions=0,
            goal=CourseGoal("phq9", GoalKind.RESPONSE),
            started_on=date(2025, 1, 1),
        )
    assert err.value.field == "planned_sessions"
    with pytest.raises(InputError):
        a("phq9", 28, 1)


def test_from_score() -> None:
    s = score_phq9([1] * 9)
    sa = ScaleAssessment.from_score(s, session_number=0, measured_at=T0)
    assert (sa.scale_id, sa.total) == ("phq9", 9)
