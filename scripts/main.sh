#!/usr/bin/env bash
# The main job: set up, fetch and convert the default model (SmolLM2-135M-Instruct), and run the
# routing matrix on it: the runtime, tools and controller start on loopback (numpy backend), every
# fault profile (loadgen/profiles/p00..p05) runs the same task cases on the internal and the
# external route, and the report lands in loadgen-out/ (JSON, Markdown, self-contained HTML).
# About 8 minutes on 2 cores: 6 profiles x 8 families x 1 case x 2 routes (8 pairs per profile,
# too few for a CI: the report gives each ratio and says so). Grow it with --per-family N,
# --runs N or --min-pairs N --budget-s S (extra flags pass through); loadgen-out/summary.md
# (and .html) is the page to open first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
INLOOP=.venv/bin/inloop
$INLOOP model pull-default
$INLOOP loadgen matrix --model default --backend cpu --per-family 1 --runs 1 --out loadgen-out "$@"
# the page to open first: every result in loadgen-out/, the claims that hold apart from the noise
exec $INLOOP loadgen summary loadgen-out
