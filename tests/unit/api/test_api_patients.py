"""Patients over HTTP: the vertical slice, with its audit trail seen through the audit API."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from ketaflow.store.types import Role

PATIENT = {
    "mrn": "MRN-5531",
    "family_name": "Okafor",
    "given_name": "Chidi",
    "birth_date": "1979-11-30",
    "sex": "male",
}


def test_register_find_read_edit_and_weigh_a_patient(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    desk, nurse, admin = (auth_headers(r) for r in (Role.FRONT_DESK, Role.NURSE, Role.ADMIN))
    created = client.post("/api/v1/patients", json=PATIENT, headers=desk)
    assert created.status_code == 201
    patient = created.json()
    assert {k: patient[k] for k in PATIENT} == PATIENT
    assert created.headers["cache-control"] == "no-store"

    found = client.get("/api/v1/patients", params={"q": "oka"}, headers=nurse).json()
    assert (found["total"], [p["id"] for p in found["items"]]) == (1, [patient["id"]])
    assert (
        client.get("/api/v1/patients", params={"mrn": "MRN-5531"}, headers=nurse).json()["total"]
        == 1
    )
    assert client.get("/api/v1/patients", params={"q": "zzz"}, headers=nurse).json()["total"] == 0

    edited = client.patch(
        f"/api/v1/patients/{patient['id']}", json={"given_name": "Chidiebere"}, headers=desk
    )
    assert edited.json()["given_name"] == "Chidiebere"
    assert edited.json()["family_name"] == "Okafor"

    weighed = client.post(
        f"/api/v1/patients/{patient['id']}/weights",
        json={"weight_kg": 82.4, "measured_on": "2025-02-28"},
        headers=nurse,
    )
    assert weighed.status_code == 201
    assert weighed.json()["recorded_by_user_id"] is not None
    record = client.get(f"/api/v1/patients/{patient['id']}", headers=nurse).json()
    assert record["latest_weight"]["weight_kg"] == 82.4
    weights = client.get(f"/api/v1/patients/{patient['id']}/weights", headers=nurse).json()
    assert [w["weight_kg"] for w in weights] == [82.4]

    trail = client.get("/api/v1/audit/records", headers=admin).json()
    patient_events = [
        (r["action"], r["entity"])
        for r in trail
        if r["entity"] != "login_session" and r["entity"] != "user"
    ]
    assert patient_events == [
        ("create", "patient"),
        ("query", "patient"),
        ("query", "patient"),
        ("query", "patient"),
        ("update", "patient"),
        ("create", "weight_measurement"),
        ("read", "patient"),
        ("read", "patient"),
    ]
    assert "Okafor" not in str(trail)
    assert "MRN-5531" not in str(trail)
    verified = client.get("/api/v1/audit/verify", headers=admin).json()
    n_records = len(trail) + 1  # reading the trail was itself audited, as an export
    assert verified == {"ok": True, "records": n_records, "first_broken_seq": None, "reason": None}
    exported = client.get(
        "/api/v1/audit/records", params={"after_seq": len(trail)}, headers=admin
    ).json()
    assert [(r["action"], r["entity"]) for r in exported] == [("export", "audit_log")]


def test_weights_outside_the_plausible_range_are_422(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    patient = client.post(
        "/api/v1/patients", json=PATIENT, headers=auth_headers(Role.FRONT_DESK)
    ).json()
    nurse = auth_headers(Role.NURSE)
    for weight_kg in (0, 9.9, 501, "70 lb"):
        response = client.post(
            f"/api/v1/patients/{patient['id']}/weights",
            json={"weight_kg": weight_kg, "measured_on": "2025-02-28"},
            headers=nurse,
        )
        assert response.status_code == 422, weight_kg
        assert response.json()["error"]["fields"][0]["field"] == "weight_kg"
