"""Token sampling on the host (numpy): greedy, temperature, top-k, top-p, seeded.

Uncertainty statistics always come from the model's own distribution (temperature 1,
no truncation), so they mean the same thing whatever the sampling settings are.
"""
from __future__ import annotations

import numpy as np

from inloop.services.contract.generation import SamplingParams, TokenStats


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits)
    return z - np.log(np.sum(np.exp(z)))


def token_stats(logprobs: np.ndarray, token: int) -> TokenStats:
    probs = np.exp(logprobs)
    top2 = np.partition(probs, -2)[-2:] if probs.size > 1 else np.array([0.0, probs[0]])
    entropy = float(-np.sum(probs * logprobs, where=probs > 0))
    return TokenStats(logprob=float(logprobs[token]), entropy=max(entropy, 0.0),
                      margin=float(top2[1] - top2[0]))


def _filter_top_k_top_p(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Logits with everything outside top-k and the top-p nucleus set to -inf."""
    out = logits.astype(np.float64, copy=True)
    if 0 < top_k < out.size:
        kth = np.partition(out, -top_k)[-top_k]
        out[out < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-out, kind="stable")
        probs = np.exp(out[order] - out[order[0]])
        probs /= probs.sum()
        cumulative = np.cumsum(probs)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cutoff = int(np.searchsorted(cumulative, top_p)) + 1
        out[order[cutoff:]] = -np.inf
    return out


class Sampler:
    """One per request: owns the request's random generator so seeded runs repeat."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def choose(self, logits: np.ndarray) -> int:
        """logits [V] (float32, -inf where not allowed) -> token id."""
        p = self.params
        if p.temperature == 0.0:
            return int(np.argmax(logits))
        scaled = _filter_top_k_top_p(logits / p.temperature, p.top_k, p.top_p)
        probs = np.exp(scaled - np.max(scaled))
        probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))

    def sample(self, logits: np.ndarray) -> tuple[int, TokenStats | None]:
        """logits [V] (float32) -> (token id, stats if asked for)."""
        token = self.choose(logits)
        stats = token_stats(log_softmax(logits), token) if self.params.return_uncertainty else None
        return token, stats
