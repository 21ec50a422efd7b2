from __future__ import annotations

import pytest

from ketaflow.clinical.checkins import CheckIn
from ketaflow.errors import InputError

from ._helpers import T0


def test_valid_check_in() -> None:
    c = CheckIn(at=T0, comfort=7, anxiety=3)
    assert c.value("comfort") == 7
    assert c.value("nausea") is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"comfort": 11}, "check_in.comfort"),
        ({"anxiety": -1}, "check_in.anxiety"),
        ({"nausea": 2.5}, "check_in.nausea"),
        ({"intensity": True}, "check_in.intensity"),
        ({}, "check_in"),
    ],
)
def test_invalid_check_in(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as err:
        CheckIn(at=T0, **kw)  # type: ignore[arg-type]  # invalid values on purpose
    assert err.value.field == field


def test_help_alone_is_a_valid_check_in() -> None:
    assert CheckIn(at=T0, needs_help=True).needs_help
