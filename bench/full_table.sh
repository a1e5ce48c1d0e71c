#!/usr/bin/env bash
# Issue 13's results table, every row in order of value, resumable: run it again after any stop and
# it skips finished rows (bench/fraction_study.py) and continues an interrupted stage with --resume.
#
#   WORK=/path/outside/the/repo bash bench/full_table.sh            # all phases
#   WORK=... PHASES="cheap main" bash bench/full_table.sh           # some of them
#
# cheap:    majority, TF-IDF, kNN (k on dev), zero-shot and the utterance prompt, full training data, 3 datasets
# main:     the window prompt and the full recipe, full training data, 3 datasets, seed 42
# ablation: MELD without demonstrations / speaker stage / emotion prediction
# seeds:    a second training seed (43) of the window prompt and the full recipe
# scaling:  MELD 1/64, 1/16 and 1/4 of the training data: kNN, window prompt, full recipe
#
# CONFIGS holds DATASET.yaml (default configs/small/, the settings for a small model); RAW the datasets
# (default ../shared/datasets). EVAL_DTYPE: precision of the test scoring (default bfloat16: on 500 MELD
# test prompts it gave the fp32 answer 98.6% of the time, 5.1x faster on AVX512-BF16,
# bench/results/bench_precision_full_meld_adapter.json; set float32 on a CPU without BF16 units).
# Each study prints its markdown table (WORK/DATASET_FRACTION/results.json); at the end the error
# analyses of the full-recipe rows and the MELD scaling plot are drawn into WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:?set WORK to a folder outside the repository}
RAW=${RAW:-../shared/datasets}
CONFIGS=${CONFIGS:-configs/small}
MODEL=${MODEL:-smollm2-135m}
PHASES=${PHASES:-"cheap main ablation seeds scaling"}
PY=${PY:-python}
EVAL_DTYPE=${EVAL_DTYPE:-bfloat16}

study() {  # DATASET FRACTION [fraction_study args...]
  local ds=$1 frac=$2
  shift 2
  "$PY" bench/fraction_study.py --dataset "$ds" --raw-dir "$RAW" --fraction "$frac" --model "$MODEL" \
    --config "$CONFIGS/$ds.yaml" --eval-dtype "$EVAL_DTYPE" --work "$WORK/${ds}_$frac" "$@"
}

for phase in $PHASES; do
  echo "==> phase $phase"
  case $phase in
    cheap)    for ds in meld iemocap emorynlp; do study "$ds" 1 --rows majority tfidf knn zero-shot utterance; done ;;
    main)     for ds in meld iemocap emorynlp; do study "$ds" 1 --rows plain full; done ;;
    ablation) study meld 1 --rows no-demos no-speaker no-predict ;;
    seeds)    for ds in meld iemocap emorynlp; do study "$ds" 1 --rows plain full --train-seed 43; done ;;
    # the small configs' 2 epochs are for full data; on a fraction, as many ERC epochs as reach the
    # ~290 steps where dev peaked at 1/16 (BENCHMARKS "Settings for a small model"), with dev scored
    # about every 40 steps or more (1/64: every 4th of its 28 short epochs, and the last)
    scaling)  for fee in 0.015625:28:4 0.0625:7:1 0.25:2:1; do
                IFS=: read -r frac epochs every <<<"$fee"
                study meld "$frac" --rows knn plain full --set "epochs.plain=$epochs" --set "epochs.joint=$epochs" \
                  --set "eval.every=$every"
              done ;;
    *)        echo "unknown phase $phase (cheap main ablation seeds scaling)" >&2; exit 2 ;;
  esac
done

echo "==> reports"
shopt -s nullglob
for ds in meld iemocap emorynlp; do
  [ -f "$WORK/${ds}_1/results.json" ] || continue
  [ -f "$WORK/${ds}_1/full/eval/metrics.json" ] || continue
  compare=()
  for row in tfidf knn; do
    [ -f "$WORK/${ds}_1/$row/eval/metrics.json" ] && compare+=(--compare "$row=$WORK/${ds}_1/$row/eval")
  done
  "$PY" bench/error_analysis.py --data "$WORK/${ds}_1/data_demo" --eval "$WORK/${ds}_1/full/eval" "${compare[@]}" \
    --title "$ds, full recipe: where the errors are" --out "$WORK/errors_$ds.md"
done
results=("$WORK"/meld_*/results.json)
[ ${#results[@]} -gt 0 ] && "$PY" bench/scaling_plot.py "${results[@]}" --out "$WORK/meld_scaling.png"
exit 0
