"""Sampler: greedy, seeded sampling, top-k / top-p truncation and the uncertainty statistics."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import SamplingParams
from inloop.services.runtime.engine.sampler import Sampler, log_softmax, token_stats

LOGITS = np.array([2.0, 1.0, 0.5, -1.0, 3.0], np.float32)


def test_greedy_takes_argmax():
    assert Sampler(SamplingParams()).sample(LOGITS)[0] == 4


def test_seeded_sampling_repeats_and_seeds_differ():
    def draws(seed):
        s = Sampler(SamplingParams(temperature=1.5, seed=seed))
        return [s.sample(LOGITS)[0] for _ in range(30)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert len(set(draws(7))) > 1  # temperature 1.5 over 5 tokens: 30 draws are not all equal


def test_top_k_1_is_greedy_and_top_k_limits_support():
    s = Sampler(SamplingParams(temperature=5.0, top_k=2, seed=0))
    seen = {s.sample(LOGITS)[0] for _ in range(200)}
    assert seen == {4, 0}
    assert {Sampler(SamplingParams(temperature=5.0, top_k=1, seed=i)).sample(LOGITS)[0] for i in range(20)} == {4}


def test_top_p_keeps_the_nucleus():
    # softmax(LOGITS): token 4 has ~0.61, token 0 ~0.22; top_p=0.5 keeps token 4 only
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {s.sample(LOGITS)[0] for _ in range(100)} == {4}
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.8, seed=0))
    assert {s.sample(LOGITS)[0] for _ in range(300)} == {4, 0}


def test_uncertainty_statistics():
    lp = log_softmax(LOGITS)
    p = np.exp(lp)
    st = token_stats(lp, 4)
    assert st.logprob == pytest.approx(np.log(p[4]))
    assert st.entropy == pytest.approx(-(p * np.log(p)).sum())
    assert st.margin == pytest.approx(p[4] - p[0])
    uniform = token_stats(log_softmax(np.zeros(8, np.float32)), 0)
    assert uniform.entropy == pytest.approx(np.log(8)) and uniform.margin == pytest.approx(0.0)
    _, stats = Sampler(SamplingParams(return_uncertainty=True)).sample(LOGITS)
    assert stats == st


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 10**6}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
])
def test_bad_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(**kwargs).validate()
    assert err.value.field == field and field in str(err.value)
