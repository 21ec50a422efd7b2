"""``ketaflow demo``: what ``make run`` starts.

A live demo clinic on http://127.0.0.1:8000 in under a minute: a FRESH SQLite database in a new
temporary directory, four staff accounts created through the service layer (printed with their
passwords), a patient mid-course and one session infusing now, seeded over the HTTP API
(:mod:`ketaflow.cli.demo_seed`), and the bedside-monitor simulator (:mod:`ketaflow.sim.monitor`)
posting that session's vital signs over HTTP from a background thread.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table

from ketaflow.cli.demo_seed import DEMO_USERS, ApiClient, DemoClinic, demo_passwords, seed_demo
from ketaflow.config import Settings
from ketaflow.errors import InputError, KetaflowError
from ketaflow.pk.effect import DISSOCIATION, SBP_RISE
from ketaflow.pk.library import default_model
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate
from ketaflow.services.auth import Authenticator, AuthPolicy
from ketaflow.services.clock import SystemClock
from ketaflow.services.users import UserService
from ketaflow.store.db import make_engine, make_session_factory
from ketaflow.store.migrate import upgrade
from ketaflow.store.uow import UnitOfWork

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
log = logging.getLogger("ketaflow.demo")


def print_standard_infusion(weight_kg: float) -> None:
    """Print the standard antidepressant infusion (0.5 mg/kg over 40 min) for ``weight_kg``."""
    model = default_model()
    schedule = Schedule.from_text("0.5 mg/kg over 40 min", weight_kg)
    times_min = np.arange(0.0, 120.0 + 1e-9, 10.0)
    pred = simulate(model.parameters(weight_kg=weight_kg), schedule, times_min)
    if pred.ce_ng_per_ml is None:
        raise KetaflowError(f"model {model.name} has no effect site")
    table = Table(
        title=f"{model.name}: 0.5 mg/kg over 40 min, {weight_kg:g} kg "
        f"(total {schedule.total_mg:.1f} mg)"
    )
    for col in ("min", "rate mg/h", "Cp ng/mL", "Ce ng/mL", "dissociation", "SBP rise mmHg"):
        table.add_column(col, justify="right")
    diss = DISSOCIATION.effect(pred.ce_ng_per_ml[0], enantiomer=model.enantiomer)
    sbp = SBP_RISE.effect(pred.ce_ng_per_ml[0], enantiomer=model.enantiomer)
    for i, t in enumerate(times_min):
        table.add_row(
            f"{t:g}",
            f"{pred.rate_mg_per_h[0, i]:.1f}",
            f"{pred.cp_ng_per_ml[0, i]:.1f}",
            f"{pred.ce_ng_per_ml[0, i]:.1f}",
            f"{diss[i]:.2f}",
            f"{sbp[i]:.1f}",
        )
    Console().print(table)


class DemoClock:
    """The wall clock, or a chosen past instant while the demo writes its history.

    The service reads time only through its injected clock, so setting this one lets the demo
    run past sessions through the real workflow at their real (past) times.
    """

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        """The demo's current instant (UTC)."""
        return SystemClock().now() + self._offset

    def travel(self, when: datetime | None) -> None:
        """Make :meth:`now` read ``when`` from here on; ``None`` returns to the wall clock."""
        self._offset = timedelta(0) if when is None else when - SystemClock().now()


def create_clinic_app(settings: Settings, **kwargs: Any) -> FastAPI:
    """The API application with the web app (``ketaflow.web``) served next to it."""
    from ketaflow.api.app import create_app
    from ketaflow.web import install_web

    app = create_app(settings, **kwargs)
    install_web(app)
    return app


def create_demo_users(settings: Settings, passwords: dict[str, str]) -> None:
    """Migrate the database and create :data:`DEMO_USERS` through the user service."""
    engine = make_engine(settings)
    try:
        upgrade(engine)
        clock = SystemClock()
        auth = Authenticator(AuthPolicy.from_settings(settings), clock)
        with UnitOfWork(make_session_factory(engine)) as uow:
            users = UserService(uow, auth, clock)
            for username, role in DEMO_USERS.items():
                users.create("cli:demo", username=username, password=passwords[username], role=role)
    finally:
        engine.dispose()


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread (``start`` waits until it accepts)."""

    def __init__(self, app: FastAPI, host: str, port: int, *, log_level: str = "warning") -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, server_header=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ketaflow-http", daemon=True)

    def start(self, timeout_s: float = 20.0) -> None:
        """Start and wait until the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise KetaflowError("the demo server did not start (is the port free?)")
            time.sleep(0.05)

    def stop(self) -> None:
        """Ask the server to finish and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_monitor(
    base_url: str, session_id: int, password: str, *, speed: float = 1.0
) -> threading.Thread:
    """Run the bedside-monitor simulator for ``session_id`` in a daemon thread (as ``nurse``)."""
    from ketaflow.pk.population import PopulationSpec
    from ketaflow.sim.monitor import ServiceClient, open_monitor

    def run() -> None:
        try:
            with ServiceClient(base_url) as client:
                client.login("nurse", password)
                monitor = open_monitor(
                    client,
                    str(session_id),
                    spec=PopulationSpec.create(seed=7),
                    patient_index=3,
                    duration_min=240.0,
                    speed=speed,
                    post_check_ins=True,
                )
                monitor.run()
        except KetaflowError as exc:
            log.warning("bedside monitor stopped: %s", exc)

    thread = threading.Thread(target=run, name="ketaflow-monitor", daemon=True)
    thread.start()
    return thread


def demo(
    host: Annotated[str, typer.Option(help="Address to serve on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Empty directory for the demo database (default: a new temp dir)."),
    ] = None,
    monitor: Annotated[
        bool, typer.Option(help="Feed the live session from the bedside-monitor simulator.")
    ] = True,
    weight_kg: Annotated[
        float, typer.Option("--weight", help="Patient weight for --table-only, kg.")
    ] = 70.0,
    table_only: Annotated[
        bool,
        typer.Option(help="Only print the standard infusion's prediction table; serve nothing."),
    ] = False,
) -> None:
    """Run a live demo clinic: web app, seeded patient, one infusion running now."""
    if table_only:
        print_standard_infusion(weight_kg)
        return
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in [1, 65535]; got {port}.", field="port")
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="ketaflow-demo-"))
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise InputError(
            f"--data-dir {data_dir} is not empty; the demo needs a fresh directory.",
            field="data_dir",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir, database_url=None)
    passwords = demo_passwords(random=host not in _LOOPBACK)
    console = Console(stderr=True)
    console.print(f"ketaflow demo: fresh database in {data_dir}")
    create_demo_users(settings, passwords)

    clock = DemoClock()
    server = BackgroundServer(
        create_clinic_app(settings, migrate_on_startup=False, clock=clock), host, port
    )
    server.start()
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    client = ApiClient(base_url, passwords)
    try:
        clinic = seed_demo(client, log=lambda m: console.print(f"  {m}"), travel=clock.travel)
    except KetaflowError as exc:
        server.stop()
        raise exc
    except Exception as exc:
        console.print(f"[bold]seeding stopped early:[/bold] {exc}")
        clinic = DemoClinic(0, None, None, "seeding stopped early; see the message above")
    finally:
        client.close()
    if monitor and clinic.live_session_id is not None:
        start_monitor(base_url, clinic.live_session_id, passwords["nurse"])

    table = Table(title="Demo accounts (this database only)")
    table.add_column("username")
    table.add_column("password")
    table.add_column("role")
    for username, role in DEMO_USERS.items():
        table.add_row(username, passwords[username], role)
    console.print(table)
    console.print(f"Open [bold]{base_url}/login[/bold] and sign in as nurse.")
    if clinic.live_session_id is not None:
        console.print(f"Live cockpit: {base_url}/sessions/{clinic.live_session_id}")
    if clinic.note:
        console.print(f"Note: {clinic.note}")
    console.print(
        "Decision support for supervised clinical use only. Ctrl+C stops the demo; the "
        f"database stays in {data_dir}."
    )
    try:
        while server.thread.is_alive():
            server.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.stop()


def register(app: typer.Typer) -> None:
    """Attach ``ketaflow demo``."""
    app.command("demo")(demo)
