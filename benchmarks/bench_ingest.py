"""Load benchmark of vital-sign ingestion and alarm push (a script that prints numbers).

Starts a real ``ketaflow serve`` (uvicorn subprocess, SQLite in a temporary directory, loopback
only), takes ``--sessions`` infusion sessions to ``infusing`` through the API, then runs one
client per session for ``--duration`` seconds. Each client sends one batch per second of six
readings (hr, sbp, dbp, map, spo2, rr) to ``POST /api/v1/sessions/{id}/vitals`` (the batch
form: ``{"readings": [...]}``, one transaction per request), and one WebSocket subscriber per
session listens to ``/api/v1/sessions/{id}/stream``.

The heart rate, SpO2 and respiratory rate each client sends are a virtual patient's bedside-monitor
stream (``ketaflow.sim.virtual_patient``: patient i of a seeded population receiving 0.5 mg/kg
over 40 min, generated before the timed run so that it costs the clients nothing), clipped to
the normal range so that the only alarms are the injected ones; SBP/DBP/MAP are sent every
second at fixed normal values, as from an arterial line, to reach six readings per second.

At known times each client replaces a normal value by one that crosses an alarm threshold
(hr 115 -> HR_HIGH_CONSIDER_STOP, dbp 105 -> DBP_HIGH_CONSIDER_STOP, sbp 185 ->
SBP_HIGH_CONSIDER_STOP); the latency reported is from just before that request is sent to the
moment the subscriber receives the matching ``alarm`` event (so it includes the request's
processing and commit: an upper bound on receipt -> push).

Every reading carries a client-side ``reading_id``. Afterwards the script re-sends a sample of
batches (they must all come back as duplicates), stops the server and counts the rows in the
database: every reading the server acknowledged must be there exactly once.

    PYTHONPATH=src python benchmarks/bench_ingest.py --sessions 100 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

PASSWORD = "benchmark password 1234"
SRC = Path(__file__).resolve().parents[1] / "src"
#: (second of the run, kind, value, unit, alarm code it must raise)
INJECTIONS = (
    (0.2, "hr", 115.0, "/min", "HR_HIGH_CONSIDER_STOP"),
    (0.5, "dbp", 105.0, "mm[Hg]", "DBP_HIGH_CONSIDER_STOP"),
    (0.8, "sbp", 185.0, "mm[Hg]", "SBP_HIGH_CONSIDER_STOP"),
)
NORMAL = (
    ("hr", 78.0, "/min"),
    ("sbp", 124.0, "mm[Hg]"),
    ("dbp", 80.0, "mm[Hg]"),
    ("map", 95.0, "mm[Hg]"),
    ("spo2", 98.0, "%"),
    ("rr", 14.0, "/min"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cli(database_url: str, *args: str, stdin: str | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run(
        [sys.executable, "-m", "ketaflow", *args, "--database", database_url],
        input=stdin,
        text=True,
        check=True,
        env=env,
        capture_output=True,
    )


async def _login(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _post(http: httpx.AsyncClient, path: str, who: dict[str, str], body: Any = None) -> Any:
    r = await http.post(f"/api/v1{path}", json=body, headers=who)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
    return r.json()


async def _make_session(
    http: httpx.AsyncClient,
    n: int,
    desk: dict[str, str],
    nurse: dict[str, str],
    doc: dict[str, str],
) -> int:
    today = datetime.now(UTC).date().isoformat()
    patient = await _post(
        http,
        "/patients",
        desk,
        {
            "mrn": f"BENCH-{n}",
            "given_name": "Load",
            "family_name": f"Test{n}",
            "birth_date": "1980-01-01",
            "sex": "female",
        },
    )
    pid = patient["id"]
    await _post(http, f"/patients/{pid}/weights", nurse, {"weight_kg": 70, "measured_on": today})
    await _post(http, f"/patients/{pid}/screenings", doc, {"findings": {}})
    course = await _post(
        http,
        f"/patients/{pid}/courses",
        doc,
        {
            "indication": "major_depression",
            "protocol": "depression-standard",
            "planned_sessions": 6,
            "goal": {"scale": "madrs", "kind": "response"},
        },
    )
    session = await _post(
        http,
        f"/courses/{course['id']}/sessions",
        desk,
        {"scheduled_for": datetime.now(UTC).isoformat(), "chair": str(n)},
    )
    sid: int = session["id"]
    await _post(http, f"/sessions/{sid}/transitions", desk, {"action": "check_in"})
    await _post(http, f"/sessions/{sid}/transitions", nurse, {"action": "start_pre_assessment"})
    pump = (await _post(http, f"/sessions/{sid}/order", doc, {}))["pump"]
    await _post(http, f"/sessions/{sid}/order/verify", doc)
    await _post(
        http,
        f"/sessions/{sid}/order/double-check",
        nurse,
        {
            "rate_ml_per_h": pump["rate_ml_per_h"],
            "vtbi_ml": pump["vtbi_ml"],
            "concentration_mg_per_ml": pump["concentration_mg_per_ml"],
            "dose_mg": pump["ordered_dose_mg"],
        },
    )
    await _post(
        http,
        f"/sessions/{sid}/pre-assessment",
        nurse,
        {
            "fasting_confirmed": True,
            "consent_confirmed": True,
            "escort_name": "Sam",
            "baseline": {"sbp_mmhg": 124, "dbp_mmhg": 80, "hr_per_min": 78, "spo2_percent": 98},
        },
    )
    state = (await _post(http, f"/sessions/{sid}/start", nurse))["state"]
    assert state == "infusing", state
    return sid


class Results:
    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.sent_batches: list[list[dict[str, Any]]] = []
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.request_s: list[float] = []
        self.inject_sent: dict[tuple[int, str], float] = {}
        self.alarm_seen: dict[tuple[int, str], float] = {}


async def _subscriber(
    port: int, sid: int, token: str, res: Results, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    url = f"ws://127.0.0.1:{port}/api/v1/sessions/{sid}/stream?token={token}"
    async with websockets.connect(url, open_timeout=30, max_queue=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "stream.opened"
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            now = time.perf_counter()
            event = json.loads(raw)
            if event["type"] == "alarm" and event["data"].get("event") == "raised":
                res.alarm_seen.setdefault((sid, event["data"]["code"]), now)


async def _client(
    http: httpx.AsyncClient,
    sid: int,
    who: dict[str, str],
    duration_s: float,
    offset_s: float,
    res: Results,
    virtual: list[dict[str, float]],
) -> None:
    start = time.perf_counter() + offset_s
    seconds = int(duration_s)
    for second in range(seconds):
        await asyncio.sleep(max(0.0, start + second - time.perf_counter()))
        measured = datetime.now(UTC).isoformat()
        values = {k: (v, u) for k, v, u in NORMAL}
        for kind, value in virtual[second].items():
            values[kind] = (value, values[kind][1])
        injected = None
        for frac, kind, value, unit, code in INJECTIONS:
            if second == int(frac * seconds):
                values[kind] = (value, unit)
                injected = code
        batch = [
            {
                "kind": k,
                "value": v,
                "unit": u,
                "measured_at": measured,
                "source": "device",
                "reading_id": f"{sid}-{second}-{k}",
            }
            for k, (v, u) in values.items()
        ]
        res.sent_batches.append(batch)
        t0 = time.perf_counter()
        if injected is not None:
            res.inject_sent[(sid, injected)] = t0
        try:
            r = await http.post(
                f"/api/v1/sessions/{sid}/vitals", json={"readings": batch}, headers=who
            )
        except httpx.HTTPError as exc:
            res.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        res.request_s.append(time.perf_counter() - t0)
        res.statuses[r.status_code] += 1
        if r.status_code == 201:
            res.acknowledged.update(v["reading_id"] for v in r.json()["accepted"])
        else:
            res.errors.append(f"{r.status_code}: {r.text[:200]}")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Normal range the virtual values are clipped to (no alarm may fire before an injection).
_CLIP: dict[str, tuple[float, float]] = {
    "hr": (55.0, 100.0),
    "spo2": (95.0, 100.0),
    "rr": (10.0, 20.0),
}


def _virtual_values(n_sessions: int, seconds: int, seed: int) -> list[list[dict[str, float]]]:
    """Per session and second: hr, spo2 and rr from a virtual patient's monitor stream."""
    from ketaflow.pk.population import PopulationSpec
    from ketaflow.sim.virtual_patient import Reading, SessionConfig, VirtualSession

    spec = PopulationSpec.create(seed=seed)
    config = SessionConfig(artefacts=False, duration_min=max(60.0, seconds / 60.0 + 1.0))
    out: list[list[dict[str, float]]] = []
    for i in range(n_sessions):
        session = VirtualSession.create(spec, i, doses=["0.5 mg/kg over 40 min"], config=config)
        last = {"hr": 78.0, "spo2": 98.0, "rr": 14.0}
        per_second: list[dict[str, float]] = [dict(last) for _ in range(seconds)]
        for event in session.stream():
            if not isinstance(event, Reading):
                continue
            second = int(event.time_s)
            if second >= seconds:
                break
            if event.kind in last:
                lo, hi = _CLIP[event.kind]
                last[event.kind] = min(max(event.value, lo), hi)
            per_second[second] = dict(last)
        out.append(per_second)
    return out


async def _run(
    args: argparse.Namespace, port: int, res: Results, server_pid: int
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=args.sessions + 10, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
    ) as http:
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(8)
        desk_h = await _login(http, "desk1")
        nurse_h = await _login(http, "nurse1")
        doc_h = await _login(http, "doc1")

        async def make_real(n: int) -> int:
            async with sem:
                return await _make_session(http, n, desk_h, nurse_h, doc_h)

        sids = await asyncio.gather(*(make_real(n) for n in range(args.sessions)))
        setup_s = time.perf_counter() - t0
        virtual = _virtual_values(len(sids), int(args.duration), seed=20261121)
        print(f"setup: {len(sids)} sessions infusing in {setup_s:.1f} s")
        token = nurse_h["Authorization"].removeprefix("Bearer ")
        stop = asyncio.Event()
        readies = [asyncio.Event() for _ in sids]
        subs = [
            asyncio.create_task(_subscriber(port, sid, token, res, ev, stop))
            for sid, ev in zip(sids, readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), timeout=60)
        t_start = time.perf_counter()
        cpu_start = _cpu_s(server_pid)
        await asyncio.gather(
            *(
                _client(http, sid, nurse_h, args.duration, (i / len(sids)), res, virtual[i])
                for i, sid in enumerate(sids)
            )
        )
        t_end = time.perf_counter()
        server_cpu_s = _cpu_s(server_pid) - cpu_start
        await asyncio.sleep(2.0)  # let the last alarm events arrive
        stop.set()
        await asyncio.gather(*subs, return_exceptions=True)
        # Retries of already acknowledged batches must all be refused as duplicates.
        retry_dupes = retry_new = 0
        for batch in res.sent_batches[:: max(1, len(res.sent_batches) // 50)]:
            sid = int(batch[0]["reading_id"].split("-")[0])
            r = await http.post(
                f"/api/v1/sessions/{sid}/vitals", json={"readings": batch}, headers=nurse_h
            )
            body = r.json()
            retry_dupes += len(body["duplicates"])
            retry_new += len(body["accepted"])
        return {
            "run_s": t_end - t_start,
            "retry_dupes": retry_dupes,
            "retry_new": retry_new,
            "server_cpu_s": server_cpu_s,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ketaflow-bench-"))
    database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    for user, role in (("desk1", "front_desk"), ("nurse1", "nurse"), ("doc1", "physician")):
        _cli(database_url, "users", "add", user, "--role", role, "--password-stdin", stdin=PASSWORD)
    port = _free_port()
    log = (tmp / "server.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(SRC), "KETAFLOW_SESSION_IDLE_TIMEOUT_MIN": "120"}
    server = subprocess.Popen(
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
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    res = Results()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start; see " + str(tmp / "server.log"))
            time.sleep(0.2)
        extra = asyncio.run(_run(args, port, res, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    with sqlite3.connect(tmp / "bench.sqlite3") as db:
        rows = db.execute(
            "SELECT reading_id FROM vital_signs WHERE reading_id IS NOT NULL"
        ).fetchall()
    stored = [r[0] for r in rows]
    stored_set = set(stored)
    sent = sum(len(b) for b in res.sent_batches)
    latencies = [
        (res.alarm_seen[key] - t) * 1000.0
        for key, t in res.inject_sent.items()
        if key in res.alarm_seen
    ]
    missed_alarms = len(res.inject_sent) - len(latencies)
    run_s = extra["run_s"]
    print(
        f"clients: {args.sessions}, duration {args.duration:g} s, batch endpoint "
        f"(6 readings per request, one request per client per second)"
    )
    print(f"sent readings: {sent}; acknowledged (201): {len(res.acknowledged)}")
    print(
        f"sustained ingest: {len(res.acknowledged) / run_s:.0f} vitals/s "
        f"({sum(res.statuses.values()) / run_s:.0f} requests/s over {run_s:.1f} s)"
    )
    print(
        f"request latency ms: p50 {_pct(res.request_s, 50) * 1000:.1f}, "
        f"p99 {_pct(res.request_s, 99) * 1000:.1f}, max {max(res.request_s) * 1000:.1f}"
    )
    print(
        f"send -> alarm push ms ({len(latencies)} alarms): p50 {_pct(latencies, 50):.1f}, "
        f"p99 {_pct(latencies, 99):.1f}, max {max(latencies, default=float('nan')):.1f}; "
        f"alarms not seen: {missed_alarms}"
    )
    print(
        f"server CPU during the run: {extra['server_cpu_s']:.1f} s in {run_s:.1f} s "
        f"({100 * extra['server_cpu_s'] / run_s:.0f} % of one core; "
        f"{1000 * extra['server_cpu_s'] / max(1, sum(res.statuses.values())):.1f} ms per request); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"HTTP statuses: {dict(res.statuses)}; client errors: {len(res.errors)}")
    for e in res.errors[:5]:
        print("  ", e)
    lost = res.acknowledged - stored_set
    print(
        f"rows in DB: {len(stored)} (distinct {len(stored_set)}); acknowledged but missing: "
        f"{len(lost)}; duplicated rows: {len(stored) - len(stored_set)}"
    )
    print(
        f"retries of acknowledged batches: {extra['retry_dupes']:.0f} refused as duplicates, "
        f"{extra['retry_new']:.0f} stored again"
    )
    return 0 if not lost and len(stored) == len(stored_set) else 1


if __name__ == "__main__":
    raise SystemExit(main())
