"""The CUDA backend's test fixtures, and the three ways its tests run.

A test that takes the `gpu` fixture runs once per execution mode, and the mode is part of its
id (`test_rmsnorm[contract-576]`):

    device    the real CudaBackend on a GPU (marked `gpu`; skipped with cuInit's reason where
              none answers). scripts/gpu_check.py runs these (`-m "not emulated"`).
    contract  the CudaBackend on the driver double (fake_driver.py): real enums and structs,
              bounds-checked device memory, packed arguments decoded as the driver does, graphs
              recorded and replayed, every kernel run as its numpy contract (kernel_emulator.py)
              with its launch-shape checks. Checks the launchers, pointer arithmetic, uploads
              and graph logic on any machine.
    source    the same double, but each launch runs the kernel's own CUDA C compiled for the
              CPU (source_emulator/): its indexing, shared-memory staging, warp shuffles,
              split-K tickets and bounds, and that nothing before griddepcontrol.wait touches
              what the kernels before it in the PDL chain wrote. Skipped where a GPU answers
              (the same tests run on it for real) or no C++ compiler is found.

The two double modes are marked `emulated`. A module that runs in fewer modes names them:
`MODES = ("device", "source")`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from inloop.services.runtime.backends.cuda.driver import cuda_available
from tests.conftest import ARCHS

GPU_OK, GPU_REASON = cuda_available()
# Backends made by these tests keep the heuristic GEMV configs: measuring them per backend would
# make the emulators' choices depend on wall time; test_probes.py turns the tuner on itself.
os.environ.setdefault("INLOOP_CUDA_GEMV_TUNE", "0")


ALL_MODES = ("device", "contract", "source")
# the double's modes: numpy's float warnings (overflow in a contract's exp, ...) are not findings
EMULATED = [pytest.mark.emulated, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def pytest_generate_tests(metafunc):
    """Parametrize `gpu` over the module's MODES (default all three), the mode in the test id."""
    if "gpu" in metafunc.fixturenames:
        modes = getattr(metafunc.module, "MODES", ALL_MODES)
        params = [pytest.param(m, marks=[pytest.mark.gpu] if m == "device" else EMULATED) for m in modes]
        metafunc.parametrize("gpu", params, indirect=True, scope="module")


@pytest.fixture(scope="session")
def device_gpu(cubin_cache):
    """The real backend, one per session."""
    if not GPU_OK:
        pytest.skip(f"no CUDA GPU: {GPU_REASON}")
    from inloop.services.runtime.backends.cuda.backend import CudaBackend

    return CudaBackend()


@pytest.fixture(scope="module")
def gpu(request, cubin_cache):
    """A CudaBackend in the mode the test's id names (see the module docstring); the driver
    double is patched in for one module at a time."""
    mode = request.param
    if mode == "device":
        yield request.getfixturevalue("device_gpu")
        return
    if mode == "source":
        from .source_emulator.build import compiler

        if GPU_OK:
            pytest.skip(f"a GPU answers ({GPU_REASON}): the tests run on it, not on the CPU emulator")
        if compiler() is None:
            pytest.skip("no C++ compiler for the CPU kernel emulator")
    be, mp = _backend_on_double(mode)
    yield be
    mp.undo()


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
def fake(gpu):
    """The driver double under `gpu` (the contract and source modes)."""
    return gpu.fake_driver


# ---- tiny models, shared by the model, engine and driver-double modules ---------------------

@pytest.fixture(scope="module", params=[(a, "bfloat16") for a in ARCHS] + [("llama", "float32")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def models(request, tmp_path_factory, cpu, gpu):
    """(config, the forward pass on numpy, the same on `gpu`, the GPU loader's model) for one
    tiny model."""
    from inloop.services.runtime.backends.cuda.loader import load_transformer
    from inloop.services.runtime.model.config import ModelConfig
    from inloop.services.runtime.model.tiny import make_tiny
    from inloop.services.runtime.model.transformer import Transformer
    from inloop.services.runtime.model.weights import Weights

    arch, dtype = request.param
    d = make_tiny(arch, tmp_path_factory.mktemp(f"{arch}-{dtype}"), seed=5, dtype=dtype)
    cfg = ModelConfig.from_dir(d)
    return (cfg, Transformer(cfg, cpu, Weights(d)), Transformer(cfg, gpu, Weights(d)),
            load_transformer(gpu, cfg, Weights(d)))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A bf16 tiny model directory of each architecture, for the engine tests."""
    from inloop.services.runtime.model.tiny import make_tiny

    root = tmp_path_factory.mktemp("engine-tiny")
    return {arch: make_tiny(arch, root / arch, seed=20 + i, dtype="bfloat16") for i, arch in enumerate(ARCHS)}
