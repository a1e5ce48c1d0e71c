"""`instructerc train`: the two-stage LoRA recipe of InstructERC on DeepSpeed.

    stage speaker : LoRA on `speaker` records (who says this utterance) - the warm-up
    stage joint   : from the stage-1 adapter, on `erc` + `predict`: loss = L_erc + beta * L_predict
    stage plain   : LoRA on `erc` alone (the paper's LoRA baseline)

One process (`instructerc train ...`) or several (`deepspeed --num_gpus N instructerc train ...`,
`mpirun`): the same code; every rank builds the same data plan and takes its own share of each
step, rank 0 alone writes. The loop is `train()` below, in plain sight.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import yaml

from instructerc.checkpoints import keep_metrics_until, load_checkpoint, save_checkpoint
from instructerc.errors import UserError
from instructerc.fileio import write_json, write_text
from instructerc.records import load_split
from instructerc.train_config import grad_accum, resolve_config

STAGES = {  # stage -> {task: loss weight}; "beta" is read from the config
    "speaker": {"speaker": 1.0},
    "joint": {"erc": 1.0, "predict": "beta"},
    "plain": {"erc": 1.0},
}


# --- command line ----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--stage", required=True, help="speaker | joint | plain")
    parser.add_argument("--data", required=True, type=Path, help="folder written by `instructerc prepare`")
    parser.add_argument("--model", required=True, help="model folder, .gguf file, HF id or alias (smollm2-135m)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (adapters, config, metrics, log)")
    parser.add_argument("--config", type=Path, help="YAML config (configs/meld.yaml ...); defaults follow the paper")
    parser.add_argument("--init-adapter", type=Path, help="start from this adapter (stage joint: the stage-1 RUN or RUN/best)")
    parser.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set lr=1e-4 --set lora.r=8")


def run(args) -> int:
    cfg = resolve_config(args.config, args.overrides)
    train(cfg, stage=args.stage, data=args.data, model_spec=args.model, out=args.out,
          init_adapter=args.init_adapter, resume=args.resume, local_rank=args.local_rank)
    return 0  # a run stopped by `stop_after` succeeded too: it did what was asked


# --- distributed set-up ----------------------------------------------------------------------

def init_distributed(local_rank: int | None = None) -> tuple[int, int]:
    """(rank, world). Without a launcher: a process group of one, on a free local port."""
    import deepspeed
    import torch
    import torch.distributed as dist

    under_mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if not under_mpi and "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"})
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if local_rank is not None:
        os.environ["LOCAL_RANK"] = str(local_rank)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "gloo":
            warn_stale_build_locks()
        # rank 0 scores the dev split while the others wait: on CPU that outlasts the 30-minute default
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=under_mpi, verbose=False,
                                   timeout=timedelta(hours=4))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    elif "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks on one machine share its cores: each taking all of them oversubscribes
        local = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 1)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return dist.get_rank(), dist.get_world_size()


def warn_stale_build_locks() -> None:
    """DeepSpeed JIT-builds its CPU comm op under a file lock; a run killed mid-build leaves the lock
    and every later run waits on it without a word. Say so before the wait can start."""
    from torch.utils.cpp_extension import get_default_build_root

    # torch builds into $TORCH_EXTENSIONS_DIR/NAME, else into <default root>/<python+cuda tag>/NAME
    custom = os.environ.get("TORCH_EXTENSIONS_DIR")
    pattern = "deepspeed_shm_comm/lock" if custom else "*/deepspeed_shm_comm/lock"
    for lock in Path(custom or get_default_build_root()).glob(pattern):
        print(f"instructerc: {lock} exists: another run is building DeepSpeed's CPU comm op, or a killed "
              f"run left it; if this run hangs here and no other run is going, delete that file", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_bf16(cfg: dict) -> bool:
    import torch

    if cfg["precision"] == "fp32":
        return False
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if cfg["precision"] == "bf16" and not supported:
        raise UserError("precision bf16 asked for, but this machine has no bf16-capable GPU; use fp32 or auto")
    # on CPU bf16 matmuls are slower than fp32 without AMX, so `auto` keeps fp32 there
    return supported


def deepspeed_config(cfg: dict, world: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg["micro_batch"],
        "gradient_accumulation_steps": grad_accum(cfg, world),
        "train_batch_size": cfg["batch_size"],
        "gradient_clipping": cfg["grad_clip"],
        "zero_optimization": {"stage": cfg["zero_stage"]},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": use_bf16(cfg)},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def lr_lambda(cfg: dict, total_steps: int):
    warmup = int(cfg["warmup_ratio"] * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg["schedule"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg["schedule"] == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


# --- model -----------------------------------------------------------------------------------

def build_model(cfg: dict, model_dir: Path, init_adapter: Path | None):
    from peft import LoraConfig, get_peft_model

    from instructerc import models

    model = models.load_model(model_dir)
    model.config.use_cache = False
    if cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if init_adapter is not None:
        return models.load_adapter(model, init_adapter, trainable=True)
    lora = cfg["lora"]
    return get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM",
    ))


def adapter_digest(model) -> str:
    """sha256 of the trainable (LoRA) weights: equal on every rank at the end, or something broke."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_adapter(model, path: Path, info: dict) -> None:
    from instructerc.fileio import atomic_path

    with atomic_path(path) as tmp:
        model.save_pretrained(str(tmp))
        write_json(tmp / "trained.json", info)


# --- data ------------------------------------------------------------------------------------

def dev_sample(records: list, cap: int, seed: int) -> list:
    if not cap or cap >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), cap))
    return [records[i] for i in keep]


def evaluate_dev(model, tokenizer, records: list, cfg: dict) -> dict:
    """Dev ERC scores with the evaluation's own label scoring and metrics."""
    from instructerc import decode, metrics

    preds = decode.score_records(model, tokenizer, records, batch_size=cfg["eval"]["batch_size"], progress=False)
    scores = metrics.classification_metrics([p.gold for p in preds], [p.pred for p in preds], records[0].labels)
    nll = sum(-math.log(max(p.probs.get(p.gold, 0.0), 1e-12)) for p in preds) / len(preds)
    return {"dev_weighted_f1": scores["weighted_f1"], "dev_accuracy": scores["accuracy"],
            "dev_macro_f1": scores["macro_f1"], "dev_label_nll": nll, "dev_n": len(preds)}


# --- logging ---------------------------------------------------------------------------------

class RunLog:
    """Rank 0's log: RUN/train.log, RUN/metrics.jsonl, and messages printed above the bar."""

    def __init__(self, run: Path, active: bool):
        self.active, self.run = active, run

    def __call__(self, msg: str) -> None:
        if not self.active:
            return
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
        with open(self.run / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def metrics(self, row: dict) -> None:
        if self.active:
            with open(self.run / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


# --- the recipe ------------------------------------------------------------------------------

def train(cfg: dict, *, stage: str, data: Path, model_spec: str, out: Path, init_adapter: Path | None = None,
          resume: bool = False, local_rank: int | None = None) -> dict:
    """Run one stage; returns the end-of-run summary (empty when stopped early by `stop_after`)."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from instructerc import batching, models

    # ---- inputs: checked before any process group or model exists
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    data, out = Path(data), Path(out)
    if init_adapter is not None and not Path(init_adapter).exists():
        raise UserError("adapter not found", path=init_adapter)
    task_weight = {t: (cfg["beta"] if w == "beta" else w) for t, w in STAGES[stage].items()}
    # beta = 0 (the "without emotion prediction" ablation): its records would only cost time
    task_weight = {t: w for t, w in task_weight.items() if w != 0}
    train_records = load_split(data, "train", tuple(task_weight))
    dev_records = dev_sample(load_split(data, "dev", ("erc",)), cfg["eval"]["max_records"], cfg["seed"])
    model_dir = models.resolve_model(model_spec)
    if (out / "config.yaml").is_file() and not resume:
        raise UserError("run folder already holds a run; pass --resume to continue it or choose another --out", path=out)

    rank, world = init_distributed(local_rank)
    accum = grad_accum(cfg, world)
    resolved = {**cfg, "stage": stage, "data": str(data.resolve()), "model": str(model_spec),
                "init_adapter": str(init_adapter) if init_adapter else None,
                "labels": list(dev_records[0].labels), "world_size": world}
    if resume and (out / "config.yaml").is_file():
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        differ = sorted(k for k in resolved if k != "stop_after" and saved.get(k) != resolved[k])
        if differ:
            raise UserError(f"--resume with settings that differ from the run's config.yaml: {', '.join(differ)}", path=out)
    log = RunLog(out, rank == 0)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    dist.barrier()

    # ---- model, tokenizer, examples
    random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    tokenizer = models.load_tokenizer(model_dir)
    pad_id = tokenizer.pad_token_id
    examples = [batching.encode(tokenizer, r, cfg["max_length"])
                for r in tqdm(train_records, desc="encoding", disable=rank != 0, leave=False)]
    lengths = [len(e.input_ids) for e in examples]
    model = build_model(cfg, model_dir, Path(init_adapter) if init_adapter else None)

    steps_per_epoch = len(batching.epoch_plan(lengths, cfg["micro_batch"], accum, world, cfg["seed"], 0))
    epochs = cfg["epochs"][stage]
    total_steps = steps_per_epoch * epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, world))

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "tokens": 0}
    if resume:
        loaded = load_checkpoint(engine, out, rank)
        if loaded is None:
            log(f"--resume: no checkpoint in {out}, starting from the beginning")
        else:
            state = loaded
            if rank == 0:
                keep_metrics_until(out / "metrics.jsonl", state["global_step"])
            log(f"resumed from step {state['global_step']} (epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']} of {steps_per_epoch})")
    dist.barrier()
    n_trunc = sum(e.truncated for e in examples)
    log(f"stage {stage}: {len(examples)} train examples ({', '.join(f'{t} x{w:g}' for t, w in task_weight.items())}), "
        f"{len(dev_records)} dev; {world} rank(s) x micro-batch {cfg['micro_batch']} x accumulation {accum} "
        f"= batch {cfg['batch_size']}; {epochs} epoch(s) x {steps_per_epoch} steps; zero {cfg['zero_stage']}, "
        f"{'bf16' if use_bf16(cfg) else 'fp32'}, {torch.get_num_threads()} threads/rank; {n_trunc} prompts truncated to {cfg['max_length']} tokens")

    # ---- the loop
    started, tokens_run = time.perf_counter(), 0
    bar = tqdm(total=total_steps, initial=state["global_step"], desc=f"train {stage}", disable=rank != 0,
               dynamic_ncols=True)
    tasks = sorted(task_weight)

    def stop_early() -> dict:
        bar.close()
        log(f"stopped after step {state['global_step']} (stop_after); continue with --resume")
        return {}

    engine.train()
    for epoch in range(state["epoch"], epochs):
        plan = batching.epoch_plan(lengths, cfg["micro_batch"], accum, world, cfg["seed"], epoch)
        for step_in_epoch in range(state["step_in_epoch"], len(plan)):
            t0 = time.perf_counter()
            step = plan[step_in_epoch]
            scale = batching.task_scales([examples[i].task for r in step for mb in r for i in mb], task_weight)
            stats = torch.zeros(2 * len(tasks) + 1, dtype=torch.float64)  # loss sum and count per task, tokens
            for micro in step[rank]:
                batch = batching.collate([examples[i] for i in micro], pad_id, [scale[examples[i].task] for i in micro])
                batch = {k: v.to(engine.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                losses = batching.example_losses(engine, batch)
                # DeepSpeed averages gradients over ranks: x world undoes it, our weights already
                # normalise over the whole step (so no division by accumulation steps either)
                engine.backward((losses * batch["weights"]).sum() * world, scale_wrt_gas=False)
                engine.step()
                for k, t in enumerate(tasks):
                    sel = torch.tensor([examples[i].task == t for i in micro], device=losses.device)
                    stats[2 * k] += losses.detach()[sel].sum().item()
                    stats[2 * k + 1] += int(sel.sum())
                stats[-1] += batch["tokens"]
            dist.all_reduce(stats)
            state.update(step_in_epoch=step_in_epoch + 1, global_step=state["global_step"] + 1,
                         tokens=state["tokens"] + int(stats[-1]))
            tokens_run += int(stats[-1])
            task_loss = {f"loss_{t}": stats[2 * k].item() / max(1.0, stats[2 * k + 1].item()) for k, t in enumerate(tasks)}
            loss = sum(task_weight[t] * task_loss[f"loss_{t}"] for t in tasks)
            tok_s = stats[-1].item() / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:.0f}")
            gstep = state["global_step"]
            if gstep % cfg["log_every"] == 0 or gstep == 1:
                log.metrics({"step": gstep, "epoch": epoch + 1, "loss": loss, **task_loss,
                             "lr": scheduler.get_last_lr()[0], "tokens": int(stats[-1]), "tokens_per_s": tok_s})
            last_of_epoch = step_in_epoch + 1 == len(plan)
            stopping = gstep == cfg["stop_after"] and not last_of_epoch
            if not last_of_epoch and ((cfg["checkpoint_every"] and gstep % cfg["checkpoint_every"] == 0) or stopping):
                save_checkpoint(engine, out, state, rank, cfg["keep_checkpoints"])
            if stopping:
                return stop_early()

        # ---- end of epoch: dev scores, best adapter, checkpoint
        scores = {}
        if rank == 0:
            scores = evaluate_dev(engine.module, tokenizer, dev_records, cfg)
            log.metrics({"step": state["global_step"], "epoch": epoch + 1, **scores})
            if state["best"] is None or scores["dev_weighted_f1"] > state["best"]["dev_weighted_f1"]:
                state["best"] = {"epoch": epoch + 1, "step": state["global_step"], **scores}
                save_adapter(engine.module, out / "best", {"stage": stage, **state["best"]})
            log(f"epoch {epoch + 1}/{epochs}: dev weighted-F1 {scores['dev_weighted_f1']:.4f} "
                f"(best {state['best']['dev_weighted_f1']:.4f}, epoch {state['best']['epoch']})")
        shared = [state["best"]]
        dist.broadcast_object_list(shared, src=0)
        state.update(epoch=epoch + 1, step_in_epoch=0, best=shared[0])
        save_checkpoint(engine, out, state, rank, cfg["keep_checkpoints"])
        if state["global_step"] == cfg["stop_after"] and epoch + 1 < epochs:
            return stop_early()
    bar.close()

    # ---- the end: every rank must hold the same adapter
    digest = adapter_digest(engine.module)
    digests = [None] * world
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different adapters: {digests}")
    elapsed = time.perf_counter() - started
    summary = {"stage": stage, "steps": state["global_step"], "epochs": epochs, "world_size": world,
               "train_examples": len(examples), "tokens": state["tokens"],
               "tokens_per_s_this_process": tokens_run / elapsed if elapsed else 0.0,
               "seconds": elapsed, "best": state["best"], "adapter_sha256": digest}
    if rank == 0:
        save_adapter(engine.module, out / "final", {"stage": stage, "step": state["global_step"], "sha256": digest})
        write_json(out / "summary.json", summary)
        best = state["best"] or {}
        log(f"done: {state['global_step']} steps, {state['tokens']} tokens in {elapsed:.0f}s "
            f"({summary['tokens_per_s_this_process']:.0f} tokens/s); best dev weighted-F1 "
            f"{best.get('dev_weighted_f1', float('nan')):.4f} at epoch {best.get('epoch')}; "
            f"adapters: {out / 'best'}, {out / 'final'}; all {world} rank(s) agree on adapter {digest[:12]}")
    dist.barrier()
    return summary
