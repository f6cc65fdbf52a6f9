#!/usr/bin/env bash
# The long fuzz run (not CI): every RPC of the runtime, tools and controller services, started
# on loopback with a tiny model, under thousands of requests each (tests/fuzz/rpc_fuzz.py).
# Prints calls and status counts per RPC and every finding; exits 1 on a finding.
#   bash scripts/fuzz_rpcs.sh [--calls N] [--seed S]      (default 2000 calls per RPC)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh --test
exec .venv/bin/python -m tests.fuzz.rpc_fuzz --calls 2000 "$@"
