"""The demo replays its past sessions through the real workflow at their own (past) times."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ketaflow.cli.demo import BackgroundServer, DemoClock, create_clinic_app, create_demo_users
from ketaflow.cli.demo_seed import ApiClient, demo_passwords, seed_demo
from ketaflow.config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_past_sessions_have_real_doses_and_criteria_based_discharge(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None)
    passwords = demo_passwords(random=False)
    create_demo_users(settings, passwords)
    clock = DemoClock()
    port = _free_port()
    server = BackgroundServer(
        create_clinic_app(settings, migrate_on_startup=False, clock=clock), "127.0.0.1", port
    )
    server.start()
    client = ApiClient(f"http://127.0.0.1:{port}", passwords)
    try:
        clinic = seed_demo(client, log=lambda _m: None, travel=clock.travel)
        assert clinic.course_id is not None
        course = client.call("nurse", "GET", f"/courses/{clinic.course_id}")
        past = [s for s in course["sessions"] if s["state"] == "discharged"]
        assert len(past) == 3
        for session, weight_kg in zip(past, (71.8, 71.2, 70.9), strict=True):
            # 0.5 mg/kg over 40 min really ran: the dose is that day's weight times 0.5.
            assert session["delivered_mg"] == pytest.approx(0.5 * weight_kg, rel=0.01)
            detail = client.call("nurse", "GET", f"/sessions/{session['id']}")
            assert not [a for a in detail["active_alarms"] if not a.get("acknowledged_at")]
        live = client.call("nurse", "GET", f"/sessions/{clinic.live_session_id}")
        assert live["state"] == "infusing"
        # Back in the present: the clock is the wall clock again.
        assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5
    finally:
        client.close()
        server.stop()
