"""`instructerc export`: a LoRA adapter merged into its base model, as a standalone Hugging Face folder.

    instructerc export --model M --adapter RUN/best --out DIR [--dtype float32|bfloat16]

DIR holds safetensors weights, config, generation config and tokenizer (transformers, vLLM, or
llama.cpp's converter read it) and `instructerc.json`: the label set, the prompt spec and
prepared-data folder of training, and the base model's identity. `eval`/`predict --model DIR`
then work without the adapter: predict takes the prompt spec from there, eval checks the labels.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from instructerc.errors import UserError
from instructerc.fileio import atomic_path, sha256_file, write_json

RECORD = "instructerc.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="a LoRA adapter folder (RUN/best, RUN/final, or RUN)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the merged model folder to write")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights of the merged model (default float32)")


def base_identity(model_dir: Path) -> dict:
    """What tells one base model from another: its config and, where pulled here, its source record."""
    from instructerc.models import SOURCE_RECORD

    ident = {"path": str(model_dir.resolve()), "weights_sha256": weights_digest(model_dir)}
    if (model_dir / SOURCE_RECORD).is_file():
        ident["source"] = json.loads((model_dir / SOURCE_RECORD).read_text(encoding="utf-8"))
    return ident


@functools.lru_cache(maxsize=None)
def weights_digest(model_dir: Path) -> str:
    """sha256 over the model's weight files: two folders hold the same base model iff these agree.
    Cached: the check and the record of one export both need the base's (gigabytes for a 7B model)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f.name.encode())
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def check_base(adapter: Path, model_dir: Path, spec: str) -> None:
    """Refuse a base model other than the adapter's: the run config's `model`, else the base path
    PEFT recorded, must name the same folder as --model, or one with the same weights."""
    from instructerc.models import resolve_model
    from instructerc.runs import run_config

    trained = (run_config(adapter) or {}).get("model")
    if trained is None:
        trained = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not trained:
        return
    try:
        trained_dir = resolve_model(trained)
    except UserError:
        return  # the training base is not on this machine: nothing to compare with
    if trained_dir.resolve() != model_dir.resolve() and weights_digest(trained_dir) != weights_digest(model_dir):
        raise UserError(f"adapter was trained on {trained}, not on --model {spec}; export it onto its own base model",
                        path=adapter)


def run(args) -> int:
    import torch

    from instructerc import models
    from instructerc.runs import run_config, trained_labels

    out = Path(args.out)
    if out.exists() and not (out / RECORD).is_file():
        raise UserError("exists and is not an earlier `instructerc export` output; choose another --out", path=out)
    adapter = models.adapter_folder(args.adapter)
    model_dir = models.resolve_model(args.model)
    check_base(adapter, model_dir, args.model)
    models.quiet_libraries()
    tokenizer = models.load_tokenizer(model_dir)
    model = models.load_adapter(models.load_model(model_dir, dtype=torch.float32), adapter).merge_and_unload()
    model = model.to(getattr(torch, args.dtype))
    cfg = run_config(adapter) or {}
    labels = trained_labels(adapter)
    record = {"labels": list(labels) if labels else None, "prompt_spec": cfg.get("prompt_spec"), "data": cfg.get("data"),
              "stage": cfg.get("stage"), "adapter": str(adapter.resolve()), "base_model": base_identity(model_dir),
              "dtype": args.dtype}
    with atomic_path(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / RECORD, record)
    print(f"merged {adapter} into {args.model} -> {out} ({args.dtype}; labels: {', '.join(labels or ['unknown'])})")
    return 0


def exported_record(model_spec: str) -> dict | None:
    """The `instructerc.json` of an exported model folder given as --model, else None."""
    path = Path(str(model_spec)).expanduser() / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_exported(model_spec: str, labels) -> None:
    """An exported model scores only the label set it was trained on."""
    record = exported_record(model_spec)
    if record and record.get("labels") and tuple(record["labels"]) != tuple(labels):
        raise UserError(f"model was trained on labels <{', '.join(record['labels'])}> but the data has "
                        f"<{', '.join(labels)}>", path=model_spec)
