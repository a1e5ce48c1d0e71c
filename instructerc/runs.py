"""The run folder: what `train` writes into RUN/ and what `eval` and `predict` read back from it.

    RUN/config.yaml     resolved config + stage, data, model, labels (written by train)
    RUN/metrics.jsonl   per step and per epoch (RunLog.metrics); RUN/tb/ the same for TensorBoard (logging: tensorboard)
    RUN/train.log       messages (RunLog)
    RUN/best, RUN/final PEFT adapters with trained.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

from instructerc.errors import UserError
from instructerc.fileio import atomic_path, write_json
from instructerc.models import adapter_folder


class RunLog:
    """Rank 0's log: RUN/train.log, RUN/metrics.jsonl, and messages printed above the progress bar;
    with `tensorboard`, every metric also as a TensorBoard scalar under RUN/tb/."""

    def __init__(self, run: Path, active: bool, tensorboard: bool = False):
        self.active, self.run = active, run
        self.writer = None
        if active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run / "tb"))

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
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("loss_", "dev_")) else key,
                                           value, row["step"])
            self.writer.flush()


def save_adapter(model, path: Path, info: dict, tokenizer=None) -> None:
    """A PEFT adapter folder with `trained.json` (stage, step, dev scores), written atomically. A fully
    fine-tuned model is saved whole, with the tokenizer: a model folder for `--model`."""
    from peft import PeftModel

    with atomic_path(path) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None and not isinstance(model, PeftModel):
            tokenizer.save_pretrained(str(tmp))
        config = tmp / "adapter_config.json"
        if config.is_file():  # PEFT writes target_modules from a set, in hash order: sorted, equal runs write equal files
            cfg = json.loads(config.read_text())
            if isinstance(cfg.get("target_modules"), list):
                write_json(config, {**cfg, "target_modules": sorted(cfg["target_modules"])})
        write_json(tmp / "trained.json", info)


def adapter_digest(model) -> str:
    """sha256 of the trainable (LoRA) weights: equal on every rank at the end, or something broke."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_config(adapter_dir: Path) -> dict | None:
    """The resolved config of the training run an adapter came from: RUN/config.yaml beside
    RUN/best (or inside the adapter folder). None when there is none (e.g. a foreign adapter)."""
    import yaml

    for config in (adapter_dir / "config.yaml", adapter_dir.parent / "config.yaml"):
        if config.is_file():
            return yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return None


def trained_labels(adapter_dir: Path) -> tuple[str, ...] | None:
    """The label list an adapter was trained on: its run config's `labels`, else the manifest of
    the config's `data` folder. None when unknown."""
    cfg = run_config(adapter_dir) or {}
    if cfg.get("labels"):
        return tuple(cfg["labels"])
    manifest = Path(str(cfg.get("data", ""))) / "manifest.json"
    if cfg.get("data") and manifest.is_file():
        return tuple(json.loads(manifest.read_text(encoding="utf-8"))["labels"])
    return None


def check_adapter(adapter: str | None, labels: Sequence[str]) -> None:
    """Refuse an adapter folder that does not exist, or one trained on another label set."""
    if adapter is None:
        return
    if not Path(adapter).is_dir():
        raise UserError("adapter folder not found", path=adapter)
    path = adapter_folder(adapter)
    trained = trained_labels(path)
    if trained is not None and tuple(trained) != tuple(labels):
        raise UserError(f"adapter was trained on labels <{', '.join(trained)}> but the data has "
                        f"<{', '.join(labels)}>; prepare the data with the adapter's label set", path=path)
