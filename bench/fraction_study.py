"""The results study (issues 6 and 13): baselines, zero-shot, the utterance and window prompts, the full
recipe and its ablations, on a seeded fraction (or all) of a dataset's training split.

Every row runs the CLI exactly as a user would (prepare / baseline / train / eval), timed, and is
evaluated once on the FULL test split: WORK/ROW/eval/{metrics.json,predictions.jsonl,confusion.png}.
Finished rows are skipped on a re-run and an interrupted training stage continues with --resume, so
the study can be stopped, resumed across sessions, or extended row by row.

    .venv/bin/python bench/fraction_study.py --dataset meld --raw-dir ../shared/datasets \
        --fraction 0.0625 --work runs/meld_1_16 --rows majority tfidf knn zero-shot plain full

`--train-seed N` trains (and names) the model rows as ROW@seedN, for a second seed of a row. `--ranks N`
trains in N ranks under the deepspeed launcher (on a CPU, one thread each): a row then ends sooner.
A first stage that another row of WORK already trained with the same settings on the same records
(the warm-up of `full`, `no-demos` and `no-predict`: demonstrations change only ERC prompts) is copied
from there, not trained again, and the study says so. Writes WORK/results.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.build import DATASETS  # noqa: E402
from instructerc.decode import positive_int  # noqa: E402
from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import atomic_path, write_json  # noqa: E402
from instructerc.records import load_records  # noqa: E402
from instructerc.train import STAGES, dev_task, train_command  # noqa: E402
from instructerc.train_config import resolve_config  # noqa: E402

CLI = [sys.executable, "-m", "instructerc"]

# prepared data kind -> prepare flags
DATA = {
    "plain": [],
    "utterance": ["--template", "utterance"],
    "demo": ["--demonstrations", "3"],
    "knn": ["--demonstrations", "10"],
}

# row -> (what it is, prepared data it uses, `instructerc baseline` flags or the training stages it runs)
ROWS = {
    "majority": ("majority class of the training sample", "plain", ["--kind", "majority"]),
    "tfidf": ("TF-IDF + logistic regression on the utterance alone, C chosen on dev", "plain", ["--kind", "tfidf"]),
    "knn": ("vote of the first k of 10 retrieved demonstrations, k chosen on dev", "knn",
            ["--kind", "knn", "--k", "auto"]),
    "knn3": ("vote of the 3 retrieved demonstrations", "demo", ["--kind", "knn", "--k", "3"]),
    "zero-shot": ("no adapter, window prompt, no demonstrations", "plain", []),
    "zero-shot+demos": ("no adapter, 3 demonstrations", "demo", []),
    "utterance": ("LoRA on the utterance alone, no context or instruction (the paper's plain baseline)",
                  "utterance", [("plain", None, {})]),
    "plain": ("LoRA on ERC alone: the window prompt, no demonstrations, no speaker stage", "plain",
              [("plain", None, {})]),
    "full": ("demonstrations + speaker stage + joint stage", "demo",
             [("speaker", None, {}), ("joint", "speaker", {})]),
    "no-demos": ("full recipe without demonstrations", "plain",
                 [("speaker", None, {}), ("joint", "speaker", {})]),
    "no-speaker": ("full recipe without the speaker stage", "demo", [("joint", None, {})]),
    "no-predict": ("full recipe with beta = 0 (no emotion prediction)", "demo",
                   [("speaker", None, {}), ("joint", "speaker", {"beta": "0"})]),
}
BASELINES = ("majority", "tfidf", "knn", "knn3")


def say(line: str, log: Path) -> None:
    """Print a line of the study and keep it in `log`."""
    print(line, flush=True)
    with open(log, "a") as f:
        f.write(line + "\n")


def run(cmd: list, log: Path) -> float:
    """Run one CLI step, appending its output to `log`; return its wall time."""
    say("$ " + " ".join(map(str, cmd)), log)
    t = time.time()
    with open(log, "a") as f:
        rc = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if rc != 0:
        sys.exit(f"step failed (exit {rc}); see {log}")
    return time.time() - t


def prepare(args, kind: str, log: Path) -> Path:
    out = args.work / f"data_{kind}"
    if not (out / "manifest.json").exists():
        run(CLI + ["prepare", "--dataset", args.dataset, "--raw-dir", args.raw_dir, "--out", out,
                   "--data-percent", str(args.fraction), "--seed", str(args.seed)] + DATA[kind], log)
    return out


def read_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def stage_records(data: Path, stage: str) -> list:
    """What a stage learns from and is scored on in a prepared folder, and the ERC labels its run records."""
    dev = load_records(data / "dev.jsonl", tuple(dict.fromkeys(("erc", dev_task(stage)))))
    return (load_records(data / "train.jsonl", tuple(STAGES[stage])) + [r for r in dev if r.task == dev_task(stage)]
            + [next((r.labels for r in dev if r.task == "erc"), None)])


def trained_twin(args, name: str, stage: str, sets: dict, data: Path) -> Path | None:
    """A finished first stage of another row of WORK whose config.yaml holds exactly the settings this
    one would run with and whose records are this one's: training it again would repeat that run."""
    expected = {**resolve_config(args.config, [f"{k}={v}" for k, v in sets.items()]), "stage": stage,
                "model": args.model, "init_adapter": None, "world_size": args.ranks}
    mine = None
    for other in sorted(args.work.glob(f"*/{stage}/summary.json")):
        twin = other.parent
        if twin.parent.name == name or not (twin / "best").is_dir():
            continue
        try:  # a folder that cannot be read back is no twin: the stage is then trained as before
            done = yaml.safe_load((twin / "config.yaml").read_text(encoding="utf-8"))
            if not isinstance(done, dict) or any(done.get(k) != v for k, v in expected.items()):
                continue
            mine = stage_records(data, stage) if mine is None else mine
            if stage_records(Path(str(done.get("data"))), stage) == mine:
                return twin
        except (OSError, yaml.YAMLError, UserError):
            continue
    return None


def model_row(args, name: str, row: str, data: Path, stages, log: Path) -> float:
    seconds = 0.0
    runs: dict[str, Path] = {}
    sets = dict(s.split("=", 1) for s in args.set)
    if args.train_seed is not None:
        sets["seed"] = str(args.train_seed)
    for stage, init, stage_sets in stages:
        out = args.work / name / stage
        cmd = train_command(args.ranks) + ["--stage", stage, "--data", data, "--model", args.model, "--out", out,
                                           "--config", args.config]
        for key, value in {**sets, **stage_sets}.items():
            cmd += ["--set", f"{key}={value}"]
        if init:
            cmd += ["--init-adapter", runs[init] / "best"]
        twin = None if init or out.exists() else trained_twin(args, name, stage, {**sets, **stage_sets}, data)
        if twin:
            with atomic_path(out) as tmp:
                shutil.copytree(twin, tmp, ignore=shutil.ignore_patterns("checkpoints"))
            say(f"[{name}] stage {stage}: the same settings and records as {twin}, which is finished; "
                "copied, not retrained", log)
        if (out / "summary.json").exists():
            print(f"[{name}] stage {stage} already trained: {out}")
        else:
            run(cmd + (["--resume"] if (out / "checkpoints").exists() else []), log)
        if not (out / "summary.json").exists():  # --set stop_after=N ends a stage early, on purpose
            sys.exit(f"[{name}] stage {stage} stopped before its end; rerun the same command to continue it")
        # the run's own count: every segment of a resumed stage, not only the last one's wall time
        seconds += json.loads((out / "summary.json").read_text())["seconds"]
        runs[stage] = out
    cmd = CLI + ["eval", "--data", data, "--split", "test", "--model", args.model, "--out",
                 args.work / name / "eval", "--dtype", args.eval_dtype]
    if runs:
        cmd += ["--adapter", list(runs.values())[-1] / "best"]
    return seconds + run(cmd, log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="meld", choices=DATASETS)
    p.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--fraction", type=float, default=0.0625, help="of the training split (1: all of it)")
    p.add_argument("--seed", type=int, default=42, help="seed of the training sample")
    p.add_argument("--train-seed", type=int, help="training seed of the model rows (default: the config's)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", default=None, help="default: configs/DATASET.yaml")
    p.add_argument("--set", action="append", default=[], help="config override for every training run")
    p.add_argument("--ranks", type=positive_int, default=1, help="training ranks (deepspeed launcher; CPU: 1 thread each)")
    p.add_argument("--eval-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="precision of the test-set evaluation (bfloat16: faster on AVX512-BF16 CPUs)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = p.parse_args()
    args.config = args.config or str(REPO / "configs" / f"{args.dataset}.yaml")
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "study.log"
    path = args.work / "results.json"
    results = read_results(path)
    for row in args.rows:
        what, kind, how = ROWS[row]
        name = row if row in BASELINES or args.train_seed is None else f"{row}@seed{args.train_seed}"
        if name in results:
            continue
        t = time.time()
        data = prepare(args, kind, log)
        if row in BASELINES:
            run(CLI + ["baseline", "--data", data, "--out", args.work / name / "eval"] + how, log)
            seconds = time.time() - t
        else:
            seconds = model_row(args, name, row, data, how, log)
        m = json.loads((args.work / name / "eval" / "metrics.json").read_text())
        results = read_results(path)  # again: a study of other rows on the same WORK may have added some
        results[name] = {"what": what, "weighted_f1": m["weighted_f1"], "accuracy": m["accuracy"],
                         "macro_f1": m["macro_f1"], "seconds": round(seconds, 1), "fraction": args.fraction,
                         "seed": args.seed, "train_seed": args.train_seed, "model": args.model,
                         "config": args.config, "overrides": args.set, "eval_dtype": args.eval_dtype}
        write_json(path, results)
        print(f"[{name}] weighted-F1 {100 * m['weighted_f1']:.2f}  acc {100 * m['accuracy']:.2f}"
              f"  ({seconds / 60:.1f} min)", flush=True)
    print("\n| row | what | test weighted-F1 | accuracy | wall time |\n|---|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['what']} | {100 * r['weighted_f1']:.2f} | {100 * r['accuracy']:.2f} "
              f"| {r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
