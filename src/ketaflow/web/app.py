"""The clinician web app and the patient tablet view, served next to the JSON API.

Pages are server-rendered Jinja2 shells (layout, labels, forms, the chart scales known on the
server) and a small amount of plain JavaScript fills them from the JSON API on the same origin,
authenticated by the HttpOnly session cookie that ``POST /api/v1/auth/login`` sets. The web
layer therefore never reads patient data itself: every read and every action goes through the
API's one authorisation table and its audit log.

The pages are answered by a middleware (:class:`WebMiddleware`) rather than by routes added to
the API application, so the API's route table (which ``create_app`` and its tests check for an
authorisation declaration on every route) stays exactly the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ketaflow import __version__
from ketaflow.clinical.alarms import VitalRule, load_alarm_rules
from ketaflow.clinical.course import Indication
from ketaflow.clinical.scales import scale_definitions
from ketaflow.clinical.screening import COMPUTED_CODES, default_screening_rules
from ketaflow.dosing.library import load_library
from ketaflow.dosing.protocols import list_protocols
from ketaflow.pk.effect import DISSOCIATION_BAND_NG_PER_ML

#: The API's path prefix; everything under it is left to the API application.
API_PREFIX: Final[str] = "/api/"
#: The cookie the API sets at sign-in (``ketaflow.api.security.SESSION_COOKIE``; the web layer
#: may not import the API layer, so the name is restated here and checked by a test).
SESSION_COOKIE: Final[str] = "ketaflow_session"

#: Headers on every page. The CSP allows only this origin's scripts, styles and WebSockets:
#: no inline script, nothing fetched from elsewhere (clinics may be offline).
PAGE_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}

#: Vital-sign charts of the cockpit: code, label, UCUM unit, y range shown.
VITAL_CHARTS: Final[tuple[tuple[str, str, str, float, float], ...]] = (
    ("hr", "Heart rate", "/min", 30.0, 160.0),
    ("sbp", "Systolic BP", "mmHg", 60.0, 220.0),
    ("dbp", "Diastolic BP", "mmHg", 30.0, 140.0),
    ("spo2", "SpO\u2082", "%", 80.0, 100.0),
    ("rr", "Respiratory rate", "/min", 0.0, 40.0),
)

_PKG = files("ketaflow.web")
_log = logging.getLogger(__name__)


def _resource_dir(name: str) -> Path:
    path = Path(str(_PKG.joinpath(name)))
    if not path.is_dir():
        raise RuntimeError(f"ketaflow.web is missing its {name}/ directory at {path}")
    return path


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_resource_dir("templates")),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["version"] = __version__
    return env


@cache
def vital_thresholds() -> dict[str, list[dict[str, Any]]]:
    """Absolute alarm thresholds per vital from the shipped alarm rules, for the charts.

    Returns ``{vital: [{"value": float, "side": "above"|"below", "priority": str, "code": str}]}``;
    relative (baseline) rules are drawn by the server's alarms, not as fixed lines.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in load_alarm_rules().rules:
        if not isinstance(rule, VitalRule) or rule.relative:
            continue
        for side, value in (("above", rule.above), ("below", rule.below)):
            if value is not None:
                out.setdefault(rule.vital.value, []).append(
                    {
                        "value": value,
                        "side": side,
                        "priority": rule.spec.priority.value,
                        "code": rule.spec.code,
                    }
                )
    return out


@cache
def screening_criteria() -> list[dict[str, str]]:
    """The screening questions a clinician answers (code, kind, text), hard stops first.

    The computed criteria (age, weight, BMI, blood pressure, medicines) are left out: the
    service derives them from the record.
    """
    rules = default_screening_rules()
    items = [
        {"code": c.code, "kind": c.kind.value, "text": c.text}
        for c in rules.criteria.values()
        if c.code not in COMPUTED_CODES
    ]
    return sorted(items, key=lambda c: c["kind"] != "hard_stop")


@cache
def scale_catalogue() -> list[dict[str, Any]]:
    """The shipped rating scales: id, names, item count and range, response and remission."""
    return [
        {
            "id": d.id,
            "name": d.name,
            "short_name": d.short_name,
            "n_items": d.n_items,
            "item_min": d.item_min,
            "item_max": d.item_max,
            "total_max": d.n_items * d.item_max,
            "response_min_fall_pct": d.response_min_fall_pct,
            "remission_max_total": d.remission_max_total,
        }
        for d in scale_definitions().values()
    ]


def chart_config() -> dict[str, Any]:
    """What the cockpit's charts need that only the server knows (bands, thresholds, ranges)."""
    return {
        "dissociation_band_ng_per_ml": list(DISSOCIATION_BAND_NG_PER_ML),
        "vitals": [
            {"kind": k, "label": label, "unit": unit, "y_min": lo, "y_max": hi}
            for k, label, unit, lo, hi in VITAL_CHARTS
        ],
        "thresholds": vital_thresholds(),
        "scales": scale_catalogue(),
    }


def _page(
    template: str, request: Request, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    html = _environment().get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _int_param(request: Request, name: str) -> int | None:
    raw = str(request.path_params.get(name, ""))
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def _not_found(request: Request) -> HTMLResponse:
    html = _environment().get_template("not_found.html").render(request=request)
    return HTMLResponse(html, status_code=404, headers=PAGE_HEADERS)


async def home(request: Request) -> Response:
    """``/``: the board (the page itself sends a signed-out visitor to sign-in)."""
    return RedirectResponse("/board", status_code=303, headers=PAGE_HEADERS)


async def login(request: Request) -> Response:
    """Sign-in page."""
    return _page("login.html", request, title="Sign in", page="login")


async def board(request: Request) -> Response:
    """Today's board: chairs, sessions, states, alarms, overdue readings."""
    return _page("board.html", request, title="Today", page="board")


async def patients(request: Request) -> Response:
    """Patient search and registration."""
    return _page("patients.html", request, title="Patients", page="patients")


async def patient(request: Request) -> Response:
    """One patient's chart."""
    patient_id = _int_param(request, "patient_id")
    if patient_id is None:
        return _not_found(request)
    return _page(
        "patient.html",
        request,
        title="Patient",
        page="patient",
        patient_id=patient_id,
        criteria=screening_criteria(),
        indications=[i.value for i in Indication],
        chart_json=json.dumps(chart_config()),
    )


async def cockpit(request: Request) -> Response:
    """The session cockpit."""
    session_id = _int_param(request, "session_id")
    if session_id is None:
        return _not_found(request)
    return _page(
        "cockpit.html",
        request,
        title="Session",
        page="cockpit",
        session_id=session_id,
        chart_json=json.dumps(chart_config()),
        vitals=VITAL_CHARTS,
    )


async def report(request: Request) -> Response:
    """Printable session report."""
    session_id = _int_param(request, "session_id")
    if session_id is None:
        return _not_found(request)
    return _page(
        "report.html",
        request,
        title="Session report",
        page="report",
        session_id=session_id,
        chart_json=json.dumps(chart_config()),
    )


async def kiosk(request: Request) -> Response:
    """The patient tablet (kiosk role): comfort, intensity, nausea, "I need help"."""
    return _page("kiosk.html", request, title="Check-in", page="kiosk")


def _same_origin(request: Request) -> bool:
    """Whether a form POST came from one of our own pages.

    Browsers send ``Sec-Fetch-Site``; our pages' ``Referrer-Policy: no-referrer`` makes their
    ``Origin`` header ``null``, so ``Origin`` is only checked when it names a site.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def kiosk_pair(request: Request) -> Response:
    """Pair a tablet: GET shows the page (token in the URL fragment, never sent to a server);
    POST stores the kiosk token as this tablet's HttpOnly session cookie."""
    if request.method == "GET":
        return _page("kiosk_pair.html", request, title="Pair tablet", page="kiosk_pair")
    if not _same_origin(request):
        return Response("cross-origin pairing refused", status_code=403, headers=PAGE_HEADERS)
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not (20 <= len(token) <= 200) or not token.isascii():
        return _page(
            "kiosk_pair.html",
            request,
            title="Pair tablet",
            page="kiosk_pair",
            error="That pairing code is not valid. Ask the nurse for a new one.",
        )
    response = RedirectResponse("/kiosk", status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        token.strip(),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


#: Where Chromium is looked for, for server-side PDFs (Debian's package first).
CHROMIUM_CANDIDATES: Final[tuple[str, ...]] = ("/usr/bin/chromium", "chromium", "chromium-browser")
PDF_TIMEOUT_S: Final[float] = 60.0


def find_chromium() -> str | None:
    """The Chromium executable for ``--print-to-pdf``, or None."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


_PRINT_POLICY: Final[str] = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "style-src 'unsafe-inline'; img-src data:\">"
)


def _with_print_policy(html: str) -> str:
    """``html`` with :data:`_PRINT_POLICY` as the first thing in its head."""
    lower = html.lower()
    at = lower.find("<head>")
    if at >= 0:
        return html[: at + 6] + _PRINT_POLICY + html[at + 6 :]
    return _PRINT_POLICY + html


async def html_to_pdf(html: str, chromium: str) -> bytes:
    """Print ``html`` (self-contained, no scripts needed) to PDF with headless Chromium.

    The page is read from a local file with a Content-Security-Policy that allows no script
    and no fetch (inline styles and data: images only). Raises
    :class:`RuntimeError` when Chromium fails or takes longer than :data:`PDF_TIMEOUT_S`.
    """
    with tempfile.TemporaryDirectory(prefix="ketaflow-pdf-") as tmp:
        src = Path(tmp) / "report.html"
        out = Path(tmp) / "report.pdf"
        src.write_text(_with_print_policy(html), encoding="utf-8")
        args = [
            chromium,
            "--headless=new",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            src.as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Chromium refuses to run as root with its sandbox; the page is our own report.
            args.insert(1, "--no-sandbox")
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), PDF_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"chromium did not finish within {PDF_TIMEOUT_S:g} s") from None
        if proc.returncode != 0 or not out.is_file():
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
            raise RuntimeError(f"chromium exited with {proc.returncode}: {' '.join(tail)}")
        return out.read_bytes()


async def report_pdf(request: Request) -> Response:
    """The service's session report as a PDF, printed by headless Chromium on the server.

    The HTML comes from ``GET /api/v1/sessions/{id}/report`` called in-process with the
    caller's own credentials, so the API's authorisation and audit apply unchanged.
    """
    session_id = _int_param(request, "session_id")
    if session_id is None:
        return _not_found(request)
    chromium = find_chromium()
    api_app = request.scope.get("ketaflow.api_app")
    if chromium is None or api_app is None:
        return _page(
            "message.html",
            request,
            title="PDF not available",
            page="message",
            status_code=501,
            message="This server cannot make PDFs (Chromium is not installed). Open the "
            "report and use Print, then Save as PDF.",
            back=f"/sessions/{session_id}/report",
        )
    headers = {k: v for k, v in request.headers.items() if k in ("cookie", "authorization")}
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ketaflow.local") as c:
        answer = await c.get(f"/api/v1/sessions/{session_id}/report", headers=headers)
    if answer.status_code == 401:
        return RedirectResponse(
            f"/login?next=/sessions/{session_id}/report", status_code=303, headers=PAGE_HEADERS
        )
    if answer.status_code != 200:
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers=PAGE_HEADERS,
        )
    try:
        pdf = await html_to_pdf(answer.text, chromium)
    except RuntimeError as exc:
        _log.warning("report PDF for session %s failed: %s", session_id, exc)
        return _page(
            "message.html",
            request,
            title="PDF failed",
            page="message",
            status_code=503,
            message="The PDF could not be made just now. Open the report and use Print, then "
            "Save as PDF.",
            back=f"/sessions/{session_id}/report",
        )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="session-{session_id}-report.pdf"',
        },
    )


@cache
def library_view() -> dict[str, Any]:
    """The shipped protocols and drug library, for the read-only administration view."""
    lib = load_library()
    return {
        "protocols": [
            {
                "name": p.name,
                "title": p.title,
                "version": p.version,
                "indication": p.indication,
                "dose_text": p.dose_text,
                "concentration_mg_per_ml": p.standard_concentration_mg_per_ml,
                "sessions": p.course.sessions,
            }
            for p in list_protocols()
        ],
        "library": {
            "version": lib.version,
            "effective_date": lib.effective_date.isoformat(),
            "status": lib.status,
            "care_areas": [
                {
                    "name": ca.name,
                    "label": ca.label,
                    "concentrations_mg_per_ml": list(ca.concentrations_mg_per_ml),
                    "limits": [
                        {
                            "name": lim.name,
                            "soft": _range(lim.soft_min, lim.soft_max)
                            if lim.allowed
                            else "not allowed",
                            "hard": _range(lim.hard_min, lim.hard_max) if lim.allowed else "",
                        }
                        for lim in ca.limits.values()
                    ],
                }
                for ca in lib.care_areas.values()
            ],
        },
    }


def _range(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "–"
    if low is None:
        return f"≤ {high:g}"
    if high is None:
        return f"≥ {low:g}"
    return f"{low:g}–{high:g}"


async def admin(request: Request) -> Response:
    """Administration: users and roles, protocols and drug library (read-only), audit search.

    Protocols and the drug library are the shipped data files (no patient data), rendered here
    because the API shows them to clinical staff only.
    """
    return _page("admin.html", request, title="Administration", page="admin", **library_view())


async def fallback(request: Request) -> Response:
    """Any other path."""
    return _not_found(request)


def build_web_app() -> Starlette:
    """The web pages and their static assets as one ASGI application."""
    routes = [
        Route("/", home),
        Route("/login", login),
        Route("/board", board),
        Route("/patients", patients),
        Route("/patients/{patient_id}", patient),
        Route("/sessions/{session_id}", cockpit),
        Route("/sessions/{session_id}/report", report),
        Route("/sessions/{session_id}/report.pdf", report_pdf),
        Route("/kiosk", kiosk),
        Route("/kiosk/pair", kiosk_pair, methods=["GET", "POST"]),
        Route("/admin", admin),
        Mount("/static", StaticFiles(directory=_resource_dir("static")), name="static"),
        Route("/{path:path}", fallback),
    ]
    return Starlette(routes=routes)


class WebMiddleware:
    """Send every HTTP request outside ``/api/`` to the web app, the rest to the API."""

    def __init__(self, app: ASGIApp, web: ASGIApp | None = None) -> None:
        self.app = app
        self.web = web if web is not None else build_web_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope.get("path", "")).startswith(API_PREFIX):
            # The PDF page calls the API in-process through the whole application.
            api_app = scope.get("app", self.app)
            await self.web({**scope, "ketaflow.api_app": api_app}, receive, send)
            return
        await self.app(scope, receive, send)


def install_web(app: Starlette) -> Starlette:
    """Serve the web app from ``app`` (the API application); returns ``app``.

    Call before the app serves its first request (Starlette builds its middleware stack then).
    """
    app.add_middleware(WebMiddleware)
    return app
