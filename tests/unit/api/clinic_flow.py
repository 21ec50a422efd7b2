"""Helpers for the clinic API tests: a clinic with four signed-in staff, and the steps that take
a patient to a ready session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ketaflow.services.clock import ManualClock
from ketaflow.store.types import Role
from service_testkit import T0

API = "/api/v1"
Headers = dict[str, str]


@dataclass
class Clinic:
    client: TestClient
    clock: ManualClock
    desk: Headers
    nurse: Headers
    nurse2: Headers
    doc: Headers

    def post(self, path: str, who: Headers, body: Any = None, status: int = 200) -> Any:
        response = self.client.post(API + path, json=body, headers=who)
        assert response.status_code == status, response.text
        return response.json()

    def get(self, path: str, who: Headers, status: int = 200) -> Any:
        response = self.client.get(API + path, headers=who)
        assert response.status_code == status, response.text
        return response.json()

    def wait(self, minutes: float) -> None:
        """Let time pass, keeping every sign-in alive (the idle timeout is 15 min)."""
        while minutes > 0:
            step = min(minutes, 5.0)
            self.clock.advance(minutes=step)
            minutes -= step
            for who in (self.desk, self.nurse, self.nurse2, self.doc):
                assert self.client.get(API + "/auth/me", headers=who).status_code == 200

    def reading(self, kind: str, value: float, unit: str, rid: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "value": value,
            "unit": unit,
            "measured_at": self.clock.now().isoformat(),
            "source": "device",
            "reading_id": rid,
        }


@pytest.fixture
def clinic(client: TestClient, clock: ManualClock, auth_headers: Callable[..., Headers]) -> Clinic:
    return Clinic(
        client,
        clock,
        auth_headers(Role.FRONT_DESK),
        auth_headers(Role.NURSE),
        auth_headers(Role.NURSE),
        auth_headers(Role.PHYSICIAN),
    )


def patient_with_course(c: Clinic, mrn: str = "MRN-1") -> tuple[int, int]:
    patient = c.post(
        "/patients",
        c.desk,
        {
            "mrn": mrn,
            "given_name": "Ada",
            "family_name": "Lovelace",
            "birth_date": "1980-05-01",
            "sex": "female",
        },
        201,
    )
    pid = patient["id"]
    today = T0.date().isoformat()
    c.post(f"/patients/{pid}/weights", c.nurse, {"weight_kg": 70, "measured_on": today}, 201)
    c.post(f"/patients/{pid}/heights", c.nurse, {"height_cm": 165, "measured_on": today}, 201)
    c.post(f"/patients/{pid}/allergies", c.nurse, {"substance": "penicillin"}, 201)
    med = c.post(f"/patients/{pid}/medications", c.nurse, {"name": "lamotrigine"}, 201)
    assert "interaction_flags" in med
    screening = c.post(f"/patients/{pid}/screenings", c.doc, {"findings": {}}, 201)
    assert screening["can_schedule"] is True
    course = c.post(
        f"/patients/{pid}/courses",
        c.doc,
        {
            "indication": "major_depression",
            "protocol": "depression-standard",
            "planned_sessions": 6,
            "goal": {"scale": "madrs", "kind": "response"},
        },
        201,
    )
    return pid, course["id"]


def ready_session(c: Clinic, course_id: int) -> tuple[int, dict[str, Any]]:
    session = c.post(
        f"/courses/{course_id}/sessions",
        c.desk,
        {"scheduled_for": T0.isoformat(), "chair": "3"},
        201,
    )
    sid = session["id"]
    assert session["state"] == "scheduled"
    c.post(f"/sessions/{sid}/transitions", c.desk, {"action": "check_in"})
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "start_pre_assessment"})
    order = c.post(f"/sessions/{sid}/order", c.doc, {}, 201)
    assert order["dose_mg"] == pytest.approx(35.0)  # 0.5 mg/kg x 70 kg
    c.post(f"/sessions/{sid}/order/verify", c.doc)
    pump = order["pump"]
    check = c.post(
        f"/sessions/{sid}/order/double-check",
        c.nurse,
        {
            "rate_ml_per_h": pump["rate_ml_per_h"],
            "vtbi_ml": pump["vtbi_ml"],
            "concentration_mg_per_ml": pump["concentration_mg_per_ml"],
            "dose_mg": pump["ordered_dose_mg"],
        },
    )
    assert check["match"] is True
    view = c.post(
        f"/sessions/{sid}/pre-assessment",
        c.nurse,
        {
            "fasting_confirmed": True,
            "consent_confirmed": True,
            "escort_name": "Sam",
            "baseline": {
                "sbp_mmhg": 120,
                "dbp_mmhg": 78,
                "hr_per_min": 72,
                "spo2_percent": 98,
                "rr_per_min": 14,
            },
        },
    )
    assert view["state"] == "ready"
    return sid, order
