"""Where an unfinished (or finished) training run stands: its steps so far, their time and tokens,
and the whole epoch's time projected at that rate.

    .venv/bin/python bench/run_progress.py RUN --json bench/results/full_meld_joint_epoch_partial.json

Reads RUN/config.yaml (the data, model and settings the run trains with) and RUN/metrics.jsonl (one
row per optimizer step, resumed segments included; a step re-run after a kill is counted once, at
its last row). The epoch's record tokens and steps come from the same plan the trainer computes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc import batching, models  # noqa: E402
from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import write_json  # noqa: E402
from instructerc.records import load_records  # noqa: E402
from instructerc.train import stage_task_weights  # noqa: E402


def main() -> int:
    try:
        return report()
    except UserError as e:  # e.g. the run's model not pulled in this INSTRUCTERC_HOME
        print(f"run_progress: error: {e}", file=sys.stderr)
        return 2


def report() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    for name in ("config.yaml", "metrics.jsonl"):
        if not (args.run / name).is_file():
            p.error(f"{args.run / name}: not found (RUN is an `instructerc train --out` folder)")
    cfg = yaml.safe_load((args.run / "config.yaml").read_text(encoding="utf-8"))
    steps = {}
    for line in (args.run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if "tokens_per_s" in row and "dev_weighted_f1" not in row:
            steps[(row["epoch"], row["step"])] = row
    tokenizer = models.load_tokenizer(models.resolve_model(cfg["model"]))
    tasks = tuple(stage_task_weights(cfg["stage"], cfg))
    examples = [batching.encode(tokenizer, r, cfg["max_length"])
                for r in load_records(Path(cfg["data"]) / "train.jsonl", tasks=tasks)]
    per_epoch = len(batching.epoch_plan(examples, cfg, cfg["world_size"], 0))
    seconds = sum(r["seconds"] for r in steps.values())
    tokens = sum(r["tokens"] for r in steps.values())
    computed = sum(r["computed_tokens"] for r in steps.values())
    epoch_tokens = sum(len(e.input_ids) for e in examples)
    result = {
        "command": " ".join(["bench/run_progress.py", *sys.argv[1:]]), "run": str(args.run),
        "stage": cfg["stage"], "world_size": cfg["world_size"], "records": len(examples),
        "epoch_record_tokens": epoch_tokens, "steps_measured": len(steps), "steps_per_epoch": per_epoch,
        "steps_total": per_epoch * cfg["epochs"][cfg["stage"]], "step_seconds": seconds, "tokens": tokens,
        "computed_tokens": computed, "tokens_per_s": tokens / seconds, "computed_per_s": computed / seconds,
        "sharing": tokens / computed,
        "projected_epoch_step_seconds_by_tokens": seconds / tokens * epoch_tokens,
        "projected_epoch_step_seconds_by_steps": seconds / len(steps) * per_epoch,
    }
    if (args.run / "summary.json").is_file():
        result["summary"] = json.loads((args.run / "summary.json").read_text(encoding="utf-8"))
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
