# Sourced by scripts/gpu_check.sh and scripts/gpu_profile.sh (from the repository root): the
# environment a GPU run needs. PY, OUT, INLOOP_GPU_WORK, INLOOP_CACHE and CUDA_HOME are set;
# the wheels scripts/gpu_wheels.sh fetched (carried as .whl/) are installed with --no-deps into
# a private target ahead of the image's own packages; the checkout becomes importable as the
# `inloop` namespace an install would make (scripts/import_tree.py), and the repository an import root.
PY="${PYTHON:-python3}"
export OUT="${OUT:-gpu_results}"
export INLOOP_GPU_WORK="${INLOOP_GPU_WORK:-/tmp/inloop-gpu-check}"
export INLOOP_CACHE="${INLOOP_CACHE:-$INLOOP_GPU_WORK/cache}"
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then
  export CUDA_HOME=/usr/local/cuda  # lets cuda-python find a toolkit's libnvrtc when no wheel has it
fi
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null && [ ! -e "$INLOOP_GPU_WORK/site/.installed" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$INLOOP_GPU_WORK/site" .whl/*.whl
  touch "$INLOOP_GPU_WORK/site/.installed"
fi
if [ -d "$INLOOP_GPU_WORK/site" ]; then
  export PYTHONPATH="$INLOOP_GPU_WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# the checkout as the installed `inloop` namespace (links; pip does not run here), then the repository
"$PY" scripts/import_tree.py . "$INLOOP_GPU_WORK/src" >/dev/null
export PYTHONPATH="$INLOOP_GPU_WORK/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "from cuda.bindings import nvrtc; nvrtc.nvrtcVersion()" 2>"$OUT/nvrtc_error.txt"; then
  echo "$0: cuda-python's NVRTC does not load (see $OUT/nvrtc_error.txt)" >&2
  exit 2
fi
rm -f "$OUT/nvrtc_error.txt"
