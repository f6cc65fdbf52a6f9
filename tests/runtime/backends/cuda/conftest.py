"""GPU fixtures: one CudaBackend per session, skipped with cuInit's reason where no GPU answers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from inloop.services.runtime.backends.cuda.driver import cuda_available

GPU_OK, GPU_REASON = cuda_available()
# Backends made by these tests keep the heuristic GEMV configs: measuring them per backend would
# make the emulators' choices depend on wall time; test_probes.py turns the tuner on itself.
os.environ.setdefault("INLOOP_CUDA_GEMV_TUNE", "0")


@pytest.fixture(scope="session")
def gpu(cubin_cache):
    if not GPU_OK:
        pytest.skip(f"no CUDA GPU: {GPU_REASON}")
    from inloop.services.runtime.backends.cuda.backend import CudaBackend

    return CudaBackend()


@pytest.fixture(scope="session")
def cpu():
    from inloop.services.runtime.backends.cpu.backend import NumpyBackend

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


def _backend_on_double(kernels: str):
    from inloop.services.runtime.backends.cuda import driver as driver_module
    from inloop.services.runtime.backends.cuda.backend import CudaBackend

    from .fake_driver import FakeDriver

    mp = pytest.MonkeyPatch()
    fd = FakeDriver(kernels=kernels)
    mp.setattr(driver_module, "_drv", lambda: fd)
    be = CudaBackend()
    be.fake_driver = fd
    return be, mp


@pytest.fixture(scope="module")
def fake_gpu(cubin_cache):
    """A CudaBackend on the driver double (fake_driver.py), patched in for one test module;
    kernels run as kernel_emulator.py's numpy contracts."""
    be, mp = _backend_on_double("contract")
    yield be
    mp.undo()


@pytest.fixture(scope="module")
def fake(gpu):
    """The driver double under the module's `gpu` (modules that set gpu to fake_gpu or source_gpu)."""
    return gpu.fake_driver


@pytest.fixture(scope="module")
def source_gpu(cubin_cache):
    """The same, but kernels run as their own CUDA C compiled for the CPU (source_emulator/).
    Skipped where a GPU answers (the same tests run on it for real) or no g++ is found."""
    from .source_emulator.build import compiler

    if GPU_OK:
        pytest.skip(f"a GPU answers ({GPU_REASON}): the tests run on it, not on the CPU emulator")
    if compiler() is None:
        pytest.skip("no C++ compiler for the CPU kernel emulator")
    be, mp = _backend_on_double("source")
    yield be
    mp.undo()
