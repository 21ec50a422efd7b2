"""The HTTP API: ``create_app(settings)`` builds it; nothing is built at import time."""

from __future__ import annotations

from ketaflow.api.app import create_app

__all__ = ["create_app"]
