#!/usr/bin/env bash
# The external route with its model hop on llama.cpp's own server (not ours): llama-server on
# the default model's GGUF, our tools service, our controller with
# --model-endpoint http://.../v1; then a few tasks through the controller, each printed as
# its steps (model / tool) and answer. Not CI: a recorded check that the mesh works with a
# third-party OpenAI server. SmolLM2's own template does not render tools, so llama-server gets
# a ChatML template with Hermes tool calls (scripts/templates/), from which its --jinja parser
# learns the call format and turns calls into tool_calls.
#   bash scripts/external_route_llama_server.sh [OUT_DIR]
# Build llama-server once first: bash scripts/build_llama_server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-external-llama-out}
mkdir -p "$OUT"
INLOOP=.venv/bin/inloop
BIN=${INLOOP_CACHE:-$HOME/.cache/inloop}/llama-server/bin/llama-server
[ -x "$BIN" ] || { echo "no llama-server at $BIN: run bash scripts/build_llama_server.sh first" >&2; exit 2; }
GGUF=$(.venv/bin/python -c "from inloop.services.runtime.model.default_model import find_gguf; print(find_gguf())")
port() { .venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
LP=$(port); TP=$(port); CP=$(port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" -m "$GGUF" --host 127.0.0.1 --port "$LP" -t 2 -c 4096 -np 2 --jinja \
  --chat-template-file scripts/templates/chatml_hermes_tools.jinja >"$OUT/llama-server.log" 2>&1 &
pids+=($!)
"$INLOOP" tools serve --port "$TP" --metrics-port -1 >"$OUT/tools.jsonl" 2>&1 &
pids+=($!)
"$INLOOP" controller serve --port "$CP" --metrics-port -1 --runtime 127.0.0.1:1 --tools "127.0.0.1:$TP" \
  --model-endpoint "http://127.0.0.1:$LP/v1" >"$OUT/controller.jsonl" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$LP/health" >/dev/null && "$INLOOP" health "127.0.0.1:$CP" >/dev/null 2>&1 && break
  sleep 0.5
done

run() {  # name, then inloop task run arguments
  local name=$1; shift
  "$INLOOP" task run --route external --target "127.0.0.1:$CP" --max-tokens 128 --deadline-ms 120000 --json "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.err" || true
  .venv/bin/python - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
path, name = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    print(f"{name}: no result ({open(path.replace('.json', '.err')).read().strip()[:300]})")
    raise SystemExit
steps = " -> ".join(s.get("kind", "?") + (f"({s.get('toolName') or s.get('tool_name')})" if s.get("kind") == "tool" else "")
                    for s in r.get("steps", []))
print(f"{name}: ok={r.get('ok', False)} error={r.get('error_type') or '-'} steps: {steps}")
for s in r.get("steps", []):
    if s.get("detail"):
        print(f"  {s.get('kind')}: {s['detail'][:200]}")
print(f"  answer: {(r.get('answer') or '')[:200]!r}")
EOF
}
run calculator_required --tool calculator --tool-choice required "What is 17 * 23 + 4?"
run calculator_auto --tool calculator --tool-choice auto "Use the calculator: what is 12.5 * 8?"
run search_required --tool search --tool-choice required "Find the refund policy for damaged items."
run kv_required --tool kv --tool-choice required "Store the value blue under the key color."
run no_tool "Say hello in five words."
echo "results and logs in $OUT/"
