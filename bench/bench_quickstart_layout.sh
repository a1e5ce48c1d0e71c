#!/usr/bin/env bash
# Issue 11 item 4: the quickstart's two training stages on data/demo in 1 process x all threads
# against 2 ranks (deepspeed --num_gpus 2), one after the other on the same prepared data, and a
# JSON of both layouts' wall times, step seconds and dev scores.
#
#   WORK=/tmp/qs_layout bash bench/bench_quickstart_layout.sh bench/results/bench_quickstart_layout.json
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:?set WORK to a scratch folder (it is emptied)}
JSON=${1:?usage: WORK=DIR bash bench/bench_quickstart_layout.sh OUT.json}
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
rm -rf "$WORK" && mkdir -p "$WORK"
instructerc prepare --dataset meld --raw-dir data/demo --out "$WORK/data" --demonstrations 3 > "$WORK/prepare.log" 2>&1
PORT=$(python -c 'from instructerc.train import free_port; print(free_port())')
for layout in one two; do
  if [ $layout = one ]; then launch=(instructerc); else launch=(deepspeed --master_port "$PORT" --num_gpus 2 instructerc); fi
  for stage in speaker joint; do
    init=(); [ $stage = joint ] && init=(--init-adapter "$WORK/$layout/speaker")
    start=$(date +%s.%N)
    "${launch[@]}" train --stage $stage --config configs/demo.yaml --data "$WORK/data" --model smollm2-135m \
      "${init[@]}" --out "$WORK/$layout/$stage" > "$WORK/$layout.$stage.log" 2>&1
    python -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)" > "$WORK/$layout/$stage/wall_seconds"
  done
done
python - "$WORK" "$JSON" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"command": "WORK=DIR bash bench/bench_quickstart_layout.sh " + sys.argv[2], "layouts": {}}
for layout, what in (("one", "1 process x all threads"), ("two", "2 ranks (deepspeed --num_gpus 2)")):
    row = {"what": what}
    for stage in ("speaker", "joint"):
        run = work / layout / stage
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                 if line.strip() and '"tokens_per_s"' in line and "dev_weighted_f1" not in line]
        summary = json.loads((run / "summary.json").read_text())
        row[stage] = {"wall_seconds": float((run / "wall_seconds").read_text()), "steps": len(steps),
                      "step_seconds": sum(s["seconds"] for s in steps),
                      "step_seconds_after_3": sum(s["seconds"] for s in steps[3:]),
                      "train_seconds": summary["seconds"], "dev_weighted_f1": summary["best"]["dev_weighted_f1"]}
    result["layouts"][layout] = row
one, two = result["layouts"]["one"], result["layouts"]["two"]
result["two_over_one_wall"] = sum(two[s]["wall_seconds"] for s in ("speaker", "joint")) / \
    sum(one[s]["wall_seconds"] for s in ("speaker", "joint"))
out.write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=1))
PY
