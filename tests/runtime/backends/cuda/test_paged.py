"""The batching core's step on the CUDA backend, in each of conftest.py's modes: the paged KV
pool and attention against the numpy backend's, batch invariance (a row's logits are the same
bits alone and in every bucket 2..64, beside decode rows and prefill chunks), through the
eager steps and the bucket graphs alike, and prompts in chunks equal to numpy's. The engine
over this: test_engine_batched_on_cuda.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.contract.backend import SeqSlots
from inloop.services.runtime.engine.core import _slots
from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.transformer import Transformer
from inloop.services.runtime.model.weights import Weights

from .parity import assert_close, bf16, margin_tolerance

RNG = np.random.default_rng(77)
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
BS = 4  # positions per block: small, so every sequence spans several, out of order


def _qkv(T: int, H: int, KVH: int, hd: int) -> np.ndarray:
    """Random rows whose k and v parts are bf16 values, so the bf16 pool stores them exactly."""
    qkv = RNG.standard_normal((T, (H + 2 * KVH) * hd)).astype(np.float32)
    qkv[:, H * hd:] = bf16(qkv[:, H * hd:])
    return qkv


def _seq(blocks: list[int], rows: int, context: int) -> SeqSlots:
    return _slots(blocks, BS, rows, context)


@pytest.mark.parametrize("H,KVH,hd", [(4, 2, 64), (6, 2, 32), (3, 1, 128)])
def test_paged_attention_matches_numpy(cpu, gpu, H, KVH, hd):
    """Two steps over one pool: prompts in chunks, then decode rows beside a new prompt; the
    blocks of each sequence scattered and out of order."""
    L, num_blocks, layer = 2, 24, 1
    kc = cpu.alloc_paged_kv(L, KVH, num_blocks, BS, hd)
    kg = gpu.alloc_paged_kv(L, KVH, num_blocks, BS, hd)
    a_blocks, b_blocks, c_blocks = [9, 2, 17, 5, 11, 0], [3], [20, 14, 7]
    steps = [
        [_seq(a_blocks, 13, 13), _seq(b_blocks, 3, 3)],                          # two prompts
        [_seq(a_blocks, 1, 14), _seq(b_blocks, 1, 4), _seq(c_blocks, 10, 10)],  # decode rows + a prompt
        [_seq(c_blocks, 1, 11), _seq(a_blocks, 6, 20)],                          # a chunk continuing A
    ]
    for i, seqs in enumerate(steps):
        T = sum(s.rows for s in seqs)
        qkv = _qkv(T, H, KVH, hd)
        ref = cpu.paged_attention(qkv, kc, layer, seqs, H, KVH, hd)
        got = gpu.to_host(gpu.paged_attention(gpu.upload_activation(qkv), kg, layer, seqs, H, KVH, hd))
        assert_close(got, ref, 1e-5, 1e-5, f"step {i}")
    # the pool holds what numpy's holds, slot for slot (the k/v were bf16 values)
    used = sorted({s for seqs in steps for q in seqs for s in q.slots})
    for pool_g, pool_c in ((kg.k, kc.k), (kg.v, kc.v)):
        assert np.array_equal(gpu.to_host(pool_g)[layer][:, used], pool_c[layer][:, used])


@pytest.fixture(scope="module")
def llama(tmp_path_factory, cpu, gpu):
    d = make_tiny("llama", tmp_path_factory.mktemp("paged-llama"), seed=9, dtype="bfloat16")
    cfg = ModelConfig.from_dir(d)
    return d, cfg, Transformer(cfg, cpu, Weights(d)), Transformer(cfg, gpu, Weights(d))


class Pool:
    """A paged pool and each sequence's blocks, handed out in a scattered order."""

    def __init__(self, model, num_blocks: int):
        c = model.cfg
        self.kv = model.backend.alloc_paged_kv(c.num_layers, c.num_kv_heads, num_blocks, BS, c.head_dim)
        self.free = list(RNG.permutation(num_blocks))
        self.blocks: dict[str, list[int]] = {}
        self.stepper = None

    def seq(self, name: str, rows: int, context: int) -> SeqSlots:
        have = self.blocks.setdefault(name, [])
        while len(have) * BS < context:
            have.append(int(self.free.pop()))
        return _seq(have, rows, context)


def _step(model, pool: Pool, parts: list[tuple[str, list[int], int]], how: str = "stepper") -> np.ndarray:
    """One step over `parts` (name, token ids, position of the first): every row's logits,
    through the CUDA backend's stepper as the core runs it (a bucket graph where the step is
    decode rows only), its eager launches alone, or the generic forward_paged."""
    b = model.backend
    seqs = [pool.seq(name, len(ids), start + len(ids)) for name, ids, start in parts]
    ids = np.concatenate([np.asarray(i, np.int32) for _, i, _ in parts])
    rows = np.arange(len(ids), dtype=np.int32)
    if how == "forward_paged":
        pos = np.concatenate([np.arange(s, s + len(i), dtype=np.int32) for _, i, s in parts])
        return np.asarray(b.to_host(model.forward_paged(b.ids(ids), b.ids(pos), pool.kv, seqs, b.ids(rows))))
    if pool.stepper is None:
        pool.stepper = b.paged_stepper(model, pool.kv, 128)
    run = pool.stepper.run if how == "stepper" else pool.stepper._eager
    return run(ids, seqs, rows)


def _numpy_next(cpu_model, prompt: list[int], token: int) -> np.ndarray:
    cache = cpu_model.new_cache(len(prompt) + 2)
    cpu_model.forward(np.asarray(prompt, np.int32), np.arange(len(prompt), dtype=np.int32), cache)
    return np.asarray(cpu_model.forward(np.asarray([token], np.int32), np.asarray([len(prompt)], np.int32), cache))[-1]


def test_a_rows_logits_do_not_depend_on_its_batch(llama):
    """Sequence S's decode row gives the same bits alone and in buckets 2..64 (decode rows of
    other sequences around it, at other positions in the step), eager or through the bucket
    graphs, and beside a prefill chunk long enough that the step has more than one 64-row GEMM
    tile; and they are numpy's logits within the bf16 tolerance, as are the generic
    forward_paged's on this backend."""
    _, cfg, cpu_model, gpu_model = llama
    pool = Pool(gpu_model, num_blocks=600)
    rng = np.random.default_rng(3)
    prompt = rng.integers(3, cfg.vocab_size, 13).tolist()
    others = {f"o{i}": rng.integers(3, cfg.vocab_size, 3 + i % 7).tolist() for i in range(63)}
    # prefill S and the others (in chunks of several sequences a step)
    _step(gpu_model, pool, [("S", prompt, 0)])
    names = list(others)
    for i in range(0, len(names), 16):
        _step(gpu_model, pool, [(n, others[n], 0) for n in names[i:i + 16]])
    token = 7
    alone = _step(gpu_model, pool, [("S", [token], len(prompt))])[0]
    seen = {"alone, eager": _step(gpu_model, pool, [("S", [token], len(prompt))], "eager")[0]}
    for bucket in BUCKETS[1:]:
        mates = [(n, [5 + j], len(others[n])) for j, n in enumerate(names[:bucket - 1])]
        at = bucket // 2  # S somewhere in the middle
        parts = mates[:at] + [("S", [token], len(prompt))] + mates[at:]
        seen[bucket] = _step(gpu_model, pool, parts)[at]
        if bucket in (8, 64):
            seen[f"{bucket}, eager"] = _step(gpu_model, pool, parts, "eager")[at]
    chunk = rng.integers(3, cfg.vocab_size, 70).tolist()   # 71 rows: two 64-row tiles
    seen["beside a 70-token prompt"] = _step(gpu_model, pool, [("long", chunk, 0), ("S", [token], len(prompt))])[-1]
    for where, logits in seen.items():
        assert np.array_equal(logits, alone), f"{where}: {np.abs(logits - alone).max():.3g} from alone"
    assert sorted(pool.stepper.graphs) == list(BUCKETS)
    ref = _numpy_next(cpu_model, prompt, token)
    assert_close(alone, ref, 2e-2, margin_tolerance(ref), "S's decode row against numpy")
    generic = _step(gpu_model, pool, [("S", [token], len(prompt))], "forward_paged")[0]
    assert_close(generic, ref, 2e-2, margin_tolerance(ref), "forward_paged's row against numpy")


def test_prompts_in_chunks_give_numpys_logits(llama):
    """Several prompts prefilled in chunks beside each other through the stepper: every row's
    logits are numpy's within the bf16 tolerance."""
    _, cfg, cpu_model, gpu_model = llama
    pool = Pool(gpu_model, num_blocks=100)
    rng = np.random.default_rng(8)
    a, b = rng.integers(3, cfg.vocab_size, 20).tolist(), rng.integers(3, cfg.vocab_size, 9).tolist()
    got_a = [_step(gpu_model, pool, [("a", a[:12], 0), ("b", b[:5], 0)])[:12]]
    rest = _step(gpu_model, pool, [("b", b[5:], 5), ("a", a[12:], 12)])
    got_a.append(rest[4:])
    got_b = rest[:4]
    for name, prompt, got in (("a", a, np.concatenate(got_a)), ("b", b[5:], got_b)):
        full = a if name == "a" else b
        cache = cpu_model.new_cache(len(full))
        ref = np.asarray(cpu_model.forward(np.asarray(full, np.int32), np.arange(len(full), dtype=np.int32), cache,
                                           all_logits=True))[len(full) - len(got):]
        assert_close(got, ref, 2e-2, margin_tolerance(ref), f"prompt {name}")


def test_bucket_graphs_give_the_eager_steps_bits(llama):
    """An all-decode step through a bucket's graph (padded to 1, 4, 8, 64 rows) gives every row
    the bits the same launches give eagerly; the padding rows touch no sequence's blocks."""
    _, cfg, _, gpu_model = llama
    pool = Pool(gpu_model, num_blocks=400)
    rng = np.random.default_rng(4)
    names = [f"s{i}" for i in range(64)]
    prompts = {n: rng.integers(3, cfg.vocab_size, 2 + i % 9).tolist() for i, n in enumerate(names)}
    for i in range(0, 64, 16):
        _step(gpu_model, pool, [(n, prompts[n], 0) for n in names[i:i + 16]])
    before = gpu_model.backend.to_host(pool.kv.k)
    for n in (1, 3, 8, 64):
        parts = [(name, [11 + j], len(prompts[name])) for j, name in enumerate(names[:n])]
        replays = pool.stepper.replays
        got = _step(gpu_model, pool, parts)
        assert pool.stepper.replays == replays + 1
        want = _step(gpu_model, pool, parts, "eager")
        assert np.array_equal(got, want), f"{n} rows: {np.abs(got - want).max():.3g} from the eager step"
    assert sorted(pool.stepper.graphs) == [1, 4, 8, 64]
    after = gpu_model.backend.to_host(pool.kv.k)
    written = sorted({int(s) for name in names for s in pool.seq(name, 1, len(prompts[name]) + 1).slots[-1:]})
    untouched = np.setdiff1d(np.arange(pool.kv.num_blocks * BS), written)
    assert np.array_equal(after[:, :, untouched], before[:, :, untouched]), "a padding row wrote into the pool"


def test_rows_sampled_in_the_step_and_rows_of_logits_side_by_side(llama):
    """A step whose wanted rows are sampled on the device (greedy, seeded temperature) or come
    back as logits: greedy draws the argmax of the row's logits, a seeded draw repeats, the
    statistics are the logits' own, and graph and eager give the same results."""
    from inloop.services.contract.step_runner import DeviceSampling
    from inloop.services.runtime.engine.sampler import log_softmax, token_stats

    _, cfg, _, gpu_model = llama
    pool = Pool(gpu_model, num_blocks=100)
    rng = np.random.default_rng(12)
    names = ["a", "b", "c"]
    prompts = {n: rng.integers(3, cfg.vocab_size, 5 + i).tolist() for i, n in enumerate(names)}
    _step(gpu_model, pool, [(n, prompts[n], 0) for n in names])
    parts = [(n, [9], len(prompts[n])) for n in names]
    seqs = [pool.seq(n, 1, len(prompts[n]) + 1) for n in names]
    ids, rows = np.full(3, 9, np.int32), np.arange(3, dtype=np.int32)
    logits = _step(gpu_model, pool, parts)
    samplings = [DeviceSampling(), None, DeviceSampling(temperature=1.2, top_k=8, seed=5, step=3)]
    graph = pool.stepper.run(ids, seqs, rows, samplings)
    eager = pool.stepper._eager(ids, seqs, rows, samplings)
    again = pool.stepper.run(ids, seqs, rows, samplings)
    assert graph[0] == eager[0] == again[0] and graph[2] == eager[2] == again[2]
    assert np.array_equal(graph[1], logits[1]) and np.array_equal(eager[1], logits[1])
    token, logprob, entropy, margin = graph[0]
    assert token == int(np.argmax(logits[0]))
    ref = token_stats(log_softmax(logits[0]), token)
    assert abs(logprob - ref.logprob) < 1e-4 and abs(entropy - ref.entropy) < 1e-4 and abs(margin - ref.margin) < 1e-4
    assert graph[2][0] in np.argsort(logits[2])[-8:]   # top-k 8


def test_batched_linear_rows_are_the_same_bits_at_any_row_count(gpu, request):
    """The K split of batched_linear follows the weight alone: with a card this small (4 SMs)
    the plain GEMM picks fewer splits once the rows fill more tiles, and its row 0 changes;
    batched_linear's rows stay the bits they are alone."""
    sm_count = gpu.ops.sm_count
    gpu.ops.sm_count = 4
    try:
        w = gpu.upload(bf16(RNG.standard_normal((128, 256)).astype(np.float32)))
        x = RNG.standard_normal((130, 256)).astype(np.float32)
        full = gpu.to_host(gpu.batched_linear(gpu.upload_activation(x), w))
        for m in (1, 2, 17, 64, 65):
            part = gpu.to_host(gpu.batched_linear(gpu.upload_activation(x[:m]), w))
            assert np.array_equal(part, full[:m]), f"{m} rows: {np.abs(part - full[:m]).max():.3g} from 130 rows"
        if request.node.callspec.params["gpu"] != "contract":   # the contract sums in float64: no order
            plain = gpu.to_host(gpu.linear(gpu.upload_activation(x), w))
            assert not np.array_equal(plain[:1], full[:1]), "the plain GEMM's split did not change: test not sensitive"
    finally:
        gpu.ops.sm_count = sm_count
