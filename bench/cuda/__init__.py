"""The CUDA backend measured on a GPU: benchmark.py (decode, TTFT, start to first token, the
engine's fast path), models.py (random models of the real shapes), probes.py (where the time goes)."""
