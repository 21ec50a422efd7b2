"""Patient check-ins during an infusion (self-report on 0-10 scales, and "I need help").

No standard instrument exists for in-session experience; clinics use short 0-10 items
(clinical.md 2.1: comfort, anxiety, nausea, "floating"). A :class:`CheckIn` holds comfort
(0 = very uncomfortable, 10 = completely comfortable), intensity of the experience, anxiety and
nausea (0 = none, 10 = worst), and ``needs_help``. Any item may be skipped (None) except that a
check-in must say something. The :class:`~ketaflow.clinical.alarms.AlarmEngine` turns
``needs_help`` into a high-priority ``PATIENT_HELP_REQUEST`` alarm and high anxiety or nausea
into ``PATIENT_DISTRESS`` (thresholds in ``alarm_rules.toml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ketaflow.clinical.clock import require_aware
from ketaflow.errors import InputError

#: The 0-10 items of a check-in, in display order.
CHECK_IN_ITEMS = ("comfort", "intensity", "anxiety", "nausea")


@dataclass(frozen=True, slots=True)
class CheckIn:
    """One patient check-in. Items are integers 0-10 or None when skipped."""

    at: datetime
    comfort: int | None = None
    intensity: int | None = None
    anxiety: int | None = None
    nausea: int | None = None
    needs_help: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        require_aware(self.at, "check_in.at")
        for name in CHECK_IN_ITEMS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
                raise InputError(
                    f"check_in.{name}: must be a whole number 0 to 10, got {value!r}",
                    field=f"check_in.{name}",
                )
        if not isinstance(self.needs_help, bool):
            raise InputError("check_in.needs_help: must be true or false", field="needs_help")
        if not self.needs_help and all(getattr(self, n) is None for n in CHECK_IN_ITEMS):
            raise InputError(
                "check_in: empty; answer at least one item or ask for help", field="check_in"
            )

    def value(self, item: str) -> int | None:
        """The answer to ``item`` (one of :data:`CHECK_IN_ITEMS`)."""
        if item not in CHECK_IN_ITEMS:
            raise InputError(
                f"check_in item {item!r} unknown; use one of {', '.join(CHECK_IN_ITEMS)}",
                field="item",
            )
        value: int | None = getattr(self, item)
        return value
