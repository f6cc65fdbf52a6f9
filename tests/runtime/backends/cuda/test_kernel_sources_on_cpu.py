"""The CUDA C itself, without a GPU: the op-by-op, sampling and end-to-end parity tests of the
GPU modules collected again on the driver double with `kernels="source"`, so every launch runs
the kernel's own source compiled for the CPU (source_emulator/runtime.h): its indexing, its
shared-memory staging, its warp shuffles and tensor-core fragments, its split-K and atomic
tickets, its bounds, and that nothing before griddepcontrol.wait touches what the kernels
before it in the PDL chain wrote. What this cannot show is speed, and anything the emulator's
sequential blocks hide (it runs one block at a time); the same tests on a GPU cover those.
"""
from __future__ import annotations

import pytest

from .test_model import *  # noqa: F403  (collected again, against the kernel sources on the CPU)
from .test_ops import *  # noqa: F403
from .test_probes import *  # noqa: F403
from .test_sampling import *  # noqa: F403

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def gpu(source_gpu):
    return source_gpu
