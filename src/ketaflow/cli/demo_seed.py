"""Seed a demo clinic through the public HTTP API (for ``ketaflow demo`` and the browser tests).

Everything goes through the same endpoints the web app uses, so the demo data passes the same
validation, authorisation and audit as real data. The clinic endpoints (sessions, orders,
scales...) are used only when the server has them (its OpenAPI document lists them); without
them the demo has users and a patient but no sessions, and :func:`seed_demo` says so.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx

API: Final[str] = "/api/v1"

#: The demo's staff accounts: username -> role.
DEMO_USERS: Final[dict[str, str]] = {
    "admin": "admin",
    "physician": "physician",
    "nurse": "nurse",
    "frontdesk": "front_desk",
}

#: PHQ-9 item answers of the demo patient's first three sessions (totals 19, 13, 8): a
#: responder on the way to remission, so the course chart shows both reference lines at work.
PHQ9_HISTORY: Final[tuple[tuple[int, ...], ...]] = (
    (3, 2, 2, 2, 2, 2, 2, 2, 2),
    (2, 2, 1, 2, 1, 2, 1, 2, 0),
    (1, 1, 1, 1, 1, 1, 1, 1, 0),
)


class SeedError(RuntimeError):
    """The server refused a seeding step (the message names the step and the answer)."""


def demo_passwords(*, random: bool) -> dict[str, str]:
    """Passwords for :data:`DEMO_USERS`: memorable on loopback, random otherwise."""
    if random:
        return {u: secrets.token_urlsafe(12) for u in DEMO_USERS}
    return {u: f"{u}-demo-2025" for u in DEMO_USERS}


@dataclass
class ApiClient:
    """One signed-in client per role, over plain HTTP."""

    base_url: str
    passwords: dict[str, str]
    timeout_s: float = 20.0
    _tokens: dict[str, str] = field(default_factory=dict)
    _http: httpx.Client | None = None

    def http(self) -> httpx.Client:
        """The shared connection pool."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout_s)
        return self._http

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()

    def token(self, username: str) -> str:
        """Sign ``username`` in once and keep its token."""
        if username not in self._tokens:
            r = self.http().post(
                f"{API}/auth/login",
                json={"username": username, "password": self.passwords[username]},
            )
            if r.status_code != 200:
                raise SeedError(f"sign-in of {username} failed: HTTP {r.status_code} {r.text}")
            self._tokens[username] = str(r.json()["token"])
        return self._tokens[username]

    def call(self, username: str, method: str, path: str, body: Any = None) -> Any:
        """``method path`` as ``username``; raises :class:`SeedError` on an error status.

        A 401 signs the user in again once: while the demo replays past sessions its clock jumps
        by more than the idle timeout, which ends the sign-in as it would in a real clinic.
        """
        for attempt in (1, 2):
            r = self.http().request(
                method,
                API + path,
                json=body,
                headers={"Authorization": f"Bearer {self.token(username)}"},
            )
            if r.status_code != 401 or attempt == 2:
                break
            self._tokens.pop(username, None)
        if r.status_code >= 400:
            raise SeedError(f"{method} {path} as {username}: HTTP {r.status_code} {r.text}")
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def paths(self) -> set[str]:
        """The paths the server's OpenAPI document lists."""
        r = self.http().get(f"{API}/openapi.json")
        r.raise_for_status()
        return set(r.json().get("paths", {}))


def _pump_entry(order: dict[str, Any]) -> dict[str, float]:
    """The four numbers a nurse reads off the pump for the blind double check."""
    pump = order["pump"]
    return {
        "rate_ml_per_h": float(pump["rate_ml_per_h"]),
        "vtbi_ml": float(pump["vtbi_ml"]),
        "concentration_mg_per_ml": float(pump["concentration_mg_per_ml"]),
        "dose_mg": float(order["dose_mg"]),
    }


def prepare_session(c: ApiClient, session_id: int, *, log: Callable[[str], None]) -> None:
    """Take a scheduled session to ``ready``: check-in, pre-assessment, order, verify, check."""
    s = f"/sessions/{session_id}"
    c.call("frontdesk", "POST", f"{s}/transitions", {"action": "check_in", "reason": "arrived"})
    c.call("nurse", "POST", f"{s}/transitions", {"action": "start_pre_assessment", "reason": ""})
    c.call(
        "nurse",
        "POST",
        f"{s}/pre-assessment",
        {
            "fasting_confirmed": True,
            "consent_confirmed": True,
            "escort_name": "Sam (partner)",
            "baseline": {
                "sbp_mmhg": 126,
                "dbp_mmhg": 79,
                "hr_per_min": 74,
                "spo2_percent": 98,
                "rr_per_min": 14,
            },
        },
    )
    order = c.call("physician", "POST", f"{s}/order", {})
    c.call("physician", "POST", f"{s}/order/verify", {})
    c.call("nurse", "POST", f"{s}/order/double-check", _pump_entry(order))
    log(f"session {session_id} ready")


#: Minutes after the start at which the replayed past sessions record cuff vitals, and the values
#: (a calm session: a modest rise at the end of the infusion, back to baseline in recovery).
_PAST_VITALS: Final[tuple[tuple[float, dict[str, float]], ...]] = (
    (0.0, {"sbp": 126, "dbp": 79, "hr": 74, "spo2": 98, "rr": 14}),
    (10.0, {"sbp": 131, "dbp": 82, "hr": 76, "spo2": 98, "rr": 14}),
    (20.0, {"sbp": 135, "dbp": 85, "hr": 78, "spo2": 97, "rr": 15}),
    (30.0, {"sbp": 138, "dbp": 86, "hr": 79, "spo2": 97, "rr": 15}),
    (40.0, {"sbp": 137, "dbp": 85, "hr": 78, "spo2": 98, "rr": 15}),
    (55.0, {"sbp": 132, "dbp": 83, "hr": 76, "spo2": 98, "rr": 14}),
    (70.0, {"sbp": 129, "dbp": 81, "hr": 75, "spo2": 98, "rr": 14}),
    (85.0, {"sbp": 128, "dbp": 80, "hr": 74, "spo2": 98, "rr": 14}),
    (100.0, {"sbp": 127, "dbp": 79, "hr": 74, "spo2": 98, "rr": 14}),
)
#: The patient's weight at each past session (a slow loss over the course).
_PAST_WEIGHTS_KG: Final[tuple[float, ...]] = (71.8, 71.2, 70.9)
_UNITS: Final[dict[str, str]] = {
    "sbp": "mm[Hg]",
    "dbp": "mm[Hg]",
    "hr": "/min",
    "spo2": "%",
    "rr": "/min",
}


def _post_vitals(c: ApiClient, sid: int, at: datetime, values: dict[str, float]) -> None:
    readings = [
        {
            "kind": kind,
            "value": value,
            "unit": _UNITS[kind],
            "measured_at": at.isoformat(),
            "source": "manual",
        }
        for kind, value in values.items()
    ]
    c.call("nurse", "POST", f"/sessions/{sid}/vitals", {"readings": readings})


def _replay_past_session(
    c: ApiClient,
    patient_id: int,
    weight_kg: float,
    course_id: int,
    when: datetime,
    phq9: tuple[int, ...],
    travel: Callable[[datetime | None], None],
    *,
    log: Callable[[str], None],
) -> None:
    """Run one past session through the whole workflow with the server's clock at ``when``."""
    travel(when - timedelta(minutes=30))
    sess = c.call(
        "nurse",
        "POST",
        f"/courses/{course_id}/sessions",
        {"scheduled_for": when.isoformat(), "chair": "Chair 2"},
    )
    sid = int(sess["id"])
    c.call(
        "nurse",
        "POST",
        f"/patients/{patient_id}/weights",
        {"weight_kg": weight_kg, "measured_on": when.date().isoformat()},
    )
    prepare_session(c, sid, log=log)
    c.call(
        "nurse",
        "POST",
        f"/sessions/{sid}/scales",
        {"scale": "phq9", "items": list(phq9), "timing": "pre"},
    )
    travel(when)
    c.call("nurse", "POST", f"/sessions/{sid}/start", {})
    for minutes, values in _PAST_VITALS:
        at = when + timedelta(minutes=minutes)
        travel(at)
        if minutes == 40.0:
            c.call(
                "nurse",
                "POST",
                f"/sessions/{sid}/transitions",
                {"action": "complete", "reason": "infusion finished"},
            )
            c.call(
                "nurse",
                "POST",
                f"/sessions/{sid}/transitions",
                {"action": "start_recovery", "reason": ""},
            )
        _post_vitals(c, sid, at, values)
        if minutes == 40.0:
            # The protocol's dissociation scale at the end of the infusion (CADSS-6, mild).
            c.call(
                "nurse",
                "POST",
                f"/sessions/{sid}/scales",
                {"scale": "cadss6", "items": [1, 1, 0, 1, 0, 0]},
            )
    c.call(
        "nurse",
        "POST",
        f"/sessions/{sid}/scales",
        {"scale": "modified_aldrete", "items": [2, 2, 2, 2, 2]},
    )
    # As staff would: every alarm of the session (e.g. PHQ-9 item 9) is reviewed before discharge.
    for alarm in c.call("nurse", "GET", f"/sessions/{sid}").get("active_alarms") or []:
        if not alarm.get("acknowledged_at"):
            c.call(
                "physician",
                "POST",
                f"/alarms/{alarm['id']}/acknowledge",
                {"reason": "reviewed with the patient; safety plan in place"},
            )
    c.call(
        "nurse",
        "POST",
        f"/sessions/{sid}/discharge",
        {"escort_confirmed": True, "no_driving_acknowledged": True},
    )
    log(f"past session {sid} replayed on {when:%Y-%m-%d} (PHQ-9 {sum(phq9)})")


@dataclass(frozen=True)
class DemoClinic:
    """What :func:`seed_demo` made."""

    patient_id: int
    course_id: int | None
    live_session_id: int | None
    note: str


def seed_demo(
    c: ApiClient,
    *,
    now: datetime | None = None,
    log: Callable[[str], None] = print,
    travel: Callable[[datetime | None], None] | None = None,
) -> DemoClinic:
    """A patient mid-course (3 of 6 sessions done, PHQ-9 recorded) and one session infusing now.

    ``c`` must be able to sign in the :data:`DEMO_USERS`. Returns the ids the demo prints.
    With ``travel`` (sets the server's clock to an instant, or back to the present with None),
    the past sessions are run through the real workflow at their own times, so their doses,
    vitals, observation times and discharge criteria are real; without it they are compressed
    into seconds and discharged with a physician override that says so.
    """
    now = now or datetime.now(UTC)
    patient = c.call(
        "frontdesk",
        "POST",
        "/patients",
        {
            "mrn": "DEMO-0001",
            "given_name": "Alex",
            "family_name": "Morgan",
            "birth_date": "1984-05-17",
            "sex": "female",
        },
    )
    pid = int(patient["id"])
    # With a movable clock the history is entered as it happened: each past session records
    # that day's weight first (an order may not use a weight measured after it).
    weights = () if travel is not None else ((28, 71.8), (14, 71.2), (0, 70.6))
    for days_ago, kg in weights:
        c.call(
            "nurse",
            "POST",
            f"/patients/{pid}/weights",
            {"weight_kg": kg, "measured_on": (now.date() - timedelta(days=days_ago)).isoformat()},
        )
    log(f"patient {pid} (Alex Morgan, DEMO-0001) registered")
    c.call(
        "physician",
        "POST",
        f"/patients/{pid}/screenings",
        {"findings": {}, "notes": "demo: no contraindication found"},
    )
    course = c.call(
        "physician",
        "POST",
        f"/patients/{pid}/courses",
        {
            "indication": "major_depression",
            "protocol": "depression-standard",
            "planned_sessions": 6,
            "goal": {"scale": "phq9", "kind": "response"},
        },
    )
    course_id = int(course["id"])
    for i, items in enumerate(PHQ9_HISTORY):
        when = now - timedelta(days=3 * (len(PHQ9_HISTORY) - i) + 1)  # twice a week
        if travel is not None:
            weight_kg = _PAST_WEIGHTS_KG[i]
            _replay_past_session(c, pid, weight_kg, course_id, when, items, travel, log=log)
            continue
        sess = c.call(
            "nurse",
            "POST",
            f"/courses/{course_id}/sessions",
            {"scheduled_for": when.isoformat(), "chair": "Chair 2"},
        )
        sid = int(sess["id"])
        prepare_session(c, sid, log=log)
        c.call(
            "nurse",
            "POST",
            f"/sessions/{sid}/scales",
            {"scale": "phq9", "items": list(items), "timing": "pre"},
        )
        c.call("nurse", "POST", f"/sessions/{sid}/start", {})
        c.call(
            "nurse", "POST", f"/sessions/{sid}/transitions", {"action": "complete", "reason": ""}
        )
        c.call(
            "nurse",
            "POST",
            f"/sessions/{sid}/transitions",
            {"action": "start_recovery", "reason": ""},
        )
        c.call(
            "physician",
            "POST",
            f"/sessions/{sid}/discharge",
            {
                "escort_confirmed": True,
                "no_driving_acknowledged": True,
                "override": {"reason": "demo history: session compressed in time"},
            },
        )
        log(f"past session {sid} done (PHQ-9 {sum(items)})")
    if travel is not None:
        travel(None)
        c.call(
            "nurse",
            "POST",
            f"/patients/{pid}/weights",
            {"weight_kg": 70.6, "measured_on": now.date().isoformat()},
        )

    live = c.call(
        "nurse",
        "POST",
        f"/courses/{course_id}/sessions",
        {"scheduled_for": now.isoformat(), "chair": "Chair 1"},
    )
    live_id = int(live["id"])
    prepare_session(c, live_id, log=log)
    c.call("nurse", "POST", f"/sessions/{live_id}/start", {})
    log(f"session {live_id} infusing now")
    return DemoClinic(pid, course_id, live_id, "")
