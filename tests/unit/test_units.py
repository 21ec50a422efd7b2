from __future__ import annotations

import pytest

from ketaflow.errors import UnitError
from ketaflow.units import Dimension, parse_duration_min, parse_quantity


@pytest.mark.parametrize(
    ("text", "dim", "unit", "expected"),
    [
        ("0.5 mg/kg", Dimension.DOSE_PER_WEIGHT, "mg/kg", 0.5),
        ("500 mcg/kg", Dimension.DOSE_PER_WEIGHT, "mg/kg", 0.5),
        ("200 ng/mL", Dimension.CONCENTRATION, "ng/mL", 200.0),
        ("10 mg/mL", Dimension.CONCENTRATION, "ng/mL", 10_000_000.0),
        ("1200 mL/h", Dimension.VOLUME_RATE, "mL/h", 1200.0),
        ("0.75 mg/kg/h", Dimension.MASS_RATE_PER_WEIGHT, "µg/kg/min", 12.5),
        ("154 lb", Dimension.BODY_MASS, "kg", 69.85322498),
        ("120min", Dimension.TIME, "h", 2.0),
    ],
)
def test_parse_and_convert(text: str, dim: Dimension, unit: str, expected: float) -> None:
    assert parse_quantity(text, dim).to(unit) == pytest.approx(expected, rel=1e-9)


def test_duration_in_minutes() -> None:
    assert parse_duration_min("10s") == pytest.approx(1 / 6)
    assert parse_duration_min("2 h") == 120.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("40", "has no unit"),
        ("forty min", "expected a number"),
        ("40 fortnights", "unknown unit"),
        ("40 mg", "is a mass"),
        ("-5 min", "must not be negative"),
    ],
)
def test_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UnitError, match=fragment):
        parse_quantity(text, Dimension.TIME, field="duration")
