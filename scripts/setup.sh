#!/usr/bin/env bash
# Create .venv with instructerc and its test tools. Idempotent: re-running is cheap.
# torch is pinned (pyproject) to 2.13.0; a GPU user installs a CUDA torch 2.13.0 first:
#   INSTRUCTERC_TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "[setup] installing torch 2.13.0"
  .venv/bin/pip install -q ${INSTRUCTERC_TORCH_INDEX:+--index-url "$INSTRUCTERC_TORCH_INDEX"} torch==2.13.0
fi
if ! .venv/bin/python -c "import instructerc, pytest" 2>/dev/null || [ pyproject.toml -nt .venv/.instructerc-installed ]; then
  echo "[setup] installing instructerc (editable) with test extras"
  .venv/bin/pip install -q -e ".[test,mpi]"
  touch .venv/.instructerc-installed
fi
# tcmalloc makes CPU training about 1.5x faster (instructerc/allocator.py); install it where we may.
if ! .venv/bin/python -c "import sys; from instructerc.allocator import find_tcmalloc; sys.exit(find_tcmalloc() is None)"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${INSTRUCTERC_NO_APT:-}" ]; then
    echo "[setup] installing libtcmalloc-minimal4 (apt-get; INSTRUCTERC_NO_APT=1 skips this)"
    { apt-get install -y -qq libtcmalloc-minimal4 || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; }; } \
      >/dev/null 2>&1 || echo "[setup] apt-get could not install libtcmalloc-minimal4; continuing with the system malloc"
  else
    echo "[setup] no tcmalloc found: training runs slower on the system malloc (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)"
  fi
fi
# (naming the CPU accelerator up front keeps DeepSpeed from warning that it found no GPU)
echo "[setup] ready: $(.venv/bin/python -c 'import os, torch; torch.cuda.is_available() or os.environ.setdefault("DS_ACCELERATOR", "cpu"); import transformers, peft, deepspeed; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null), malloc: $(.venv/bin/python -c 'from instructerc.allocator import find_tcmalloc; print(find_tcmalloc() or "system")')"
