"""The engine's CUDA fast path with the kernels' own CUDA C run on the CPU (source_emulator/):
test_engine_on_cuda.py collected again on the driver double with `kernels="source"`. Greedy
tokens, sessions, stop strings, constrained tool calls, cancellation and seeded sampling go
through the real kernels' code in the captured prefill and decode graphs.
"""
from __future__ import annotations

import pytest

from .test_engine_on_cuda import *  # noqa: F403  (collected again, against the kernel sources on the CPU)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def gpu(source_gpu):
    return source_gpu
