"""Packed training steps on the real model: sparse tree attention against the dense ancestor mask,
by pack size, and the peak memory of a step.

For each --max-pack-tokens N, the largest pack of a joint epoch's plan (prepared data, the
config's max length) runs forward + backward (LoRA r 16 on q,k,v,o, fp32): once to warm up, then
timed with the registered sparse attention and with the dense (N, N) mask, side by side in one
process. With --memory, each N instead runs one step in a fresh process and reports the growth of
its resident memory high-water mark (VmHWM) over the loaded model.

    .venv/bin/python bench/bench_tree_attention.py --data runs/meld_1_16/data_demo --sizes 1024 2048 4096 \\
        --json bench/results/bench_tree_attention.json
    .venv/bin/python bench/bench_tree_attention.py --data DATA --config configs/iemocap.yaml --memory --sizes 1024
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

from instructerc import batching, models  # noqa: E402
from instructerc.records import load_records  # noqa: E402
from instructerc.train import build_model  # noqa: E402
from instructerc.train_config import resolve_config  # noqa: E402
from instructerc.trie import TREE_ATTENTION, Trie  # noqa: E402


def nodes(examples, unit) -> int:
    trie = Trie()
    for i in unit:
        trie.insert(examples[i].input_ids)
    return len(trie)


def units(examples, cfg) -> list:
    return [u for step in batching.epoch_plan(examples, cfg, 1, 0) for u in step[0]]


def largest_pack(examples, cfg) -> list:
    return [examples[i] for i in max(units(examples, cfg), key=lambda u: nodes(examples, u))]


def step_seconds(model, pack, pad_id) -> tuple[float, int]:
    start = time.perf_counter()
    losses, computed = batching.unit_losses(model, pack, "dialogue", pad_id)
    losses.sum().backward()
    return time.perf_counter() - start, computed


def vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", default=str(REPO / "configs" / "meld.yaml"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--batch-size", type=int, default=64, help="examples per step when planning (packs fill up to N)")
    p.add_argument("--epoch-batch-size", type=int, default=16,
                   help="the training batch for counting an epoch's computed tokens at each size")
    p.add_argument("--memory", action="store_true", help="peak memory of one step per size, each in a fresh process")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.memory and len(args.sizes) > 1:
        rows = []
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--data", str(args.data), "--model", args.model, "--config", args.config,
                   "--batch-size", str(args.batch_size), "--memory", "--sizes", str(n)]
            rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
        return finish(rows, args)

    model_dir = models.resolve_model(args.model)
    tokenizer = models.load_tokenizer(model_dir)
    cfg = resolve_config(args.config, ["lora.dropout=0", f"batch_size={args.batch_size}"])
    records = load_records(args.data / "train.jsonl", tasks=("erc", "predict"))
    examples = [batching.encode(tokenizer, r, cfg["max_length"]) for r in records]
    model = build_model(cfg, model_dir, None)
    model.train()
    rows = []
    for n in args.sizes:
        pack = largest_pack(examples, {**cfg, "max_pack_tokens": n})
        row = {"max_pack_tokens": n, "records": len(pack), "record_tokens": sum(len(e.input_ids) for e in pack),
               "max_length": cfg["max_length"]}
        if not args.memory:  # what one epoch computes at this size, at the training batch
            epoch_cfg = {**cfg, "max_pack_tokens": n, "batch_size": args.epoch_batch_size}
            row["epoch_nodes"] = sum(nodes(examples, u) for u in units(examples, epoch_cfg))
            row["epoch_record_tokens"] = sum(len(e.input_ids) for e in examples)
        if args.memory:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the loaded model
            before = vm("VmRSS")
            seconds, row["pack_nodes"] = step_seconds(model, pack, tokenizer.pad_token_id)
            row.update(rss_before_mib=round(before), peak_rss_mib=round(vm("VmHWM")),
                       step_growth_mib=round(vm("VmHWM") - before), first_step_seconds=round(seconds, 2))
        else:
            step_seconds(model, pack, tokenizer.pad_token_id)  # warm-up
            for kernel in (TREE_ATTENTION, "sdpa"):
                model.config._attn_implementation = kernel
                seconds, row["pack_nodes"] = step_seconds(model, pack, tokenizer.pad_token_id)
                name = "sparse" if kernel == TREE_ATTENTION else "dense"
                row[f"{name}_seconds"] = round(seconds, 2)
                row[f"{name}_nodes_per_s"] = round(row["pack_nodes"] / seconds, 1)
            model.config._attn_implementation = TREE_ATTENTION
            row["dense_over_sparse"] = round(row["dense_seconds"] / row["sparse_seconds"], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    finish(rows, args)


def finish(rows: list[dict], args) -> None:
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    elif len(rows) > 1:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
