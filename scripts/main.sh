#!/usr/bin/env bash
# The main job: set up, fetch and convert the default model (SmolLM2-135M-Instruct), and run the
# routing matrix on it: the runtime, tools and controller start on loopback (numpy backend), every
# fault profile (loadgen/profiles/p00..p05) runs the same task cases on the internal and the
# external route, and the report lands in loadgen-out/ (JSON, Markdown, self-contained HTML).
# About 10 minutes on 2 cores; grow it with --per-family N / --runs N (extra flags pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
INLOOP=.venv/bin/inloop
$INLOOP model pull-default
exec $INLOOP loadgen matrix --model default --backend cpu --per-family 1 --runs 1 --out loadgen-out "$@"
