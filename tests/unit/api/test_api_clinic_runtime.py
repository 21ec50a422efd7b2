"""What happens between requests: crash recovery at startup, the background alarm ticker
(escalation), the alarm engines rebuilt after a restart, and the storage of domain snapshots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from clinic_flow import API, Clinic, clinic, patient_with_course, ready_session
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ketaflow.api import create_app
from ketaflow.api.app import recover_sessions, tick_alarms_once
from ketaflow.api.deps import AppContext
from ketaflow.clinical import (
    Actor,
    InfusionPlan,
    OrderVerification,
    PreAssessment,
    Role,
    Session,
    SessionSnapshot,
    VitalSource,
    make_vital_set,
)
from ketaflow.config import Settings
from ketaflow.services.clinic import ClinicRuntime
from ketaflow.services.clock import ManualClock
from ketaflow.services.codec import dumps, loads
from ketaflow.services.users import UserView
from ketaflow.store.tables import AlarmEscalation
from ketaflow.store.types import Role as SRole
from ketaflow.store.uow import UnitOfWork
from service_testkit import FAST_HASHER, PASSWORD, T0

__all__ = ["clinic"]


def _infusing(c: Clinic) -> int:
    _, course_id = patient_with_course(c)
    sid, _ = ready_session(c, course_id)
    c.post(f"/sessions/{sid}/start", c.nurse)
    return sid


def test_a_restart_marks_infusing_sessions_uncertain_until_a_nurse_confirms(
    clinic: Clinic, context: AppContext
) -> None:
    c = clinic
    sid = _infusing(c)
    c.wait(2)
    assert recover_sessions(context) == [sid]
    assert recover_sessions(context) == []  # already uncertain: nothing more to mark
    view = c.get(f"/sessions/{sid}", c.nurse)
    assert (view["state"], view["pump_unconfirmed"]) == ("uncertain", True)
    assert view["transitions"][-1]["by"] == "system"
    refused = c.client.post(f"{API}/sessions/{sid}/pause", headers=c.nurse, json={"reason": "x"})
    assert refused.status_code == 409
    c.wait(1)  # the nurse reads the pump a minute later
    confirmed = c.post(
        f"/sessions/{sid}/confirm-pump",
        c.nurse,
        {"running": False, "volume_delivered_ml": 3.0, "note": "pump stopped in the outage"},
    )
    assert (confirmed["state"], confirmed["pump_unconfirmed"]) == ("paused", False)
    assert confirmed["delivered_mg"] == 3.0  # 3 mL at 1 mg/mL, as the pump showed


def test_the_ticker_escalates_an_unacknowledged_alarm(
    clinic: Clinic, context: AppContext, make_uow: type[UnitOfWork]
) -> None:
    c = clinic
    sid = _infusing(c)
    with c.client.websocket_connect(f"{API}/sessions/{sid}/stream", headers=c.nurse) as ws:
        assert ws.receive_json()["type"] == "stream.opened"
        c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("hr", 115, "/min", "x1"), 201)
        assert ws.receive_json()["type"] == "vitals"
        assert ws.receive_json()["data"]["code"] == "HR_HIGH_CONSIDER_STOP"
        c.wait(2)
        tick_alarms_once(context)
        c.wait(1.1)  # medium priority escalates after 180 s
        assert tick_alarms_once(context) >= 1
        seen = [ws.receive_json() for _ in range(2)]
    escalated = [e for e in seen if e["data"].get("event") == "escalated"]
    assert escalated
    assert escalated[0]["data"]["escalation_level"] == 1
    with make_uow() as uow:
        assert uow.session.execute(select(func.count()).select_from(AlarmEscalation)).scalar_one()


def test_alarms_survive_a_restart_of_the_alarm_engines(clinic: Clinic, context: AppContext) -> None:
    c = clinic
    sid = _infusing(c)
    c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("hr", 115, "/min", "y1"), 201)
    old = next(a for a in c.get(f"/sessions/{sid}/alarms", c.nurse))
    # A new process: the in-memory engines are gone.
    object.__setattr__(context, "clinic", ClinicRuntime(context.clock, context.broker))
    c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("dbp", 105, "mm[Hg]", "y2"), 201)
    alarms = c.get(f"/sessions/{sid}/alarms", c.nurse)
    codes = [a["code"] for a in alarms]
    assert codes.count("DBP_HIGH_CONSIDER_STOP") == 1
    assert codes.count("HR_HIGH_CONSIDER_STOP") == 1
    acked = c.post(f"/alarms/{old['id']}/acknowledge", c.nurse, {"reason": "seen, settled"})
    assert acked["state"] == "resolved"
    again = c.client.post(
        f"{API}/alarms/{old['id']}/acknowledge", headers=c.nurse, json={"reason": "twice"}
    )
    assert again.status_code == 409


def test_a_session_snapshot_is_stored_and_restored_whole() -> None:
    clock = ManualClock(T0)
    nurse, doc = Actor("user:1:n", Role.NURSE), Actor("user:2:d", Role.PHYSICIAN)
    s = Session("7", "MRN-7", clock=clock, scheduled_for=T0, course_id="3")
    s.check_in(nurse)
    s.begin_pre_assessment(nurse)
    vitals = make_vital_set(
        measured_at=T0,
        source=VitalSource.MANUAL,
        hr_per_min=70,
        sbp_mmhg=120,
        dbp_mmhg=80,
        spo2_pct=98,
    )
    s.record_pre_assessment(nurse, PreAssessment(vitals, True, True, True))
    s.record_order_verification(
        doc, OrderVerification("S7-1", "user:2:d", Role.PHYSICIAN, "user:1:n", Role.NURSE, True, T0)
    )
    s.mark_ready(nurse)
    s.start_infusion(nurse, InfusionPlan(52.5, 1.0, 35.0))
    clock.advance(minutes=10)
    s.change_rate(nurse, 40.0, "anxious")
    clock.advance(minutes=5)
    s.pause(nurse, "nausea")
    text = dumps(s.snapshot())
    snapshot = loads(SessionSnapshot, text)
    assert snapshot == s.snapshot()
    restored = Session.restore(snapshot, clock=clock)
    assert restored.state is s.state
    assert restored.infusion is not None
    assert s.infusion is not None
    later = T0 + timedelta(minutes=20)
    assert restored.infusion.dose_delivered_mg(later) == s.infusion.dose_delivered_mg(later)
    assert dumps(restored.snapshot()) == text


def test_the_background_ticker_runs_in_the_app(
    settings: Settings, clock: ManualClock, make_user: Callable[..., UserView]
) -> None:
    app = create_app(settings, clock=clock, password_hasher=FAST_HASHER, alarm_tick_s=0.02)
    with TestClient(app) as client:

        def headers(role: Role) -> dict[str, str]:
            user = make_user(role)
            r = client.post(
                f"{API}/auth/login", json={"username": user.username, "password": PASSWORD}
            )
            client.cookies.clear()
            return {"Authorization": f"Bearer {r.json()['token']}"}

        c = Clinic(
            client,
            clock,
            headers(SRole.FRONT_DESK),
            headers(SRole.NURSE),
            headers(SRole.NURSE),
            headers(SRole.PHYSICIAN),
        )
        sid = _infusing(c)
        c.post(f"/sessions/{sid}/vitals", c.nurse, c.reading("hr", 115, "/min", "t1"), 201)
        with client.websocket_connect(f"{API}/sessions/{sid}/stream", headers=c.nurse) as ws:
            assert ws.receive_json()["type"] == "stream.opened"
            clock.advance(seconds=181)  # medium priority escalates after 180 s
            # Pushed by the ticker, no request involved (time-driven technical alarms such as a
            # lost signal may come first).
            escalated: list[str] = []
            for _ in range(10):
                event = ws.receive_json()
                if event["type"] == "alarm" and event["data"]["event"] == "escalated":
                    escalated.append(event["data"]["code"])
                if "HR_HIGH_CONSIDER_STOP" in escalated:
                    break
    assert "HR_HIGH_CONSIDER_STOP" in escalated
