#!/usr/bin/env bash
# The Berkeley Function Calling Leaderboard's own package (`bfcl-eval`: its data and its AST
# checker) in a venv of its own, .venv-bfcl: it pins numpy 1.26 and pulls every provider's SDK
# (and sentence-transformers, so torch), none of which belongs in the project's venv.
# `inloop eval bfcl` runs loadgen/eval/bfcl_runner.py with this venv's python; the two sides
# exchange JSON files only.
#   bash scripts/bfcl_venv.sh            # create it once (idempotent)
#   BFCL_EVAL_VERSION=... bash scripts/bfcl_venv.sh   # another release
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BFCL_VENV:-.venv-bfcl}
VERSION=${BFCL_EVAL_VERSION:-2026.3.23}
if "$VENV/bin/python" -c "import bfcl_eval.eval_checker.ast_eval.ast_checker" 2>/dev/null; then
  echo "$VENV: bfcl-eval $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("bfcl-eval"))') ready"
  exit 0
fi
python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"            # the CPU build first, before sentence-transformers pulls a CUDA one
"${PIP[@]}" "bfcl-eval==$VERSION"
# qwen-agent (imported by bfcl's model registry, which its checker imports) reads audio with
# soundfile without declaring it
"${PIP[@]}" soundfile
"$VENV/bin/python" -c "import bfcl_eval.eval_checker.ast_eval.ast_checker" \
  && echo "$VENV: bfcl-eval $VERSION ready"
