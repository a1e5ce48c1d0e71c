"""The trainer's settings: defaults that follow the paper, YAML configs over them, `--set` over both.

Every key a config may hold is in DEFAULTS (plus `extends: FILE`, merged first): an unknown key,
or a value of the wrong type, is a one-line error naming the file (or `--set`) and the key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from instructerc.errors import UserError

PACKINGS = ("dialogue", "none")
FINETUNES = ("lora", "full")

DEFAULTS = {
    "seed": 42,
    "max_length": 1024,  # tokens of prompt + answer; longer prompts lose their oldest history
    "finetune": "lora",  # lora: train a LoRA adapter | full: every weight of the model (the paper's all-parameters rows)
    "lora": {"r": 16, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "lr": 2.0e-4,
    "adam_betas": [0.9, 0.999],  # AdamW's (beta1, beta2); the released scripts use 0.9, 0.95
    "weight_decay": 0.0,
    "warmup_ratio": 0.1,  # fraction of all optimizer steps spent warming up linearly
    "schedule": "cosine",  # decay after warm-up: cosine | linear | constant
    "batch_size": 32,  # examples per optimizer step, all ranks together
    "packing": "dialogue",  # dialogue: each forward is the token trie of a dialogue's records | none: padded micro-batches
    "max_pack_tokens": 1024,  # trie nodes per pack (packing: dialogue); bounds a step's memory and attention cost
    # packing: dialogue. A dialogue's records enter the epoch's order in runs of this many (0: all of
    # them at once), so a step of batch_size records mixes about batch_size / dialogue_run dialogues.
    "dialogue_run": 0,
    "micro_batch": 4,  # records per padded micro-batch (packing: none); accumulation = batch_size / (micro_batch x ranks)
    "epochs": {"speaker": 3, "joint": 6, "plain": 6},
    "beta": 0.1,  # weight of the emotion-prediction loss in stage joint
    "grad_clip": 1.0,
    "zero_stage": 2,  # 0 or 2
    "precision": "auto",  # auto (bf16 where the hardware computes it natively, else fp32) | bf16 | fp32. Never fp16: it overflows.
    "gradient_checkpointing": False,
    "checkpoint_every": 100,  # optimizer steps; 0 = only at epoch ends
    "keep_checkpoints": 2,
    "stop_after": 0,  # end the run after this optimizer step, as a kill would (then --resume); 0 = never
    "log_every": 10,
    "logging": "none",  # tensorboard: also write every metric as a TensorBoard scalar under RUN/tb/ (optional package)
    # max_records: dev subsample for speed (0 = whole dev split). every: score dev after every Nth epoch
    # and after the last; RUN/best is the best of the scored epochs. Many short epochs (a small data
    # fraction) otherwise spend most of a run scoring dev.
    "eval": {"max_records": 0, "batch_size": 8, "every": 1},
}

def merge(base: dict, over: dict, where: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        name = prefix + key
        if key not in base:
            raise UserError(f"unknown config key {name!r} (known: {', '.join(prefix + k for k in base)})", path=where)
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = merge(base[key], value, where, name + ".")
        else:
            out[key] = coerce(name, base[key], value, where)
    return out


def coerce(name: str, default, value, where: str):
    """A value of the default's type. YAML 1.1 reads `1e-4` as a string: accept it as a float."""
    kind = type(default)
    if default is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise UserError(f"{name} expects {kind.__name__}, got {value!r}", path=where)


def parse_override(item: str) -> dict:
    """`lora.r=8` -> {"lora": {"r": 8}}; values are read as YAML (numbers, lists, booleans)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects key=value, got {item!r}")
    tree: dict = yaml.safe_load(value) if value.strip() else ""
    for part in reversed(key.strip().split(".")):
        tree = {part: tree}
    return tree


def resolve_config(config_path: str | Path | None, overrides: list[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if config_path is not None:
        cfg = load_config(cfg, Path(config_path))
    for item in overrides:
        cfg = merge(cfg, parse_override(item), "--set")
    check_config(cfg)
    return cfg


def load_config(cfg: dict, path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """`cfg` with the YAML file at `path` merged over it; `extends: FILE` (relative to the file)
    merges that file first, so a recipe family shares one file of common settings."""
    if not path.is_file():
        raise UserError("config file not found", path=path)
    if path.resolve() in seen:
        raise UserError("`extends` goes round in a circle", path=path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"not valid YAML ({str(e).splitlines()[0]})", path=path) from None
    if not isinstance(loaded, dict):
        raise UserError("a config must be a YAML mapping", path=path)
    base = loaded.pop("extends", None)
    if base is not None:
        cfg = load_config(cfg, path.parent / str(base), seen + (path.resolve(),))
    return merge(cfg, loaded, str(path))


def check_config(cfg: dict) -> None:
    if cfg["zero_stage"] not in (0, 1, 2):
        raise UserError(f"zero_stage must be 0, 1 or 2 (LoRA gains nothing from 3), got {cfg['zero_stage']}")
    if cfg["logging"] not in ("none", "tensorboard"):
        raise UserError(f"logging must be none or tensorboard, got {cfg['logging']!r}")
    if cfg["finetune"] not in FINETUNES:
        raise UserError(f"finetune must be lora or full, got {cfg['finetune']!r}")
    if cfg["packing"] not in PACKINGS:
        raise UserError(f"packing must be dialogue or none, got {cfg['packing']!r}")
    if cfg["precision"] not in ("auto", "bf16", "fp32"):
        raise UserError(f"precision must be auto, bf16 or fp32 (fp16 overflows), got {cfg['precision']!r}")
    if cfg["schedule"] not in ("cosine", "linear", "constant"):
        raise UserError(f"schedule must be cosine, linear or constant, got {cfg['schedule']!r}")
    betas = cfg["adam_betas"]
    if not (isinstance(betas, list) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise UserError(f"adam_betas must be two numbers in [0, 1), like [0.9, 0.95]; got {betas!r}")
    if cfg["beta"] < 0:
        raise UserError(f"beta must be >= 0 (0 leaves emotion prediction out), got {cfg['beta']}")
    for key in ("batch_size", "micro_batch", "max_length", "max_pack_tokens"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise UserError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not isinstance(cfg["eval"]["every"], int) or cfg["eval"]["every"] < 1:
        raise UserError(f"eval.every must be a positive integer (epochs between dev scorings), got {cfg['eval']['every']!r}")
    if not isinstance(cfg["dialogue_run"], int) or cfg["dialogue_run"] < 0:
        raise UserError(f"dialogue_run must be 0 (whole dialogues) or a positive integer, got {cfg['dialogue_run']!r}")


def with_defaults(saved: dict) -> dict:
    """A run's saved config with the keys added to DEFAULTS since it was written, at their defaults,
    so that a run of an older version still resumes (its settings did not change)."""
    out = copy.deepcopy(saved)
    for key, value in DEFAULTS.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = {**copy.deepcopy(value), **out[key]}
    return out


# Settings a --resume may change: how a run is logged, checkpointed, stopped and scored, never what it
# trains on or how. eval.every only decides which of the remaining epochs are scored; the dev sample
# (eval.max_records) stays fixed so that the scores before and after the resume compare.
RESUME_MAY_CHANGE = ("stop_after", "log_every", "logging", "checkpoint_every", "keep_checkpoints",
                     "eval.batch_size", "eval.every")


def resume_changes(saved: dict, now: dict) -> tuple[list[str], dict[str, tuple]]:
    """What differs between a run's saved config and this command's, as dotted keys: the settings
    --resume must refuse, and the allowed ones as {key: (saved value, new value)}."""
    before, after = flatten(with_defaults(saved)), flatten(now)
    changed = sorted(k for k in after if before.get(k) != after[k])
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    return refused, {k: (before.get(k), after[k]) for k in changed if k in RESUME_MAY_CHANGE}


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def grad_accum(cfg: dict, world: int) -> int:
    """Micro-batches per rank and step with `packing: none` (packs need no such split)."""
    if cfg["packing"] != "none":
        return 1
    per_pass = cfg["micro_batch"] * world
    if cfg["batch_size"] % per_pass:
        raise UserError(f"batch_size {cfg['batch_size']} is not a multiple of micro_batch x world size = {per_pass}")
    return cfg["batch_size"] // per_pass
