"""The app factory: nothing happens at import or build time; startup migrates the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from ketaflow.api import create_app
from ketaflow.config import Settings
from ketaflow.store.db import make_engine
from ketaflow.store.migrate import current_revision, head_revision
from service_testkit import FAST_HASHER


def test_importing_the_api_builds_no_app_and_touches_no_database(tmp_path: Path) -> None:
    code = (
        "import sys, ketaflow.api, ketaflow.api.app, ketaflow.store, ketaflow.services.auth;"
        "import os; print(sorted(os.listdir('.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")},
    ).stdout
    assert out.strip() == "[]"  # no data directory, no database file


def test_startup_migrates_a_fresh_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings, password_hasher=FAST_HASHER)
    database = tmp_path / "data" / "ketaflow.sqlite3"
    assert not database.exists()  # building the app connects to nothing
    with TestClient(app) as client:
        assert client.get("/api/v1/health").json()["database"] == "ok"
    engine = make_engine(settings)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
