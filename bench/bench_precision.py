"""bf16 against fp32 on the real model: label scoring agreement and training loss curves.

    .venv/bin/python bench/bench_precision.py --data DATA --adapter RUN/best --limit 500 \
        --train-runs RUN_FP32 RUN_BF16 --steps 50 --json bench/results/bench_precision.json

Scoring: `instructerc eval` on the first --limit test records, once with float32 weights and once
with bfloat16 weights, one after the other (the same prompts, the same adapter); reports the share
of records whose answer is the same, the largest difference of a label probability, both times and
both weighted-F1 scores. Training: two run folders of the same command but for `precision`
(bench_train_epoch.py's variants b and c); reports the per-step loss difference over their first
--steps optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.fileio import read_jsonl, write_json  # noqa: E402

DTYPES = ("float32", "bfloat16")


def score(args, dtype: str) -> tuple[dict, list[dict]]:
    out = args.work / f"eval_{dtype}"
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "instructerc", "eval", "--data", args.data, "--split", "test", "--model",
               args.model, "--adapter", args.adapter, "--dtype", dtype, "--limit", str(args.limit), "--out", out]
        print("$", " ".join(map(str, cmd)), flush=True)
        rc = subprocess.call([str(c) for c in cmd], cwd=REPO)
        if rc != 0:
            sys.exit(f"bench_precision: instructerc eval failed (exit {rc}); its message is above")
    return json.loads((out / "metrics.json").read_text()), list(read_jsonl(out / "predictions.jsonl"))


def scoring_agreement(args) -> dict:
    (m32, p32), (m16, p16) = score(args, "float32"), score(args, "bfloat16")
    assert [p["id"] for p in p32] == [p["id"] for p in p16]
    same = sum(a["pred"] == b["pred"] for a, b in zip(p32, p16))
    prob_diff = max(abs(a["probs"][lab] - b["probs"][lab]) for a, b in zip(p32, p16) for lab in a["probs"])
    return {"records": len(p32), "same_answer": same, "agreement": same / len(p32), "max_prob_diff": prob_diff,
            "seconds": {"float32": m32["decoding"]["seconds"], "bfloat16": m16["decoding"]["seconds"]},
            "fp32_over_bf16_time": m32["decoding"]["seconds"] / m16["decoding"]["seconds"],
            "weighted_f1": {"float32": m32["weighted_f1"], "bfloat16": m16["weighted_f1"]}}


def step_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]


def loss_curves(fp32_run: Path, bf16_run: Path, steps: int) -> dict:
    a, b = step_losses(fp32_run)[:steps], step_losses(bf16_run)[:steps]
    if len(a) < steps or len(b) < steps:
        sys.exit(f"need {steps} logged steps in both runs; have {len(a)} ({fp32_run}) and {len(b)} ({bf16_run})")
    diffs = [abs(x - y) for x, y in zip(a, b)]
    return {"steps": steps, "fp32_run": str(fp32_run), "bf16_run": str(bf16_run),
            "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / steps,
            "max_rel_diff": max(d / x for d, x in zip(diffs, a)),
            "fp32_first_last": [a[0], a[-1]], "bf16_first_last": [b[0], b[-1]],
            "fp32_mean_last10": sum(a[-10:]) / 10, "bf16_mean_last10": sum(b[-10:]) / 10,
            "fp32": a, "bf16": b}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--work", type=Path, help="eval output folders (default: beside --json)")
    p.add_argument("--train-runs", type=Path, nargs=2, metavar=("FP32_RUN", "BF16_RUN"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    args.work = args.work or args.json.with_suffix("")
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(sys.argv), "scoring": scoring_agreement(args)}
    if args.train_runs:
        result["training"] = loss_curves(*args.train_runs, args.steps)
    write_json(args.json, result)
    print(json.dumps({k: {n: v for n, v in r.items() if n not in ("fp32", "bf16")} for k, r in result.items()
                      if isinstance(r, dict)}, indent=1))


if __name__ == "__main__":
    main()
