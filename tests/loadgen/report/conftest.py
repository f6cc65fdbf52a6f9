"""Fixtures: the synthetic artifact every report test renders (a fresh copy per test)."""
from __future__ import annotations

import pytest

from tests.loadgen.report.synthetic import make_artifact


@pytest.fixture
def artifact() -> dict:
    """3 profiles × 2 routes × 7 reps = 42 runs, 2 traces of 12 spans, every section present."""
    return make_artifact()
