#!/usr/bin/env bash
# Per-kernel GPU times of a prefill and a decode step under Nsight Compute (scripts/gpu_profile.py),
# with the same environment as scripts/gpu_check.sh. Writes ${OUT:-gpu_results}/profile.txt and
# the raw ncu_<shape>_<part>.csv files.
#   scripts/gpu_profile.sh [--shapes smollm2-135m,qwen2.5-0.5b] [--ncu PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
exec "$PY" scripts/gpu_profile.py --out "$OUT" "$@"
