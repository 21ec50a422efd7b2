"""Weight-based dose orders: immutable, validated once, with the dosing weight explained.

A :class:`DoseOrder` is built only by :func:`create_order`, which checks everything before it
computes anything: the clock is timezone-aware, sex, weight and height are plausible, the weight
is recent enough (``Settings.weight_max_age_days``), the dosing-weight policy is known, and the
dose text is a drug dose (a pump rate in mL/h is refused with an explanation) that
:func:`ketaflow.pk.schedule.parse_dose` accepts. Everything else (total mg, rate in mg/h, the
pk schedule) is derived from the parsed instruction and the dosing weight, so it cannot
disagree with them.

>>> from datetime import date, datetime, timezone
>>> now = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
>>> o = create_order("0.5 mg/kg over 40 min", 70.0, date(2025, 3, 1), 175.0, "male",
...                  "actual", now, order_id="o-1")
>>> round(o.dose_mg, 6), round(o.rate_mg_per_h or 0.0, 6), o.duration_min
(35.0, 52.5, 40.0)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from ketaflow.config import Settings, get_settings
from ketaflow.dosing.body_size import (
    DosingWeight,
    DosingWeightPolicy,
    DosingWeightRule,
    Sex,
    dosing_weight,
    parse_sex,
    validate_body,
    validate_weight_kg,
)
from ketaflow.dosing.checks import check_dose_text_units, check_weight_age
from ketaflow.errors import DoseTextError, InputError
from ketaflow.pk.schedule import DoseInstruction, Event, Schedule, parse_dose
from ketaflow.units import MIN_PER_H


def require_aware(value: datetime, field: str) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise :class:`InputError`."""
    if not isinstance(value, datetime):
        raise InputError(f"{field}: expected a datetime, got {type(value).__name__}", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(
            f"{field}: the time must carry a timezone (e.g. UTC); naive times are ambiguous",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True)
class DoseOrder:
    """One validated dose of one drug for one patient. Build it with :func:`create_order`."""

    order_id: str
    drug: str
    dose_text: str
    instruction: DoseInstruction
    dosing_weight: DosingWeight
    weight_measured_on: date
    height_cm: float | None
    sex: Sex
    created_at: datetime
    scheduled_start: datetime
    patient_ref: str = ""
    created_by: str = ""

    @property
    def kind(self) -> Literal["bolus", "infusion"]:
        """``"bolus"`` or ``"infusion"``."""
        return self.instruction.kind

    @property
    def written_per_kg(self) -> bool:
        """True when the dose text was per kg (mg/kg, mg/kg/h)."""
        return self.instruction.per_kg

    @property
    def dosing_weight_kg(self) -> float:
        """The weight the dose is computed with, kg."""
        return self.dosing_weight.weight_kg

    @property
    def actual_weight_kg(self) -> float:
        """The measured body weight, kg."""
        return self.dosing_weight.actual_weight_kg

    @property
    def policy(self) -> DosingWeightPolicy:
        """The dosing-weight policy applied."""
        return self.dosing_weight.policy

    @property
    def start_min(self) -> float:
        """Start of the dose relative to ``scheduled_start``, min."""
        return self.instruction.start_min

    @property
    def end_min(self) -> float:
        """End of the dose relative to ``scheduled_start``, min (the start for a bolus)."""
        end = self.instruction.end_min
        return self.instruction.start_min if end is None else end

    @property
    def duration_min(self) -> float:
        """Infusion duration, min (0 for a bolus)."""
        return self.instruction.duration_min

    @property
    def dose_mg(self) -> float:
        """Total drug in this order, mg."""
        scale = self.dosing_weight_kg if self.written_per_kg else 1.0
        return self.instruction.total() * scale

    @property
    def dose_mg_per_kg(self) -> float:
        """Total drug per kg of dosing weight, mg/kg (derived when the text was in mg)."""
        return self.dose_mg / self.dosing_weight_kg

    @property
    def rate_mg_per_h(self) -> float | None:
        """Infusion rate, mg/h (None for a bolus)."""
        if self.instruction.rate_per_min is None:
            return None
        scale = self.dosing_weight_kg if self.written_per_kg else 1.0
        return self.instruction.rate_per_min * scale * MIN_PER_H

    @property
    def rate_mg_per_kg_per_h(self) -> float | None:
        """Infusion rate per kg of dosing weight, mg/kg/h (None for a bolus)."""
        rate = self.rate_mg_per_h
        return None if rate is None else rate / self.dosing_weight_kg

    def events(self) -> tuple[Event, ...]:
        """The pk events (mg, mg/min, min from ``scheduled_start``)."""
        return self.instruction.resolve(self.dosing_weight_kg)

    def schedule(self) -> Schedule:
        """A one-patient :class:`~ketaflow.pk.schedule.Schedule` for the solver."""
        return Schedule.from_events(self.events())

    def window(self) -> tuple[datetime, datetime]:
        """Wall-clock start and end of the dose."""
        return (
            self.scheduled_start + timedelta(minutes=self.start_min),
            self.scheduled_start + timedelta(minutes=self.end_min),
        )

    def summary(self) -> str:
        """One line for the order sheet, e.g. ``"ketamine 35 mg (0.5 mg/kg) over 40 min..."``."""
        dose = f"{self.drug} {self.dose_mg:.4g} mg ({self.dose_mg_per_kg:.3g} mg/kg)"
        if self.kind == "bolus":
            return f"{dose} bolus at {self.start_min:g} min"
        rate = self.rate_mg_per_h or 0.0
        return (
            f"{dose} over {self.duration_min:g} min at {rate:.4g} mg/h "
            f"({self.rate_mg_per_kg_per_h or 0.0:.3g} mg/kg/h)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form of the order (for JSON, audit and storage layers)."""
        return {
            "order_id": self.order_id,
            "drug": self.drug,
            "dose_text": self.dose_text,
            "kind": self.kind,
            "written_per_kg": self.written_per_kg,
            "dose_mg": self.dose_mg,
            "dose_mg_per_kg": self.dose_mg_per_kg,
            "start_min": self.start_min,
            "duration_min": self.duration_min,
            "rate_mg_per_h": self.rate_mg_per_h,
            "rate_mg_per_kg_per_h": self.rate_mg_per_kg_per_h,
            "dosing_weight_kg": self.dosing_weight_kg,
            "dosing_weight_policy": self.policy.value,
            "dosing_weight_explanation": self.dosing_weight.explanation,
            "actual_weight_kg": self.actual_weight_kg,
            "height_cm": self.height_cm,
            "sex": self.sex,
            "weight_measured_on": self.weight_measured_on.isoformat(),
            "created_at": self.created_at.isoformat(),
            "scheduled_start": self.scheduled_start.isoformat(),
            "patient_ref": self.patient_ref,
            "created_by": self.created_by,
        }


def _rule(
    policy: DosingWeightRule | DosingWeightPolicy | str, cap_kg: float | None
) -> DosingWeightRule:
    if isinstance(policy, DosingWeightRule):
        if cap_kg is not None:
            raise InputError("cap_kg: give the cap inside the DosingWeightRule", field="cap_kg")
        return policy
    return DosingWeightRule.parse(policy, cap_kg)


def create_order(
    text: str,
    patient_weight_kg: float,
    weight_measured_on: date,
    height_cm: float | None,
    sex: Sex | str,
    policy: DosingWeightRule | DosingWeightPolicy | str,
    now: datetime,
    *,
    cap_kg: float | None = None,
    drug: str = "ketamine",
    patient_ref: str = "",
    created_by: str = "",
    order_id: str | None = None,
    scheduled_start: datetime | None = None,
    settings: Settings | None = None,
) -> DoseOrder:
    """Validate the inputs, then build the order.

    ``text`` is dose text for :func:`~ketaflow.pk.schedule.parse_dose`; ``patient_weight_kg`` the
    measured weight (kg) and ``weight_measured_on`` its date, which must not be in the future nor
    older than ``settings.weight_max_age_days``; ``height_cm`` is needed for the ``ideal`` and
    ``adjusted`` policies; ``now`` (timezone-aware) is the creation time and the default
    ``scheduled_start``. Raises :class:`~ketaflow.errors.InputError` (or its subclasses
    :class:`~ketaflow.errors.DoseTextError`, :class:`~ketaflow.errors.UnitError`) naming the
    field; nothing is computed before every input has passed.
    """
    cfg = settings if settings is not None else get_settings()
    require_aware(now, "now")
    start_at = now if scheduled_start is None else require_aware(scheduled_start, "scheduled_start")
    if not isinstance(drug, str) or not drug.strip():
        raise InputError("drug: expected a drug name such as 'ketamine'", field="drug")
    s = parse_sex(sex)
    if height_cm is None:
        w, h = validate_weight_kg(patient_weight_kg), None
    else:
        w, h = validate_body(patient_weight_kg, height_cm)
    if not isinstance(weight_measured_on, date) or isinstance(weight_measured_on, datetime):
        raise InputError(
            "weight_measured_on: expected a date (the day the weight was measured)",
            field="weight_measured_on",
        )
    stale = check_weight_age(weight_measured_on, now, cfg.weight_max_age_days)
    if stale is not None:
        raise InputError(stale.message, field=stale.field)
    rule = _rule(policy, cap_kg)
    if not isinstance(text, str) or not text.strip():
        raise DoseTextError("dose is empty; write e.g. '0.5 mg/kg over 40 min'", field="dose")
    volume = check_dose_text_units(text)
    if volume is not None:
        raise DoseTextError(f"dose {text.strip()!r}: {volume.message}", field="dose")
    instruction = parse_dose(text)
    dw = dosing_weight(rule, weight_kg=w, height_cm=h, sex=s)
    order = DoseOrder(
        order_id=order_id if order_id else uuid.uuid4().hex,
        drug=drug.strip().lower(),
        dose_text=text.strip(),
        instruction=instruction,
        dosing_weight=dw,
        weight_measured_on=weight_measured_on,
        height_cm=h,
        sex=s,
        created_at=now,
        scheduled_start=start_at,
        patient_ref=patient_ref,
        created_by=created_by,
    )
    # Events are validated by the pk layer (start >= 0, finite); fail here, not at the pump.
    order.schedule()
    return order
