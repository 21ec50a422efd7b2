"""The service commands, run through ``ketaflow.cli.main.main`` on both databases."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from ketaflow.cli.main import main
from ketaflow.config import Settings
from ketaflow.store.db import make_engine
from ketaflow.store.migrate import head_revision
from service_testkit import PASSWORD

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(args, stdin=None)`` -> (exit code, stdout, stderr)."""

    def _run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(args)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("KETAFLOW_DATABASE_URL", "KETAFLOW_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_db_upgrade_creates_the_default_sqlite_database(run: Run, tmp_path: Path) -> None:
    code, out, _ = run(["db", "upgrade"])
    assert code == 0
    assert out.strip().endswith(f"at revision {head_revision()}")
    assert (tmp_path / "data" / "ketaflow.sqlite3").is_file()
    assert run(["db", "upgrade"])[0] == 0  # idempotent


def test_users_add_then_audit_verify(run: Run, database_url: str) -> None:
    code, out, err = run(
        [
            "users",
            "add",
            "Admin.One",
            "--role",
            "admin",
            "--password-stdin",
            "--database",
            database_url,
        ],
        stdin=PASSWORD + "\n",
    )
    assert (code, err) == (0, "")
    assert out == "created user admin.one (id 1, role admin)\n"
    code, out, _ = run(["audit", "verify", "--database", database_url])
    assert (code, out) == (0, "audit chain intact: 1 records\n")


def test_audit_verify_names_the_first_broken_record(run: Run, database_url: str) -> None:
    for name in ("nurse1", "nurse2", "nurse3"):
        run(
            [
                "users",
                "add",
                name,
                "--role",
                "nurse",
                "--password-stdin",
                "--database",
                database_url,
            ],
            stdin=PASSWORD,
        )
    engine = make_engine(Settings(database_url=database_url))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 2"))
    engine.dispose()
    code, out, err = run(["audit", "verify", "--database", database_url])
    assert code == 1
    assert out == ""
    assert err.startswith("ketaflow: audit chain broken at record 2:")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (
            ["users", "add", "bob", "--role", "wizard", "--password-stdin"],
            PASSWORD,
            "role must be one of",
        ),
        (
            ["users", "add", "bob", "--role", "kiosk", "--password-stdin"],
            PASSWORD,
            "not an account role",
        ),
        (["users", "add", "bob", "--role", "nurse", "--password-stdin"], "short\n", "at least 12"),
        (["users", "add", "bob", "--role", "nurse", "--password-stdin"], "", "no password"),
        (["users", "add", "b b", "--role", "nurse", "--password-stdin"], PASSWORD, "username must"),
        (["db", "upgrade", "--database", "mysql://x@y/z"], None, "database_url must be"),
        (["db", "upgrade", "--database", " "], None, "--database must be"),
        (["audit", "verify", "--database", "no url"], None, "not a URL"),
        (["serve", "--port", "70000"], None, "--port must be in [1, 65535]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    run: Run, args: list[str], stdin: str | None, fragment: str
) -> None:
    code, out, err = run(args, stdin=stdin)
    assert code == 2
    assert out == ""
    assert err.startswith("ketaflow: error: ")
    assert err.count("\n") == 1
    assert fragment in err


def test_duplicate_user_is_refused(run: Run, database_url: str) -> None:
    args = [
        "users",
        "add",
        "nurse1",
        "--role",
        "nurse",
        "--password-stdin",
        "--database",
        database_url,
    ]
    assert run(args, stdin=PASSWORD)[0] == 0
    code, _, err = run(args, stdin=PASSWORD)
    assert code == 3  # a conflict with existing state (cli.main's table)
    assert "already taken" in err


def test_verify_on_a_database_without_tables_says_to_upgrade(run: Run, tmp_path: Path) -> None:
    code, _, err = run(["audit", "verify", "--database", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert code == 6
    assert "ketaflow db upgrade" in err
