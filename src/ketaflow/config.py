"""Settings, read from the environment (prefix ``KETAFLOW_``) and built only when asked for.

Nothing is created at import time: :func:`get_settings` builds the object on first use, and
tests and the app factory may pass their own :class:`Settings` instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of ketaflow. Each is documented here and in ``docs/settings.md``."""

    model_config = SettingsConfigDict(env_prefix="KETAFLOW_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Directory for the embedded SQLite database and exported files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to SQLite (WAL) at <data_dir>/ketaflow.sqlite3. "
        "Use postgresql+psycopg://... for multi-user sites.",
    )
    session_ttl_min: float = Field(
        default=720.0, gt=0, description="Absolute lifetime of a login session, minutes."
    )
    session_idle_timeout_min: float = Field(
        default=15.0, gt=0, description="A login session expires after this many idle minutes."
    )
    max_failed_logins: int = Field(
        default=5, ge=1, description="Failed sign-ins in a row before an account is locked."
    )
    lockout_min: float = Field(
        default=15.0, gt=0, description="How long a locked account stays locked, minutes."
    )
    weight_max_age_days: float = Field(
        default=30.0,
        gt=0,
        description="A body weight older than this may not be used to compute a dose.",
    )
    pump_rate_resolution_ml_per_h: float = Field(
        default=0.1, gt=0, description="Smallest rate step the infusion pump accepts, mL/h."
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in :attr:`data_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ketaflow.sqlite3').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
