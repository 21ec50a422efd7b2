"""Treatment courses and outcome tracking (response and remission per scale per session).

A :class:`TreatmentCourse` is an immutable plan: indication, protocol, planned number of
sessions and a goal. Outcomes are computed from scored assessments, each tagged with the
session it belongs to (session 0 = the pre-course baseline). For each scale the baseline is the
assessment with the lowest session number (the earliest on a tie), and each later assessment
gets its change from baseline, ``response`` (total fell by at least the scale's
``response_min_fall_pct``, 50 % for the depression scales, 30 % for NRS pain) and
``remission`` (total at or below the scale's ``remission_max_total``: MADRS <= 10,
PHQ-9 < 5, QIDS-SR16 <= 5, GAD-7 < 5; None for scales without one). Cut-offs and their sources
live in ``clinical/data/scales.toml``.

>>> from datetime import UTC, datetime
>>> t = datetime(2025, 1, 6, tzinfo=UTC)
>>> table = track_outcomes([
...     ScaleAssessment("madrs", 32, session_number=0, measured_at=t),
...     ScaleAssessment("madrs", 9, session_number=6, measured_at=t)])
>>> p = table["madrs"].points[-1]
>>> p.pct_change, p.response, p.remission
(-71.875, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

from ketaflow.clinical.clock import require_aware
from ketaflow.clinical.scales import ScaleScore, scale_definition
from ketaflow.errors import InputError


class Indication(Enum):
    """Why the course is given (ASKP3 list of conditions; clinical.md 1.3)."""

    MAJOR_DEPRESSION = "major_depression"
    BIPOLAR_DEPRESSION = "bipolar_depression"
    PTSD = "ptsd"
    OCD = "ocd"
    CHRONIC_PAIN = "chronic_pain"
    CRPS = "crps"
    FIBROMYALGIA = "fibromyalgia"
    OTHER = "other"


class GoalKind(Enum):
    """What the course aims for on its goal scale."""

    RESPONSE = "response"
    REMISSION = "remission"
    TARGET_TOTAL = "target_total"  # total at or below target_total


@dataclass(frozen=True, slots=True)
class CourseGoal:
    """The course's therapeutic endpoint (ASA: a course needs one; clinical.md 1.4)."""

    scale_id: str
    kind: GoalKind
    target_total: float | None = None

    def __post_init__(self) -> None:
        definition = scale_definition(self.scale_id)
        if self.kind is GoalKind.TARGET_TOTAL:
            if self.target_total is None or not (
                definition.total_min <= self.target_total <= definition.total_max
            ):
                raise InputError(
                    f"goal.target_total: give a total {definition.total_min} to "
                    f"{definition.total_max} for {definition.short_name}",
                    field="goal.target_total",
                )
        elif self.kind is GoalKind.REMISSION and definition.remission_max_total is None:
            raise InputError(
                f"goal.kind: {definition.short_name} has no remission cut-off; use 'response' "
                "or 'target_total'",
                field="goal.kind",
            )
        elif self.kind is GoalKind.RESPONSE and definition.response_min_fall_pct is None:
            raise InputError(
                f"goal.kind: {definition.short_name} has no response definition; use "
                "'target_total'",
                field="goal.kind",
            )


@dataclass(frozen=True, slots=True)
class TreatmentCourse:
    """A planned series of sessions for one patient."""

    course_id: str
    patient_mrn: str
    indication: Indication
    protocol_name: str
    planned_sessions: int
    goal: CourseGoal
    started_on: date

    def __post_init__(self) -> None:
        for name in ("course_id", "patient_mrn", "protocol_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"course.{name}: must be a non-empty string", field=name)
        if not isinstance(self.indication, Indication):
            raise InputError("course.indication: must be an Indication", field="indication")
        if (
            isinstance(self.planned_sessions, bool)
            or not isinstance(self.planned_sessions, int)
            or not 1 <= self.planned_sessions <= 100
        ):
            raise InputError(
                f"course.planned_sessions: must be an integer 1 to 100, got "
                f"{self.planned_sessions!r}",
                field="planned_sessions",
            )

    def remaining_sessions(self, completed_sessions: int) -> int:
        """Planned sessions not yet given (never negative)."""
        if completed_sessions < 0:
            raise InputError("completed_sessions: must be >= 0", field="completed_sessions")
        return max(self.planned_sessions - completed_sessions, 0)


@dataclass(frozen=True, slots=True)
class ScaleAssessment:
    """A scale total measured at one session of a course (session 0 = baseline)."""

    scale_id: str
    total: float
    session_number: int
    measured_at: datetime

    def __post_init__(self) -> None:
        definition = scale_definition(self.scale_id)
        if (
            isinstance(self.total, bool)
            or not isinstance(self.total, int | float)
            or not math.isfinite(self.total)
            or not definition.total_min <= self.total <= definition.total_max
        ):
            raise InputError(
                f"{self.scale_id}.total: must be {definition.total_min} to "
                f"{definition.total_max}, got {self.total!r}",
                field=f"{self.scale_id}.total",
            )
        if isinstance(self.session_number, bool) or not isinstance(self.session_number, int):
            raise InputError("session_number: must be an integer", field="session_number")
        if self.session_number < 0:
            raise InputError("session_number: must be >= 0 (0 = baseline)", field="session_number")
        require_aware(self.measured_at, "measured_at")

    @classmethod
    def from_score(
        cls, score: ScaleScore, *, session_number: int, measured_at: datetime
    ) -> ScaleAssessment:
        """Tag a scored scale with its session."""
        return cls(score.scale_id, score.total, session_number, measured_at)


@dataclass(frozen=True, slots=True)
class OutcomePoint:
    """One assessment compared with the scale's baseline."""

    session_number: int
    measured_at: datetime
    total: float
    change_from_baseline: float
    pct_change: float | None  # None when the baseline is 0
    response: bool
    remission: bool | None  # None when the scale has no remission cut-off


@dataclass(frozen=True, slots=True)
class ScaleOutcome:
    """Baseline and every later point of one scale."""

    scale_id: str
    baseline_total: float
    baseline_session: int
    points: tuple[OutcomePoint, ...]

    @property
    def latest(self) -> OutcomePoint | None:
        """The last point after baseline, or None."""
        return self.points[-1] if self.points else None


def _point(scale_id: str, baseline: float, a: ScaleAssessment) -> OutcomePoint:
    definition = scale_definition(scale_id)
    change = a.total - baseline
    pct = None if baseline == 0 else 100.0 * change / baseline
    response = (
        pct is not None
        and definition.response_min_fall_pct is not None
        and -pct >= definition.response_min_fall_pct
    )
    remission = (
        None
        if definition.remission_max_total is None
        else a.total <= definition.remission_max_total
    )
    return OutcomePoint(a.session_number, a.measured_at, a.total, change, pct, response, remission)


def track_outcomes(assessments: Iterable[ScaleAssessment]) -> Mapping[str, ScaleOutcome]:
    """Response and remission of every scale at every session, by scale id.

    A scale with only a baseline has no points. Assessments are ordered by session number,
    then time.
    """
    by_scale: dict[str, list[ScaleAssessment]] = {}
    for a in assessments:
        by_scale.setdefault(a.scale_id, []).append(a)
    out: dict[str, ScaleOutcome] = {}
    for scale_id, items in by_scale.items():
        ordered = sorted(items, key=lambda a: (a.session_number, a.measured_at))
        base = ordered[0]
        points = tuple(_point(scale_id, base.total, a) for a in ordered[1:])
        out[scale_id] = ScaleOutcome(scale_id, base.total, base.session_number, points)
    return out


def goal_met(course: TreatmentCourse, outcomes: Mapping[str, ScaleOutcome]) -> bool:
    """Whether the latest assessment on the goal scale meets the course goal."""
    outcome = outcomes.get(course.goal.scale_id)
    if outcome is None or outcome.latest is None:
        return False
    p = outcome.latest
    if course.goal.kind is GoalKind.RESPONSE:
        return p.response
    if course.goal.kind is GoalKind.REMISSION:
        return bool(p.remission)
    assert course.goal.target_total is not None
    return p.total <= course.goal.target_total
