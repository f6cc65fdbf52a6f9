#!/usr/bin/env bash
# Fetch, here, the wheels the GPU machine lacks, for its Python (3.12, manylinux x86_64), into
# .whl/ (ignored by git; the device tool carries it: run(..., carry=[".whl"])). scripts/gpu_check.sh
# installs them there with --no-deps into a private target before anything else runs.
# The device image has torch, transformers, numpy, tokenizers, safetensors, cuda-bindings,
# jinja2, pytest, prometheus-client, rich, wrapt, psutil ... (its KINDS.md list); what inloop
# needs beyond that is below. grpcio and protobuf travel too: our generated code needs
# grpcio >= 1.85.1 and protobuf 7, which the image's own versions may not be.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
PACKAGES=(grpcio grpcio-health-checking grpcio-reflection protobuf googleapis-common-protos
  structlog tenacity gguf opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions
  opentelemetry-proto opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-grpc
  opentelemetry-exporter-otlp-common opentelemetry-instrumentation opentelemetry-instrumentation-grpc)
pins=()
for p in "${PACKAGES[@]}"; do pins+=("$p==$(version "$p")"); done
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${pins[@]}"
du -sh .whl >&2
ls .whl >&2
