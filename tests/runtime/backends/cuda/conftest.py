"""GPU fixtures: one CudaBackend per session, skipped with cuInit's reason where no GPU answers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.runtime.backends.cuda.driver import cuda_available

GPU_OK, GPU_REASON = cuda_available()


@pytest.fixture(scope="session")
def gpu(cubin_cache):
    if not GPU_OK:
        pytest.skip(f"no CUDA GPU: {GPU_REASON}")
    from services.runtime.backends.cuda.backend import CudaBackend

    return CudaBackend()


@pytest.fixture(scope="session")
def cpu():
    from services.runtime.backends.cpu.backend import NumpyBackend

    return NumpyBackend()


@pytest.fixture(scope="session")
def cubin_cache(tmp_path_factory):
    """A fresh cubin cache for the session (the tests never touch the user's), unless
    INLOOP_TEST_USE_CACHE is set (scripts/gpu_check.py: its processes share a warm cache)."""
    if os.environ.get("INLOOP_TEST_USE_CACHE") and os.environ.get("INLOOP_CACHE"):
        yield Path(os.environ["INLOOP_CACHE"]) / "cubins"
        return
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("inloop-cache")
    mp.setenv("INLOOP_CACHE", str(root))
    yield root / "cubins"
    mp.undo()


@pytest.fixture(scope="module")
def fake_gpu(cubin_cache):
    """A CudaBackend on the driver double (fake_driver.py), patched in for one test module."""
    from services.runtime.backends.cuda import driver as driver_module
    from services.runtime.backends.cuda.backend import CudaBackend

    from .fake_driver import FakeDriver

    mp = pytest.MonkeyPatch()
    fd = FakeDriver()
    mp.setattr(driver_module, "_drv", lambda: fd)
    be = CudaBackend()
    be.fake_driver = fd
    yield be
    mp.undo()
