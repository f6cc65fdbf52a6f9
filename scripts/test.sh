#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite (CI calls exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/system_packages.sh
.venv/bin/inloop model pull-default
# every CUDA kernel must compile with NVRTC even where no GPU exists
.venv/bin/inloop cuda compile --arch sm_80,sm_90
exec .venv/bin/python -m pytest -q -ra "$@"
