"""A small scan of the shipped model shared by the report tests (token-role analyses only, 48 tokens)."""

import pytest

import interp

ANALYSES = "sink,entropy,max_attention,previous_token,duplicate_token,induction"


@pytest.fixture(scope="session")
def small_scan(smollm) -> interp.ScanResult:
    return interp.scan(smollm, analyses=ANALYSES, settings=interp.ScanSettings(context_length=48, batch=1))
