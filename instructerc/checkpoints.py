"""Training checkpoints that survive a kill: DeepSpeed's state plus each rank's RNG and the data position.

Layout: RUN/checkpoints/stepNNNNNNN/ (DeepSpeed's files, rng_rank{r}.json, trainer_state.json) and
RUN/checkpoints/latest.json naming the last COMPLETE one with the size and sha256 of each of its files.
Everything we add is JSON. DeepSpeed unpickles its .pt files with weights_only=False, so before it
sees them a resume checks every file against latest.json (a missing, truncated or flipped file is
refused by name) and loads each .pt weights-only (a pickle that could run code is refused).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from instructerc.errors import UserError
from instructerc.fileio import file_records, first_damage, write_json, write_text

# Classes DeepSpeed pickles into its optimizer state beside tensors and builtins: plain records,
# safe to rebuild under torch's weights-only unpickler.
DEEPSPEED_STATE_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def rng_state() -> dict:
    import torch

    state = {"python": _jsonable(random.getstate()), "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import torch

    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def save_checkpoint(engine, run: Path, state: dict, rank: int, keep: int) -> None:
    """DeepSpeed writes the LoRA weights, optimizer (its ZeRO partition per rank) and scheduler;
    we add each rank's RNG state and the trainer's position. `latest.json` moves to the new
    checkpoint only once every rank has finished: a kill mid-save leaves the previous one in force."""
    import torch.distributed as dist

    root, tag = run / "checkpoints", f"step{state['global_step']:07d}"
    if rank == 0 and (root / tag).exists():
        shutil.rmtree(root / tag)
    dist.barrier()
    with frozen_weights_left_out(engine.module):
        engine.save_checkpoint(str(root), tag=tag, save_latest=False, exclude_frozen_parameters=True)
    write_json(root / tag / f"rng_rank{rank}.json", rng_state())
    dist.barrier()
    if rank == 0:
        write_json(root / tag / "trainer_state.json", state)
        write_json(root / "latest.json", {"tag": tag, "files": file_records(root / tag)})
        done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step") and p.name != tag)
        for old in done[: max(0, len(done) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


@contextmanager
def frozen_weights_left_out(module):
    """DeepSpeed's exclude_frozen_parameters walks named_parameters(), which names a tied weight only
    once: the frozen lm_head.weight of a tied-embedding model (SmolLM2: the 49,152 x 576 embedding,
    57 MB in bf16) went into every checkpoint beside a 7.6 MB adapter. Every frozen name is dropped
    while DeepSpeed saves; a resume loads non-strictly, so the base model keeps its own copy."""
    frozen = [name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad]

    def drop(_module, state, prefix, _metadata):
        for name in frozen:
            state.pop(prefix + name, None)

    handle = module.register_state_dict_post_hook(drop)
    try:
        yield
    finally:
        handle.remove()


def load_checkpoint(engine, run: Path, rank: int) -> dict | None:
    root = run / "checkpoints"
    if not (root / "latest.json").is_file():
        return None
    latest = json.loads((root / "latest.json").read_text())
    tag = latest["tag"]
    if "files" in latest:
        verify_files(root / tag, latest["files"])
    else:
        print(f"warning: {root / tag} predates checkpoint digests; its files are not verified", file=sys.stderr)
    refuse_code_in_pickles(root / tag)
    path, _ = engine.load_checkpoint(str(root), tag=tag, load_module_strict=False,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise UserError("checkpoint could not be loaded", path=root / tag)
    set_rng_state(json.loads((root / tag / f"rng_rank{rank}.json").read_text()))
    return json.loads((root / tag / "trainer_state.json").read_text())


def verify_files(folder: Path, expected: dict[str, dict]) -> None:
    """Every file latest.json recorded is there, whole and unchanged; the first that is not is named."""
    damage = first_damage(folder, expected)
    if damage:
        raise UserError(f"checkpoint file {damage}; this checkpoint cannot be resumed", path=folder)


def refuse_code_in_pickles(folder: Path) -> None:
    for path in sorted(folder.glob("*.pt")):
        try:
            load_weights_only(path)
        except Exception as e:
            why = str(e).split("WeightsUnpickler error: ")[-1].splitlines()[0]
            raise UserError(f"refused: this checkpoint file holds more than tensors and DeepSpeed's state ({why})",
                            path=path) from None


def load_weights_only(path: Path):
    """A DeepSpeed .pt file under torch's weights-only unpickler, DeepSpeed's plain records allowed."""
    import importlib

    import torch

    allowed = []
    for name in DEEPSPEED_STATE_CLASSES:
        module, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            pass  # another DeepSpeed version: its files will simply need fewer (or be refused)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def keep_metrics_until(path: Path, step: int) -> None:
    """On resume, forget metrics logged after the checkpoint (they will be logged again), and a line
    a kill tore in the middle."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row["step"] <= step:
            kept.append(line + "\n")
    write_text(path, "".join(kept))
