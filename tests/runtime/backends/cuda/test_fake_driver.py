"""The whole Python side of the CUDA backend, run without a GPU on a strict driver double.

fake_driver.FakeDriver replaces cuda.bindings.driver (the real boundary): real enums and
structs, argument counts checked against the real bindings, bounds-checked device memory,
packed kernel arguments decoded as the driver decodes them, graphs recorded and replayed,
and every kernel emulated with numpy semantics plus its launch-shape checks. The GPU test
modules run on it as their `contract` mode (conftest.py); this module holds what only the
double can check: the device it describes, launch bounds, its own bookkeeping.
"""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.backends.cuda import driver as driver_module

from .fake_driver import FakeDriver
from .parity import assert_close, bf16

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
MODES = ("contract",)  # conftest.py: these check the double itself


def test_backend_describes_the_device(gpu):
    d = gpu.describe()
    assert d["device"] == "Fake H100" and d["arch"] == "sm_90" and d["pdl"] is True


def test_a_launch_past_the_kernels_launch_bounds_is_refused(gpu):
    from .fake_driver import launch_bounds

    assert launch_bounds()["gemv_store"] == 256 and launch_bounds()["gemv_store_f16"] == 256
    assert launch_bounds()["attention_decode_d64"] == 128
    k = gpu.kernels["gemv_store"]
    with pytest.raises(AssertionError, match="launch_bounds"):
        k.launch((1,), (512,), (0,) * len(k.signature), gpu.stream)


def test_large_upload_crosses_staging_chunks(gpu):
    from inloop.services.runtime.backends.cuda.upload import CHUNK_BYTES

    a = np.random.default_rng(1).standard_normal(CHUNK_BYTES // 4 * 2 + 12).astype(np.float32)
    assert np.array_equal(gpu.to_host(gpu.upload(a)), bf16(a))


def test_copy_kv_keeps_the_prefix(gpu):
    src, dst = gpu.alloc_kv(2, 3, 8, 16), gpu.alloc_kv(2, 3, 20, 16)
    gpu.attention(gpu.upload_activation(np.ones((5, (6 + 6) * 16), np.float32)), src, 1,
                  gpu.ids(np.arange(5)), 6, 3, 16)
    gpu.copy_kv(src, dst, 5)
    assert np.array_equal(gpu.to_host(dst.k)[:, :, :5], gpu.to_host(src.k)[:, :, :5])
    assert np.array_equal(gpu.to_host(dst.v)[:, :, :5], gpu.to_host(src.v)[:, :, :5])


def test_decode_graph_is_pdl_launches_of_the_fused_kernels(gpu, fake, models):
    cfg, _, gpu_model, _ = models
    dg = gpu.decode_graph(gpu_model, 64)
    cache = gpu_model.new_cache(64)
    dg.bind(cache)
    dg.graph(True)
    fake.launches.clear()
    dg.step(5, 0)
    names = [n for n, _ in fake.launches]
    assert len(names) == dg.kernels_per_step(True) == 1 + 5 * cfg.num_layers + 3
    assert all(pdl for _, pdl in fake.launches)
    assert names[:3] == ["embedding", "gemv_norm_store", names[2]] and names[2].startswith("attention_decode_d")
    assert names[-3:] == ["gemv_norm_store", "sample_reduce", "sample_truncated"]


def test_a_driver_that_cannot_capture_pdl_gets_plain_graphs(gpu, fake, models, monkeypatch):
    from cuda.bindings import driver as real

    cfg, _, gpu_model, _ = models
    dg = gpu.decode_graph(gpu_model, 64)
    cache = gpu_model.new_cache(64)
    dg.bind(cache)
    want = dg.step(5, 0, use_graph=False)
    monkeypatch.setattr(fake, "cuLaunchKernelEx",
                        lambda *a: (real.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,))
    dg.graph(True)
    assert not dg.pdl_used and not fake.capturing
    fake.launches.clear()
    assert dg.step(5, 0) == want
    assert len(fake.launches) == dg.kernels_per_step(True) and not any(pdl for _, pdl in fake.launches)


def test_graph_survives_workspace_growth_after_capture(gpu, models):
    cfg, _, gpu_model, _ = models
    dg = gpu.decode_graph(gpu_model, 64)
    cache = gpu_model.new_cache(64)
    dg.bind(cache)
    before = dg.step(7, 0)
    H, KVH, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    big = gpu.alloc_kv(1, KVH, 40000, hd)  # more splits: the shared workspace grows
    gpu.attention(gpu.upload_activation(np.zeros((1, cfg.qkv_size), np.float32)), big, 0, gpu.ids([3]), H, KVH, hd)
    assert dg.step(7, 0) == before


def test_no_pdl_before_hopper(cubin_cache):
    from inloop.services.runtime.backends.cuda.backend import CudaBackend

    mp = pytest.MonkeyPatch()
    ampere = FakeDriver(capability=(8, 0))
    mp.setattr(driver_module, "_drv", lambda: ampere)
    try:
        be = CudaBackend()
        assert be.arch == "sm_80" and be.pdl is False
    finally:
        mp.undo()


def test_position_outside_the_cache_is_refused(gpu, models):
    _, _, gpu_model, _ = models
    dg = gpu.decode_graph(gpu_model, 16)
    dg.bind(gpu_model.new_cache(16))
    with pytest.raises(ValueError, match="outside the bound KV cache"):
        dg.step(1, 16)


def test_assert_close_reports_the_worst_element():
    with pytest.raises(AssertionError, match="worst at"):
        assert_close(np.array([1.0, 2.0]), np.array([1.0, 3.0]), 0, 0.1, "demo")


def test_engine_generates_the_same_greedy_text_through_the_op_interface(gpu, cpu, tmp_path):
    pytest.importorskip("structlog")
    from inloop.services.contract.generation import GenerateRequest, SamplingParams
    from inloop.services.runtime.engine.engine import Engine
    from inloop.services.runtime.engine.step_runner import ForwardStepRunner
    from inloop.services.runtime.model.tiny import make_tiny

    d = make_tiny("llama", tmp_path / "m", seed=2, dtype="bfloat16")
    req = dict(prompt="The quick brown fox", sampling=SamplingParams(max_tokens=12, return_uncertainty=True),
               session_id="")
    engine = Engine.load(d, backend=gpu)
    engine.runner = ForwardStepRunner(engine.model)  # the op interface (the graphs: test_engine_on_fake_driver.py)
    ours = engine.generate(GenerateRequest(**req))
    ref = Engine.load(d, backend=cpu).generate(GenerateRequest(**req))
    assert ours.token_ids == ref.token_ids
    assert abs(ours.token_stats[0].logprob - ref.token_stats[0].logprob) < 1e-2


def test_the_pdl_chain_is_what_a_kernel_may_overlap():
    """With the kernel sources, each PDL launch is checked against the bytes written since the
    stream's last ordinary launch, copy, memset or graph start (stubbed source: the chain only)."""
    fd = FakeDriver(kernels="contract")
    fd.pdl_hazards = True
    seen = []

    class Source:
        def launch(self, name, grid, block, smem, params, hazards=None):
            seen.append((name, [lo for lo, _ in hazards[1]]))
            at = 1000 * int(name[1:])
            return [(at, at + 16)]

    fd.source = Source()
    stream, dev, host = 1, fd.mem.alloc(64, device=True), fd.mem.alloc(64)

    def k(i, pdl=True):
        fd._launch_checked(f"k{i}", (1, 1, 1), (32, 1, 1), 0, 0, pdl)

    k(1), k(2), k(3)
    k(4, pdl=False)  # an ordinary launch waits for everything before it
    k(5)
    fd.cuMemcpyHtoDAsync(dev, host, 64, stream)
    k(6)
    fd.cuMemsetD8Async(dev, 0, 64, stream)
    k(7)
    fd.graphs[77] = [lambda: k(8), lambda: k(9)]
    fd.cuGraphLaunch(77, stream)
    assert seen == [("k1", []), ("k2", [1000]), ("k3", [1000, 2000]), ("k4", []), ("k5", [4000]),
                    ("k6", []), ("k7", []), ("k8", []), ("k9", [8000])]
