#!/usr/bin/env bash
# A GPU check that downloads nothing: random-initialised SmolLM2-sized and LLaMA-2-7B-sized models,
# 20 packed bf16 training steps each under the deepspeed launcher on one GPU, and tree scoring
# against the naive forward; one JSON report (tokens/s, peak GPU memory, largest difference).
#
# On a machine with a package index, once (fills wheels/, a few MiB, with deepspeed built as a wheel
# and the small packages it needs that a GPU image may lack):
#   bash scripts/gpu_check.sh --wheels
# Carry the working tree, wheels/ included, to the GPU machine (torch, transformers and peft there),
# and run, in under 10 minutes on one GPU:
#   bash scripts/gpu_check.sh [--out DIR]          # DIR/gpu_check.json (default: gpu_check/)
#   bash scripts/gpu_check.sh --dry-run [--out DIR]  # any machine: configs, wheels, imports, data
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEELS=${WHEELS:-wheels}
OUT=gpu_check
MODE=run
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) MODE=wheels ;;
    --dry-run) MODE=dry-run ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check: unknown option $1 (--wheels, --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
# deepspeed's own requirements, less torch/numpy/packaging/psutil that any torch image has
DEPS="hjson py-cpuinfo ninja msgpack pydantic pydantic-core annotated-types typing-inspection typing-extensions einops"

if [ "$MODE" = wheels ]; then
  mkdir -p "$WHEELS"
  version=$($PY -c "from importlib.metadata import version; print(version('deepspeed'))")
  $PY -m pip wheel -q --no-deps --no-build-isolation "deepspeed==$version" -w "$WHEELS"
  $PY -m pip download -q hjson py-cpuinfo ninja msgpack pydantic einops -d "$WHEELS"  # with their deps: matched versions
  # the compiled ones again for the other Pythons a GPU image may have (where the index has them)
  for pyv in 3.10 3.12 3.13; do
    for pkg in pydantic_core msgpack; do
      v=$(ls "$WHEELS" | sed -n "s/^${pkg}-\([0-9.]*\)-.*/\1/p" | head -1)
      $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$pyv" --platform manylinux2014_x86_64 \
        "${pkg//_/-}==$v" -d "$WHEELS" 2>/dev/null || echo "gpu_check: no $pkg $v wheel for Python $pyv here"
    done
  done
  du -sh "$WHEELS"; ls "$WHEELS"
  exit 0
fi

# Install only what is missing, from wheels/ (no index); this package runs from the tree itself.
if ! $PY -c "import deepspeed" 2>/dev/null; then
  ls "$WHEELS"/deepspeed-*.whl >/dev/null 2>&1 || { echo "gpu_check: deepspeed is not installed and $WHEELS/ has no wheel of it (run --wheels where pip can download)" >&2; exit 2; }
  for dep in $DEPS; do
    module=$(echo "$dep" | tr '-' '_'); [ "$dep" = py-cpuinfo ] && module=cpuinfo
    $PY -c "import $module" 2>/dev/null || $PY -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$dep"
  done
  $PY -m pip install -q --no-index --no-deps "$WHEELS"/deepspeed-*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$(dirname "$(command -v $PY)"):$PATH"
extra=()
[ "$MODE" = dry-run ] && extra=(--dry-run)
$PY bench/gpu_check.py --out "$OUT/gpu_check.json" "${extra[@]}"
