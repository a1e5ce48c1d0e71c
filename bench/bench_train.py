"""Trainer benchmarks (issue 4), all in one run so the numbers compare side by side:

1. tokens/s of `instructerc train` in one process, over N optimizer steps;
2. tokens/s of a bare PyTorch loop (HF forward with labels, backward, clip, AdamW step) on the
   SAME micro-batches, LoRA and model: the trainer's overhead as a ratio;
3. tokens/s of the same run under `deepspeed --num_gpus 2` (2 CPU ranks here);
4. peak resident memory of one training step at the MELD max length (micro-batch x max_length
   tokens), the trainer's step against the bare step, each in a fresh process.

    python bench/bench_train.py --data runs/data/meld_p005 --model smollm2-135m \\
        --steps 2 --json bench/results/bench_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc import batching, models  # noqa: E402
from instructerc.records import load_records  # noqa: E402
from instructerc.train import STAGES, train, train_command  # noqa: E402
from instructerc.train_config import grad_accum, resolve_config  # noqa: E402


def step_rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "tokens" in r]


def trainer_tokens_per_s(rows: list[dict]) -> tuple[float, float]:
    tokens = sum(r["tokens"] for r in rows)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in rows)
    return tokens / seconds, seconds


def bare_loop(cfg: dict, model_dir: Path, data: Path, stage: str, steps: int) -> tuple[float, float, int]:
    """The same micro-batches through the plainest PyTorch + PEFT loop there is."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg["seed"])
    tok = models.load_tokenizer(model_dir)
    records = load_records(data / "train.jsonl", tasks=tuple(STAGES[stage]))
    examples = [batching.encode(tok, r, cfg["max_length"]) for r in records]
    plan = batching.micro_batch_plan([len(e.input_ids) for e in examples], cfg["micro_batch"], grad_accum(cfg, 1),
                                     1, cfg["seed"], 0)[:steps]
    lora = cfg["lora"]
    model = get_peft_model(models.load_model(model_dir), LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    tokens, start = 0, time.perf_counter()
    for step in plan:
        for micro in step[0]:
            batch = batching.collate([examples[i] for i in micro], tok.pad_token_id)
            labels = batch["input_ids"].masked_fill(~batch["answer_mask"], -100)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], labels=labels)
            (out.loss / len(step[0])).backward()
            tokens += batch["tokens"]
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - start
    return tokens / seconds, seconds, tokens


def proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_memory(mode: str, model_dir: Path, micro_batch: int, length: int) -> dict:
    """One training step on micro_batch x length tokens in THIS (fresh) process: peak RSS growth."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(models.load_model(model_dir), LoraConfig(
        r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    ex = batching.Example(tuple(range(100, 100 + length)), 3, "erc", False)
    batch = batching.collate([ex] * micro_batch, 0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) after loading
    before = proc_status_kib("VmRSS")
    start = time.perf_counter()
    if mode == "trainer":  # logits only for the answer positions
        loss = batching.example_losses(model, batch).sum() / micro_batch
    else:  # what a plain HF loop does: logits for every position
        labels = batch["input_ids"].masked_fill(~batch["answer_mask"], -100)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    loss.backward()
    opt.step()
    after = proc_status_kib("VmHWM")
    return {"mode": mode, "micro_batch": micro_batch, "length": length, "rss_before_step_mib": before / 1024,
            "peak_rss_during_step_mib": after / 1024, "step_growth_mib": (after - before) / 1024,
            "step_seconds": time.perf_counter() - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--stage", default="joint")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "meld.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append",
                    default=["batch_size=8", "micro_batch=4", "lora.dropout=0.05", "packing=none"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--memory-only", choices=("trainer", "bare"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    model_dir = models.resolve_model(args.model)
    cfg = resolve_config(args.config, args.overrides + [f"stop_after={args.steps}", "log_every=1", "checkpoint_every=0"])
    if args.memory_only:
        print(json.dumps(peak_memory(args.memory_only, model_dir, cfg["micro_batch"], cfg["max_length"])))
        return 0

    result: dict = {"model": str(args.model), "data": str(args.data), "stage": args.stage, "steps": args.steps,
                    "batch_size": cfg["batch_size"], "micro_batch": cfg["micro_batch"], "max_length": cfg["max_length"],
                    "load_average_at_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench_train."))
    try:
        # 1. the trainer, one process
        start = time.perf_counter()
        train(cfg, stage=args.stage, data=args.data, model_spec=args.model, out=work / "one")
        wall = time.perf_counter() - start
        tps, secs = trainer_tokens_per_s(step_rows(work / "one"))
        result["trainer_1proc"] = {"tokens_per_s": tps, "step_seconds": secs, "wall_seconds_incl_setup": wall}
        # 2. bare loop, same batches
        tps_bare, secs_bare, tokens = bare_loop(cfg, model_dir, args.data, args.stage, args.steps)
        result["bare_loop"] = {"tokens_per_s": tps_bare, "step_seconds": secs_bare, "tokens": tokens}
        result["trainer_over_bare_step_time"] = secs / secs_bare
        # 3. two ranks
        cmd = train_command(2) + ["--stage", args.stage, "--data", str(args.data), "--model", str(args.model),
                                  "--out", str(work / "two"), "--config", str(args.config)]
        for s in args.overrides + [f"stop_after={args.steps}", "log_every=1", "checkpoint_every=0"]:
            cmd += ["--set", s]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return 1
        tps2, secs2 = trainer_tokens_per_s(step_rows(work / "two"))
        result["trainer_2ranks"] = {"tokens_per_s": tps2, "step_seconds": secs2,
                                    "wall_seconds_incl_setup": time.perf_counter() - start}
        result["two_ranks_over_one_tokens_per_s"] = tps2 / tps
        # 4. peak memory of one step at max_length, each mode in a fresh process
        result["memory"] = []
        for mode in ("trainer", "bare"):
            out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--model", str(args.model),
                                  "--config", str(args.config), "--memory-only", mode]
                                 + [a for s in args.overrides for a in ("--set", s)],
                                 capture_output=True, text=True, check=True)
            result["memory"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        result["load_average_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
