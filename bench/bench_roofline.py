"""How far is packed training from what the CPU can do? The FLOPs of one epoch against measured throughput.

    .venv/bin/python bench/bench_roofline.py --data runs/meld_1_16/data_demo --set batch_size=16 --world 2 \\
        --epoch-json bench/results/bench_train_epoch_meld_1_16_bf16.json \\
        --epoch-json bench/results/bench_train_epoch_meld_1_16_bf16_v2.json --json bench/results/bench_roofline.json

Counts, from the epoch plan the trainer runs (the same packs, `--world` ranks) and the model's
shapes, the floating-point work of one LoRA epoch: the linear layers (forward and the backward's
input gradients: the frozen weights get no gradient; LoRA's own work added), tree attention (each
node against its ancestors and itself, forward + backward = 3x the forward), and the lm_head on
the scored nodes. Then measures, on one thread, the bf16 and fp32 throughput of the model's
linear shapes at the plan's mean pack size, and the time of the registered tree attention
(forward + backward, one layer's shapes) on the plan's first packs. Their quotient is the floor
an epoch cannot beat on `--world` cores; with --epoch-json, measured epochs are set against it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from bench_bf16 import best_of  # noqa: E402  (this folder is first on sys.path)
from instructerc import batching, models  # noqa: E402
from instructerc.records import load_records  # noqa: E402
from instructerc.train_config import resolve_config  # noqa: E402
from instructerc.trie import Trie, TreeLayout, tree_attention_forward  # noqa: E402


def pack_tries(examples, cfg, world: int) -> list[tuple[Trie, int]]:
    """Every non-empty pack of epoch 0 as (trie, number of scored nodes)."""
    tries = []
    for step in batching.epoch_plan(examples, cfg, world, 0):
        for rank in step:
            for unit in rank:
                if unit:
                    trie, kept = Trie(), set()
                    for i in unit:
                        e = examples[i]
                        kept.update(trie.insert(e.input_ids)[-e.n_answer - 1:-1])
                    tries.append((trie, len(kept)))
    return tries


def linear_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one decoder layer."""
    h, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    return [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]


def flops(tries, config, cfg) -> dict:
    layers, h = config.num_hidden_layers, config.hidden_size
    head_dim = h // config.num_attention_heads
    nodes = sum(len(t) for t, _ in tries)
    kept = sum(k for _, k in tries)
    pairs = sum(d + 1 for t, _ in tries for d in t.depth)
    frozen = layers * sum(i * o for i, o in linear_shapes(config))
    r, targets = cfg["lora"]["r"], cfg["lora"]["target_modules"]
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = layers * sum(r * (i + o) for n, (i, o) in zip(names, linear_shapes(config)) if n in targets)
    return {
        "nodes": nodes, "packs": len(tries), "attention_pairs": pairs, "scored_nodes": kept,
        # forward 2 per weight; backward: input gradient 2 (frozen), plus weight gradient 2 (LoRA)
        "linear_tflop": (nodes * (4 * frozen + 6 * lora)) / 1e12,
        # QK^T and PV, 2 flop per multiply-add, each; the backward costs twice the forward
        "attention_tflop": pairs * layers * config.num_attention_heads * head_dim * 4 * 3 / 1e12,
        "lm_head_tflop": kept * h * config.vocab_size * 4 / 1e12,
    }


def matmul_gflops(config, n: int, dtype) -> float:
    """One thread's throughput over the layer's linear shapes, (n x in) @ (in x out)."""
    total, seconds = 0.0, 0.0
    for i, o in linear_shapes(config):
        x, w = torch.randn(n, i, dtype=dtype), torch.randn(o, i, dtype=dtype)
        x @ w.T
        best = best_of(lambda: [x @ w.T for _ in range(10)]) / 10
        total, seconds = total + 2 * n * i * o, seconds + best
    return total / seconds / 1e9


def attention_seconds(tries, config, count: int) -> tuple[float, int]:
    """Seconds of the registered tree attention, forward + backward of one layer, over `count` packs (bf16)."""
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = config.hidden_size // heads
    seconds, pairs = 0.0, 0
    for trie, _ in tries[:count]:
        n, layout = len(trie), TreeLayout.of(trie)
        q = torch.randn(1, heads, n, d, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, kv, n, d, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, kv, n, d, dtype=torch.bfloat16, requires_grad=True)
        run = lambda: tree_attention_forward(None, q, k, v, None, tree_layout=layout)[0].float().sum().backward()  # noqa: E731
        run()
        seconds += best_of(run, repeat=2)
        pairs += sum(x + 1 for x in trie.depth)
    return seconds, pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", default=str(REPO / "configs" / "meld.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--world", type=int, default=2, help="ranks the plan is cut for (and cores the floor assumes)")
    p.add_argument("--attention-packs", type=int, default=30)
    p.add_argument("--epoch-json", type=Path, action="append", default=[],
                   help="bench_train_epoch.py output (repeatable): its epochs against the floor")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not (args.data / "train.jsonl").is_file():
        p.error(f"{args.data / 'train.jsonl'}: not found (--data is an `instructerc prepare --out` folder)")
    torch.set_num_threads(1)
    model_dir = models.resolve_model(args.model)
    cfg = resolve_config(args.config, args.set)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = models.load_tokenizer(model_dir)
    examples = [batching.encode(tokenizer, r, cfg["max_length"])
                for r in load_records(args.data / "train.jsonl", tasks=("erc", "predict"))]
    tries = pack_tries(examples, cfg, args.world)
    work = flops(tries, config, cfg)
    mean_pack = round(work["nodes"] / work["packs"])
    rate = {name: matmul_gflops(config, mean_pack, dt) for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    attn_s, attn_pairs = attention_seconds(tries, config, args.attention_packs)
    per_pair_layer = attn_s / attn_pairs
    total = work["linear_tflop"] + work["attention_tflop"] + work["lm_head_tflop"]
    result = {
        "command": " ".join(sys.argv), "world": args.world, "mean_pack_nodes": mean_pack, **work,
        "total_tflop": total,
        "matmul_gflops_1_thread": rate,
        "tree_attention_gflops_1_thread": (attn_pairs * config.num_attention_heads * (config.hidden_size //
                                           config.num_attention_heads) * 12 / attn_s / 1e9),
        # every FLOP at the bf16 linear rate, on `world` cores
        "floor_seconds_bf16": total * 1e12 / (rate["bf16"] * 1e9 * args.world),
        # the tree attention as it runs today, the rest at the bf16 linear rate
        "attention_today_seconds": per_pair_layer * work["attention_pairs"] * config.num_hidden_layers / args.world,
    }
    result["epochs"] = {}
    for path in args.epoch_json:
        for name, v in json.loads(path.read_text(encoding="utf-8"))["variants"].items():
            result["epochs"][f"{path.stem}:{name}"] = {
                "what": v["what"], "measured_steps": v["steps"], "epoch_step_seconds": v["epoch_step_seconds"],
                "over_floor": v["epoch_step_seconds"] / result["floor_seconds_bf16"]}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
