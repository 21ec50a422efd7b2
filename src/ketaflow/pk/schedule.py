"""Dosing events and the one parser of human dose text.

A person writes doses as text ("0.5 mg/kg over 40 min", "bolus 0.1 mg/kg at 5 min",
"20 mg/h from 10 min to 70 min"). :func:`parse_dose` turns one such text into a
:class:`DoseInstruction`, which may be per kilogram; :meth:`DoseInstruction.resolve` turns it
into absolute events (mg, mg/min, min) for a body weight. A :class:`Schedule` holds the events of
one patient; :class:`BatchSchedule` holds piecewise-constant rates for many patients on shared
breakpoints, which is what the solver consumes.

Grammar (case-insensitive; quantities may be written with or without a space)::

    bolus AMOUNT [at TIME]              AMOUNT bolus [at TIME]
    AMOUNT over DURATION [at|from TIME]
    RATE for DURATION [at|from TIME]
    RATE from TIME to TIME

AMOUNT is a mass (mg, µg, g) or a mass per body weight (mg/kg, µg/kg); RATE is mg/h, mg/min,
µg/min, mg/kg/h, mg/kg/min or µg/kg/min; TIME and DURATION are s, min or h. Times are measured
from the start of the session (time 0).

>>> parse_dose("0.5 mg/kg over 40 min").resolve(70.0)
(Infusion(start_min=0.0, end_min=40.0, rate_mg_per_min=0.875),)
>>> parse_dose("bolus 0.25 mg/kg at 5 min").resolve(80.0)
(Bolus(time_min=5.0, amount_mg=20.0),)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ketaflow.errors import DoseTextError, UnitError
from ketaflow.units import Dimension, parse_quantity

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Bolus:
    """An instantaneous dose into the central compartment."""

    time_min: float
    amount_mg: float


@dataclass(frozen=True, slots=True)
class Infusion:
    """A zero-order infusion at a constant rate over [start_min, end_min)."""

    start_min: float
    end_min: float
    rate_mg_per_min: float

    @property
    def amount_mg(self) -> float:
        """Total amount delivered by this infusion, mg."""
        return self.rate_mg_per_min * (self.end_min - self.start_min)


Event = Bolus | Infusion


@dataclass(frozen=True, slots=True)
class DoseInstruction:
    """A parsed dose, possibly per kilogram, before it is resolved for a body weight.

    For a bolus ``amount`` is mg or mg/kg; for an infusion ``rate`` is mg/min or mg/kg/min.
    """

    kind: Literal["bolus", "infusion"]
    per_kg: bool
    start_min: float
    end_min: float | None = None
    amount: float | None = None
    rate_per_min: float | None = None
    text: str = ""

    @property
    def duration_min(self) -> float:
        """Infusion duration, minutes (0 for a bolus)."""
        return 0.0 if self.end_min is None else self.end_min - self.start_min

    def total(self) -> float:
        """Total dose in mg (or mg/kg when :attr:`per_kg`)."""
        if self.kind == "bolus":
            assert self.amount is not None
            return self.amount
        assert self.rate_per_min is not None
        return self.rate_per_min * self.duration_min

    def resolve(self, weight_kg: float) -> tuple[Event, ...]:
        """Absolute events for a patient of ``weight_kg`` (used only when per kg)."""
        scale = weight_kg if self.per_kg else 1.0
        if self.kind == "bolus":
            assert self.amount is not None
            return (Bolus(self.start_min, self.amount * scale),)
        assert self.rate_per_min is not None
        assert self.end_min is not None
        return (Infusion(self.start_min, self.end_min, self.rate_per_min * scale),)


_KEYWORDS = ("bolus", "over", "for", "from", "to", "at")
_SPLIT_RE = re.compile(r"\b(" + "|".join(_KEYWORDS) + r")\b", re.IGNORECASE)
_AMOUNT_DIMS = (Dimension.MASS, Dimension.DOSE_PER_WEIGHT)
_RATE_DIMS = (Dimension.MASS_RATE, Dimension.MASS_RATE_PER_WEIGHT)

GRAMMAR_HELP = (
    "write e.g. '0.5 mg/kg over 40 min', '35 mg over 40 min', '0.75 mg/kg/h for 40 min', "
    "'bolus 0.1 mg/kg at 5 min' or '20 mg/h from 10 min to 70 min'"
)


def _fail(text: str, problem: str) -> DoseTextError:
    return DoseTextError(f"dose {text!r}: {problem}; {GRAMMAR_HELP}", field="dose")


def _quantity(
    text: str, part: str, dims: tuple[Dimension, ...], role: str
) -> tuple[float, Dimension]:
    try:
        q = parse_quantity(part, dims, field=role)
    except UnitError as exc:
        raise DoseTextError(f"dose {text!r}: {exc.message}", field="dose") from exc
    return q.value, q.dimension


def _is_quantity(part: str, dims: tuple[Dimension, ...]) -> bool:
    try:
        parse_quantity(part, dims)
    except UnitError:
        return False
    return True


def _time(text: str, part: str | None, role: str) -> float:
    if part is None or not part.strip():
        raise _fail(text, f"'{role}' needs a time such as '10 min'")
    value, _ = _quantity(text, part, (Dimension.TIME,), role)
    return value


def parse_dose(text: str) -> DoseInstruction:
    """Parse one dose written by a person into a :class:`DoseInstruction`.

    Raises :class:`~ketaflow.errors.DoseTextError` naming the part that is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise DoseTextError(f"dose is empty; {GRAMMAR_HELP}", field="dose")
    pieces = _SPLIT_RE.split(text.strip())
    head = pieces[0].strip()
    clauses: dict[str, str] = {}
    bolus_keyword = False
    for i in range(1, len(pieces), 2):
        keyword = pieces[i].lower()
        value = pieces[i + 1].strip()
        if keyword == "bolus":
            if bolus_keyword:
                raise _fail(text, "'bolus' appears twice")
            bolus_keyword = True
            if value and not head:
                head = value
            elif value:
                raise _fail(text, f"unexpected {value!r} after 'bolus'")
            continue
        if keyword in clauses:
            raise _fail(text, f"'{keyword}' appears twice")
        clauses[keyword] = value
    if not head:
        raise _fail(text, "it does not start with an amount or a rate")

    if bolus_keyword:
        extra = set(clauses) - {"at"}
        if extra:
            raise _fail(text, f"a bolus takes only 'at TIME', not '{sorted(extra)[0]}'")
        amount, dim = _quantity(text, head, _AMOUNT_DIMS, "bolus amount")
        start = _time(text, clauses["at"], "at") if "at" in clauses else 0.0
        if amount <= 0:
            raise _fail(text, "the bolus amount must be positive")
        return DoseInstruction(
            "bolus", dim is Dimension.DOSE_PER_WEIGHT, start, amount=amount, text=text.strip()
        )

    if "at" in clauses and "from" in clauses:
        raise _fail(text, "use either 'at' or 'from' for the start, not both")
    start_part = clauses.get("from", clauses.get("at"))

    if "over" in clauses:
        if "for" in clauses or "to" in clauses:
            raise _fail(text, "'over' gives the duration already; drop 'for'/'to'")
        try:
            amount, dim = _quantity(text, head, _AMOUNT_DIMS, "amount")
        except DoseTextError:
            if not _is_quantity(head, _RATE_DIMS):
                raise
            raise _fail(
                text, f"{head!r} is a rate; a rate runs 'for' a duration, an amount runs 'over' it"
            ) from None
        duration = _time(text, clauses["over"], "over")
        start = _time(text, start_part, "from") if start_part is not None else 0.0
        if duration <= 0:
            raise _fail(text, "the duration after 'over' must be positive")
        if amount <= 0:
            raise _fail(text, "the amount must be positive")
        return DoseInstruction(
            "infusion",
            dim is Dimension.DOSE_PER_WEIGHT,
            start,
            end_min=start + duration,
            rate_per_min=amount / duration,
            text=text.strip(),
        )

    # Every remaining form starts with a rate.
    try:
        rate, dim = _quantity(text, head, _RATE_DIMS, "rate")
    except DoseTextError:
        if not _is_quantity(head, _AMOUNT_DIMS):
            raise
        raise _fail(
            text, f"{head!r} is an amount; give it 'over' a duration or mark it as a 'bolus'"
        ) from None
    if rate <= 0:
        raise _fail(text, "the rate must be positive")
    per_kg = dim is Dimension.MASS_RATE_PER_WEIGHT
    if "for" in clauses:
        if "to" in clauses:
            raise _fail(text, "use either 'for DURATION' or 'from TIME to TIME', not both")
        duration = _time(text, clauses["for"], "for")
        if duration <= 0:
            raise _fail(text, "the duration after 'for' must be positive")
        start = _time(text, start_part, "from") if start_part is not None else 0.0
        end = start + duration
    elif "to" in clauses:
        if "from" not in clauses:
            raise _fail(text, "'to' needs a 'from TIME' before it")
        start = _time(text, clauses["from"], "from")
        end = _time(text, clauses["to"], "to")
        if end <= start:
            raise _fail(text, "the 'to' time must come after the 'from' time")
    else:
        raise _fail(text, "an infusion needs an end: add 'for DURATION' or 'from TIME to TIME'")
    return DoseInstruction(
        "infusion", per_kg, start, end_min=end, rate_per_min=rate, text=text.strip()
    )


@dataclass(frozen=True, slots=True)
class Schedule:
    """The dosing events of one patient, in absolute units, sorted by time."""

    events: tuple[Event, ...]

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Schedule:
        """Validate and sort events. Overlapping infusions add up."""
        checked: list[Event] = []
        for ev in events:
            if isinstance(ev, Bolus):
                if not (ev.time_min >= 0 and np.isfinite(ev.time_min)):
                    raise DoseTextError(f"bolus time must be >= 0 min, got {ev.time_min}")
                if not (ev.amount_mg >= 0 and np.isfinite(ev.amount_mg)):
                    raise DoseTextError(f"bolus amount must be >= 0 mg, got {ev.amount_mg}")
            else:
                if not (0 <= ev.start_min < ev.end_min and np.isfinite(ev.end_min)):
                    raise DoseTextError(
                        f"infusion must satisfy 0 <= start < end, got {ev.start_min} to "
                        f"{ev.end_min} min"
                    )
                if not (ev.rate_mg_per_min >= 0 and np.isfinite(ev.rate_mg_per_min)):
                    raise DoseTextError(
                        f"infusion rate must be >= 0 mg/min, got {ev.rate_mg_per_min}"
                    )
            checked.append(ev)
        checked.sort(key=lambda e: e.time_min if isinstance(e, Bolus) else e.start_min)
        return cls(tuple(checked))

    @classmethod
    def from_text(cls, texts: Sequence[str] | str, weight_kg: float) -> Schedule:
        """Parse dose texts for a patient of ``weight_kg``."""
        if isinstance(texts, str):
            texts = [texts]
        events: list[Event] = []
        for t in texts:
            events.extend(parse_dose(t).resolve(weight_kg))
        return cls.from_events(events)

    @property
    def total_mg(self) -> float:
        """Total amount given by all events, mg."""
        return float(sum(e.amount_mg for e in self.events))

    def rate_mg_per_min_at(self, t_min: float) -> float:
        """Total infusion rate at ``t_min`` (right-continuous), mg/min."""
        return float(
            sum(
                e.rate_mg_per_min
                for e in self.events
                if isinstance(e, Infusion) and e.start_min <= t_min < e.end_min
            )
        )

    def to_batch(self, n_patients: int = 1) -> BatchSchedule:
        """The same schedule for ``n_patients`` identical patients."""
        return BatchSchedule.from_schedules([self] * n_patients)


@dataclass(frozen=True, slots=True)
class BatchSchedule:
    """Piecewise-constant infusion rates and boluses for N patients on shared breakpoints.

    ``rates_mg_per_min[p, j]`` holds on ``[breakpoints_min[j], breakpoints_min[j+1])``; the rate
    is zero before the first and after the last breakpoint. ``bolus_mg[p, b]`` is given at
    ``bolus_times_min[b]``. Axis 0 is always the patient.
    """

    breakpoints_min: FloatArray
    rates_mg_per_min: FloatArray
    bolus_times_min: FloatArray
    bolus_mg: FloatArray

    def __post_init__(self) -> None:
        n = self.rates_mg_per_min.shape[0]
        if self.rates_mg_per_min.ndim != 2 or self.bolus_mg.ndim != 2:
            raise DoseTextError("batch schedule arrays must be 2-D (patients first)")
        if self.rates_mg_per_min.shape[1] != max(len(self.breakpoints_min) - 1, 0):
            raise DoseTextError("rates need one column per interval between breakpoints")
        if self.bolus_mg.shape != (n, len(self.bolus_times_min)):
            raise DoseTextError("bolus amounts need one column per bolus time")
        if np.any(np.diff(self.breakpoints_min) <= 0):
            raise DoseTextError("breakpoints must increase strictly")
        if np.any(self.rates_mg_per_min < 0) or np.any(self.bolus_mg < 0):
            raise DoseTextError("rates and bolus amounts must be >= 0")

    @property
    def n_patients(self) -> int:
        """Number of patients (rows)."""
        return int(self.rates_mg_per_min.shape[0])

    @classmethod
    def from_schedules(cls, schedules: Sequence[Schedule]) -> BatchSchedule:
        """Stack single-patient schedules onto the union of their breakpoints."""
        bps: set[float] = set()
        btimes: set[float] = set()
        for s in schedules:
            for e in s.events:
                if isinstance(e, Infusion):
                    bps.update((e.start_min, e.end_min))
                else:
                    btimes.add(e.time_min)
        breakpoints = np.array(sorted(bps), dtype=np.float64)
        bolus_times = np.array(sorted(btimes), dtype=np.float64)
        n = len(schedules)
        rates = np.zeros((n, max(len(breakpoints) - 1, 0)))
        boluses = np.zeros((n, len(bolus_times)))
        for p, s in enumerate(schedules):
            for e in s.events:
                if isinstance(e, Infusion):
                    j0 = int(np.searchsorted(breakpoints, e.start_min))
                    j1 = int(np.searchsorted(breakpoints, e.end_min))
                    rates[p, j0:j1] += e.rate_mg_per_min
                else:
                    boluses[p, int(np.searchsorted(bolus_times, e.time_min))] += e.amount_mg
        return cls(breakpoints, rates, bolus_times, boluses)

    @classmethod
    def from_instructions(
        cls, instructions: Sequence[DoseInstruction], weight_kg: npt.ArrayLike
    ) -> BatchSchedule:
        """Resolve instructions for every weight in ``weight_kg`` without a per-patient loop."""
        weights = np.atleast_1d(np.asarray(weight_kg, dtype=np.float64))
        bps = sorted(
            {
                t
                for ins in instructions
                if ins.kind == "infusion"
                for t in (ins.start_min, ins.end_min)
                if t is not None
            }
        )
        breakpoints = np.array(bps, dtype=np.float64)
        bolus_times = np.array(
            sorted({ins.start_min for ins in instructions if ins.kind == "bolus"}), dtype=np.float64
        )
        n = weights.shape[0]
        rates = np.zeros((n, max(len(breakpoints) - 1, 0)))
        boluses = np.zeros((n, len(bolus_times)))
        for ins in instructions:
            scale = weights if ins.per_kg else np.ones_like(weights)
            if ins.kind == "infusion":
                assert ins.rate_per_min is not None
                j0 = int(np.searchsorted(breakpoints, ins.start_min))
                assert ins.end_min is not None
                j1 = int(np.searchsorted(breakpoints, ins.end_min))
                rates[:, j0:j1] += (ins.rate_per_min * scale)[:, None]
            else:
                assert ins.amount is not None
                b = int(np.searchsorted(bolus_times, ins.start_min))
                boluses[:, b] += ins.amount * scale
        return cls(breakpoints, rates, bolus_times, boluses)

    def rate_mg_per_min_at(self, t_min: npt.ArrayLike) -> FloatArray:
        """Rates at times ``t_min`` (right-continuous), shape (n_patients, n_times)."""
        t = np.atleast_1d(np.asarray(t_min, dtype=np.float64))
        out = np.zeros((self.n_patients, t.shape[0]))
        if len(self.breakpoints_min) < 2:
            return out
        j = np.searchsorted(self.breakpoints_min, t, side="right") - 1
        inside = (j >= 0) & (j < len(self.breakpoints_min) - 1)
        out[:, inside] = self.rates_mg_per_min[:, j[inside]]
        return out

    def total_mg(self) -> FloatArray:
        """Total amount per patient, mg, shape (n_patients,)."""
        widths = np.diff(self.breakpoints_min) if len(self.breakpoints_min) > 1 else np.zeros(0)
        return np.asarray(self.rates_mg_per_min @ widths + self.bolus_mg.sum(axis=1))
