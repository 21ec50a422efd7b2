"""Fixtures of the dosing tests (helpers live in dosing_helpers.py)."""

from __future__ import annotations

import pytest
from dosing_helpers import make_order

from ketaflow.dosing.orders import DoseOrder


@pytest.fixture
def standard_order() -> DoseOrder:
    """0.5 mg/kg over 40 min for a 70 kg man."""
    return make_order(order_id="o-standard", patient_ref="p-1")
