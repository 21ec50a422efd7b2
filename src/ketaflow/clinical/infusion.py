"""The infusion record: what was actually given, and what it predicts.

An :class:`InfusionRecord` is an append-only log of :class:`InfusionEntry` items: start, every
rate change, pause, resume, bolus, stop/completion, and the crash-recovery pair *uncertain* /
*reconciled*, each with time, person, role and reason. The rate is piecewise constant between
entries, so the dose delivered is an exact sum, and the record converts into a
:class:`ketaflow.pk.schedule.Schedule` (time 0 = infusion start) that the PK solver uses to
predict plasma (Cp) and effect-site (Ce) concentrations **from what was really given**.

Pump volume limit: when ``planned_total_mg`` (the pump's volume to be infused, as mg) is set,
an open-ended running segment stops delivering once that amount is reached, as the pump would.

After a server crash the service calls :meth:`InfusionRecord.mark_uncertain`; until a nurse
confirms the pump (:meth:`InfusionRecord.reconcile` with a :class:`PumpConfirmation`) the
record assumes the pump kept running at the last known rate (the assumption that gives the
highest concentrations). The confirmed pump volume (or the nurse's explicit assumption) then
fixes how much was given during the gap, spread evenly over it.

Predictions: :meth:`InfusionRecord.forecast` (now and the next 30 min, the current rate
continuing) and :meth:`InfusionRecord.preview` ("what if the rate were X mg/h from now" or "what
if I paused for Y min").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache

import numpy as np

from ketaflow.clinical.actors import Actor, Role, require_reason
from ketaflow.clinical.clock import require_aware
from ketaflow.clinical.patient import PatientCovariates
from ketaflow.errors import InputError, StateError
from ketaflow.pk.library import Model, default_model
from ketaflow.pk.schedule import Bolus, Event, Infusion, Schedule
from ketaflow.pk.solve import simulate
from ketaflow.units import S_PER_MIN, mg_per_h_to_mg_per_min, mg_per_min_to_mg_per_h

#: Pump volume below the record by less than this fraction (or 0.1 mg) is rounding, not a
#: discrepancy.
RECONCILE_TOLERANCE_FRACTION = 0.01
RECONCILE_TOLERANCE_MG = 0.1


class InfusionStatus(Enum):
    """What the pump is doing according to the record."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    UNCERTAIN = "uncertain"


class InfusionEntryKind(Enum):
    """Kinds of entries in the record."""

    START = "start"
    RATE_CHANGE = "rate_change"
    PAUSE = "pause"
    RESUME = "resume"
    BOLUS = "bolus"
    STOP = "stop"  # ended early
    COMPLETE = "complete"  # ended as planned
    UNCERTAIN = "uncertain"  # pump state unknown (server crash)
    RECONCILE = "reconcile"  # a nurse confirmed the pump after an uncertain period


_ALLOWED: dict[InfusionEntryKind, tuple[frozenset[InfusionStatus], frozenset[InfusionStatus]]] = {
    InfusionEntryKind.RATE_CHANGE: (
        frozenset({InfusionStatus.RUNNING}),
        frozenset({InfusionStatus.RUNNING}),
    ),
    InfusionEntryKind.PAUSE: (
        frozenset({InfusionStatus.RUNNING}),
        frozenset({InfusionStatus.PAUSED}),
    ),
    InfusionEntryKind.RESUME: (
        frozenset({InfusionStatus.PAUSED}),
        frozenset({InfusionStatus.RUNNING}),
    ),
    InfusionEntryKind.BOLUS: (
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED}),
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED}),
    ),
    InfusionEntryKind.STOP: (
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED}),
        frozenset({InfusionStatus.STOPPED}),
    ),
    InfusionEntryKind.COMPLETE: (
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED}),
        frozenset({InfusionStatus.STOPPED}),
    ),
    InfusionEntryKind.UNCERTAIN: (
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED}),
        frozenset({InfusionStatus.UNCERTAIN}),
    ),
    InfusionEntryKind.RECONCILE: (
        frozenset({InfusionStatus.UNCERTAIN}),
        frozenset({InfusionStatus.RUNNING, InfusionStatus.PAUSED, InfusionStatus.STOPPED}),
    ),
}


@dataclass(frozen=True, slots=True)
class InfusionEntry:
    """One change to the infusion. ``rate_mg_per_h`` is the rate holding from ``at`` on."""

    kind: InfusionEntryKind
    at: datetime
    rate_mg_per_h: float
    status_after: InfusionStatus
    who: str
    role: Role
    reason: str = ""
    bolus_mg: float = 0.0
    #: RECONCILE only: mg delivered during the uncertain gap (spread evenly over it).
    gap_mg: float = 0.0
    #: RECONCILE only: how much the pump's volume fell short of the record (mg, <= 0).
    discrepancy_mg: float = 0.0


class GapAssumption(Enum):
    """What a nurse states about the gap when the pump's volume cannot be read."""

    CONTINUED_AT_LAST_RATE = "continued_at_last_rate"
    STOPPED_AT_OUTAGE = "stopped_at_outage"


@dataclass(frozen=True, slots=True)
class PumpConfirmation:
    """What a nurse reads on the pump after an uncertain period.

    Give ``volume_infused_ml`` (the pump's total volume infused for this infusion) whenever the
    pump shows it; otherwise state a ``gap_assumption``. Exactly one of the two.
    """

    running: bool
    rate_mg_per_h: float = 0.0
    volume_infused_ml: float | None = None
    finished: bool = False  # the pump reports the programmed volume complete
    gap_assumption: GapAssumption | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.running, bool) or not isinstance(self.finished, bool):
            raise InputError("pump.running and pump.finished must be true or false", field="pump")
        _check_rate(self.rate_mg_per_h, "pump.rate_mg_per_h", allow_zero=not self.running)
        if not self.running and self.rate_mg_per_h != 0:
            raise InputError(
                "pump.rate_mg_per_h: must be 0 when the pump is not running",
                field="pump.rate_mg_per_h",
            )
        if self.running and self.finished:
            raise InputError(
                "pump.finished: a pump cannot be running and finished", field="pump.finished"
            )
        if (self.volume_infused_ml is None) == (self.gap_assumption is None):
            raise InputError(
                "pump: give either volume_infused_ml (read from the pump) or a gap_assumption, "
                "exactly one",
                field="pump.volume_infused_ml",
            )
        if self.volume_infused_ml is not None and (
            isinstance(self.volume_infused_ml, bool)
            or not isinstance(self.volume_infused_ml, int | float)
            or not math.isfinite(self.volume_infused_ml)
            or self.volume_infused_ml < 0
        ):
            raise InputError(
                f"pump.volume_infused_ml: must be a number >= 0 mL, got {self.volume_infused_ml!r}",
                field="pump.volume_infused_ml",
            )


def _check_rate(value: float, field: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{field}: expected a number in mg/h, got {value!r}", field=field)
    if value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise InputError(
            f"{field}: must be {rule} mg/h, got {value:g}; to stop the drug use pause or stop",
            field=field,
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class Segment:
    """A constant-rate piece of the infusion, minutes from the start."""

    start_min: float
    end_min: float
    rate_mg_per_min: float

    @property
    def amount_mg(self) -> float:
        """mg delivered by this piece."""
        return self.rate_mg_per_min * (self.end_min - self.start_min)


@dataclass(frozen=True, slots=True)
class ConcentrationForecast:
    """Predicted concentrations on a time grid (minutes since the infusion start)."""

    model_id: str
    started_at: datetime
    now_min: float
    times_min: tuple[float, ...]
    cp_ng_per_ml: tuple[float, ...]
    ce_ng_per_ml: tuple[float, ...] | None
    rate_mg_per_h: tuple[float, ...]
    cp_now_ng_per_ml: float
    ce_now_ng_per_ml: float | None
    delivered_mg: float
    future: str  # what the forecast assumes from now on, in words
    uncertain: bool  # the record is in an unconfirmed (post-crash) period
    validity_notes: tuple[str, ...]
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class WhatIfPreview:
    """The current course of the infusion and one proposed change, on the same time grid."""

    current: ConcentrationForecast
    proposed: ConcentrationForecast


@cache
def _default_model() -> Model:
    return default_model()


class InfusionRecord:
    """Append-only record of one infusion (mutable; every change is an entry)."""

    def __init__(
        self,
        *,
        started_at: datetime,
        rate_mg_per_h: float,
        actor: Actor,
        reason: str = "",
        concentration_mg_per_ml: float | None = None,
        planned_total_mg: float | None = None,
    ) -> None:
        require_aware(started_at, "started_at")
        rate = _check_rate(rate_mg_per_h, "rate_mg_per_h", allow_zero=False)
        self._init(concentration_mg_per_ml, planned_total_mg)
        self._append(
            InfusionEntry(
                InfusionEntryKind.START,
                started_at,
                rate,
                InfusionStatus.RUNNING,
                actor.user_id,
                actor.role,
                reason,
            )
        )

    def _init(self, concentration_mg_per_ml: float | None, planned_total_mg: float | None) -> None:
        for name, value in (
            ("concentration_mg_per_ml", concentration_mg_per_ml),
            ("planned_total_mg", planned_total_mg),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InputError(f"{name}: must be a positive number, got {value!r}", field=name)
        self.concentration_mg_per_ml = (
            None if concentration_mg_per_ml is None else float(concentration_mg_per_ml)
        )
        self.planned_total_mg = None if planned_total_mg is None else float(planned_total_mg)
        self._entries: list[InfusionEntry] = []
        self._status = InfusionStatus.RUNNING

    # --- construction from storage / after an outage ----------------------------------------

    @classmethod
    def from_entries(
        cls,
        entries: Sequence[InfusionEntry],
        *,
        concentration_mg_per_ml: float | None = None,
        planned_total_mg: float | None = None,
    ) -> InfusionRecord:
        """Rebuild a record from stored entries, checking every step again."""
        if not entries or entries[0].kind is not InfusionEntryKind.START:
            raise InputError("entries: a record must begin with a start entry", field="entries")
        record = cls.__new__(cls)
        record._init(concentration_mg_per_ml, planned_total_mg)
        for entry in entries:
            record._append(entry)
        return record

    @classmethod
    def started_during_outage(
        cls,
        *,
        outage_since: datetime,
        actor: Actor,
        concentration_mg_per_ml: float | None = None,
        planned_total_mg: float | None = None,
    ) -> InfusionRecord:
        """A record for a pump started while the server was down (start time unknown).

        The record starts at ``outage_since`` in the uncertain state; :meth:`reconcile` then
        spreads what the pump reports over the outage.
        """
        require_aware(outage_since, "outage_since")
        record = cls.__new__(cls)
        record._init(concentration_mg_per_ml, planned_total_mg)
        record._append(
            InfusionEntry(
                InfusionEntryKind.START,
                outage_since,
                0.0,
                InfusionStatus.RUNNING,
                actor.user_id,
                actor.role,
                "pump started during a server outage; start time unknown",
            )
        )
        record._append(
            InfusionEntry(
                InfusionEntryKind.UNCERTAIN,
                outage_since,
                0.0,
                InfusionStatus.UNCERTAIN,
                actor.user_id,
                actor.role,
                "server outage",
            )
        )
        return record

    # --- state -------------------------------------------------------------------------------

    @property
    def entries(self) -> tuple[InfusionEntry, ...]:
        """Every entry, oldest first."""
        return tuple(self._entries)

    @property
    def started_at(self) -> datetime:
        """Time 0 of the schedule."""
        return self._entries[0].at

    @property
    def status(self) -> InfusionStatus:
        """Current pump status according to the record."""
        return self._status

    @property
    def current_rate_mg_per_h(self) -> float:
        """The rate holding now (0 when paused or stopped; last known rate when uncertain)."""
        return self._entries[-1].rate_mg_per_h

    @property
    def ended_at(self) -> datetime | None:
        """When the infusion stopped or completed (None while it is not over)."""
        last = self._entries[-1]
        return last.at if self._status is InfusionStatus.STOPPED else None

    @property
    def discrepancies(self) -> tuple[InfusionEntry, ...]:
        """Reconciliations where the pump reported less than the record (review needed)."""
        return tuple(e for e in self._entries if e.discrepancy_mg < 0)

    def _last_running_rate_mg_per_h(self) -> float:
        for e in reversed(self._entries):
            if e.rate_mg_per_h > 0:
                return e.rate_mg_per_h
        return 0.0

    def _append(self, entry: InfusionEntry) -> None:
        require_aware(entry.at, "entry.at")
        if self._entries:
            last = self._entries[-1]
            if entry.at < last.at:
                raise InputError(
                    f"{entry.kind.value}: time {entry.at.isoformat()} is before the previous "
                    f"entry at {last.at.isoformat()}; entries must be in time order",
                    field="at",
                )
            if entry.kind is InfusionEntryKind.START:
                raise StateError("start: the infusion has already started")
            before, after = _ALLOWED[entry.kind]
            if self._status not in before:
                raise StateError(
                    f"{entry.kind.value}: not possible while the infusion is {self._status.value}"
                )
            if entry.status_after not in after:
                raise StateError(
                    f"{entry.kind.value}: cannot leave the infusion {entry.status_after.value}"
                )
        if entry.status_after in (InfusionStatus.PAUSED, InfusionStatus.STOPPED) and (
            entry.rate_mg_per_h != 0
        ):
            raise InputError(
                f"{entry.kind.value}: the rate must be 0 when {entry.status_after.value}",
                field="rate_mg_per_h",
            )
        self._entries.append(entry)
        self._status = entry.status_after

    # --- changes -----------------------------------------------------------------------------

    def change_rate(self, at: datetime, rate_mg_per_h: float, actor: Actor, reason: str) -> None:
        """Record a new rate (running infusions only; use pause/stop for zero)."""
        rate = _check_rate(rate_mg_per_h, "rate_mg_per_h", allow_zero=False)
        self._append(
            InfusionEntry(
                InfusionEntryKind.RATE_CHANGE,
                at,
                rate,
                InfusionStatus.RUNNING,
                actor.user_id,
                actor.role,
                require_reason(reason),
            )
        )

    def pause(self, at: datetime, actor: Actor, reason: str) -> None:
        """Record a pause (rate 0 until resumed)."""
        self._append(
            InfusionEntry(
                InfusionEntryKind.PAUSE,
                at,
                0.0,
                InfusionStatus.PAUSED,
                actor.user_id,
                actor.role,
                require_reason(reason),
            )
        )

    def resume(
        self, at: datetime, actor: Actor, reason: str = "", rate_mg_per_h: float | None = None
    ) -> None:
        """Resume a paused infusion at ``rate_mg_per_h`` (default: the rate before the pause)."""
        rate = (
            self._last_running_rate_mg_per_h()
            if rate_mg_per_h is None
            else _check_rate(rate_mg_per_h, "rate_mg_per_h", allow_zero=False)
        )
        if rate <= 0:
            raise InputError("rate_mg_per_h: give the rate to resume at", field="rate_mg_per_h")
        self._append(
            InfusionEntry(
                InfusionEntryKind.RESUME,
                at,
                rate,
                InfusionStatus.RUNNING,
                actor.user_id,
                actor.role,
                reason,
            )
        )

    def give_bolus(self, at: datetime, amount_mg: float, actor: Actor, reason: str) -> None:
        """Record a bolus (the infusion rate is unchanged)."""
        if (
            isinstance(amount_mg, bool)
            or not isinstance(amount_mg, int | float)
            or not math.isfinite(amount_mg)
            or amount_mg <= 0
        ):
            raise InputError(
                f"amount_mg: must be a positive number of mg, got {amount_mg!r}",
                field="amount_mg",
            )
        self._append(
            InfusionEntry(
                InfusionEntryKind.BOLUS,
                at,
                self.current_rate_mg_per_h,
                self._status,
                actor.user_id,
                actor.role,
                require_reason(reason),
                bolus_mg=float(amount_mg),
            )
        )

    def stop(self, at: datetime, actor: Actor, reason: str, *, completed: bool) -> None:
        """End the infusion: ``completed=True`` as planned, False = stopped early (reason)."""
        kind = InfusionEntryKind.COMPLETE if completed else InfusionEntryKind.STOP
        self._append(
            InfusionEntry(
                kind,
                at,
                0.0,
                InfusionStatus.STOPPED,
                actor.user_id,
                actor.role,
                reason if completed else require_reason(reason),
            )
        )

    def mark_uncertain(self, at: datetime, actor: Actor, reason: str) -> None:
        """The pump state is unknown from ``at`` (e.g. the server was down).

        Until :meth:`reconcile`, the record assumes the last rate continued.
        """
        self._append(
            InfusionEntry(
                InfusionEntryKind.UNCERTAIN,
                at,
                self.current_rate_mg_per_h,
                InfusionStatus.UNCERTAIN,
                actor.user_id,
                actor.role,
                require_reason(reason),
            )
        )

    def reconcile(
        self, at: datetime, actor: Actor, confirmation: PumpConfirmation
    ) -> InfusionEntry:
        """Close an uncertain period with what a nurse read on the pump; returns the entry.

        With a pump volume the gap delivered ``volume x concentration - recorded before the
        gap`` mg; if the pump shows less than the record, the gap gets 0 mg and the shortfall is
        kept as ``discrepancy_mg`` for review.
        """
        if self._status is not InfusionStatus.UNCERTAIN:
            raise StateError(f"reconcile: the infusion is {self._status.value}, not uncertain")
        require_aware(at, "at")
        gap_start = self._entries[-1].at
        gap_min = (at - gap_start).total_seconds() / S_PER_MIN
        before_mg = self.infused_mg(gap_start)
        discrepancy = 0.0
        if confirmation.volume_infused_ml is not None:
            if self.concentration_mg_per_ml is None:
                raise InputError(
                    "pump.volume_infused_ml: the record has no concentration to convert mL to "
                    "mg; state a gap_assumption instead",
                    field="pump.volume_infused_ml",
                )
            pump_mg = confirmation.volume_infused_ml * self.concentration_mg_per_ml
            gap_mg = pump_mg - before_mg
            tolerance = max(RECONCILE_TOLERANCE_MG, RECONCILE_TOLERANCE_FRACTION * pump_mg)
            if gap_mg < 0:
                if gap_mg < -tolerance:
                    discrepancy = gap_mg
                gap_mg = 0.0
        elif confirmation.gap_assumption is GapAssumption.CONTINUED_AT_LAST_RATE:
            gap_mg = mg_per_h_to_mg_per_min(self.current_rate_mg_per_h) * gap_min
            if self.planned_total_mg is not None:
                gap_mg = min(gap_mg, max(self.planned_total_mg - before_mg, 0.0))
        else:
            gap_mg = 0.0
        if gap_mg > 0 and gap_min <= 0:
            raise InputError(
                "pump: the pump reports drug given during an outage of zero length",
                field="pump.volume_infused_ml",
            )
        if confirmation.running:
            status = InfusionStatus.RUNNING
        elif confirmation.finished:
            status = InfusionStatus.STOPPED
        else:
            status = InfusionStatus.PAUSED
        entry = InfusionEntry(
            InfusionEntryKind.RECONCILE,
            at,
            confirmation.rate_mg_per_h,
            status,
            actor.user_id,
            actor.role,
            confirmation.note or "pump state confirmed after an uncertain period",
            gap_mg=gap_mg,
            discrepancy_mg=discrepancy,
        )
        self._append(entry)
        return entry

    # --- what was given ----------------------------------------------------------------------

    def minutes_since_start(self, at: datetime) -> float:
        """Minutes from the infusion start to ``at``."""
        return (require_aware(at, "at") - self.started_at).total_seconds() / S_PER_MIN

    def segments(self, until: datetime) -> tuple[Segment, ...]:
        """Constant-rate pieces from the start to ``until`` (minutes since start, mg/min)."""
        end_min = self.minutes_since_start(until)
        out: list[Segment] = []
        entries = self._entries
        for i, e in enumerate(entries):
            t0 = self.minutes_since_start(e.at)
            if t0 >= end_min:
                break
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if nxt is None:
                for seg in self._tail(t0, end_min, mg_per_h_to_mg_per_min(e.rate_mg_per_h), out):
                    _add(out, seg)
                break
            t1 = min(self.minutes_since_start(nxt.at), end_min)
            if t1 <= t0:
                continue
            if e.kind is InfusionEntryKind.UNCERTAIN and nxt.kind is InfusionEntryKind.RECONCILE:
                full = self.minutes_since_start(nxt.at) - t0
                rate = nxt.gap_mg / full if full > 0 else 0.0
            else:
                # Before reconciliation an uncertain period assumes the last rate continued.
                rate = mg_per_h_to_mg_per_min(e.rate_mg_per_h)
            if rate > 0:
                _add(out, Segment(t0, t1, rate))
        return tuple(out)

    def _tail(
        self, t0: float, t1: float, rate_mg_per_min: float, before: Iterable[Segment]
    ) -> list[Segment]:
        """The open-ended last piece, cut where the pump would reach ``planned_total_mg``."""
        if rate_mg_per_min <= 0 or t1 <= t0:
            return []
        if self.planned_total_mg is None:
            return [Segment(t0, t1, rate_mg_per_min)]
        remaining = self.planned_total_mg - sum(s.amount_mg for s in before)
        if remaining <= 0:
            return []
        stop = min(t1, t0 + remaining / rate_mg_per_min)
        return [Segment(t0, stop, rate_mg_per_min)] if stop > t0 else []

    def boluses(self, until: datetime) -> tuple[Bolus, ...]:
        """Boluses given up to and including ``until``."""
        limit = self.minutes_since_start(until)
        out = []
        for e in self._entries:
            if e.kind is InfusionEntryKind.BOLUS:
                t = self.minutes_since_start(e.at)
                if t <= limit:
                    out.append(Bolus(t, e.bolus_mg))
        return tuple(out)

    def infused_mg(self, at: datetime) -> float:
        """mg delivered by the infusion (not boluses) from the start to ``at``."""
        return float(sum(s.amount_mg for s in self.segments(at)))

    def dose_delivered_mg(self, at: datetime) -> float:
        """Total mg delivered (infusion + boluses) from the start to ``at``, exact."""
        return self.infused_mg(at) + float(sum(b.amount_mg for b in self.boluses(at)))

    def volume_infused_ml(self, at: datetime) -> float | None:
        """Infused volume to ``at`` (mL), comparable with the pump display; None without a
        concentration."""
        if self.concentration_mg_per_ml is None:
            return None
        return self.infused_mg(at) / self.concentration_mg_per_ml

    def to_schedule(self, until: datetime) -> Schedule:
        """The record up to ``until`` as a PK schedule (time 0 = infusion start)."""
        events: list[Event] = [
            Infusion(s.start_min, s.end_min, s.rate_mg_per_min) for s in self.segments(until)
        ]
        events.extend(self.boluses(until))
        return Schedule.from_events(events)

    # --- predictions -------------------------------------------------------------------------

    def _future(
        self, now: datetime, rate_mg_per_h: float, delay_min: float, horizon_min: float
    ) -> tuple[list[Event], str]:
        """Events from ``now``: 0 for ``delay_min``, then ``rate_mg_per_h`` up to the pump's
        planned total."""
        now_min = self.minutes_since_start(now)
        rate = mg_per_h_to_mg_per_min(rate_mg_per_h)
        if rate <= 0:
            return [], "no infusion from now on"
        start = now_min + delay_min
        end = now_min + delay_min + horizon_min
        words = f"{rate_mg_per_h:g} mg/h" + (f" after {delay_min:g} min" if delay_min else "")
        if self.planned_total_mg is not None:
            remaining = self.planned_total_mg - self.infused_mg(now)
            if remaining <= 0:
                return [], "planned total reached: no infusion from now on"
            end = min(end, start + remaining / rate)
            words += f" until the planned {self.planned_total_mg:g} mg is reached"
        return [Infusion(start, end, rate)], words

    def _forecast(
        self,
        now: datetime,
        covariates: PatientCovariates,
        model: Model | None,
        future: tuple[list[Event], str],
        horizon_min: float,
        step_min: float,
        include_history: bool,
    ) -> ConcentrationForecast:
        m = _default_model() if model is None else model
        now_min = self.minutes_since_start(now)
        if now_min < 0:
            raise InputError("now: before the infusion start", field="now")
        past: list[Event] = [
            Infusion(s.start_min, s.end_min, s.rate_mg_per_min) for s in self.segments(now)
        ]
        past.extend(self.boluses(now))
        schedule = Schedule.from_events([*past, *future[0]])
        ahead = now_min + np.arange(0.0, horizon_min + step_min / 2, step_min)
        times = ahead
        if include_history:
            times = np.concatenate([np.arange(0.0, now_min, step_min), ahead])
        i_now = int(np.searchsorted(times, now_min))
        params = m.parameters(
            weight_kg=covariates.weight_kg,
            age_y=covariates.age_y,
            sex=covariates.sex,
            height_cm=covariates.height_cm,
            warn=False,
        )
        notes = m.check_validity(
            weight_kg=covariates.weight_kg,
            age_y=covariates.age_y,
            height_cm=covariates.height_cm,
            sex=covariates.sex,
        )
        pred = simulate(params, schedule, times)
        cp = pred.cp_ng_per_ml[0]
        ce_arr = pred.ce_ng_per_ml
        ce = None if ce_arr is None else ce_arr[0]
        rates = np.array([schedule.rate_mg_per_min_at(float(t)) for t in times])
        return ConcentrationForecast(
            model_id=m.id,
            started_at=self.started_at,
            now_min=now_min,
            times_min=tuple(float(t) for t in times),
            cp_ng_per_ml=tuple(float(v) for v in cp),
            ce_ng_per_ml=None if ce is None else tuple(float(v) for v in ce),
            rate_mg_per_h=tuple(float(mg_per_min_to_mg_per_h(r)) for r in rates),
            cp_now_ng_per_ml=float(cp[i_now]),
            ce_now_ng_per_ml=None if ce is None else float(ce[i_now]),
            delivered_mg=self.dose_delivered_mg(now),
            future=future[1],
            uncertain=self._status is InfusionStatus.UNCERTAIN,
            validity_notes=tuple(notes),
            schedule=schedule,
        )

    def _current_future(self, now: datetime, horizon_min: float) -> tuple[list[Event], str]:
        if self._status in (InfusionStatus.RUNNING, InfusionStatus.UNCERTAIN):
            events, words = self._future(now, self.current_rate_mg_per_h, 0.0, horizon_min)
            if self._status is InfusionStatus.UNCERTAIN:
                words = "pump state unconfirmed; assumed " + words
            return events, words
        return [], f"infusion {self._status.value}: no infusion from now on"

    def forecast(
        self,
        now: datetime,
        covariates: PatientCovariates,
        *,
        model: Model | None = None,
        horizon_min: float = 30.0,
        step_min: float = 1.0,
        include_history: bool = False,
    ) -> ConcentrationForecast:
        """Cp and Ce now and for the next ``horizon_min`` minutes, from what was actually given.

        The current rate continues (up to the planned total) when running; nothing more is
        given when paused or stopped. ``model`` defaults to the library's default model.
        ``include_history`` adds points from the start to now.
        """
        _check_grid(horizon_min, step_min)
        return self._forecast(
            now,
            covariates,
            model,
            self._current_future(now, horizon_min),
            horizon_min,
            step_min,
            include_history,
        )

    def preview(
        self,
        now: datetime,
        covariates: PatientCovariates,
        *,
        rate_mg_per_h: float | None = None,
        pause_min: float | None = None,
        model: Model | None = None,
        horizon_min: float = 30.0,
        step_min: float = 1.0,
    ) -> WhatIfPreview:
        """What if the rate became ``rate_mg_per_h`` now, or the infusion paused ``pause_min``
        minutes and then resumed at its current rate? Nothing is changed in the record.
        """
        _check_grid(horizon_min, step_min)
        if (rate_mg_per_h is None) == (pause_min is None):
            raise InputError(
                "preview: give either rate_mg_per_h or pause_min, exactly one",
                field="rate_mg_per_h",
            )
        if rate_mg_per_h is not None:
            rate = _check_rate(rate_mg_per_h, "rate_mg_per_h", allow_zero=True)
            proposed = self._future(now, rate, 0.0, horizon_min)
        else:
            assert pause_min is not None
            if (
                isinstance(pause_min, bool)
                or not isinstance(pause_min, int | float)
                or not math.isfinite(pause_min)
                or pause_min <= 0
            ):
                raise InputError(
                    f"pause_min: must be a positive number of minutes, got {pause_min!r}",
                    field="pause_min",
                )
            resume_rate = (
                self.current_rate_mg_per_h
                if self._status is not InfusionStatus.PAUSED
                else self._last_running_rate_mg_per_h()
            )
            if self._status is InfusionStatus.STOPPED:
                resume_rate = 0.0
            events, words = self._future(now, resume_rate, float(pause_min), horizon_min)
            proposed = (events, f"pause {pause_min:g} min, then " + words)
        current = self._forecast(
            now,
            covariates,
            model,
            self._current_future(now, horizon_min),
            horizon_min,
            step_min,
            False,
        )
        alt = self._forecast(now, covariates, model, proposed, horizon_min, step_min, False)
        return WhatIfPreview(current=current, proposed=alt)


def _add(segments: list[Segment], seg: Segment) -> None:
    """Append ``seg``, merging it into the previous piece when it continues at the same rate
    (a bolus or a reconciliation entry splits the record but not the rate)."""
    if segments:
        last = segments[-1]
        if last.end_min == seg.start_min and last.rate_mg_per_min == seg.rate_mg_per_min:
            segments[-1] = Segment(last.start_min, seg.end_min, seg.rate_mg_per_min)
            return
    segments.append(seg)


def _check_grid(horizon_min: float, step_min: float) -> None:
    if not (math.isfinite(horizon_min) and 0 < horizon_min <= 24 * 60):
        raise InputError("horizon_min: must be > 0 and at most 1440 min", field="horizon_min")
    if not (math.isfinite(step_min) and 0 < step_min <= horizon_min):
        raise InputError("step_min: must be > 0 and at most horizon_min", field="step_min")
