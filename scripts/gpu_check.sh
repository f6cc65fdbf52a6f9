#!/usr/bin/env bash
# The CUDA backend's GPU check in one command (under 4 minutes): compile the kernels, run the
# GPU tests, check greedy parity with the numpy backend, and benchmark ours vs HF transformers
# on random SmolLM2-135M- and Qwen2.5-0.5B-shaped models. Results: ${OUT:-gpu_results}/
# (results.json, summary.txt, pytest.log, parity.jsonl). Needs python3 with numpy,
# cuda-bindings (+ NVRTC: a wheel or a CUDA toolkit), tokenizers; torch + transformers for the
# HF side. No network: run scripts/gpu_wheels.sh here first and carry .whl/ for the rest.
#   [INLOOP_COMMIT=<hash>] scripts/gpu_check.sh [--skip-tests] [--skip-hf]
# (INLOOP_COMMIT names the commit in the results where the copy has no .git.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OUT="${OUT:-gpu_results}"
export INLOOP_GPU_WORK="${INLOOP_GPU_WORK:-/tmp/inloop-gpu-check}"
export INLOOP_CACHE="${INLOOP_CACHE:-$INLOOP_GPU_WORK/cache}"
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then
  export CUDA_HOME=/usr/local/cuda  # lets cuda-python find a toolkit's libnvrtc when no wheel has it
fi
mkdir -p "$OUT"
# The wheels scripts/gpu_wheels.sh fetched (carried as .whl/): what the GPU image lacks, in a
# private target ahead of the image's own packages. The repository and proto/ (the generated
# inloop.v1 package) are import roots, as an installed inloop would make them.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$INLOOP_GPU_WORK/site" .whl/*.whl
  export PYTHONPATH="$INLOOP_GPU_WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/proto${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "from cuda.bindings import nvrtc; nvrtc.nvrtcVersion()" 2>"$OUT/nvrtc_error.txt"; then
  echo "gpu_check: cuda-python's NVRTC does not load (see $OUT/nvrtc_error.txt)" >&2
  exit 2
fi
rm -f "$OUT/nvrtc_error.txt"
exec "$PY" scripts/gpu_check.py --out "$OUT" "$@"
