#!/usr/bin/env bash
# A short GuideLLM benchmark (a third-party load client, in its own venv) against a running
# OpenAI-compatible runtime. Not CI: a check that tools users already run work unchanged.
#   bash scripts/guidellm_run.sh URL MODEL_DIR [MAX_REQUESTS]     e.g. http://127.0.0.1:8000 ~/.cache/inloop/models/smollm2-135m-instruct
# Offline: the processor (tokenizer) is the model directory, HF_HUB_OFFLINE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=$1; MODEL_DIR=$2; MAX=${3:-8}
VENV=.venv-guidellm
if [ ! -x "$VENV/bin/guidellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"   # the CPU build, before guidellm pulls one
  "$VENV/bin/pip" install --quiet --disable-pip-version-check guidellm
fi
OUT=${OUT:-guidellm-out}
mkdir -p "$OUT"
HF_HUB_OFFLINE=1 "$VENV/bin/guidellm" benchmark run --target "$URL" --profile synchronous --max-requests "$MAX" \
  --data "prompt_tokens=64,output_tokens=16" --processor "$MODEL_DIR" --output-dir "$OUT" "${@:4}"
