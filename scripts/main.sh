#!/usr/bin/env bash
# The main job: set up, fetch and convert the default model (SmolLM2-135M-Instruct), serve it
# on loopback with the numpy backend, and answer a prompt through the gRPC client.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
INLOOP=.venv/bin/inloop
$INLOOP model pull-default
PORT=${INLOOP_PORT:-50151}
LOG=${TMPDIR:-/tmp}/inloop-runtime-$PORT.log
$INLOOP runtime serve --model default --backend cpu --host 127.0.0.1 --port "$PORT" 2>"$LOG" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
$INLOOP health "127.0.0.1:$PORT" --wait 120 \
  || { echo "runtime did not become healthy; its log:" >&2; tail -20 "$LOG" >&2; exit 1; }
$INLOOP generate --target "127.0.0.1:$PORT" --max-tokens 64 --uncertainty \
  "${1:-In two sentences: what does a service mesh do?}"
