"""The built-in prompt set of `inloop loadgen load`: short chat prompts of varied lengths.

A request's prompt is one question, optionally after a few sentences of context, so the
prompt lengths spread over roughly 10 to 150 tokens (the spread a chat service sees, and
enough that prefill time varies per request). The set is a pure function of (n, seed):
two runs with the same seed send the same prompts in the same order, so runs compare.
"""
from __future__ import annotations

import numpy as np

QUESTIONS = (
    "What is a service mesh?",
    "Explain what a gRPC deadline is in one sentence.",
    "What is 17 * 23?",
    "Summarize why retries need backoff with jitter.",
    "Name three uses of a key-value store.",
    "What does time to first token measure?",
    "How does a KV cache speed up decoding?",
    "Give a short definition of tail latency.",
    "Why would a request be rejected with RESOURCE_EXHAUSTED?",
    "What is the difference between a process and a thread?",
    "Write one sentence about the quick brown fox.",
    "What is an idempotency key used for?",
    "List two ways to measure throughput.",
    "What does a load balancer do?",
    "Translate 'good morning' into French.",
    "What is the capital of Japan?",
)

CONTEXT = (
    "The runtime owns the GPU and serves a decoder model over gRPC.",
    "The controller calls the tools service and the runtime with deadlines and retries.",
    "A receipt from Corner Market lists bread 2.50, milk 1.20 and coffee 7.90.",
    "Requests wait in a bounded queue; a full queue answers with an error at once.",
    "Every hop of a task is traced, so hop overhead can be read in a dashboard.",
    "Uncertainty tells the agent when to verify an answer before it replies.",
    "The benchmark sends requests at a fixed rate or keeps a fixed number in flight.",
    "Latency percentiles show what the slowest requests experienced.",
)

MAX_CONTEXT_SENTENCES = 6


def chat_prompts(n: int, seed: int = 0) -> list[str]:
    """n prompts: a seeded question after 0..MAX_CONTEXT_SENTENCES seeded context sentences."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
        k = int(rng.integers(0, MAX_CONTEXT_SENTENCES + 1))
        context = [CONTEXT[int(i)] for i in rng.choice(len(CONTEXT), size=k, replace=False)]
        prompts.append(" ".join([*context, question]))
    return prompts
