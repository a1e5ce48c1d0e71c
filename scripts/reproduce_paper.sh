#!/usr/bin/env bash
# InstructERC's main table (Lei et al. 2023, Table 2) on a GPU machine: for MELD, IEMOCAP and
# EmoryNLP, prepare with retrieved demonstrations, stage 1 (speaker identification), stage 2
# (joint ERC + emotion prediction), and the test-set evaluation of the best dev adapter.
#
#   RAW=/path/to/datasets MODEL=meta-llama/Llama-2-7b-chat-hf NGPU=8 bash scripts/reproduce_paper.sh
#
# RAW holds meld/, emorynlp/ and cosmic/ (see data/README.md); MODEL is any causal LM folder or
# Hugging Face id (the paper's is LLaMA2-7B-chat); NGPU ranks share each effective batch of 32.
# The summary table is printed at the end and kept in $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${RAW:?set RAW to the folder holding meld/, emorynlp/ and cosmic/}
MODEL=${MODEL:-meta-llama/Llama-2-7b-chat-hf}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
OUT=${OUT:-runs/paper}
DATASETS=${DATASETS:-"meld iemocap emorynlp"}
K=${DEMONSTRATIONS:-3}

for ds in $DATASETS; do
  echo "==> $ds: prepare (k=$K demonstrations)"
  [ -f "$OUT/$ds/data/manifest.json" ] || \
    instructerc prepare --dataset "$ds" --raw-dir "$RAW" --out "$OUT/$ds/data" --demonstrations "$K"
  for stage in speaker joint; do
    run="$OUT/$ds/$stage"
    [ -f "$run/summary.json" ] && { echo "==> $ds: stage $stage done"; continue; }
    echo "==> $ds: stage $stage on $NGPU GPU(s)"
    extra=()
    [ "$stage" = joint ] && extra=(--init-adapter "$OUT/$ds/speaker")
    [ -d "$run/checkpoints" ] && extra+=(--resume)
    deepspeed --num_gpus "$NGPU" --module instructerc train --stage "$stage" --config "configs/$ds.yaml" \
      --data "$OUT/$ds/data" --model "$MODEL" --out "$run" "${extra[@]}"
  done
  echo "==> $ds: test evaluation"
  rm -rf "$OUT/$ds/eval"
  instructerc eval --data "$OUT/$ds/data" --split test --model "$MODEL" --adapter "$OUT/$ds/joint/best" \
    --out "$OUT/$ds/eval" --batch-size 16
done

python - "$OUT" $DATASETS <<'PY' | tee "$OUT/summary.md"
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| dataset | test weighted-F1 | accuracy | macro-F1 |\n|---|---:|---:|---:|")
for n in names:
    m = json.load(open(f"{out}/{n}/eval/metrics.json"))
    print(f"| {n} | {100 * m['weighted_f1']:.2f} | {100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} |")
PY
