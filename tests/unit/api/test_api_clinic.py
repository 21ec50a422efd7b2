"""The clinical happy path through the HTTP API, and the main refusals (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from clinic_flow import API, Clinic, clinic, patient_with_course, ready_session

from service_testkit import T0

__all__ = ["clinic"]  # the fixture, re-exported for pytest


def test_the_whole_clinical_path(clinic: Clinic) -> None:
    c = clinic
    pid, course_id = patient_with_course(c)
    sid, order = ready_session(c, course_id)
    kiosk = {
        "Authorization": "Bearer "
        + c.post(f"/sessions/{sid}/kiosk-token", c.nurse, status=201)["token"]
    }
    c.post(f"/sessions/{sid}/checkins", kiosk, {"comfort": 8, "anxiety": 3}, 201)

    view = c.get(f"/sessions/{sid}", c.nurse)
    start = next(a for a in view["allowed_actions"] if a["action"] == "start")
    assert start == {"action": "start", "enabled": True, "reason": ""}
    assert c.post(f"/sessions/{sid}/start", c.nurse)["state"] == "infusing"

    with c.client.websocket_connect(f"{API}/sessions/{sid}/stream", headers=c.nurse) as ws:
        assert ws.receive_json()["type"] == "stream.opened"
        c.wait(5)
        accepted = c.post(
            f"/sessions/{sid}/vitals",
            c.nurse,
            {
                "readings": [
                    c.reading("sbp", 185, "mm[Hg]", "r1"),
                    c.reading("hr", 80, "/min", "r2"),
                ]
            },
            201,
        )
        assert len(accepted["accepted"]) == 2
        first = ws.receive_json()
        assert first["type"] == "vitals"
        assert [r["reading_id"] for r in first["data"]["readings"]] == ["r1", "r2"]
        alarm = ws.receive_json()
        assert alarm["type"] == "alarm"
        assert alarm["data"]["event"] == "raised"

    again = c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("hr", 81, "/min", "r2"), 201)
    assert again == {"accepted": [], "duplicates": ["r2"], "artefact_suspect": 0}
    impossible = c.client.post(
        f"{API}/sessions/{sid}/vitals",
        headers=c.nurse,
        json=c.reading("spo2", 140, "%", "r3"),
    )
    assert impossible.status_code == 422
    assert impossible.json()["error"]["fields"][0]["field"] == "vitals.spo2"

    alarms = c.get(f"/sessions/{sid}/alarms", c.nurse)
    sbp = next(a for a in alarms if a["code"] == "SBP_HIGH_CONSIDER_STOP")
    assert sbp["state"] == "active"
    acked = c.post(
        f"/alarms/{sbp['id']}/acknowledge",
        c.nurse,
        {"reason": "repeat cuff reading", "action_taken": "assess_patient"},
    )
    assert acked["state"] in ("acknowledged", "resolved")

    c.post(f"/sessions/{sid}/pause", c.nurse, {"reason": "patient anxious"})
    what_if = c.post(f"/sessions/{sid}/what-if", c.nurse, {"pause_min": 5})
    assert len(what_if["times_min"]) == len(what_if["current"]["times_min"])
    assert c.post(f"/sessions/{sid}/resume", c.nurse, {"reason": "settled"})["state"] == (
        "infusing"
    )
    c.wait(5)
    rate = c.post(f"/sessions/{sid}/rate", c.nurse, {"rate_mg_per_h": 40, "reason": "tolerance"})
    assert rate["current_rate_mg_per_h"] == 40
    prediction = c.get(f"/sessions/{sid}/prediction?horizon_min=30", c.nurse)
    assert prediction["cp_now_ng_per_ml"] > 0
    fractions = prediction["dissociation_fraction"]
    assert len(fractions) == len(prediction["times_min"])
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert prediction["delivered_mg"] == pytest.approx(rate["delivered_mg"], rel=1e-6)

    c.wait(30)
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "complete"})
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "start_recovery"})
    c.post(f"/sessions/{sid}/scales", c.nurse, {"scale": "madrs", "items": [2] * 10}, 201)
    early = c.client.post(
        f"{API}/sessions/{sid}/discharge",
        headers=c.nurse,
        json={"escort_confirmed": True, "no_driving_acknowledged": True},
    )
    assert early.status_code == 409  # observation time not yet met, no override
    c.wait(61)
    aldrete = c.post(
        f"/sessions/{sid}/scales",
        c.nurse,
        {"scale": "modified_aldrete", "items": [2, 2, 2, 2, 2]},
        201,
    )
    assert aldrete["total"] == 10
    c.post(
        f"/sessions/{sid}/vitals",
        c.nurse,
        {
            "readings": [
                c.reading("sbp", 122, "mm[Hg]", "d1"),
                c.reading("dbp", 78, "mm[Hg]", "d2"),
                c.reading("hr", 74, "/min", "d3"),
                c.reading("spo2", 98, "%", "d4"),
            ]
        },
        201,
    )
    done = c.post(
        f"/sessions/{sid}/discharge",
        c.nurse,
        {"escort_confirmed": True, "no_driving_acknowledged": True},
    )
    assert done["state"] == "discharged"
    assert done["discharge"]["overridden"] is False
    assert [t["to"] for t in done["transitions"]] == [
        "checked_in",
        "pre_assessment",
        "ready",
        "infusing",
        "paused",
        "infusing",
        "infusion_complete",
        "recovery",
        "discharged",
    ]
    report = c.client.get(f"{API}/sessions/{sid}/report", headers=c.doc)
    assert report.status_code == 200
    assert "text/html" in report.headers["content-type"]
    for text in (
        "Lovelace",
        order["order_ref"],
        "SBP_HIGH_CONSIDER_STOP",
        "repeat cuff reading",
        "tolerance",
        "modified_aldrete",
    ):
        assert text in report.text
    course = c.get(f"/courses/{course_id}", c.doc)
    assert course["sessions"][0]["delivered_mg"] > 0
    board = c.get(f"/sessions?date={T0.date().isoformat()}", c.desk)
    assert [b["id"] for b in board] == [sid]
    record = c.get(f"/patients/{pid}/clinical", c.doc)
    assert record["latest_screening"]["can_schedule"] is True


def test_a_hard_stop_blocks_the_course(clinic: Clinic) -> None:
    c = clinic
    pid = c.post(
        "/patients",
        c.desk,
        {
            "mrn": "HS-1",
            "given_name": "A",
            "family_name": "B",
            "birth_date": "1970-01-01",
            "sex": "male",
        },
        201,
    )["id"]
    result = c.post(f"/patients/{pid}/screenings", c.doc, {"findings": {"pregnancy": True}}, 201)
    assert result["can_schedule"] is False
    assert [f["code"] for f in result["hard_stops"]] == ["pregnancy"]
    refused = c.client.post(
        f"{API}/patients/{pid}/courses",
        headers=c.doc,
        json={
            "indication": "major_depression",
            "protocol": "depression-standard",
            "planned_sessions": 6,
            "goal": {"scale": "madrs", "kind": "response"},
        },
    )
    assert refused.status_code == 409


def test_hard_limit_mismatch_and_illegal_transition_are_refused(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c)
    sid = c.post(
        f"/courses/{course_id}/sessions",
        c.desk,
        {"scheduled_for": T0.isoformat(), "chair": "1"},
        201,
    )["id"]
    illegal = c.client.post(
        f"{API}/sessions/{sid}/transitions", headers=c.nurse, json={"action": "complete"}
    )
    assert illegal.status_code == 409
    assert illegal.json()["error"]["code"] == "invalid_state"
    c.post(f"/sessions/{sid}/transitions", c.desk, {"action": "check_in"})
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "start_pre_assessment"})
    hard = c.client.post(
        f"{API}/sessions/{sid}/order",
        headers=c.doc,
        json={
            "dose_text": "5 mg/kg over 40 min",
            "override": {"reason": "physician insists on this dose"},
        },
    )
    assert hard.status_code == 409
    assert hard.json()["error"]["code"] == "hard_limit"
    order = c.post(f"/sessions/{sid}/order", c.doc, {}, 201)
    c.post(f"/sessions/{sid}/order/verify", c.doc)
    pump = order["pump"]
    blocked = c.post(
        f"/sessions/{sid}/order/double-check",
        c.nurse,
        {
            "rate_ml_per_h": pump["rate_ml_per_h"] * 10,
            "vtbi_ml": pump["vtbi_ml"],
            "concentration_mg_per_ml": pump["concentration_mg_per_ml"],
            "dose_mg": pump["ordered_dose_mg"],
        },
    )
    assert blocked["match"] is False
    assert [m["field"] for m in blocked["mismatches"]] == ["rate_ml_per_h"]
    c.post(
        f"/sessions/{sid}/pre-assessment",
        c.nurse,
        {
            "fasting_confirmed": True,
            "consent_confirmed": True,
            "escort_name": "Sam",
            "baseline": {"sbp_mmhg": 120, "dbp_mmhg": 78, "hr_per_min": 72, "spo2_percent": 98},
        },
    )
    start = c.client.post(f"{API}/sessions/{sid}/start", headers=c.nurse)
    assert start.status_code == 409
    view = c.get(f"/sessions/{sid}", c.nurse)
    assert view["state"] == "pre_assessment"
    action = next(a for a in view["allowed_actions"] if a["action"] == "start")
    assert action["enabled"] is False
    assert action["reason"]


def test_early_discharge_needs_a_physician_override(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c)
    sid, _ = ready_session(c, course_id)
    c.post(f"/sessions/{sid}/start", c.nurse)
    c.wait(40)
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "complete"})
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "start_recovery"})
    body = {"escort_confirmed": True, "no_driving_acknowledged": True}
    assert (
        c.client.post(f"{API}/sessions/{sid}/discharge", headers=c.nurse, json=body).status_code
        == 409
    )
    by_nurse = c.client.post(
        f"{API}/sessions/{sid}/discharge",
        headers=c.nurse,
        json={**body, "override": {"reason": "transfer to ward"}},
    )
    assert by_nurse.status_code == 403
    done = c.post(
        f"/sessions/{sid}/discharge", c.doc, {**body, "override": {"reason": "transfer to ward"}}
    )
    assert done["discharge"]["overridden"] is True
    assert done["state"] == "discharged"


def test_need_help_raises_a_high_alarm_and_phq9_item9_is_flagged(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c)
    sid, _ = ready_session(c, course_id)
    c.post(f"/sessions/{sid}/start", c.nurse)
    c.post(f"/sessions/{sid}/checkins", c.nurse, {"need_help": True}, 201)
    c.post(
        f"/sessions/{sid}/scales",
        c.nurse,
        {"scale": "phq9", "items": [1, 1, 1, 1, 1, 1, 1, 1, 1]},
        201,
    )
    alarms = {a["code"]: a for a in c.get(f"/sessions/{sid}/alarms", c.nurse)}
    assert alarms["PATIENT_HELP_REQUEST"]["priority"] == "high"
    assert alarms["PHQ9_ITEM9_SUICIDE_RISK"]["priority"] == "high"


def test_rate_changes_are_checked_against_the_drug_library(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c)
    sid, _ = ready_session(c, course_id)
    c.post(f"/sessions/{sid}/start", c.nurse)
    hard = c.client.post(
        f"{API}/sessions/{sid}/rate",
        headers=c.doc,
        json={
            "rate_mg_per_h": 5000,
            "reason": "typo",
            "override": {"reason": "deliberate physician decision"},
        },
    )
    assert hard.status_code == 409
    assert hard.json()["error"]["code"] == "hard_limit"
    rates = [r["rate_mg_per_h"] for r in c.get(f"/sessions/{sid}", c.nurse)["rate_history"]]
    assert 5000 not in rates
    c.wait(1)
    assert c.get(f"/sessions/{sid}", c.nurse)["state"] == "infusing"


def test_the_default_order_follows_the_protocols_titration(clinic: Clinic) -> None:
    c = clinic
    pid, _ = patient_with_course(c, mrn="TIT-1")
    course = c.post(
        f"/patients/{pid}/courses",
        c.doc,
        {
            "indication": "major_depression",
            "protocol": "depression-titration",
            "planned_sessions": 6,
            "goal": {"scale": "madrs", "kind": "response"},
        },
        201,
    )
    doses = []
    for n in (1, 2):
        sid = c.post(
            f"/courses/{course['id']}/sessions",
            c.desk,
            {"scheduled_for": T0.isoformat(), "chair": str(n)},
            201,
        )["id"]
        c.post(f"/sessions/{sid}/transitions", c.desk, {"action": "check_in"})
        c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "start_pre_assessment"})
        order = c.post(f"/sessions/{sid}/order", c.doc, {}, 201)
        doses.append((order["dose_mg"], order["titration"]))
        c.post(
            f"/sessions/{sid}/transitions",
            c.nurse,
            {"action": "abort", "reason": "vomiting before the infusion"},
        )
    assert doses[0] == (pytest.approx(35.0), None)  # 0.5 mg/kg x 70 kg, first session
    dose, titration = doses[1]
    assert dose == pytest.approx(28.0)  # not tolerated: one step (0.1 mg/kg) lower
    assert (titration["action"], titration["rule_id"]) == ("lower", "lower-if-not-tolerated")


def test_text_with_nul_characters_is_refused_before_the_database(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c, mrn="NUL-1")
    refused = c.client.post(
        f"{API}/courses/{course_id}/sessions",
        headers=c.desk,
        json={"scheduled_for": T0.isoformat(), "chair": "3\x00"},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_input"


def test_vital_sign_refusals(clinic: Clinic) -> None:
    c = clinic
    _, course_id = patient_with_course(c, mrn="VIT-1")
    sid, _ = ready_session(c, course_id)
    c.post(f"/sessions/{sid}/start", c.nurse)
    path = f"{API}/sessions/{sid}/vitals"
    cases = {
        "unit": c.reading("sbp", 120, "kPa", "u1"),
        "kind": c.reading("glucose", 5, "mmol/L", "u2"),
        "twice": {
            "readings": [c.reading("hr", 70, "/min", "u3"), c.reading("hr", 71, "/min", "u3")]
        },
    }
    for name, body in cases.items():
        response = c.client.post(path, headers=c.nurse, json=body)
        assert response.status_code == 422, name
    # Nothing of the refused requests was stored: only the manual baseline is there.
    assert {v["source"] for v in c.get(f"/sessions/{sid}/vitals", c.nurse)} == {"manual"}
    implausible = c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("hr", 20, "/min", "u4"), 201)
    assert implausible["accepted"][0]["artefact_suspect"] is True
    c.post(f"/sessions/{sid}/transitions", c.nurse, {"action": "stop", "reason": "nausea"})
    c.post(f"/sessions/{sid}/transitions", c.doc, {"action": "abort", "reason": "to hospital"})
    ended = c.client.post(path, headers=c.nurse, json=c.reading("hr", 70, "/min", "u5"))
    assert ended.status_code == 409
