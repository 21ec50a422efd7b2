"""Service fixtures, defined once in tests/service_testkit.py."""

from service_testkit import *  # noqa: F403  (pytest finds the fixtures by name in this module)
