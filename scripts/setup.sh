#!/usr/bin/env bash
# Create .venv and install inloop into it. Idempotent: a second run only checks.
#   scripts/setup.sh            the runtime and services
#   scripts/setup.sh --test     plus the test tools and the reference (torch CPU + transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
extras=""
if [ "${1:-}" = "--test" ]; then
  # torch first, pinned: a bare `torch` requirement from transformers would pull a CUDA build of several GB.
  .venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
  extras="[reference,test]"
fi
"${PIP[@]}" -e ".${extras}"
echo "setup: .venv ready ($(.venv/bin/python --version))" >&2
