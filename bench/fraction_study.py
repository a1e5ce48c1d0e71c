"""The data-fraction study of issue 6: baselines, zero-shot, plain LoRA, the full recipe, ablations.

Every row runs the CLI exactly as a user would (prepare / train / eval), timed, on a seeded
fraction of a dataset's training split, and is evaluated on the FULL test split. Finished rows
are skipped on a re-run, so the study can be resumed or extended row by row.

    .venv/bin/python bench/fraction_study.py --dataset meld --raw-dir ../shared/datasets \
        --fraction 0.0625 --work runs/meld_1_16 --rows majority knn zero-shot plain full

Writes WORK/results.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc import baselines  # noqa: E402
from instructerc.fileio import write_json  # noqa: E402
from instructerc.metrics import classification_metrics  # noqa: E402
from instructerc.records import load_records  # noqa: E402

CLI = [sys.executable, "-m", "instructerc"]

# row -> (what it is, prepared data it uses, the training stages it runs)
ROWS = {
    "majority": ("majority class of the training sample", "plain", []),
    "knn": ("vote of the 3 retrieved demonstrations", "demo", []),
    "zero-shot": ("no adapter, no demonstrations", "plain", []),
    "zero-shot+demos": ("no adapter, 3 demonstrations", "demo", []),
    "plain": ("LoRA on ERC alone: this project's windowed prompt, no demonstrations, no stage 1", "plain", [("plain", None, {})]),
    "full": ("demonstrations + speaker stage + joint stage", "demo",
             [("speaker", None, {}), ("joint", "speaker", {})]),
    "no-demos": ("full recipe without demonstrations", "plain",
                 [("speaker", None, {}), ("joint", "speaker", {})]),
    "no-speaker": ("full recipe without the speaker stage", "demo", [("joint", None, {})]),
    "no-predict": ("full recipe with beta = 0 (no emotion prediction)", "demo",
                   [("speaker", None, {}), ("joint", "speaker", {"beta": "0"})]),
}


def run(cmd: list[str], log: Path) -> float:
    """Run one CLI step, appending its output to `log`; return its wall time."""
    print("$", " ".join(map(str, cmd)), flush=True)
    t = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        rc = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if rc != 0:
        sys.exit(f"step failed (exit {rc}); see {log}")
    return time.time() - t


def prepare(args, kind: str, log: Path) -> Path:
    out = args.work / f"data_{kind}"
    if not (out / "manifest.json").exists():
        cmd = CLI + ["prepare", "--dataset", args.dataset, "--raw-dir", args.raw_dir, "--out", out,
                     "--data-percent", str(args.fraction), "--seed", str(args.seed)]
        if kind == "demo":
            cmd += ["--demonstrations", "3"]
        run(cmd, log)
    return out


def baseline(row: str, data: Path) -> dict:
    test = load_records(data / "test.jsonl", tasks=("erc",))
    preds, _ = baselines.predictions(row, data, test)
    m = classification_metrics([p.gold for p in preds], [p.pred for p in preds], list(test[0].labels))
    return {"weighted_f1": m["weighted_f1"], "accuracy": m["accuracy"]}


def model_row(args, row: str, data: Path, stages, log: Path) -> tuple[dict, float]:
    seconds = 0.0
    runs: dict[str, Path] = {}
    for stage, init, sets in stages:
        out = args.work / row / stage
        cmd = CLI + ["train", "--stage", stage, "--data", data, "--model", args.model, "--out", out,
                     "--config", args.config]
        for key, value in {**dict(s.split("=", 1) for s in args.set), **sets}.items():
            cmd += ["--set", f"{key}={value}"]
        if init:
            cmd += ["--init-adapter", runs[init]]
        if (out / "summary.json").exists():
            print(f"[{row}] stage {stage} already trained: {out}")
            seconds += json.loads((out / "summary.json").read_text())["seconds"]
        else:
            seconds += run(cmd + (["--resume"] if (out / "checkpoints").exists() else []), log)
        runs[stage] = out
    out = args.work / row / "eval"
    cmd = CLI + ["eval", "--data", data, "--split", "test", "--model", args.model, "--out", out,
                 "--dtype", args.eval_dtype]
    if runs:
        cmd += ["--adapter", list(runs.values())[-1] / "best"]
    seconds += run(cmd, log)
    m = json.loads((out / "metrics.json").read_text())
    return {"weighted_f1": m["weighted_f1"], "accuracy": m["accuracy"]}, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="meld")
    p.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--fraction", type=float, default=0.0625)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", default=None, help="default: configs/DATASET.yaml")
    p.add_argument("--set", action="append", default=[], help="config override for every training run")
    p.add_argument("--eval-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="precision of the test-set evaluation (bfloat16: faster on AVX512-BF16 CPUs)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = p.parse_args()
    args.config = args.config or str(REPO / "configs" / f"{args.dataset}.yaml")
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "study.log"
    path = args.work / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for row in args.rows:
        if row in results:
            continue
        what, kind, stages = ROWS[row]
        t = time.time()
        data = prepare(args, kind, log)
        if row in ("majority", "knn"):
            metrics, seconds = baseline(row, data), time.time() - t
        else:
            metrics, seconds = model_row(args, row, data, stages, log)
        results[row] = {"what": what, **metrics, "seconds": round(seconds, 1),
                        "fraction": args.fraction, "seed": args.seed, "model": args.model,
                        "overrides": args.set, "eval_dtype": args.eval_dtype}
        write_json(path, results)
        print(f"[{row}] weighted-F1 {100 * metrics['weighted_f1']:.2f}  acc {100 * metrics['accuracy']:.2f}"
              f"  ({seconds / 60:.1f} min)", flush=True)
    print("\n| row | what | test weighted-F1 | accuracy | wall time |\n|---|---|---:|---:|---:|")
    for row, r in results.items():
        print(f"| {row} | {r['what']} | {100 * r['weighted_f1']:.2f} | {100 * r['accuracy']:.2f} "
              f"| {r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
