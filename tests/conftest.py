"""Shared fixtures. Tests use real components; PostgreSQL tests read KETAFLOW_TEST_POSTGRES_URL."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def postgres_url() -> str:
    """URL of a real PostgreSQL server, or skip when none is configured."""
    url = os.environ.get("KETAFLOW_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("KETAFLOW_TEST_POSTGRES_URL not set: PostgreSQL tests skipped")
    return url
