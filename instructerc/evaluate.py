"""`instructerc eval`: score a model (+ LoRA adapter) on a prepared split.

    load records (DIR/SPLIT.jsonl, ERC only) -> decode (score | generate) -> metrics (scikit-learn)
    -> OUT/predictions.jsonl, OUT/metrics.json, OUT/confusion.png, written together or not at all
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from instructerc.decode import Prediction, add_decoding_arguments, decode_records, decoding_options, is_label, \
    load_for_decoding
from instructerc.errors import UserError
from instructerc.export import check_exported, exported_record
from instructerc.fileio import atomic_path, write_json, write_jsonl
from instructerc.labels import UNIFIED
from instructerc.metrics import classification_metrics, format_table, save_confusion_png
from instructerc.records import PromptRecord
from instructerc.records import load_split as records_split
from instructerc.runs import check_adapter
from instructerc.spec import read_prepared

SPLITS = ("train", "dev", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="folder written by `instructerc prepare`")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to score (default test)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for predictions.jsonl, metrics.json, confusion.png")
    add_decoding_arguments(parser)
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N records of the split")


def load_split(data: str | Path, split: str, limit: int | None = None) -> list[PromptRecord]:
    """The labelled ERC records of a prepared split, all sharing one label list."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    records = records_split(data, split, ("erc",))[:limit]
    path = Path(data) / f"{split}.jsonl"
    for r in records:
        if not r.target:
            raise UserError(f"record {r.id} has no gold label; eval needs labelled data (use `predict`)", path=path)
        if r.labels != records[0].labels:
            raise UserError(f"record {r.id} has another label list than the first record", path=path)
    return records


def source_labels(dataset: str, labels: tuple[str, ...], label_set: str) -> list[str]:
    """A source's classes inside the mixed space (its own labels mapped there), else all `labels`.

    Weighted-F1 is the same either way (absent classes weigh 0); macro-F1 then averages only
    classes the source can have.
    """
    if label_set == "mixed" and dataset in UNIFIED:
        image = set(UNIFIED[dataset].values())
        return [lab for lab in labels if lab in image]
    return list(labels)


def evaluation_metrics(records: list[PromptRecord], preds: list[Prediction], mode: str, seconds: float) -> dict:
    labels = records[0].labels
    golds = [p.gold for p in preds]
    guesses = [p.pred for p in preds]
    metrics = classification_metrics(golds, guesses, labels)
    metrics["decoding"] = {"mode": mode, "seconds": round(seconds, 3),
                           "examples_per_second": round(len(preds) / seconds, 3) if seconds > 0 else None}
    if mode == "generate":
        not_label = sum(not is_label(p.text or "", labels) for p in preds)
        metrics["decoding"]["generated_not_a_label"] = not_label
        metrics["decoding"]["generated_not_a_label_rate"] = round(not_label / len(preds), 4)
    label_set = records[0].label_set
    sources = sorted({r.dataset for r in records})
    if label_set == "mixed" or len(sources) > 1:
        metrics["by_dataset"] = {}
        for src in sources:
            keep = [k for k, r in enumerate(records) if r.dataset == src]
            metrics["by_dataset"][src] = classification_metrics(
                [golds[k] for k in keep], [guesses[k] for k in keep], source_labels(src, labels, label_set))
    return metrics


def check_out_dir(out: Path) -> None:
    """Refuse to replace anything but an earlier eval's output (it is replaced wholesale)."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "metrics.json").exists())):
        raise UserError("exists and is not an earlier `instructerc eval` output; choose another --out", path=out)


def write_outputs(out: Path, preds: list[Prediction], metrics: dict, title: str) -> None:
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "predictions.jsonl", (p.to_json() for p in preds))
        write_json(tmp / "metrics.json", metrics)
        save_confusion_png(metrics, tmp / "confusion.png", title)


def run(args) -> int:
    out = Path(args.out)
    check_out_dir(out)
    records = load_split(args.data, args.split, args.limit)
    labels = read_prepared(args.data).spec.labels
    check_adapter(args.adapter, labels)
    check_exported(args.model, labels)
    model, tokenizer = load_for_decoding(args.model, args.adapter, args.dtype)

    start = time.perf_counter()
    preds = decode_records(model, tokenizer, records, **decoding_options(args))
    seconds = time.perf_counter() - start

    metrics = evaluation_metrics(records, preds, args.decode, seconds)
    # Scoring time scales with the threads torch had (OMP_NUM_THREADS); without them stored timings cannot be compared.
    metrics["decoding"]["threads"] = torch.get_num_threads()
    metrics["run"] = {"data": str(args.data), "split": args.split, "model": str(args.model),
                      "adapter": args.adapter, "limit": args.limit, "num_beams": args.num_beams,
                      "max_new_tokens": args.max_new_tokens, "max_length": args.max_length, "batch_size": args.batch_size,
                      "dtype": args.dtype, "weights_dtype": str(model.dtype).removeprefix("torch.")}
    name = Path(args.data).resolve().name  # the data folder names what was scored (data/demo is not MELD)
    zero_shot = not args.adapter and exported_record(args.model) is None and not (Path(args.model) / "trained.json").exists()
    title = f"{name} {args.split} ({args.decode}{', zero-shot' if zero_shot else ''}): " \
            f"weighted-F1 {metrics['weighted_f1'] * 100:.2f}"
    write_outputs(out, preds, metrics, title)

    print(format_table(metrics, title))
    for src, m in metrics.get("by_dataset", {}).items():
        print(f"  {src:<10} weighted-F1 {m['weighted_f1'] * 100:.2f}  accuracy {m['accuracy'] * 100:.2f}  n={m['counts']['n']}")
    if args.decode == "generate":
        print(f"generated answers that were not a label: {metrics['decoding']['generated_not_a_label']}/{len(preds)}")
    print(f"{len(preds)} examples in {seconds:.1f}s ({metrics['decoding']['examples_per_second']} ex/s, "
          f"{metrics['decoding']['threads']} threads) -> {out}")
    return 0
