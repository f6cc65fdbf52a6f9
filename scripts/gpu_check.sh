#!/usr/bin/env bash
# The CUDA backend's GPU check in one command (a few minutes): compile the kernels, run the
# GPU tests, check greedy parity with the numpy backend, benchmark ours vs HF transformers on
# random SmolLM2-135M- and Qwen2.5-0.5B-shaped models, the batching core's bucket graphs and
# engine, and (with time to spare or --qwen35) a Qwen3.5-0.8B-shaped model. Results: ${OUT:-gpu_results}/
# (results.json, summary.txt, pytest.log, parity.jsonl). Needs python3 with numpy,
# cuda-bindings (+ NVRTC: a wheel or a CUDA toolkit), tokenizers; torch + transformers for the
# HF side. No network: run scripts/gpu_wheels.sh here first and carry .whl/ for the rest.
#   [INLOOP_COMMIT=<hash>] scripts/gpu_check.sh [--skip-tests] [--skip-hf] [--baseline .baseline] [--qwen35]
# (INLOOP_COMMIT names the commit in the results where the copy has no .git; --baseline
# benches another commit's tree on the same card: scripts/gpu_baseline.py prepare REV.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
exec "$PY" scripts/gpu_check.py --out "$OUT" "$@"
