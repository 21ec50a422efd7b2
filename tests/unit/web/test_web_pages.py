"""The web app's pages, assets and tablet pairing, served next to the API (no browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ketaflow.api.app import create_app, served_routes
from ketaflow.api.security import SESSION_COOKIE as API_COOKIE
from ketaflow.cli.demo import create_clinic_app
from ketaflow.cli.demo_seed import DEMO_USERS, demo_passwords
from ketaflow.config import Settings
from ketaflow.pk.effect import DISSOCIATION_BAND_NG_PER_ML
from ketaflow.web.app import SESSION_COOKIE, chart_config, vital_thresholds

PAGES = [
    "/login",
    "/board",
    "/patients",
    "/patients/7",
    "/sessions/3",
    "/sessions/3/report",
    "/kiosk",
    "/kiosk/pair",
    "/admin",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=None)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_clinic_app(settings), base_url="http://testserver") as c:
        yield c


@pytest.mark.parametrize("path", PAGES)
def test_each_page_is_html_with_a_strict_policy_and_no_inline_script(
    client: TestClient, path: str
) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
    scripts = re.findall(r"<script\b[^>]*>", r.text)
    assert scripts, "every page has its module"
    assert all('src="/static/' in s for s in scripts)
    assert 'lang="en"' in r.text
    assert '<main id="main"' in r.text


@pytest.mark.parametrize("path", PAGES)
def test_every_asset_a_page_names_is_served(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_modules_import_only_shipped_modules(client: TestClient) -> None:
    js_dir = Path(__file__).resolve().parents[3] / "src" / "ketaflow" / "web" / "static" / "js"
    for js in js_dir.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', js.read_text(encoding="utf-8")):
            assert (js_dir / name).is_file(), f"{js.name} imports missing {name}"
            assert client.get(f"/static/js/{name}").status_code == 200


@pytest.mark.parametrize("path", ["/nope", "/patients/abc", "/sessions/0", "/sessions/-1"])
def test_unknown_pages_are_404_html(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "Page not found" in r.text


def test_the_api_still_answers_its_own_paths(client: TestClient) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    r = client.get("/api/v1/no-such-endpoint")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_the_pdf_report_needs_a_signed_in_user(client: TestClient) -> None:
    r = client.get("/sessions/5/report.pdf", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=/sessions/5/report")


def test_root_goes_to_the_board(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/board"


def test_the_web_app_adds_no_route_to_the_api(settings: Settings) -> None:
    plain = {(r.path, r.methods) for r in served_routes(create_app(settings))}
    with_web = {(r.path, r.methods) for r in served_routes(create_clinic_app(settings))}
    assert plain == with_web


def test_the_cookie_name_matches_the_api() -> None:
    assert SESSION_COOKIE == API_COOKIE


def test_pairing_stores_the_kiosk_token_as_an_httponly_cookie(client: TestClient) -> None:
    token = "k" * 43
    r = client.post(
        "/kiosk/pair",
        data={"token": token},
        headers={"origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/kiosk"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={token}")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()


@pytest.mark.parametrize(
    "headers",
    [{"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site", "origin": "null"}],
)
def test_pairing_from_another_site_is_refused(client: TestClient, headers: dict[str, str]) -> None:
    r = client.post(
        "/kiosk/pair", data={"token": "k" * 43}, headers=headers, follow_redirects=False
    )
    assert r.status_code == 403
    assert "set-cookie" not in r.headers


def test_pairing_from_our_own_page_is_accepted(client: TestClient) -> None:
    headers = {"sec-fetch-site": "same-origin", "origin": "null"}
    r = client.post(
        "/kiosk/pair", data={"token": "k" * 43}, headers=headers, follow_redirects=False
    )
    assert r.status_code == 303


@pytest.mark.parametrize("token", ["", "short", "x" * 201, "\u00e9" * 30])
def test_a_malformed_pairing_code_is_refused_with_a_message(client: TestClient, token: str) -> None:
    r = client.post("/kiosk/pair", data={"token": token}, headers={"origin": "http://testserver"})
    assert r.status_code == 200
    assert "not valid" in r.text
    assert "set-cookie" not in r.headers


def test_chart_thresholds_come_from_the_alarm_rules() -> None:
    spo2 = vital_thresholds()["spo2"]
    assert {"value": 92.0, "side": "below", "priority": "high", "code": "SPO2_LOW"} in spo2
    assert any(t["value"] == 180.0 and t["side"] == "above" for t in vital_thresholds()["sbp"])
    config = chart_config()
    assert config["dissociation_band_ng_per_ml"] == list(DISSOCIATION_BAND_NG_PER_ML)
    phq9 = next(s for s in config["scales"] if s["id"] == "phq9")
    assert phq9["total_max"] == 27
    assert phq9["remission_max_total"] == 4


def test_demo_passwords_are_memorable_on_loopback_and_random_elsewhere() -> None:
    fixed = demo_passwords(random=False)
    assert fixed == demo_passwords(random=False)
    assert set(fixed) == set(DEMO_USERS)
    assert all(len(p) >= 12 for p in fixed.values())
    assert demo_passwords(random=True) != demo_passwords(random=True)


@pytest.mark.parametrize(
    ("html", "head_first"),
    [("<html><head><title>r</title></head></html>", True), ("<p>bare</p>", False)],
)
def test_the_printed_report_forbids_scripts_and_fetches(html: str, head_first: bool) -> None:
    from ketaflow.web.app import _with_print_policy

    out = _with_print_policy(html)
    assert "default-src 'none'" in out
    assert "script-src" not in out  # default-src 'none' covers scripts
    if head_first:
        assert out.startswith('<html><head><meta http-equiv="Content-Security-Policy"')
    else:
        assert out.endswith(html)
