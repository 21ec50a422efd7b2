"""A real ``ketaflow serve`` process: data and audit chain survive ``kill -9`` and a restart."""

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


def test_committed_data_survives_kill_9_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite:///{tmp_path / 'ketaflow.sqlite3'}"
    for username, role in [("desk1", "front_desk"), ("nurse1", "nurse"), ("admin1", "admin")]:
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
        stream_url = f"ws://127.0.0.1:{port}/api/v1/sessions/3/stream?token={nurse_token}"
        with connect(stream_url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.opened"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=20) == -signal.SIGKILL

    with _server(database_url, port, log), httpx.Client(base_url=base, timeout=10) as http:
        nurse = {"Authorization": f"Bearer {_token(http, 'nurse1')}"}
        again = http.get(f"/api/v1/patients/{patient_id}", headers=nurse)
        assert again.status_code == 200
        assert {k: again.json()[k] for k in patient} == patient
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
