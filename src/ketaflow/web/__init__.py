"""ketaflow.web: the clinician web app and the patient tablet view (see docs/web.md)."""

from __future__ import annotations

from ketaflow.web.app import WebMiddleware, build_web_app, chart_config, install_web

__all__ = ["WebMiddleware", "build_web_app", "chart_config", "install_web"]
