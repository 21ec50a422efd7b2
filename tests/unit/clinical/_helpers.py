"""Helpers shared by the clinical tests."""

from __future__ import annotations

from datetime import UTC, datetime

from ketaflow.clinical.vitals import VitalSet, VitalSource, make_vital_set

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def vitals(
    at: datetime,
    *,
    sbp: float = 125,
    dbp: float = 80,
    hr: float = 72,
    spo2: float = 98,
    rr: float | None = 14,
) -> VitalSet:
    return make_vital_set(
        measured_at=at,
        source=VitalSource.MANUAL,
        sbp_mmhg=sbp,
        dbp_mmhg=dbp,
        hr_per_min=hr,
        spo2_pct=spo2,
        rr_per_min=rr,
    )
