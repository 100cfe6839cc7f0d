"""Models for the circuit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trained_models import SMALL_RECIPE, induction_model as _induction_model  # noqa: E402


@pytest.fixture(scope="session")
def induction_model():
    """tests/test_trained_circuit.py's 2-layer induction model (cached on disk after the first training)."""
    return _induction_model()


@pytest.fixture(scope="session")
def small_induction_model():
    """One head per layer: a previous-token head in layer 0, an induction head in layer 1 (tests/trained_models.py)."""
    return _induction_model(SMALL_RECIPE)
