"""Models for the circuit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trained_models import induction_model as _induction_model  # noqa: E402


@pytest.fixture(scope="session")
def induction_model():
    """tests/test_trained_circuit.py's 2-layer induction model (cached on disk after the first training)."""
    return _induction_model()
