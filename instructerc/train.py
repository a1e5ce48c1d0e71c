"""`instructerc train`: the two-stage LoRA recipe of InstructERC on DeepSpeed.

    stage speaker : LoRA on `speaker` records (who says this utterance) - the warm-up
    stage joint   : from the stage-1 adapter, on `erc` + `predict`: loss = L_erc + beta * L_predict
    stage plain   : LoRA on `erc` alone (the paper's LoRA baseline)

One process (`instructerc train ...`) or several (`deepspeed --num_gpus N instructerc train ...`,
`mpirun`): the same code; every rank builds the same data plan (`batching.epoch_plan`: dialogue
packs by default) and takes its own share of each step, rank 0 alone writes. `train()` below
reads top to bottom: set-up, resume, the loop over epochs and steps, the epoch's dev evaluation
and best adapter, the end.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import math
import os
import random
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from instructerc import allocator
from instructerc.checkpoints import keep_metrics_until, load_checkpoint, save_checkpoint
from instructerc.curves import SCORE_NAMES
from instructerc.errors import Stopped, UserError
from instructerc.fileio import write_json, write_text
from instructerc.records import load_split
from instructerc.runs import RunLog, adapter_digest, save_adapter
from instructerc.spec import read_prepared
from instructerc.train_config import RESUME_MAY_CHANGE, grad_accum, resolve_config, resume_changes

STAGES = {  # stage -> {task: loss weight}; "beta" is read from the config
    "speaker": {"speaker": 1.0},
    "joint": {"erc": 1.0, "predict": "beta"},
    "plain": {"erc": 1.0},
}


def stage_task_weights(stage: str, cfg: dict) -> dict[str, float]:
    """{task: loss weight} the stage trains on. A zero weight (beta = 0, the "without emotion
    prediction" ablation) drops the task: its records would only cost time."""
    weights = {t: (cfg["beta"] if w == "beta" else w) for t, w in STAGES[stage].items()}
    return {t: w for t, w in weights.items() if w != 0}


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
    from instructerc.models import quiet_libraries

    quiet_libraries()
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
            use_own_build_folder()
            clear_stale_build_locks()
        # rank 0 scores the dev split while the others wait: on CPU that outlasts the 30-minute default
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=under_mpi, verbose=False,
                                   timeout=timedelta(hours=4))
        if backend == "gloo":
            release_shm_buffer(dist.get_rank())
        atexit.register(shutdown_distributed)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    elif "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks on one machine share its cores: each taking all of them oversubscribes
        local = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 1)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    """Run at exit: join the process group's threads while Python is still whole. Left to interpreter
    finalization, gloo's worker threads were torn down with it and a rank aborted ("terminate called
    without an active exception", exit 6) after a finished run: in CI under `mpiexec -n 2 instructerc
    train`, and here in 8 of 15 `mpiexec -n 2` runs of `init_distributed` and 20 all-reduces (none of
    15 with the destroy). At exit rather than when `train` returns, because DeepSpeed keeps its own
    handle on the group: a second run in the same process (the tests, a notebook) needs it still there."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def release_shm_buffer(rank: int) -> None:
    """DeepSpeed's CPU all-reduce gives each rank a 69 MB /dev/shm file and never unlinks it, so every
    run, finished or killed, kept 69 MB a rank until reboot: 9.4 GB in 145 files here, which got a
    training rank OOM-killed. Once every rank has mapped every file (the barrier), unlinking our own
    lets the kernel free it when the last process using it exits, however it exits."""
    import torch.distributed as dist

    dist.barrier()
    # named as ops/csrc/cpu/comm/shm.cpp names it
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR')}_"
            f"{os.environ.get('MASTER_PORT')}_{rank}")
    (Path("/dev/shm") / name).unlink(missing_ok=True)


def use_own_build_folder() -> None:
    """Give this Python environment its own folder for DeepSpeed's JIT-built CPU comm op.

    torch's default folder is keyed on the Python version alone, so two virtual environments (a
    checkout's and a CI clone's) rebuilt the op over each other on every switch: ~25 s of compiling and
    a lock window per switch (~/.cache/torch_extensions/*/deepspeed_shm_comm/.ninja_log here: 20 builds
    in 11 hours, alternating between two command hashes). A TORCH_EXTENSIONS_DIR the user set wins."""
    import hashlib

    from torch.utils.cpp_extension import get_default_build_root

    if not os.environ.get("TORCH_EXTENSIONS_DIR"):
        digest = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:12]
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(get_default_build_root()) / f"env-{digest}")


# The op compiles in under a minute here (~25 s); a lock much older than that has no builder behind it.
STALE_BUILD_LOCK_S = 600


def clear_stale_build_locks(now: float | None = None) -> None:
    """DeepSpeed JIT-builds its CPU comm op under a file lock; a run killed mid-build leaves the lock
    and every later run waits on it without a word. Remove a lock older than any build takes; name a
    younger one, which may be another run's build in progress."""
    now = time.time() if now is None else now
    # torch builds into $TORCH_EXTENSIONS_DIR/NAME, set by use_own_build_folder when the user did not
    lock = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "deepspeed_shm_comm" / "lock"
    try:
        age = now - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_BUILD_LOCK_S:
        lock.unlink(missing_ok=True)  # a run starting beside this one may remove it first
        print(f"instructerc: removed {lock}, left {age / 60:.0f} min ago by a run killed while building "
              f"DeepSpeed's CPU comm op; this run builds it again", file=sys.stderr)
    else:
        print(f"instructerc: {lock} exists: another run is building DeepSpeed's CPU comm op, or a run "
              f"killed in the last {STALE_BUILD_LOCK_S // 60} min left it; if this run hangs here and no "
              f"other run is going, delete that file", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(ranks: int = 1) -> list[str]:
    """The command line that starts `instructerc train` in this Python: one process, or `ranks` ranks
    under the deepspeed launcher (on a CPU, one thread each unless OMP_NUM_THREADS says otherwise)."""
    if ranks == 1:
        return [sys.executable, "-m", "instructerc", "train"]
    launcher = str(Path(sys.executable).parent / "deepspeed")
    return [launcher, "--master_port", str(free_port()), "--num_gpus", str(ranks), "--module", "instructerc", "train"]


def precision(cfg: dict) -> str:
    """bf16 or fp32 for this run. `auto` takes bf16 only where the hardware computes it natively
    (`models.bf16_is_fast`); bf16 then means bf16 base weights and autocast, with the LoRA weights,
    their gradients and the optimizer state in fp32."""
    from instructerc.models import bf16_is_fast

    if cfg["precision"] == "auto":
        return "bf16" if bf16_is_fast() else "fp32"
    return cfg["precision"]


def deepspeed_config(cfg: dict, world: int) -> dict:
    """The trainer sets every accumulation boundary itself (a step's units vary in number), so
    DeepSpeed sees one sample per micro-step and one micro-step per step: its counters only."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world,
        "gradient_clipping": cfg["grad_clip"],
        "zero_optimization": {"stage": cfg["zero_stage"]},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def lr_lambda(cfg: dict, total_steps: int):
    """Linear warm-up over `warmup_ratio` of all steps, then `schedule` down to 0 at the last."""
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

def build_model(cfg: dict, model_dir: Path, init_adapter: Path | None, bf16: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model

    from instructerc import models
    from instructerc.dropout import use_bits_dropout

    if cfg["finetune"] == "full":  # every weight trains, in fp32 (autocast computes in bf16 where asked)
        model = models.load_model(init_adapter or model_dir, dtype=torch.float32)
        model.config.use_cache = False
        if cfg["gradient_checkpointing"]:
            model.gradient_checkpointing_enable()
        return model.requires_grad_(True)
    # frozen base weights in bf16; PEFT keeps the adapter's own weights in fp32 (autocast_adapter_dtype)
    model = models.load_model(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    if cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if init_adapter is not None:
        model = models.load_adapter(model, init_adapter, trainable=True)
    else:
        lora = cfg["lora"]
        model = get_peft_model(model, LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM",
        ))
    use_bits_dropout(model)  # torch's CPU dropout cost more than the matmuls it sits beside
    return model


# --- data ------------------------------------------------------------------------------------

def dev_sample(records: list, cap: int, seed: int) -> list:
    if not cap or cap >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), cap))
    return [records[i] for i in keep]


def dev_task(stage: str) -> str:
    """What a stage's dev pass scores: the warm-up its own task (an ERC score of a speaker-only adapter
    says nothing), the other stages ERC."""
    return "speaker" if stage == "speaker" else "erc"


# the dev score that picks RUN/best: speaker candidates differ from dialogue to dialogue, so the
# warm-up is scored by accuracy; ERC by the benchmark's weighted-F1
DEV_SCORE = {"erc": "dev_weighted_f1", "speaker": "dev_speaker_accuracy"}  # names: curves.SCORE_NAMES


def dev_split(data: Path, stage: str, cfg: dict) -> tuple[list, list]:
    """The ERC dev records (their label list is the run's) and the stage's dev sample. Folders prepared
    before dev held speaker records give the warm-up an empty sample: it is then not scored."""
    task = dev_task(stage)
    records = load_split(data, "dev", tuple(dict.fromkeys(("erc", task))))  # one read of dev.jsonl for both
    erc = [r for r in records if r.task == "erc"]
    if not erc:
        raise UserError("no erc records (empty file?)", path=Path(data) / "dev.jsonl")
    return erc, dev_sample([r for r in records if r.task == task], cfg["eval"]["max_records"], cfg["seed"])


def dev_predictions(model, tokenizer, records: list, cfg: dict) -> list:
    """Label scoring of some dev records, as `eval` scores them."""
    from instructerc import decode

    return decode.score_records(model, tokenizer, records, batch_size=cfg["eval"]["batch_size"], progress=False)


def collapsed_to(preds: list) -> str | None:
    """The one label every dev answer is, though the gold labels vary; else None. Such a model answers
    the label prior whatever the input, and its training loss can look healthy (issue 13's
    `no-speaker` row on all of MELD: two epochs of `neutral` everywhere at lr 3e-3)."""
    answers, golds = {p.pred for p in preds}, {p.gold for p in preds}
    return answers.pop() if len(answers) == 1 and len(golds) > 1 else None


def dev_scores(preds: list, labels, task: str = "erc") -> dict:
    from instructerc import metrics

    nll = sum(-math.log(max(p.probs.get(p.gold, 0.0), 1e-12)) for p in preds) / len(preds)
    if task == "speaker":
        accuracy = sum(p.pred == p.gold for p in preds) / len(preds)
        return {"dev_speaker_accuracy": accuracy, "dev_label_nll": nll, "dev_n": len(preds)}
    scores = metrics.classification_metrics([p.gold for p in preds], [p.pred for p in preds], labels)
    return {"dev_weighted_f1": scores["weighted_f1"], "dev_accuracy": scores["accuracy"],
            "dev_macro_f1": scores["macro_f1"], "dev_label_nll": nll, "dev_n": len(preds)}


# --- the state of a run ------------------------------------------------------------------------

@dataclass
class Progress:
    """Where the run is; saved with every checkpoint (trainer_state.json) and restored by --resume."""
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    global_step: int = 0
    best: dict | None = None  # the best dev epoch so far: {epoch, step, dev_weighted_f1, ...}
    tokens: int = 0  # prompt + answer tokens of the examples trained on
    computed: int = 0  # token positions the model ran: trie nodes (packs) or padded cells (micro-batches)
    step_seconds: float = 0.0  # wall time of the optimizer steps, every segment of a resumed run together
    seconds: float = 0.0  # wall time of the loop (steps, dev scoring, checkpoints) up to the last checkpoint


@dataclass
class StepStats:
    """One optimizer step, summed over its units and then over all ranks."""
    tasks: tuple[str, ...]
    loss_sum: dict[str, float] = field(default_factory=dict)  # per task: sum of example losses
    examples: dict[str, int] = field(default_factory=dict)  # per task: examples
    tokens: int = 0
    computed: int = 0

    def add(self, batch: list, losses, computed: int) -> None:
        for e, loss in zip(batch, losses.tolist()):
            self.loss_sum[e.task] = self.loss_sum.get(e.task, 0.0) + loss
            self.examples[e.task] = self.examples.get(e.task, 0) + 1
        self.tokens += sum(len(e.input_ids) for e in batch)
        self.computed += computed

    def all_reduce(self) -> None:
        import torch
        import torch.distributed as dist

        flat = torch.tensor([self.loss_sum.get(t, 0.0) for t in self.tasks] + [self.examples.get(t, 0) for t in self.tasks]
                            + [self.tokens, self.computed], dtype=torch.float64)
        dist.all_reduce(flat)
        n = len(self.tasks)
        self.loss_sum = dict(zip(self.tasks, flat[:n].tolist()))
        self.examples = {t: int(c) for t, c in zip(self.tasks, flat[n:2 * n].tolist())}
        self.tokens, self.computed = int(flat[-2]), int(flat[-1])

    def task_losses(self) -> dict[str, float]:
        """Each task's mean example loss this step; None (null in metrics.jsonl) for a task with no example."""
        return {f"loss_{t}": self.loss_sum[t] / self.examples[t] if self.examples[t] else None for t in self.tasks}


@dataclass
class Run:
    """What every phase of `train` reads: settings, data, the engine, this rank's place."""
    cfg: dict
    stage: str
    out: Path
    task_weight: dict[str, float]
    examples: list
    dev_records: list
    tokenizer: object
    engine: object
    scheduler: object
    rank: int
    world: int
    bf16: bool
    epochs: int
    steps_per_epoch: int
    log: RunLog

    def autocast(self):
        import torch
        from peft.helpers import disable_input_dtype_casting

        if not self.bf16:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type=self.engine.device.type, dtype=torch.bfloat16))
        # PEFT would cast each LoRA input to the fp32 of the adapter's weights (and autocast back to
        # bf16 for the matmul): a copy, and its dropout, at twice the bytes, for the same numbers
        stack.enter_context(disable_input_dtype_casting(self.engine.module))
        return stack


# --- the recipe ------------------------------------------------------------------------------

def train(cfg: dict, *, stage: str, data: Path, model_spec: str, out: Path, init_adapter: Path | None = None,
          resume: bool = False, local_rank: int | None = None) -> dict:
    """Run one stage; returns the end-of-run summary (empty when stopped early by `stop_after`);
    raises `Stopped` after checkpointing when SIGTERM or SIGINT asked it to stop."""
    from tqdm import tqdm

    run = set_up(cfg, stage=stage, data=Path(data), model_spec=model_spec, out=Path(out),
                 init_adapter=init_adapter, resume=resume, local_rank=local_rank)
    progress = resume_from_checkpoint(run) if resume else Progress()
    started, before = time.perf_counter(), Progress(**asdict(progress))

    def elapsed() -> float:  # the whole run's loop time: segments before a --resume count too
        return before.seconds + time.perf_counter() - started

    bar = tqdm(total=run.epochs * run.steps_per_epoch, initial=progress.global_step, desc=f"train {stage}",
               disable=run.rank != 0, dynamic_ncols=True)
    run.engine.train()
    signals = StopSignals()
    try:
        summary = train_loop(run, progress, bar, signals, elapsed)
    finally:
        signals.restore()
    if summary is not None:
        return summary
    seconds = elapsed()
    return finish(run, progress, seconds, seconds - before.seconds)


def train_loop(run: Run, progress: Progress, bar, signals: "StopSignals", elapsed) -> dict | None:
    """The epochs and their steps; {} when `stop_after` ended the run early, None when it ran to the end."""
    from instructerc import batching

    cfg = run.cfg
    for epoch in range(progress.epoch, run.epochs):
        plan = batching.epoch_plan(run.examples, cfg, run.world, epoch)
        for step_in_epoch in range(progress.step_in_epoch, len(plan)):
            t0 = time.perf_counter()
            stats = train_step(run, plan[step_in_epoch])
            seconds = time.perf_counter() - t0
            progress.step_in_epoch, progress.global_step = step_in_epoch + 1, progress.global_step + 1
            progress.tokens += stats.tokens
            progress.computed += stats.computed
            progress.step_seconds += seconds
            log_step(run, progress, stats, epoch, seconds, bar)
            signum = signals.agreed()
            if signum:  # a scheduler's SIGTERM or a Ctrl-C: keep the finished steps, then stop
                checkpoint(run, progress, elapsed)
                bar.close()
                message = (f"stopped by {signal.Signals(signum).name} after step {progress.global_step}, checkpoint "
                           f"saved; continue with the same command and --resume")
                run.log(message)
                raise Stopped(message, signum)
            last_of_epoch = step_in_epoch + 1 == len(plan)
            stopping = progress.global_step == cfg["stop_after"] and not last_of_epoch
            if not last_of_epoch and (stopping or cfg["checkpoint_every"] and progress.global_step % cfg["checkpoint_every"] == 0):
                checkpoint(run, progress, elapsed)
            if stopping:
                return stop_early(run, progress, bar)
        end_of_epoch(run, progress, epoch, elapsed)
        if progress.global_step == cfg["stop_after"] and epoch + 1 < run.epochs:
            return stop_early(run, progress, bar)
    bar.close()
    return None


class StopSignals:
    """SIGTERM (what SLURM and other schedulers send before they kill) and SIGINT (Ctrl-C) ask the
    loop to stop at the next step boundary; a second SIGINT interrupts at once. Every rank learns
    whether any rank was asked, so all of them checkpoint the same step and stop together."""

    def __init__(self):
        self.signum = 0
        self.previous = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}

    def _note(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def agreed(self) -> int:
        import torch
        import torch.distributed as dist

        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"  # nccl needs GPU tensors
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def set_up(cfg: dict, *, stage: str, data: Path, model_spec: str, out: Path, init_adapter: Path | None,
           resume: bool, local_rank: int | None) -> Run:
    """Check the inputs (before any process group or model exists), join the ranks, write
    RUN/config.yaml, encode the examples, build the model and the DeepSpeed engine."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from instructerc import batching, models

    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if init_adapter is not None and not Path(init_adapter).exists():
        raise UserError("adapter not found", path=init_adapter)
    if cfg["logging"] == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserError("logging: tensorboard needs the tensorboard package (pip install -e .[tensorboard])")
    if init_adapter is not None and cfg["finetune"] == "full" and not (Path(init_adapter) / "config.json").is_file():
        raise UserError("finetune: full starts from a full model folder (the RUN/best of a full run), "
                        "not a LoRA adapter", path=init_adapter)
    task_weight = stage_task_weights(stage, cfg)
    spec = read_prepared(data).spec  # an old or foreign folder fails here, before any work
    train_records = load_split(data, "train", tuple(task_weight))
    erc_dev, dev_records = dev_split(data, stage, cfg)
    model_dir = models.resolve_model(model_spec)
    if (out / "config.yaml").is_file() and not resume:
        raise UserError("run folder already holds a run; pass --resume to continue it or choose another --out", path=out)

    rank, world = init_distributed(local_rank)
    grad_accum(cfg, world)  # packing none: batch_size must split evenly; fails before any work
    resolved = {**cfg, "stage": stage, "data": str(data.resolve()), "model": str(model_spec),
                "init_adapter": str(init_adapter) if init_adapter else None,
                "labels": list(erc_dev[0].labels), "prompt_spec": spec.to_json(), "world_size": world}
    allowed: dict[str, tuple] = {}
    if resume and (out / "config.yaml").is_file():
        refused, allowed = resume_changes(yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")), resolved)
        if refused:
            raise UserError(f"--resume with settings that differ from the run's config.yaml: {', '.join(refused)} "
                            f"(a resume may change only {', '.join(RESUME_MAY_CHANGE)})", path=out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    dist.barrier()

    random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    tokenizer = models.load_tokenizer(model_dir)
    examples = [batching.encode(tokenizer, r, cfg["max_length"])
                for r in tqdm(train_records, desc="encoding", disable=rank != 0, leave=False)]
    bf16 = precision(cfg) == "bf16"
    model = build_model(cfg, model_dir, Path(init_adapter) if init_adapter else None, bf16)
    epochs = cfg["epochs"][stage]
    steps_per_epoch = len(batching.epoch_plan(examples, cfg, world, 0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch * epochs))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, world))
    run = Run(cfg=cfg, stage=stage, out=out, task_weight=task_weight, examples=examples, dev_records=dev_records,
              tokenizer=tokenizer, engine=engine, scheduler=scheduler, rank=rank, world=world, bf16=bf16,
              epochs=epochs, steps_per_epoch=steps_per_epoch,
              log=RunLog(out, rank == 0, tensorboard=cfg["logging"] == "tensorboard"))
    units = (f"dialogue packs of at most {cfg['max_pack_tokens']} tokens" if cfg["packing"] == "dialogue"
             else f"micro-batches of {cfg['micro_batch']} x accumulation {grad_accum(cfg, world)}")
    run.log(f"stage {stage}: {len(examples)} train examples ({', '.join(f'{t} x{w:g}' for t, w in task_weight.items())}), "
            f"{len(dev_records)} dev {dev_task(stage)}; batch {cfg['batch_size']} over {world} rank(s) in {units}; "
            f"{epochs} epoch(s) x {steps_per_epoch} steps; zero {cfg['zero_stage']}, {'bf16' if bf16 else 'fp32'}, "
            f"{torch.get_num_threads()} threads/rank, malloc {allocator.in_use()}; {sum(e.truncated for e in examples)} prompts truncated "
            f"to {cfg['max_length']} tokens")
    for key, (before, after) in allowed.items():
        if key != "stop_after":
            run.log(f"--resume changes {key}: {before} -> {after}")
    return run


def resume_from_checkpoint(run: Run) -> Progress:
    import torch.distributed as dist

    loaded = load_checkpoint(run.engine, run.out, run.rank)
    if loaded is None:
        if run.rank == 0:  # steps logged before the kill will be logged again
            keep_metrics_until(run.out / "metrics.jsonl", 0)
        run.log(f"--resume: no checkpoint in {run.out}, starting from the beginning")
        dist.barrier()
        return Progress()
    progress = Progress(**loaded)
    if run.rank == 0:
        keep_metrics_until(run.out / "metrics.jsonl", progress.global_step)
    run.log(f"resumed from step {progress.global_step} (epoch {progress.epoch + 1}, "
            f"step {progress.step_in_epoch} of {run.steps_per_epoch})")
    dist.barrier()
    return progress


def train_step(run: Run, step: list[list[list[int]]]) -> StepStats:
    """One optimizer step: this rank's units of the step, forward and backward each, then the update.

    Each task's loss is the mean over ITS examples in the whole step (all units, all ranks), so
    the gradient is the same whatever the packing, the unit split or the number of ranks."""
    import torch

    from instructerc import batching

    examples = run.examples
    scale = batching.task_scales([examples[i].task for units in step for unit in units for i in unit], run.task_weight)
    stats = StepStats(tuple(sorted(run.task_weight)))
    units = step[run.rank]
    for k, unit in enumerate(units):
        batch = [examples[i] for i in unit]
        run.engine.set_gradient_accumulation_boundary(k == len(units) - 1)
        with run.autocast():
            losses, computed = batching.unit_losses(run.engine, batch, run.cfg["packing"], run.tokenizer.pad_token_id)
        weights = torch.tensor([scale[e.task] for e in batch] or [0.0], device=losses.device)
        # DeepSpeed averages gradients over ranks: x world undoes it, the weights already normalise
        # over the whole step (so no division by the number of units either)
        run.engine.backward((losses * weights).sum() * run.world, scale_wrt_gas=False)
        stats.add(batch, losses.detach(), computed)
    run.engine.step()
    stats.all_reduce()
    return stats


def log_step(run: Run, progress: Progress, stats: StepStats, epoch: int, seconds: float, bar) -> None:
    task_loss = stats.task_losses()
    loss = sum(run.task_weight[t] * task_loss[f"loss_{t}"] for t in stats.tasks if task_loss[f"loss_{t}"] is not None)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{stats.tokens / seconds:.0f}")
    if progress.global_step % run.cfg["log_every"] == 0 or progress.global_step == 1:
        run.log.metrics({"step": progress.global_step, "epoch": epoch + 1, "loss": loss, **task_loss,
                         "lr": run.scheduler.get_last_lr()[0], "tokens": stats.tokens, "computed_tokens": stats.computed,
                         "seconds": seconds, "tokens_per_s": stats.tokens / seconds})


def checkpoint(run: Run, progress: Progress, elapsed) -> None:
    progress.seconds = elapsed()
    save_checkpoint(run.engine, run.out, asdict(progress), run.rank, run.cfg["keep_checkpoints"])


def end_of_epoch(run: Run, progress: Progress, epoch: int, elapsed) -> None:
    """The ranks score the dev split together (every `eval.every` epochs and after the last); rank 0
    keeps RUN/best if this epoch is the best so far; every rank learns the choice; then a checkpoint."""
    import torch.distributed as dist

    if (epoch + 1) % run.cfg["eval"]["every"] and epoch + 1 < run.epochs:
        if run.rank == 0:
            run.log(f"epoch {epoch + 1}/{run.epochs}: dev not scored (eval.every {run.cfg['eval']['every']})")
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        checkpoint(run, progress, elapsed)
        return
    task = dev_task(run.stage)
    scores, collapsed = None, None
    if run.dev_records:
        n = len(run.dev_records)  # each rank scores a contiguous share (whole dialogues stay mostly together)
        mine = run.dev_records[n * run.rank // run.world: n * (run.rank + 1) // run.world]
        with run.autocast():
            preds = dev_predictions(run.engine.module, run.tokenizer, mine, run.cfg)
        gathered: list = [None] * run.world
        dist.all_gather_object(gathered, preds)
        if run.rank == 0:
            everyone = [p for part in gathered for p in part]
            scores, collapsed = dev_scores(everyone, run.dev_records[0].labels, task), collapsed_to(everyone)
    if run.rank == 0:
        key = DEV_SCORE[task]
        if scores is None:  # data prepared before dev held speaker records: the last epoch is kept
            progress.best = {"epoch": epoch + 1, "step": progress.global_step}
            report = f"dev not scored (dev.jsonl has no {task} records: prepare the data again to score them)"
        else:
            run.log.metrics({"step": progress.global_step, "epoch": epoch + 1, **scores})
            if progress.best is None or scores[key] > progress.best[key]:
                progress.best = {"epoch": epoch + 1, "step": progress.global_step, **scores}
            report = f"{SCORE_NAMES[key]} {scores[key]:.4f} (best {progress.best[key]:.4f}, epoch {progress.best['epoch']})"
            if collapsed:
                report += f"; warning: every dev answer is {collapsed!r} (a collapsed run; a lower lr may train)"
        if progress.best["epoch"] == epoch + 1:
            save_adapter(run.engine.module, run.out / "best", {"stage": run.stage, **progress.best}, run.tokenizer)
        run.log(f"epoch {epoch + 1}/{run.epochs}: {report}")
        draw_curves(run.out)
    shared = [progress.best]
    dist.broadcast_object_list(shared, src=0)
    progress.epoch, progress.step_in_epoch, progress.best = epoch + 1, 0, shared[0]
    checkpoint(run, progress, elapsed)


def peak_memory() -> dict:
    """This process's peak resident memory, and its peak GPU memory where it has a GPU (GiB)."""
    import resource

    import torch

    peak = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if torch.cuda.is_available():
        peak["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return peak


def draw_curves(out: Path) -> None:
    """RUN/curves.png, redrawn after each epoch and at the end (loss, lr, dev weighted-F1)."""
    from instructerc import curves

    curves.draw([curves.read_run(out)], out / "curves.png")


def stop_early(run: Run, progress: Progress, bar) -> dict:
    bar.close()
    run.log(f"stopped after step {progress.global_step} (stop_after); continue with --resume")
    return {}


def finish(run: Run, progress: Progress, seconds: float, segment_seconds: float) -> dict:
    """Every rank must hold the same adapter; rank 0 writes RUN/final and RUN/summary.json.
    Times and speeds cover the whole run, the segments before a --resume too (their steps are kept;
    steps redone after a kill count once); `segment_seconds` is this process's part alone."""
    import torch.distributed as dist

    digest = adapter_digest(run.engine.module)
    digests = [None] * run.world
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different adapters: {digests}")
    summary = {"stage": run.stage, "steps": progress.global_step, "epochs": run.epochs, "world_size": run.world,
               "packing": run.cfg["packing"], "precision": "bf16" if run.bf16 else "fp32",
               "train_examples": len(run.examples), "tokens": progress.tokens, "computed_tokens": progress.computed,
               "tokens_per_s": progress.tokens / progress.step_seconds if progress.step_seconds else 0.0,
               "computed_tokens_per_s": progress.computed / progress.step_seconds if progress.step_seconds else 0.0,
               "step_seconds": progress.step_seconds, "seconds": seconds, "segment_seconds": segment_seconds,
               "best": progress.best, "adapter_sha256": digest, "allocator": allocator.in_use(), **peak_memory()}
    if run.rank == 0:
        save_adapter(run.engine.module, run.out / "final", {"stage": run.stage, "step": progress.global_step, "sha256": digest},
                     run.tokenizer)
        write_json(run.out / "summary.json", summary)
        draw_curves(run.out)
        best, key = progress.best or {}, DEV_SCORE[dev_task(run.stage)]
        kept = (f"best {SCORE_NAMES[key]} {best[key]:.4f} at epoch {best['epoch']}" if key in best
                else f"dev not scored, kept epoch {best.get('epoch')}")
        run.log(f"done: {progress.global_step} steps, {progress.tokens} tokens ({progress.computed} computed) in "
                f"{seconds:.0f}s; {kept}; adapters: {run.out / 'best'}, {run.out / 'final'}; all {run.world} rank(s) "
                f"agree on adapter {digest[:12]}")
    dist.barrier()
    return summary
