"""`instructerc baseline`: the no-training rows every trained model must beat, scored as `eval` scores.

    majority  the most frequent emotion among the training split's ERC records
    knn       the vote of each record's retrieved demonstrations (their gold labels; a tie goes to
              the larger summed similarity); needs data prepared with `--demonstrations K`

Outputs are eval's: OUT/predictions.jsonl, OUT/metrics.json, OUT/confusion.png.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from instructerc.decode import Prediction
from instructerc.errors import UserError
from instructerc.evaluate import SPLITS, check_out_dir, evaluation_metrics, load_split, write_outputs
from instructerc.metrics import format_table
from instructerc.records import PromptRecord
from instructerc.records import load_split as records_split

KINDS = ("majority", "knn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="folder written by `instructerc prepare`")
    parser.add_argument("--kind", required=True, choices=KINDS, help="majority class, or kNN vote of the demonstrations")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to score (default test)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for predictions.jsonl, metrics.json, confusion.png")


def majority_predictions(train: list[PromptRecord], records: list[PromptRecord]) -> list[Prediction]:
    top = Counter(r.target for r in train).most_common(1)[0][0]
    return [Prediction(id=r.id, gold=r.target, pred=top, dataset=r.dataset) for r in records]


def knn_predictions(records: list[PromptRecord], fallback: str) -> list[Prediction]:
    """Each record's demonstrations vote with their gold labels; `fallback` where it has none."""
    out = []
    for r in records:
        votes: dict[str, list[float]] = {}
        for d in r.demonstrations:
            votes.setdefault(d["emotion"], []).append(d["similarity"])
        pred = max(votes, key=lambda e: (len(votes[e]), sum(votes[e]))) if votes else fallback
        out.append(Prediction(id=r.id, gold=r.target, pred=pred, dataset=r.dataset))
    return out


def predictions(kind: str, data: str | Path, records: list[PromptRecord]) -> list[Prediction]:
    train = records_split(data, "train", ("erc",))
    majority = majority_predictions(train, records)
    if kind == "majority":
        return majority
    if not any(r.demonstrations for r in records):
        raise UserError("records have no demonstrations; prepare the data with --demonstrations K for knn", path=data)
    return knn_predictions(records, majority[0].pred)


def run(args) -> int:
    out = Path(args.out)
    check_out_dir(out)
    records = load_split(args.data, args.split)
    start = time.perf_counter()
    preds = predictions(args.kind, args.data, records)
    metrics = evaluation_metrics(records, preds, args.kind, time.perf_counter() - start)
    metrics["run"] = {"data": str(args.data), "split": args.split, "baseline": args.kind}
    title = f"{records[0].label_set} {args.split} ({args.kind} baseline): weighted-F1 {metrics['weighted_f1'] * 100:.2f}"
    write_outputs(out, preds, metrics, title)
    print(format_table(metrics, title))
    print(f"{len(preds)} examples -> {out}")
    return 0
