"""Helpers shared by the dosing tests: a fixed clock and an order factory."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from ketaflow.config import Settings
from ketaflow.dosing.body_size import DosingWeightRule
from ketaflow.dosing.orders import DoseOrder, create_order

#: The injected clock of every dosing test.
NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
TODAY = NOW.date()


def make_order(
    text: str = "0.5 mg/kg over 40 min",
    *,
    weight_kg: float = 70.0,
    height_cm: float | None = 175.0,
    sex: str = "male",
    policy: str | DosingWeightRule = "actual",
    measured_on: date | None = None,
    now: datetime = NOW,
    **kwargs: Any,
) -> DoseOrder:
    """An order with sensible defaults (70 kg, 175 cm man, weighed 2 days ago)."""
    return create_order(
        text,
        weight_kg,
        measured_on if measured_on is not None else TODAY - timedelta(days=2),
        height_cm,
        sex,
        policy,
        now,
        settings=kwargs.pop("settings", Settings()),
        **kwargs,
    )
