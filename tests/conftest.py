"""Shared fixtures: tiny random models (built once per session) and reference-library guards."""
from __future__ import annotations

import importlib.util
import os

import pytest

from inloop.services.runtime.model.tiny import make_tiny

ARCHS = ("llama", "qwen2", "qwen3")


def has_reference() -> bool:
    return all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


requires_reference = pytest.mark.skipif(
    not has_reference(), reason="HF transformers + torch not installed (pip install torch==2.13.0 '.[reference]')")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Whatever a test sets in os.environ is gone after it: service processes started by later
    tests inherit the environment (an OTLP endpoint left behind once made every later service
    export spans to a host that does not exist, and stall at shutdown)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, "object"]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny(arch, root / arch, seed=i) for i, arch in enumerate(ARCHS)}


@pytest.fixture(scope="session")
def tiny_llama(tiny_models):
    return tiny_models["llama"]


@pytest.fixture
def log_events():
    """structlog's capture_logs with every level let through (a benchmark test may have set a
    warning filter globally); the configuration is restored after."""
    import contextlib

    import structlog
    from structlog.testing import capture_logs

    @contextlib.contextmanager
    def capture():
        saved = structlog.get_config()
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
        try:
            with capture_logs() as logs:
                yield logs
        finally:
            structlog.configure(**saved)
    return capture
