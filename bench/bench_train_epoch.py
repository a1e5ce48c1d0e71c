"""One joint epoch, side by side: the per-record trainer against dialogue packing and rank layouts.

Every variant is the CLI as a user runs it (`instructerc train`, or the deepspeed launcher for
2 ranks) on the same prepared data, from the same stage-1 adapter, with the same settings:

    a  packing none, fp32       1 process x all threads (the trainer before this work)
    b  packing dialogue, fp32   1 process x all threads
    c  packing dialogue, bf16   1 process x all threads
    d  packing dialogue, bf16   2 ranks x 1 thread (deepspeed --num_gpus 2)

Each variant names its precision, so `precision: auto` (bf16 on a CPU with AMX or AVX512-BF16)
never changes what a letter means from one machine to the next.

The --full variant trains the whole epoch (and, with --eval, its best adapter is scored on the
full test split); the others are timed over the epoch's first --steps optimizer steps. b, c and
d see the same examples in those steps (the plan shuffles whole dialogues the same way; only the
cut into packs differs), so their step times compare directly; a shuffles single records, so it
is compared per record token, and its epoch time is its time per token x the epoch's tokens.

    .venv/bin/python bench/bench_train_epoch.py --data runs/meld_1_16/data_demo --work runs/bench_epoch \
        --set batch_size=16 --set eval.max_records=200 \
        --full c --variants c b --steps 50 --eval --json bench/results/bench_train_epoch_meld_1_16_bf16.json

(then `--variants d a --steps 14` with the same --work and --json: each row keeps its own step count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.fileio import write_json  # noqa: E402
from instructerc.train import train_command  # noqa: E402

VARIANTS = {
    "a": ("packing none, fp32, 1 process", 1, ["packing=none", "precision=fp32"]),
    "b": ("packing dialogue, fp32, 1 process", 1, ["packing=dialogue", "precision=fp32"]),
    "c": ("packing dialogue, bf16, 1 process", 1, ["packing=dialogue", "precision=bf16"]),
    "d": ("packing dialogue, bf16, 2 ranks x 1 thread", 2, ["packing=dialogue", "precision=bf16"]),
}


def run(cmd: list, log: Path) -> float:
    print("$", " ".join(map(str, cmd)), flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        rc = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if rc != 0:
        sys.exit(f"failed (exit {rc}); see {log}")
    return time.perf_counter() - t


def step_rows(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", default=str(REPO / "configs" / "meld.yaml"))
    p.add_argument("--set", action="append", default=[], help="config override for every run")
    p.add_argument("--speaker-adapter", type=Path, help="stage-1 adapter to start from (default: train one)")
    p.add_argument("--variants", nargs="+", default=["b", "d", "a"], choices=list(VARIANTS))
    p.add_argument("--full", default="b", choices=list(VARIANTS), help="the variant that trains the whole epoch")
    p.add_argument("--steps", type=int, default=14, help="steps timed for the other variants")
    p.add_argument("--eval", action="store_true", help="score the full variant's best adapter on the full test split")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench.log"
    sets = ["epochs.speaker=1", "epochs.joint=1", "log_every=1", *args.set]
    common = ["--data", args.data, "--model", args.model, "--config", args.config]
    for s in sets:
        common += ["--set", s]
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    result.update({"command": " ".join(sys.argv), "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
                   "overrides": sets, "variants": result.get("variants", {})})

    speaker = args.speaker_adapter
    if speaker is None:
        speaker = args.work / "speaker"
        if not (speaker / "summary.json").exists():
            result["speaker_seconds"] = run(train_command(2) + ["--stage", "speaker", "--out", speaker, *common], log)
    for name in args.variants:
        what, ranks, extra = VARIANTS[name]
        out = args.work / f"joint_{name}"
        want = None if name == args.full else args.steps
        done = (out / "summary.json").exists() if want is None else \
            (out / "metrics.jsonl").exists() and len(step_rows(out)) >= want
        if not done:
            shutil.rmtree(out, ignore_errors=True)
            cmd = train_command(ranks) + ["--stage", "joint", "--out", out, "--init-adapter", speaker, *common]
            for s in extra + ([f"stop_after={want}"] if want else []):
                cmd += ["--set", s]
            result["variants"][name] = {"wall_seconds": run(cmd, log)}
        rows = step_rows(out)[:want]
        row = {**result["variants"].get(name, {}), "what": what, "ranks": ranks, "steps": len(rows),
               "step_seconds": sum(r["seconds"] for r in rows), "tokens": sum(r["tokens"] for r in rows),
               "computed_tokens": sum(r["computed_tokens"] for r in rows)}
        row["tokens_per_s"] = row["tokens"] / row["step_seconds"]
        row["computed_tokens_per_s"] = row["computed_tokens"] / row["step_seconds"]
        if want is None:
            row["summary"] = json.loads((out / "summary.json").read_text())
        result["variants"][name] = row
        write_json(args.json, result)
        print(f"[{name}] {what}: {row['steps']} steps, {row['step_seconds']:.0f} s of steps, "
              f"{row['tokens_per_s']:.0f} tokens/s ({row['computed_tokens_per_s']:.0f} computed/s)", flush=True)

    v, full = result["variants"], result["variants"].get(args.full)
    if full:
        full_rows = step_rows(args.work / f"joint_{args.full}")
        epoch_tokens = full["tokens"]
        for name, row in v.items():
            if name == args.full:
                row["epoch_step_seconds"] = full["step_seconds"]
            elif name == "a":  # other examples: per token
                row["epoch_step_seconds"] = row["step_seconds"] / row["tokens"] * epoch_tokens
            else:  # the same examples as the full variant's first steps (each row may time its own count)
                same_steps = sum(r["seconds"] for r in full_rows[:row["steps"]])
                row["over_full_same_steps"] = row["step_seconds"] / same_steps
                row["epoch_step_seconds"] = full["step_seconds"] * row["over_full_same_steps"]
        result["epoch_step_seconds_over_full"] = {n: r["epoch_step_seconds"] / full["step_seconds"] for n, r in v.items()}
    if args.eval and full:
        out = args.work / f"eval_{args.full}"
        if not (out / "metrics.json").exists():
            result["eval_seconds"] = run([sys.executable, "-m", "instructerc", "eval", "--data", args.data,
                                          "--split", "test", "--model", args.model, "--adapter",
                                          args.work / f"joint_{args.full}" / "best", "--out", out], log)
        m = json.loads((out / "metrics.json").read_text())
        result["eval"] = {k: m[k] for k in ("weighted_f1", "accuracy", "macro_f1")} | {"decoding": m["decoding"]}
    write_json(args.json, result)
    print(json.dumps({k: val for k, val in result.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
