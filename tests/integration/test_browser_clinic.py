"""The web app in a real Chromium against a real server (uvicorn in a thread, temp SQLite).

Screenshots of every page go to artifacts/screenshots/ (git-ignored). Skipped only when Debian's
Chromium (/usr/bin/chromium) is missing; Playwright never downloads a browser here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ketaflow.cli.demo import BackgroundServer, create_clinic_app, create_demo_users
from ketaflow.cli.demo_seed import ApiClient, demo_passwords
from ketaflow.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORDS = demo_passwords(random=False)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian Chromium /usr/bin/chromium missing"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("web-db")
    settings = Settings(data_dir=data, database_url=None)
    create_demo_users(settings, PASSWORDS)
    port = _free_port()
    server = BackgroundServer(
        create_clinic_app(settings, migrate_on_startup=False), "127.0.0.1", port
    )
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def api(base_url: str) -> Iterator[ApiClient]:
    client = ApiClient(base_url, PASSWORDS)
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _signed_in(browser: Any, base_url: str, username: str, *, width: int = 1440) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{base_url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def _see(page: Any, locator: Any, timeout_ms: float = 10_000) -> None:
    """Wait for ``locator``; on failure name the page's visible error messages."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        alerts = [a for a in page.locator(".error:visible").all_inner_texts() if a.strip()]
        _shot(page, "failure")
        raise AssertionError(f"not shown on {page.url}; page errors: {alerts}") from None


def test_wrong_password_is_refused_on_the_page(browser: Any, base_url: str) -> None:
    page = browser.new_page()
    page.goto(f"{base_url}/board")
    page.wait_for_url("**/login?next=%2Fboard")
    page.get_by_label("Username").fill("nurse")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Wrong username or password" in alert.inner_text()
    _shot(page, "01-sign-in-refused")
    page.close()


def test_front_desk_registers_a_patient_and_sees_the_chart(browser: Any, base_url: str) -> None:
    page = _signed_in(browser, base_url, "frontdesk")
    assert page.url.endswith("/board")
    _shot(page, "02-board")
    page.get_by_role("link", name="Patients").click()
    page.get_by_label("MRN", exact=True).fill("WEB-0001")
    page.get_by_label("Given name", exact=True).fill("Robin")
    page.get_by_label("Family name", exact=True).fill("Hale")
    page.get_by_label("Birth date").fill("1979-02-03")
    page.get_by_label("Sex").select_option("female")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url("**/patients/*")
    page.get_by_role("heading", name="Robin Hale").wait_for()
    assert "MRN WEB-0001" in page.locator("#pt-demo").inner_text()
    _shot(page, "03-patient-chart-new")
    page.context.close()


def test_admin_sees_users_and_a_verified_audit_chain(browser: Any, base_url: str) -> None:
    page = _signed_in(browser, base_url, "admin")
    assert page.url.endswith("/admin")
    page.locator("#users tbody tr").first.wait_for()
    names = page.locator("#users tbody td:first-child").all_inner_texts()
    assert {"admin", "physician", "nurse", "frontdesk"} <= set(names)
    _see(page, page.locator("#chain.ok"))
    assert "intact" in page.locator("#chain").inner_text()
    _shot(page, "09-admin")
    page.context.close()


def test_unpaired_tablet_shows_nothing_clinical(browser: Any, base_url: str) -> None:
    page = browser.new_page(viewport={"width": 1024, "height": 768}, has_touch=True)
    page.goto(f"{base_url}/kiosk")
    status = page.locator("#k-status")
    page.wait_for_function("document.querySelector('#k-status').textContent.includes('paired')")
    assert "not paired" in status.inner_text()
    assert page.locator("#k-help").is_hidden()
    page.close()


def _wait(predicate: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_full_session_flow_with_monitor_kiosk_and_report(
    browser: Any, base_url: str, api: ApiClient
) -> None:
    from ketaflow.cli.demo import start_monitor

    # Patient, screening, plan: through the pages.
    front = _signed_in(browser, base_url, "frontdesk")
    front.goto(f"{base_url}/patients")
    front.get_by_label("MRN", exact=True).fill("WEB-0002")
    front.get_by_label("Given name", exact=True).fill("Jamie")
    front.get_by_label("Family name", exact=True).fill("Quinn")
    front.get_by_label("Birth date").fill("1990-07-21")
    front.get_by_label("Sex").select_option("male")
    front.get_by_role("button", name="Register").click()
    front.wait_for_url("**/patients/*")
    patient_url = front.url
    front.context.close()

    doc = _signed_in(browser, base_url, "physician")
    doc.goto(patient_url)
    doc.get_by_label("Weight (kg)").fill("72.5")
    doc.get_by_role("button", name="Record weight").click()
    _see(doc, doc.locator("#pt-weight", has_text="72.5 kg"))
    doc.get_by_text("Record a screening").click()
    doc.get_by_role("button", name="Save screening").click()
    _see(doc, doc.locator(".verdict.ok"))
    doc.get_by_text("Plan a course").click()
    doc.get_by_role("button", name="Plan course").click()
    _see(doc, doc.locator("#pt-courses .course"))
    doc.get_by_text("Schedule a session").click()
    doc.get_by_role("button", name="Schedule").click()
    doc.wait_for_url("**/sessions/*")
    session_url = doc.url
    sid = int(session_url.rstrip("/").rsplit("/", 1)[1])

    # Check-in and pre-assessment by the nurse, order by the physician.
    nurse = _signed_in(browser, base_url, "nurse")
    nurse.goto(session_url)
    nurse.get_by_role("button", name="Check in").click()
    nurse.get_by_role("button", name="Start pre-assessment").wait_for(state="visible")
    nurse.get_by_role("button", name="Start pre-assessment").click()
    _see(nurse, nurse.locator("#s-state", has_text="pre assessment"))
    nurse.get_by_text("Pre-assessment checklist").click()
    nurse.get_by_label("Fasting confirmed").check()
    nurse.get_by_label("Consent confirmed").check()
    nurse.get_by_label("Escort's name").fill("Pat")
    nurse.get_by_role("button", name="Save pre-assessment").click()
    _shot(nurse, "04-cockpit-pre-assessment")

    doc.reload()
    _see(doc, doc.locator("#s-state", has_text="pre assessment"))
    doc.get_by_text("Order", exact=True).click()
    doc.get_by_role("button", name="Write order").click()
    doc.locator("#order-view p").first.wait_for()
    doc.get_by_role("button", name="Verify order").click()
    order = api.call("physician", "GET", f"/sessions/{sid}")
    pump = order["order"]["pump"]
    dose_mg = order["order"]["dose_mg"]

    # Independent double check from the nurse's screen, then start.
    nurse.reload()
    _see(nurse, nurse.locator("[data-action=double_check] summary[aria-disabled=false]"))
    nurse.get_by_text("Independent double check").click()
    nurse.get_by_label("Rate mL/h").fill(str(pump["rate_ml_per_h"]))
    nurse.get_by_label("VTBI mL").fill(str(pump["vtbi_ml"]))
    nurse.get_by_label("Concentration mg/mL").fill(str(pump["concentration_mg_per_ml"]))
    nurse.get_by_label("Dose mg").fill(str(dose_mg))
    nurse.get_by_role("button", name="Submit double check").click()
    # A match makes the session ready; the live state event then closes the double-check group
    # (its action is done), so wait for the result to be written, visible or not, and for the
    # state that follows.
    nurse.locator("#dc-form .result", has_text="Matches").wait_for(state="attached", timeout=10_000)
    _see(nurse, nurse.locator("#s-state", has_text="ready"))
    nurse.get_by_role("button", name="Start infusion").click()
    _see(nurse, nurse.locator("#s-state", has_text="infusing"))

    # The simulated bedside monitor posts vitals over HTTP; they appear live.
    start_monitor(base_url, sid, PASSWORDS["nurse"], speed=20.0)
    nurse.wait_for_function("document.querySelector('#latest-hr').textContent.trim() !== '–'")
    _shot(nurse, "05-cockpit-infusing")

    # An alarm (a severe systolic pressure taken by hand) appears and is acknowledged.
    now = api.call("nurse", "GET", f"/sessions/{sid}")  # keeps the nurse token warm
    assert now["state"] == "infusing"
    from datetime import UTC, datetime

    api.call(
        "nurse",
        "POST",
        f"/sessions/{sid}/vitals",
        {
            "readings": [
                {
                    "kind": "sbp",
                    "value": 205,
                    "unit": "mm[Hg]",
                    "measured_at": datetime.now(UTC).isoformat(),
                    "source": "manual",
                }
            ]
        },
    )
    alarm = nurse.locator(".alarm").first
    alarm.wait_for(timeout=10000)
    assert "HIGH" in alarm.locator(".prio").inner_text()
    assert "200" in alarm.locator(".alarm-msg").inner_text()
    _shot(nurse, "06-cockpit-alarm")
    alarm.get_by_role("button", name="Acknowledge").click()
    nurse.locator(".alarm-acked, #alarms[hidden]").first.wait_for(state="attached")

    # Pause, preview a rate (what-if drawn before confirming), resume.
    nurse.get_by_role("button", name="Pause").click()
    _see(nurse, nurse.locator("#s-state", has_text="paused"))
    assert nurse.get_by_role("button", name="Pause").is_disabled()
    assert nurse.locator("#pause-form .why").inner_text().startswith("Not now:")
    nurse.get_by_label("New rate (mg/h)").fill("30")
    nurse.get_by_role("button", name="Preview").click()
    _see(nurse, nurse.locator("#whatif-summary", has_text="Preview"))
    assert nurse.locator("#conc-chart .s-whatif").count() >= 1
    _shot(nurse, "07-cockpit-paused-whatif")
    nurse.get_by_role("button", name="Resume").click()
    _see(nurse, nurse.locator("#s-state", has_text="infusing"))

    # The patient tablet: paired by the nurse, "I need help" reaches the cockpit in < 2 s.
    nurse.get_by_role("button", name="Pair patient tablet").click()
    link = nurse.locator("#kiosk-url").get_attribute("href")
    assert link is not None
    tablet = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True).new_page()
    tablet.goto(link)
    tablet.wait_for_url("**/kiosk")
    tablet.get_by_role("button", name="I need help").wait_for()
    tablet.get_by_text("4", exact=True).first.click()
    _shot(tablet, "08-kiosk")
    t0 = time.monotonic()
    tablet.get_by_role("button", name="I need help").click()
    nurse.locator("#help-banner").wait_for(state="visible", timeout=2000)
    help_latency_s = time.monotonic() - t0
    print(f"kiosk help -> cockpit banner: {help_latency_s:.2f} s")
    assert help_latency_s < 2.0
    _shot(nurse, "10-cockpit-help")

    # Complete, recovery, discharge (physician override: the observation time has not passed).
    nurse.get_by_role("button", name="Complete infusion").click()
    nurse.get_by_role("button", name="Start recovery").wait_for(state="visible")
    _wait(lambda: nurse.get_by_role("button", name="Start recovery").is_enabled())
    nurse.get_by_role("button", name="Start recovery").click()
    doc.reload()
    _see(doc, doc.locator("#s-state", has_text="recovery"))
    doc.get_by_text("Discharge checklist").click()
    doc.get_by_label("Escort present and taking the patient home").check()
    doc.get_by_label("Patient acknowledges: no driving until tomorrow").check()
    doc.get_by_label("Early discharge: physician override reason").fill("browser test")
    doc.get_by_role("button", name="Discharge").click()
    _see(doc, doc.locator("#s-state", has_text="discharged"))

    doc.goto(f"{session_url}/report")
    doc.locator("#r-rates tbody tr").first.wait_for()
    _shot(doc, "11-report")
    pdf = doc.request.get(f"{session_url}/report.pdf")
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.body()[:5] == b"%PDF-"
    doc.context.close()
    nurse.context.close()
    tablet.context.close()


def test_the_demo_clinic_seeds_over_http_and_shows_a_course(
    browser: Any, base_url: str, api: ApiClient
) -> None:
    from ketaflow.cli.demo_seed import seed_demo

    clinic = seed_demo(api, log=lambda _m: None)
    assert clinic.live_session_id is not None
    nurse = _signed_in(browser, base_url, "nurse")
    card = nurse.locator(".chair", has_text="Morgan, Alex")
    _see(nurse, card)
    assert "infusing" in card.inner_text().lower()
    _shot(nurse, "02-board-demo")
    nurse.goto(f"{base_url}/patients/{clinic.patient_id}")
    _see(nurse, nurse.locator("#pt-courses .course"))
    timeline = nurse.locator("#pt-courses .timeline li").all_inner_texts()
    assert len(timeline) == 4
    assert "PHQ-9 19" in timeline[0]
    assert "PHQ-9 8" in timeline[2]
    _see(nurse, nurse.locator("#outcome-chart .threshold-label", has_text="PHQ-9 response"))
    assert "✓ response" in nurse.locator("#pt-courses .outcome").inner_text()
    _shot(nurse, "03-patient-chart-course")
    nurse.context.close()


def test_pages_send_a_restrictive_content_security_policy(base_url: str) -> None:
    r = httpx.get(f"{base_url}/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
