#!/usr/bin/env bash
# The BFCL run of the issue: SmolLM2 (the default model), our runtime on the numpy backend, the
# first 50 items of simple_python, multiple, parallel and irrelevance, all three arms (ours
# constrained, ours unconstrained, HF transformers), greedy, fixed max_tokens. Not CI: on 2
# cores it takes about an hour. Interrupted (or cut by --budget-s), the same command goes on
# from the records already in the output directory. HF answers alongside our runtime
# (--concurrent), each side on one thread (OMP_NUM_THREADS for the runtime, --threads for torch).
#   bash scripts/bfcl_run.sh [OUT] [extra inloop eval bfcl args...]
#   e.g. bash scripts/bfcl_run.sh bfcl-out --budget-s 2700
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bfcl-out}
PY=${PYTHON:-.venv/bin/python}
bash scripts/bfcl_venv.sh
"$PY" -m inloop.services.cli model pull-default >/dev/null
start=$(date +%s)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OMP_NUM_THREADS:-1} \
  "$PY" -m inloop.services.cli eval bfcl --model default --backend cpu --limit 50 --concurrent --threads 1 \
  --out "$OUT" "${@:2}" 2> "$OUT.log"
echo "wall time of this invocation: $(( $(date +%s) - start )) s (log: $OUT.log, report: $OUT/report.md)"
