"""GPU sampling: greedy, temperature, top-k, top-p, seeding, and the uncertainty statistics
computed in the same pass, in each of conftest.py's modes."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.contract.step_runner import DeviceSampling
from inloop.services.runtime.engine.sampler import _filter_top_k_top_p, log_softmax, token_stats

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("V", [10, 49152, 151936])
def test_greedy_and_stats_match_the_host_sampler(gpu, V):
    logits = (RNG.standard_normal(V) * 3).astype(np.float32)
    token, logprob, entropy, margin = gpu.sample(gpu.upload_activation(logits[None]))
    ref = token_stats(log_softmax(logits), int(np.argmax(logits)))
    assert token == int(np.argmax(logits))
    assert abs(logprob - ref.logprob) < 1e-4 * max(1, abs(ref.logprob))
    assert abs(entropy - ref.entropy) < 1e-4 * max(1, ref.entropy)
    assert abs(margin - ref.margin) < 1e-5


def test_greedy_tie_takes_the_lowest_index_and_margin_zero(gpu):
    logits = np.zeros(1000, np.float32)
    logits[[17, 900]] = 5.0
    token, _, _, margin = gpu.sample(gpu.upload_activation(logits[None]))
    assert token == 17 and margin == 0.0


def _draws(gpu, logits, n, **kw):
    dev = gpu.upload_activation(logits[None])
    return np.array([gpu.sample(dev, DeviceSampling(seed=11, step=i, **kw))[0] for i in range(n)])


def test_temperature_sampling_follows_softmax(gpu):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
    T = 0.8
    draws = _draws(gpu, logits, 3000, temperature=T)
    p = np.exp(logits / T - np.max(logits / T))
    p /= p.sum()
    freq = np.bincount(draws, minlength=logits.size) / draws.size
    assert np.abs(freq - p).max() < 0.035, (freq, p)


def test_top_p_cuts_by_probability_mass_and_renormalizes(gpu):
    # few tokens of unequal mass: a cut by count, or by the wrong mass, keeps another set
    logits = np.array([3.0, 2.5, 2.0, 1.5, 1.0, 0.0, -1.0, -2.0], np.float32)
    kept = _filter_top_k_top_p(logits.astype(np.float64), 0, 0.8)
    p = np.where(np.isfinite(kept), np.exp(kept - np.nanmax(kept)), 0.0)
    p /= p.sum()
    assert 2 < np.count_nonzero(p) < logits.size
    draws = _draws(gpu, logits, 3000, temperature=1.0, top_p=0.8)
    freq = np.bincount(draws, minlength=logits.size) / draws.size
    assert np.abs(freq - p).max() < 0.035, (freq, p)


def test_top_k_and_top_p_keep_only_their_sets(gpu):
    # its own generator: with the module's, the logits depended on which tests ran before,
    # and some draws left top_p=0.3 a single token
    logits = (np.random.default_rng(21).standard_normal(5000) * 2).astype(np.float32)
    for kw in ({"top_k": 5}, {"top_p": 0.3}, {"top_k": 50, "top_p": 0.5}):
        kept = np.isfinite(_filter_top_k_top_p(logits / 0.7, kw.get("top_k", 0), kw.get("top_p", 1.0)))
        assert kept.sum() > 1, ("the case must keep several tokens", kw)
        draws = _draws(gpu, logits, 200, temperature=0.7, **kw)
        assert kept[draws].all(), kw
        assert len(set(draws.tolist())) > 1, kw


def test_truncated_draw_finds_a_dominant_token_in_any_thread(gpu):
    # sample_truncated merges its threads' bests in each warp, then the warps' in warp 0: a
    # token that outweighs all the others must win whichever thread and warp saw it
    logits = np.random.default_rng(3).standard_normal(3000).astype(np.float32)
    for pos in (0, 31, 32, 500, 1023, 1024, 2047, 2999):
        lg = logits.copy()
        lg[pos] = 60.0
        token = gpu.sample(gpu.upload_activation(lg[None]), DeviceSampling(temperature=0.7, top_k=4, seed=5))[0]
        assert token == pos, pos


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7}, {"temperature": 0.7, "top_k": 4}])
def test_every_logit_masked_gives_token_zero_and_reads_nothing_past_the_row(gpu, kw):
    # as numpy's argmax over all -inf; the kernels must not index the logits with "no token"
    lg = np.full((1, 1000), -np.inf, np.float32)
    assert gpu.sample(gpu.upload_activation(lg), DeviceSampling(seed=1, **kw))[0] == 0


def test_seeded_sampling_repeats_and_steps_differ(gpu):
    logits = (RNG.standard_normal(2000)).astype(np.float32)
    dev = gpu.upload_activation(logits[None])
    a = [gpu.sample(dev, DeviceSampling(temperature=1.0, seed=3, step=s))[0] for s in range(20)]
    b = [gpu.sample(dev, DeviceSampling(temperature=1.0, seed=3, step=s))[0] for s in range(20)]
    c = [gpu.sample(dev, DeviceSampling(temperature=1.0, seed=4, step=s))[0] for s in range(20)]
    assert a == b and a != c and len(set(a)) > 1


def test_stats_come_from_the_temperature_one_distribution(gpu):
    logits = (RNG.standard_normal(300) * 2).astype(np.float32)
    settings = DeviceSampling(temperature=1.5, top_k=10, seed=1)
    token, logprob, entropy, margin = gpu.sample(gpu.upload_activation(logits[None]), settings)
    ref = token_stats(log_softmax(logits), token)
    assert abs(logprob - ref.logprob) < 1e-4 and abs(entropy - ref.entropy) < 1e-4 and abs(margin - ref.margin) < 1e-5
