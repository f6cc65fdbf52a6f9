#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (not llama-cpp-python's Python server) once, from the
# llama.cpp source vendored in the llama-cpp-python sdist, into a cache directory; print its path.
# About 10 minutes on 2 cores; a second run finds it and only prints the path.
#   bash scripts/build_llama_server.sh [CACHE_DIR]      (default: ${INLOOP_CACHE:-~/.cache/inloop}/llama-server)
# Needs cmake, a C++ compiler and ninja or make (Debian: cmake g++ ninja-build). For comparisons
# (`inloop loadgen backends`), not CI.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${1:-${INLOOP_CACHE:-$HOME/.cache/inloop}/llama-server}"
BIN="$CACHE/bin/llama-server"
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
for tool in cmake g++; do
  command -v "$tool" >/dev/null || { echo "build_llama_server: $tool is missing (apt-get install cmake g++ ninja-build)" >&2; exit 2; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
echo "build_llama_server: fetching the llama-cpp-python sdist (the vendored llama.cpp source)" >&2
"$PY" -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps -d "$WORK" llama-cpp-python
tar xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
SRC=$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
echo "build_llama_server: configuring $SRC (portable: no -march=native)" >&2
cmake -S "$SRC" -B "$WORK/build" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >"$WORK/configure.log" 2>&1 \
  || { tail -30 "$WORK/configure.log" >&2; exit 1; }
echo "build_llama_server: building (about 10 minutes on 2 cores)" >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log" >&2; exit 1; }
mkdir -p "$CACHE/bin"
cp "$WORK/build/bin/llama-server" "$BIN"
echo "$BIN"
