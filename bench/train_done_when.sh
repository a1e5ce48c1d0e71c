#!/bin/bash
# issue 4 done-when: MELD (prepare --data-percent 0.005), stage speaker then joint, one process and 2 ranks; SIGKILL + resume.
set -x
cd "$(dirname "$0")/.."
D=runs/data/meld_p005
R=runs/meld_p005
rm -rf $R; mkdir -p $R
[ -f $D/manifest.json ] || .venv/bin/instructerc prepare --dataset meld --raw-dir ../shared/datasets --out $D --data-percent 0.005
COMMON="--data $D --model smollm2-135m --config configs/demo.yaml --set eval.max_records=30 --set checkpoint_every=2"
T0=$(date +%s)
.venv/bin/instructerc train --stage speaker $COMMON --out $R/one_speaker || exit 1
T1=$(date +%s)
.venv/bin/instructerc train --stage joint $COMMON --init-adapter $R/one_speaker --out $R/one_joint || exit 1
T2=$(date +%s)
.venv/bin/deepspeed --master_port 29611 --num_gpus 2 instructerc train --stage speaker $COMMON --out $R/two_speaker || exit 1
T3=$(date +%s)
.venv/bin/deepspeed --master_port 29611 --num_gpus 2 instructerc train --stage joint $COMMON --init-adapter $R/two_speaker --out $R/two_joint || exit 1
T4=$(date +%s)
# a real kill: SIGKILL the joint run once its first checkpoint is down, then --resume
.venv/bin/instructerc train --stage joint $COMMON --init-adapter $R/one_speaker --out $R/killed_joint &
PID=$!
until [ -f $R/killed_joint/checkpoints/latest.json ]; do sleep 2; done
sleep 1
kill -9 $PID; wait $PID; echo "killed rc=$?"
cat $R/killed_joint/checkpoints/latest.json
.venv/bin/instructerc train --stage joint $COMMON --init-adapter $R/one_speaker --out $R/killed_joint --resume || exit 1
T5=$(date +%s)
echo "seconds: one_speaker $((T1-T0)) one_joint $((T2-T1)) two_speaker $((T3-T2)) two_joint $((T4-T3)) kill+resume $((T5-T4))"
.venv/bin/python - <<'PY'
import json
R="runs/meld_p005"
for n in ["one_speaker","one_joint","two_speaker","two_joint","killed_joint"]:
    s=json.load(open(f"{R}/{n}/summary.json"))
    print(n, s["steps"], s["world_size"], round(s.get("tokens_per_s", s.get("tokens_per_s_this_process", 0)),1), s["best"]["dev_weighted_f1"], s["adapter_sha256"][:16])
a=json.load(open(f"{R}/one_joint/summary.json"))["adapter_sha256"]; b=json.load(open(f"{R}/killed_joint/summary.json"))["adapter_sha256"]
print("killed+resumed == uninterrupted:", a==b)
PY
