#!/usr/bin/env bash
# A short GuideLLM benchmark (a third-party load client, in its own venv) against a running
# OpenAI-compatible runtime. Not CI: a check that tools users already run work unchanged.
#   bash scripts/guidellm_run.sh URL MODEL_DIR [MAX_REQUESTS] [extra guidellm run args...]
#   e.g. bash scripts/guidellm_run.sh http://127.0.0.1:8000 ~/.cache/inloop/models/smollm2-135m-instruct 8
# GuideLLM >= 0.8 takes its options as kind=...,key=value. The tokenizer is the model directory
# (HF_HUB_OFFLINE=1); the served model name comes from the server's /v1/models.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=$1; MODEL_DIR=$2; MAX=${3:-8}
VENV=.venv-guidellm
if [ ! -x "$VENV/bin/guidellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"   # the CPU build, before guidellm pulls one
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "guidellm>=0.8"
fi
OUT=${OUT:-guidellm-out}
mkdir -p "$OUT"
HF_HUB_OFFLINE=1 "$VENV/bin/guidellm" run \
  --backend "kind=openai_http,target=$URL" \
  --profile kind=synchronous \
  --constraint "kind=max_requests,count=$MAX" \
  --data kind=synthetic_text,prompt_tokens=64,output_tokens=16 \
  --tokenizer "kind=huggingface_auto,model=$MODEL_DIR" \
  --output "kind=json,path=$OUT/benchmarks.json" --output kind=console \
  --disable-progress "${@:4}"
