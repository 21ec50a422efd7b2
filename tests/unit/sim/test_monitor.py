"""Bedside-monitor simulator against a real HTTP server (Starlette on uvicorn, loopback).

The server below implements only the part of the public API the monitor uses (docs/api.md):
login, reading a session with its rate history, and posting vitals. It is a stand-in for the
ketaflow service, not a mock of the monitor: requests go over real TCP and real HTTP.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ketaflow.cli.main import main
from ketaflow.errors import AuthError, NotFoundError
from ketaflow.pk.population import PopulationSpec
from ketaflow.sim.monitor import ServiceClient, ServiceError, Timeline, open_monitor
from ketaflow.sim.virtual_patient import UCUM_UNITS

TOKEN = "device-token-123"
KINDS = set(UCUM_UNITS)


@dataclass
class FakeService:
    """State of the test server: one session, its rate history, the vitals received."""

    rate_history: list[dict[str, Any]] = field(default_factory=list)
    vitals: list[dict[str, Any]] = field(default_factory=list)
    session_gets: int = 0
    auth_headers: set[str] = field(default_factory=set)
    on_get: Any = None

    def app(self) -> Starlette:
        def authorised(request: Request) -> bool:
            header = request.headers.get("authorization", "")
            self.auth_headers.add(header)
            return header == f"Bearer {TOKEN}"

        def error(status: int, code: str, message: str) -> JSONResponse:
            return JSONResponse({"error": {"code": code, "message": message, "fields": []}}, status)

        async def login(request: Request) -> JSONResponse:
            body = await request.json()
            if body != {"username": "monitor", "password": "secret"}:
                return error(401, "not_authorised", "wrong username or password")
            return JSONResponse({"token": TOKEN, "expires_at": "2099-01-01T00:00:00Z", "user": {}})

        async def get_session(request: Request) -> JSONResponse:
            if not authorised(request):
                return error(401, "not_authorised", "sign in first")
            if request.path_params["sid"] != "s1":
                return error(404, "not_found", "no such session")
            self.session_gets += 1
            if self.on_get is not None:
                self.on_get(self)
            return JSONResponse(
                {
                    "id": "s1",
                    "state": "infusing",
                    "patient": {"weight_kg": 80.0},
                    "rate_history": list(self.rate_history),
                }
            )

        async def post_vitals(request: Request) -> JSONResponse:
            if not authorised(request):
                return error(401, "not_authorised", "sign in first")
            body = await request.json()
            readings = body.get("readings", [body])
            for r in readings:
                ok = (
                    set(r) == {"kind", "value", "unit", "measured_at", "source"}
                    and r["kind"] in KINDS
                    and r["unit"] == UCUM_UNITS[r["kind"]]
                    and r["source"] == "device"
                    and isinstance(r["value"], int | float)
                )
                if not ok:
                    return error(422, "invalid_input", f"bad reading {r}")
                datetime.fromisoformat(r["measured_at"])
            self.vitals.extend(readings)
            return JSONResponse({"stored": len(readings)}, 201)

        return Starlette(
            routes=[
                Route("/api/v1/auth/login", login, methods=["POST"]),
                Route("/api/v1/sessions/{sid}", get_session, methods=["GET"]),
                Route("/api/v1/sessions/{sid}/vitals", post_vitals, methods=["POST"]),
            ]
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service() -> Iterator[tuple[FakeService, str]]:
    fake = FakeService()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class FastClock:
    """Simulated monotonic time: ``sleep`` advances it instantly (the run needs no waiting)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.wall0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def now(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.t)


def test_monitor_streams_vitals_and_follows_rate_changes(
    service: tuple[FakeService, str],
) -> None:
    fake, url = service
    clock = FastClock()
    start = clock.now()
    fake.rate_history = [
        {"at": (start - timedelta(minutes=5)).isoformat(), "rate_mg_per_h": 60.0, "reason": "start"}
    ]

    def slow_down_on_third_poll(f: FakeService) -> None:
        if f.session_gets == 3:
            f.rate_history.append(
                {"at": clock.now().isoformat(), "rate_mg_per_h": 30.0, "reason": "too intense"}
            )

    fake.on_get = slow_down_on_third_poll
    with ServiceClient(url) as client:
        client.login("monitor", "secret")
        mon = open_monitor(
            client,
            "s1",
            spec=PopulationSpec.create(seed=4),
            patient_index=2,
            duration_min=4.0,
            speed=2.0,
            poll_interval_s=10.0,
            batch_interval_s=5.0,
            now=clock.now,
            clock=clock.clock,
            sleep=clock.sleep,
        )
        assert mon.session.weight_kg == 80.0  # taken from the service
        # The infusion began 5 min before the monitor: session time 0 is then.
        assert mon.timeline is not None
        assert mon.timeline.start_s == 300.0
        stats = mon.run(duration_min=4.0)

    assert fake.auth_headers == {f"Bearer {TOKEN}"}
    assert stats.readings_posted == len(fake.vitals) > 0
    assert stats.readings_refused == 0
    kinds = {r["kind"] for r in fake.vitals}
    assert {"hr", "spo2", "rr"} <= kinds
    stamps = [datetime.fromisoformat(r["measured_at"]) for r in fake.vitals]
    assert stamps == sorted(stamps)
    # speed 2: 4 simulated minutes take 2 wall-clock minutes; never stamped in the future.
    assert stamps[0] >= start
    assert stamps[-1] <= clock.now()
    assert (stamps[-1] - stamps[0]).total_seconds() == pytest.approx(120.0, abs=1.0)
    hr_count = sum(r["kind"] == "hr" for r in fake.vitals)
    assert 200 <= hr_count <= 241  # one per simulated second, minus any sensor dropout
    # The staff change was picked up and re-predicted from the actual history.
    assert stats.rate_changes_applied == 2
    steps = mon.session.rate_history
    assert [s.rate_mg_per_h for s in steps] == [60.0, 30.0]
    assert steps[0].time_min == 0.0
    assert steps[1].time_min > 5.0


def test_timeline_maps_service_time_and_back() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    tl = Timeline(origin=t0, start=t0 + timedelta(minutes=10), speed=4.0)
    assert tl.to_sim_s(t0 + timedelta(minutes=5)) == 300.0
    assert tl.to_sim_s(t0 + timedelta(minutes=11)) == 600.0 + 240.0
    for s in (0.0, 299.5, 600.0, 1000.0):
        assert tl.to_sim_s(tl.to_utc(s)) == pytest.approx(s, abs=1e-6)


def test_wrong_credentials_unknown_session_and_no_server(
    service: tuple[FakeService, str],
) -> None:
    _fake, url = service
    with ServiceClient(url) as client:
        with pytest.raises(AuthError, match="wrong username or password"):
            client.login("monitor", "nope")
        with pytest.raises(AuthError):
            client.get_session("s1")
        client.token = TOKEN
        with pytest.raises(NotFoundError):
            client.get_session("other")
    with (
        ServiceClient(f"http://127.0.0.1:{_free_port()}", timeout_s=2.0) as client,
        pytest.raises(ServiceError, match="cannot reach"),
    ):
        client.get_session("s1")


def test_cli_monitor_streams_into_the_server(
    service: tuple[FakeService, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = service
    rc = main(
        [
            "monitor",
            "--session",
            "s1",
            "--url",
            url,
            "--username",
            "monitor",
            "--password",
            "secret",
            "--speed",
            "600",
            "--duration",
            "0.5",
            "--seed",
            "3",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "readings_posted\t" in captured.out
    assert len(fake.vitals) >= 30
    assert "seed 3" in captured.err


def test_cli_monitor_unknown_session_exits_4(
    service: tuple[FakeService, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _fake, url = service
    rc = main(["monitor", "--session", "zzz", "--url", url, "--token", TOKEN])
    assert rc == 4
    assert "not found" in capsys.readouterr().err
