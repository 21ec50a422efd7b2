"""SQLite writers of one process queue for a write slot that is freed only after COMMIT."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from ketaflow.config import Settings
from ketaflow.store.db import make_engine


def _engine(tmp_path: Path) -> Engine:
    engine = make_engine(Settings(data_dir=tmp_path, database_url=None))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    return engine


def test_second_writer_waits_until_the_first_has_committed(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    begins: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(threading.get_ident())

    first_inside = threading.Event()
    let_first_commit = threading.Event()
    seen_by_second: list[int] = []

    def first() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            first_inside.set()
            let_first_commit.wait(5)

    def second() -> None:
        with engine.begin() as conn:
            seen_by_second.extend(v for (v,) in conn.execute(text("SELECT v FROM t")))

    a = threading.Thread(target=first)
    a.start()
    assert first_inside.wait(5)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.2)
    assert b.is_alive(), "the second writer must wait for the slot"
    # It waits in the process's queue, not inside SQLite (whose busy handler sleeps with
    # back-off): it has not even sent BEGIN yet.
    assert b.ident not in begins
    let_first_commit.set()
    a.join(5)
    b.join(5)
    assert seen_by_second == [1]  # it started only after the first transaction was committed
    engine.dispose()


def test_a_rolled_back_transaction_frees_the_slot(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    def abandon() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError):
        abandon()
    started = time.monotonic()
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT count(*) FROM t")).scalar_one()
    assert rows == 0
    assert time.monotonic() - started < 1.0  # no wait for a slot that was never freed
    engine.dispose()
