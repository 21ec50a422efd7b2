"""Bedside-monitor simulator: stream a virtual patient's vital signs into a running service.

The simulator talks to ketaflow **only through its public HTTP API** (``docs/api.md``; the part
it relies on is restated in ``docs/simulation.md``):

* ``POST /api/v1/auth/login`` ``{username, password}`` -> ``{token, ...}`` (unless a token is
  given);
* ``GET /api/v1/sessions/{id}`` -> the session, of which it reads ``rate_history``
  (``[{at, rate_mg_per_h, ...}]``) and, if present, the patient's weight
  (``patient.weight_kg`` or ``order.dosing_weight_kg``);
* ``POST /api/v1/sessions/{id}/vitals`` with ``{"readings": [{kind, value, unit, measured_at,
  source: "device"}, ...]}``.

Time: the virtual session's time zero is the earlier of the first rate change and the moment
the monitor starts. With ``speed`` 1 simulated and wall-clock time coincide. With ``speed`` > 1
physiology after the start runs that many times faster, but every reading is stamped with the
wall-clock time at which it is sent (never in the future), and a rate change stamped ``at`` by
the service is applied at the simulated time that corresponds to ``at``; history from before
the monitor started is mapped one to one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ketaflow.errors import AuthError, InputError, KetaflowError, NotFoundError
from ketaflow.pk.population import PopulationSpec
from ketaflow.sim.virtual_patient import (
    CheckIn,
    RateStep,
    Reading,
    SessionConfig,
    VirtualSession,
)

API_PREFIX = "/api/v1"


class ServiceError(KetaflowError):
    """The service answered with an unexpected error or could not be reached."""

    code = "service_error"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or f"HTTP {response.status_code}"


class ServiceClient:
    """A thin client of the public ketaflow HTTP API (the three calls the monitor needs)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InputError(
                f"url must start with http:// or https://, got {base_url!r}", field="url"
            )
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self.token = token

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self._http.request(method, API_PREFIX + path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"cannot reach the ketaflow service at {self.base_url} ({type(exc).__name__}); "
                "is it running, and is --url right?"
            ) from exc
        if response.status_code in (401, 403):
            raise AuthError(f"the service refused {method} {path}: {_error_message(response)}")
        if response.status_code == 404:
            raise NotFoundError(f"{method} {path}: not found ({_error_message(response)})")
        if response.status_code == 422:
            raise InputError(f"{method} {path}: {_error_message(response)}", field="vitals")
        if response.status_code >= 400:
            raise ServiceError(
                f"{method} {path} failed with HTTP {response.status_code}: "
                f"{_error_message(response)}"
            )
        return response

    def login(self, username: str, password: str) -> str:
        """Sign in and keep the token for later calls."""
        body = self._request(
            "POST", "/auth/login", json={"username": username, "password": password}
        )
        token = body.json().get("token")
        if not isinstance(token, str) or not token:
            raise ServiceError("POST /auth/login answered without a token")
        self.token = token
        return token

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session as the service reports it."""
        data = self._request("GET", f"/sessions/{session_id}").json()
        if not isinstance(data, dict):
            raise ServiceError(f"GET /sessions/{session_id} did not return an object")
        return data

    def post_vitals(self, session_id: str, readings: Sequence[dict[str, Any]]) -> None:
        """Post a batch of readings."""
        self._request("POST", f"/sessions/{session_id}/vitals", json={"readings": list(readings)})

    def post_check_in(self, session_id: str, check_in: dict[str, Any]) -> None:
        """Post a patient check-in."""
        self._request("POST", f"/sessions/{session_id}/checkins", json=check_in)


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with offset (``Z`` accepted) as an aware UTC datetime."""
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ServiceError(f"unreadable timestamp {text!r} in the session's rate history") from exc
    if ts.tzinfo is None:
        raise ServiceError(f"timestamp {text!r} has no UTC offset")
    return ts.astimezone(UTC)


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 with a UTC offset and milliseconds."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")


def rate_history_of(session: dict[str, Any]) -> list[tuple[datetime, float]]:
    """``(at, rate_mg_per_h)`` pairs of a session's ``rate_history``, in time order."""
    raw = session.get("rate_history") or []
    if not isinstance(raw, list):
        raise ServiceError("the session's rate_history is not a list")
    out = []
    for entry in raw:
        try:
            at = parse_timestamp(str(entry["at"]))
            rate = float(entry["rate_mg_per_h"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"unreadable rate_history entry {entry!r}") from exc
        if not (math.isfinite(rate) and rate >= 0):
            raise ServiceError(f"rate_history entry with invalid rate {rate!r}")
        out.append((at, rate))
    return sorted(out, key=lambda p: p[0])


def weight_of(session: dict[str, Any]) -> float | None:
    """The patient's weight (kg) if the session reports one."""
    for outer, inner in (
        ("patient", "weight_kg"),
        ("order", "dosing_weight_kg"),
        ("order", "weight_kg"),
    ):
        part = session.get(outer)
        if isinstance(part, dict) and isinstance(part.get(inner), int | float):
            return float(part[inner])
    value = session.get("weight_kg")
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Timeline:
    """Maps service (UTC) times to simulated seconds and back (see the module docstring)."""

    origin: datetime
    start: datetime
    speed: float

    @property
    def start_s(self) -> float:
        """Simulated seconds at the monitor's start."""
        return (self.start - self.origin).total_seconds()

    def to_sim_s(self, at: datetime) -> float:
        """Simulated seconds of a service time."""
        if at <= self.start:
            return (at - self.origin).total_seconds()
        return self.start_s + (at - self.start).total_seconds() * self.speed

    def to_utc(self, sim_s: float) -> datetime:
        """Service time of a simulated second."""
        if sim_s <= self.start_s:
            return self.origin + timedelta(seconds=sim_s)
        return self.start + timedelta(seconds=(sim_s - self.start_s) / self.speed)


@dataclass
class MonitorStats:
    """What a monitor run did."""

    readings_posted: int = 0
    batches_posted: int = 0
    check_ins_posted: int = 0
    rate_changes_applied: int = 0
    readings_refused: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class BedsideMonitor:
    """Streams a :class:`VirtualSession` into the service, reacting to its rate history.

    ``clock`` (monotonic seconds), ``now`` (aware UTC datetime) and ``sleep`` are injected so
    that tests and accelerated runs control time.
    """

    client: ServiceClient
    session_id: str
    session: VirtualSession
    speed: float = 1.0
    poll_interval_s: float = 2.0
    batch_interval_s: float = 1.0
    post_check_ins: bool = False
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep
    stats: MonitorStats = field(default_factory=MonitorStats)
    timeline: Timeline | None = None
    _applied: list[tuple[datetime, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and 0.1 <= self.speed <= 1000.0):
            raise InputError(f"speed must lie in 0.1-1000, got {self.speed}", field="speed")
        for name in ("poll_interval_s", "batch_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be > 0, got {value}", field=name)

    def connect(self) -> Timeline:
        """Read the session once: set the time origin and the rate history."""
        data = self.client.get_session(self.session_id)
        history = rate_history_of(data)
        start = self.now()
        origin = min([start, *(at for at, _ in history)])
        self.timeline = Timeline(origin=origin, start=start, speed=self.speed)
        self._apply(history)
        return self.timeline

    def _apply(self, history: list[tuple[datetime, float]]) -> None:
        if history == self._applied:
            return
        assert self.timeline is not None
        steps = [
            RateStep(max(self.timeline.to_sim_s(at), 0.0) / 60.0, rate) for at, rate in history
        ]
        self.session.replace_rate_history(steps, vtbi_mg=None)
        self.stats.rate_changes_applied += len(set(history) - set(self._applied))
        self._applied = list(history)

    def poll(self) -> None:
        """Fetch the rate history again and apply any change."""
        self._apply(rate_history_of(self.client.get_session(self.session_id)))

    def run(self, *, duration_min: float | None = None) -> MonitorStats:
        """Stream until ``duration_min`` of simulated session time (default: the session's)."""
        timeline = self.timeline or self.connect()
        end_s = self.session.config.duration_min * 60.0
        if duration_min is not None:
            end_s = min(end_s, timeline.start_s + duration_min * 60.0)
        wall0 = self.clock()
        last_poll = last_flush = wall0
        batch: list[dict[str, Any]] = []
        events: Iterator[Reading | CheckIn] = self.session.stream(start_s=timeline.start_s)

        def flush() -> None:
            nonlocal batch
            if batch:
                self._post(batch)
                batch = []

        for event in events:
            if event.time_s > end_s:
                break
            due_wall = wall0 + (event.time_s - timeline.start_s) / self.speed
            while True:
                now = self.clock()
                if now - last_flush >= self.batch_interval_s:
                    flush()
                    last_flush = now
                if now - last_poll >= self.poll_interval_s:
                    self.poll()
                    last_poll = now
                if now >= due_wall:
                    break
                self.sleep(min(due_wall - now, self.batch_interval_s, self.poll_interval_s))
            if isinstance(event, Reading):
                batch.append(
                    {
                        "kind": event.kind,
                        "value": event.value,
                        "unit": event.unit,
                        "measured_at": format_timestamp(timeline.to_utc(event.time_s)),
                        "source": "device",
                    }
                )
            elif self.post_check_ins:
                flush()
                self._post_check_in(event)
        flush()
        return self.stats

    def _post(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.client.post_vitals(self.session_id, batch)
        except InputError as exc:
            # The service refused the batch (an impossible value); keep streaming.
            self.stats.readings_refused += len(batch)
            self.stats.errors.append(exc.message)
            return
        self.stats.readings_posted += len(batch)
        self.stats.batches_posted += 1

    def _post_check_in(self, event: CheckIn) -> None:
        body: dict[str, Any] = {
            "comfort": event.comfort,
            "intensity": event.intensity,
            "anxiety": event.anxiety,
            "nausea": event.nausea,
        }
        if event.need_help:
            body["need_help"] = True
        self.client.post_check_in(self.session_id, body)
        self.stats.check_ins_posted += 1


def open_monitor(
    client: ServiceClient,
    session_id: str,
    *,
    spec: PopulationSpec,
    patient_index: int = 0,
    duration_min: float = 180.0,
    speed: float = 1.0,
    weight_kg: float | None = None,
    poll_interval_s: float = 2.0,
    batch_interval_s: float = 1.0,
    post_check_ins: bool = False,
    now: Callable[[], datetime] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> BedsideMonitor:
    """Read the session, build virtual patient ``patient_index`` of ``spec`` and a monitor.

    The patient's weight is, in order: ``weight_kg``, the weight the service reports, the virtual
    patient's own. The virtual session lasts ``duration_min`` from now (plus any time the session
    already ran).
    """
    if not (math.isfinite(duration_min) and 0 < duration_min <= 24 * 60):
        raise InputError(
            f"duration_min must lie in 0-1440 min, got {duration_min}", field="duration_min"
        )
    now_fn = now or (lambda: datetime.now(UTC))
    data = client.get_session(session_id)
    history = rate_history_of(data)
    start = now_fn()
    origin = min([start, *(at for at, _ in history)])
    timeline = Timeline(origin=origin, start=start, speed=speed)
    session = VirtualSession.create(
        spec,
        patient_index,
        weight_kg=weight_kg if weight_kg is not None else weight_of(data),
        config=SessionConfig(duration_min=min(timeline.start_s / 60.0 + duration_min, 24 * 60)),
    )
    monitor = BedsideMonitor(
        client=client,
        session_id=session_id,
        session=session,
        speed=speed,
        poll_interval_s=poll_interval_s,
        batch_interval_s=batch_interval_s,
        post_check_ins=post_check_ins,
        now=now_fn,
        clock=clock or time.monotonic,
        sleep=sleep or time.sleep,
        timeline=timeline,
    )
    monitor._apply(history)
    return monitor
