"""A real ``ketaflow serve`` process: data and audit chain survive ``kill -9`` and a restart.

The session infusing at the kill comes back ``uncertain`` (pump unconfirmed) with every accepted
reading and rate change stored exactly once, until a nurse confirms the pump.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

import ketaflow
from ketaflow.cli.main import main
from service_testkit import PASSWORD

pytestmark = pytest.mark.slow

#: How long a server may take to start on a busy machine, seconds.
STARTUP_S = 60.0
SRC = Path(ketaflow.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _server(database_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ketaflow",
                "serve",
                "--port",
                str(port),
                "--database",
                database_url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def _add_user(database_url: str, username: str, role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD))
    args = [
        "users",
        "add",
        username,
        "--role",
        role,
        "--password-stdin",
        "--database",
        database_url,
    ]
    assert main(args) == 0


def _token(http: httpx.Client, username: str) -> str:
    response = http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _infusing_session(
    http: httpx.Client,
    patient_id: int,
    desk: dict[str, str],
    nurse: dict[str, str],
    doc: dict[str, str],
) -> int:
    """Weigh, screen, plan a course and take one session to ``infusing``; its id."""

    def post(path: str, who: dict[str, str], body: object = None) -> dict[str, object]:
        response = http.post(f"/api/v1{path}", json=body, headers=who)
        assert response.status_code in (200, 201), f"{path}: {response.text}"
        answer: dict[str, object] = response.json()
        return answer

    today = datetime.now(UTC).date().isoformat()
    post(f"/patients/{patient_id}/weights", nurse, {"weight_kg": 70, "measured_on": today})
    post(f"/patients/{patient_id}/screenings", doc, {"findings": {}})
    course = post(
        f"/patients/{patient_id}/courses",
        doc,
        {
            "indication": "major_depression",
            "protocol": "depression-standard",
            "planned_sessions": 6,
            "goal": {"scale": "madrs", "kind": "response"},
        },
    )
    session = post(
        f"/courses/{course['id']}/sessions",
        desk,
        {"scheduled_for": datetime.now(UTC).isoformat(), "chair": "1"},
    )
    sid = session["id"]
    post(f"/sessions/{sid}/transitions", desk, {"action": "check_in"})
    post(f"/sessions/{sid}/transitions", nurse, {"action": "start_pre_assessment"})
    pump = post(f"/sessions/{sid}/order", doc, {})["pump"]
    assert isinstance(pump, dict)
    post(f"/sessions/{sid}/order/verify", doc)
    post(
        f"/sessions/{sid}/order/double-check",
        nurse,
        {
            "rate_ml_per_h": pump["rate_ml_per_h"],
            "vtbi_ml": pump["vtbi_ml"],
            "concentration_mg_per_ml": pump["concentration_mg_per_ml"],
            "dose_mg": pump["ordered_dose_mg"],
        },
    )
    post(
        f"/sessions/{sid}/pre-assessment",
        nurse,
        {
            "fasting_confirmed": True,
            "consent_confirmed": True,
            "escort_name": "Sam",
            "baseline": {"sbp_mmhg": 120, "dbp_mmhg": 78, "hr_per_min": 72, "spo2_percent": 98},
        },
    )
    assert post(f"/sessions/{sid}/start", nurse)["state"] == "infusing"
    assert isinstance(sid, int)
    return sid


def test_committed_data_survives_kill_9_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite:///{tmp_path / 'ketaflow.sqlite3'}"
    users = [
        ("desk1", "front_desk"),
        ("nurse1", "nurse"),
        ("admin1", "admin"),
        ("doc1", "physician"),
    ]
    for username, role in users:
        _add_user(database_url, username, role, monkeypatch)
    port, log = _free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    patient = {
        "mrn": "MRN-KILL9",
        "family_name": "Persist",
        "given_name": "Ada",
        "birth_date": "1970-05-05",
        "sex": "female",
    }

    with (
        _server(database_url, port, log) as process,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        desk = {"Authorization": f"Bearer {_token(http, 'desk1')}"}
        created = http.post("/api/v1/patients", json=patient, headers=desk)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        nurse_token = _token(http, "nurse1")
        nurse = {"Authorization": f"Bearer {nurse_token}"}
        doc = {"Authorization": f"Bearer {_token(http, 'doc1')}"}
        session_id = _infusing_session(http, patient_id, desk, nurse, doc)
        stream_url = (
            f"ws://127.0.0.1:{port}/api/v1/sessions/{session_id}/stream?token={nurse_token}"
        )
        with connect(stream_url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.opened"
            now = datetime.now(UTC)
            readings = [
                {
                    "kind": kind,
                    "value": value,
                    "unit": unit,
                    "source": "device",
                    "measured_at": (now - timedelta(seconds=i)).isoformat(),
                    "reading_id": f"kill9-{i}",
                }
                for i, (kind, value, unit) in enumerate(
                    [("hr", 80, "/min"), ("sbp", 130, "mm[Hg]"), ("spo2", 97, "%")] * 3
                )
            ]
            posted = http.post(
                f"/api/v1/sessions/{session_id}/vitals", json={"readings": readings}, headers=nurse
            )
            assert posted.status_code == 201, posted.text
            assert json.loads(ws.recv(timeout=10))["type"] == "vitals"
            rate = http.post(
                f"/api/v1/sessions/{session_id}/rate",
                json={"rate_mg_per_h": 40, "reason": "patient anxious"},
                headers=nurse,
            )
            assert rate.status_code == 200, rate.text
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=20) == -signal.SIGKILL

    with _server(database_url, port, log), httpx.Client(base_url=base, timeout=10) as http:
        # `ketaflow serve` serves the clinician web app beside the API.
        sign_in = http.get("/login")
        assert sign_in.status_code == 200
        assert "text/html" in sign_in.headers["content-type"]
        nurse = {"Authorization": f"Bearer {_token(http, 'nurse1')}"}
        again = http.get(f"/api/v1/patients/{patient_id}", headers=nurse)
        assert again.status_code == 200
        assert {k: again.json()[k] for k in patient} == patient
        # Every accepted reading and rate change is there exactly once ...
        vitals = http.get(f"/api/v1/sessions/{session_id}/vitals", headers=nurse).json()
        ids = [v["reading_id"] for v in vitals if v["reading_id"]]
        assert sorted(ids) == sorted(r["reading_id"] for r in readings)
        retry = http.post(
            f"/api/v1/sessions/{session_id}/vitals", json={"readings": readings}, headers=nurse
        ).json()
        assert retry["accepted"] == []
        assert len(retry["duplicates"]) == len(readings)
        # ... and the session waits for a nurse to read the pump.
        view = http.get(f"/api/v1/sessions/{session_id}", headers=nurse).json()
        assert (view["state"], view["pump_unconfirmed"]) == ("uncertain", True)
        assert [(r["kind"], r["rate_mg_per_h"]) for r in view["rate_history"]][1:] == [
            ("rate_change", 40.0),
            ("uncertain", 40.0),
        ]
        last = view["transitions"][-1]
        assert (last["from"], last["to"], last["by"]) == ("infusing", "uncertain", "system")
        enabled = {a["action"] for a in view["allowed_actions"] if a["enabled"]}
        assert "confirm_pump" in enabled
        assert "pause" not in enabled
        confirmed = http.post(
            f"/api/v1/sessions/{session_id}/confirm-pump",
            json={"running": True, "rate_mg_per_h": 40, "note": "pump running"},
            headers=nurse,
        )
        assert confirmed.status_code == 200, confirmed.text
        assert (confirmed.json()["state"], confirmed.json()["pump_unconfirmed"]) == (
            "infusing",
            False,
        )
        admin = {"Authorization": f"Bearer {_token(http, 'admin1')}"}
        verified = http.get("/api/v1/audit/verify", headers=admin).json()
        assert verified["ok"] is True
        actions = [r["action"] for r in http.get("/api/v1/audit/records", headers=admin).json()]
        assert actions.count("create") >= 4  # three users and the patient
        assert "read" in actions

    assert main(["audit", "verify", "--database", database_url]) == 0
    server_log = log.read_text()
    assert nurse_token not in server_log  # stream URLs carry tokens; the log redacts them
    assert "token=[redacted]" in server_log
