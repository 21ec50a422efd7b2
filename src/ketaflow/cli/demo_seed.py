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
        """``method path`` as ``username``; raises :class:`SeedError` on an error status."""
        r = self.http().request(
            method,
            API + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token(username)}"},
        )
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


def has_clinic_endpoints(paths: set[str]) -> bool:
    """Whether the server has the session endpoints of docs/api.md."""
    needed = {
        f"{API}/courses/{{course_id}}/sessions",
        f"{API}/sessions/{{session_id}}",
        f"{API}/sessions/{{session_id}}/start",
    }
    return needed <= paths


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


@dataclass(frozen=True)
class DemoClinic:
    """What :func:`seed_demo` made."""

    patient_id: int
    course_id: int | None
    live_session_id: int | None
    note: str


def seed_demo(
    c: ApiClient, *, now: datetime | None = None, log: Callable[[str], None] = print
) -> DemoClinic:
    """A patient mid-course (3 of 6 sessions done, PHQ-9 recorded) and one session infusing now.

    ``c`` must be able to sign in the :data:`DEMO_USERS`. Returns the ids the demo prints.
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
    for days_ago, kg in ((28, 71.8), (14, 71.2), (0, 70.6)):
        c.call(
            "nurse",
            "POST",
            f"/patients/{pid}/weights",
            {"weight_kg": kg, "measured_on": (now.date() - timedelta(days=days_ago)).isoformat()},
        )
    log(f"patient {pid} (Alex Morgan, DEMO-0001) registered")
    if not has_clinic_endpoints(c.paths()):
        return DemoClinic(
            pid,
            None,
            None,
            "this server has no session endpoints yet: the board stays empty",
        )

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
