"""What mixing dialogues inside a step costs in compute: the trie nodes a training epoch computes,
for several `dialogue_run` values, counted from the trainer's own plan (no model run).

    .venv/bin/python bench/bench_dialogue_run.py --data DATA --stage joint --config configs/small/meld.yaml \\
        --runs 0 2 4 8 --json bench/results/bench_dialogue_run_meld.json

`dialogue_run: 0` packs whole dialogues (a step's records come from one or two dialogues, the most
prefix sharing); a run of k puts about batch_size / k dialogues in every step, closer to the i.i.d.
steps SGD assumes, at the price of the history the cut runs no longer share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc import batching, models  # noqa: E402
from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import write_json  # noqa: E402
from instructerc.records import load_split  # noqa: E402
from instructerc.train import STAGES, stage_task_weights  # noqa: E402
from instructerc.train_config import resolve_config  # noqa: E402
from instructerc.trie import Trie  # noqa: E402


def plan_cost(examples, cfg: dict) -> dict:
    seqs = [e.input_ids for e in examples]
    plan = batching.epoch_plan(examples, cfg, 1, 0)
    computed, dialogues = 0, []
    for step in plan:
        for unit in step[0]:
            trie = Trie()
            for i in unit:
                trie.insert(seqs[i])
            computed += len(trie)
        dialogues.append(len({examples[i].dialogue for unit in step[0] for i in unit}))
    tokens = sum(len(s) for s in seqs)
    return {"dialogue_run": cfg["dialogue_run"], "steps": len(plan), "record_tokens": tokens,
            "computed_tokens": computed, "sharing": round(tokens / computed, 3),
            "dialogues_per_step_mean": round(statistics.mean(dialogues), 2), "dialogues_per_step_min": min(dialogues)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--stage", default="joint", choices=list(STAGES))
    p.add_argument("--config")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--runs", type=int, nargs="+", default=[0, 2, 4, 8])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    try:  # the trainer's own checks: a bad config, run length or data folder is one line
        configs = [resolve_config(args.config, ["packing=dialogue", f"dialogue_run={run}"]) for run in args.runs]
        examples = load_examples(args, configs[0])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = []
    for cfg in configs:
        rows.append(plan_cost(examples, cfg))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["computed_tokens"]
    print(f"\n| dialogue_run | dialogues per step (mean / min) | computed tokens | vs dialogue_run {args.runs[0]} |"
          "\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dialogue_run']} | {r['dialogues_per_step_mean']} / {r['dialogues_per_step_min']} "
              f"| {r['computed_tokens']:,} | {r['computed_tokens'] / base:.3f}x |")
    if args.json:
        write_json(args.json, {"command": " ".join(["bench/bench_dialogue_run.py", *sys.argv[1:]]),
                               "data": str(args.data), "stage": args.stage, "config": args.config,
                               "batch_size": configs[0]["batch_size"], "max_pack_tokens": configs[0]["max_pack_tokens"],
                               "records": len(examples), "rows": rows})
    return 0


def load_examples(args, cfg: dict) -> list:
    records = load_split(args.data, "train", tuple(stage_task_weights(args.stage, cfg)))
    tokenizer = models.load_tokenizer(models.resolve_model(args.model))
    return [batching.encode(tokenizer, r, cfg["max_length"]) for r in records]


if __name__ == "__main__":
    sys.exit(main())
