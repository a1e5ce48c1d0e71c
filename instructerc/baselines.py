"""`instructerc baseline`: the no-training rows every trained model must beat, scored as `eval` scores.

    majority  the most frequent emotion among the training split's ERC records
    knn       the vote of each record's first k retrieved demonstrations (their gold labels; a tie
              goes to the larger summed similarity); needs data prepared with `--demonstrations K`;
              `--k auto` picks k in 1..K by dev weighted-F1
    tfidf     logistic regression on TF-IDF word uni- and bigrams of the utterance alone (scikit-learn),
              its regularisation C picked by dev weighted-F1

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

KINDS = ("majority", "knn", "tfidf")
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="folder written by `instructerc prepare`")
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="majority class, kNN vote of the demonstrations, or TF-IDF + logistic regression")
    parser.add_argument("--k", default="all", metavar="N|auto|all",
                        help="knn: vote of the first N demonstrations; auto: N chosen on dev; all (default): every one")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to score (default test)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for predictions.jsonl, metrics.json, confusion.png")


def majority_predictions(train: list[PromptRecord], records: list[PromptRecord]) -> list[Prediction]:
    top = Counter(r.target for r in train).most_common(1)[0][0]
    return [Prediction(id=r.id, gold=r.target, pred=top, dataset=r.dataset) for r in records]


def knn_predictions(records: list[PromptRecord], fallback: str, k: int | None = None) -> list[Prediction]:
    """Each record's first `k` (None: all) demonstrations vote with their gold labels; `fallback` where it has none."""
    out = []
    for r in records:
        votes: dict[str, list[float]] = {}
        for d in r.demonstrations[:k]:
            votes.setdefault(d["emotion"], []).append(d["similarity"])
        pred = max(votes, key=lambda e: (len(votes[e]), sum(votes[e]))) if votes else fallback
        out.append(Prediction(id=r.id, gold=r.target, pred=pred, dataset=r.dataset))
    return out


def dev_f1(preds: list[Prediction]) -> float:
    from sklearn.metrics import f1_score

    golds, answers = [p.gold for p in preds], [p.pred for p in preds]
    return round(float(f1_score(golds, answers, average="weighted", zero_division=0)), 6)


def pick_on_dev(options, score) -> tuple[object, dict]:
    """The option with the best dev score (the first on a tie), and every option's score."""
    scores = {option: score(option) for option in options}
    return max(scores, key=lambda o: (scores[o], -list(scores).index(o))), scores


def tfidf_model(train: list[PromptRecord], c: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # lbfgs at sklearn's default tol (1e-4) stops short of the optimum at large C, and where it stops
    # depends on BLAS threads: EmoryNLP's test score moved by half a point between 1 and 2 threads,
    # and at 1e-6 one MELD test answer still did. At 1e-8 both came out identical (BENCHMARKS.md).
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=c, tol=1e-8, max_iter=20000))
    return model.fit([r.utterance for r in train], [r.target for r in train])


def tfidf_predictions(model, records: list[PromptRecord]) -> list[Prediction]:
    guesses = model.predict([r.utterance for r in records])
    return [Prediction(id=r.id, gold=r.target, pred=str(g), dataset=r.dataset) for r, g in zip(records, guesses)]


def predictions(kind: str, data: str | Path, records: list[PromptRecord], k: str = "all") -> tuple[list[Prediction], dict]:
    """The baseline's predictions for `records`, and what was chosen on dev (empty for majority)."""
    train = records_split(data, "train", ("erc",))
    majority = majority_predictions(train, records)
    if kind == "majority":
        return majority, {}
    if kind == "tfidf":
        if not all(r.utterance for r in train):
            raise UserError("records lack the utterance text; prepare the data again with this version", path=data)
        dev = records_split(data, "dev", ("erc",))
        fitted = {c: tfidf_model(train, c) for c in C_GRID}  # the chosen one is used again, not refitted
        c, scores = pick_on_dev(C_GRID, lambda c: dev_f1(tfidf_predictions(fitted[c], dev)))
        return tfidf_predictions(fitted[c], records), {"C": c, "dev_weighted_f1": scores}
    if not any(r.demonstrations for r in records):
        raise UserError("records have no demonstrations; prepare the data with --demonstrations K for knn", path=data)
    if k == "all":
        return knn_predictions(records, majority[0].pred), {}
    if k == "auto":
        dev = records_split(data, "dev", ("erc",))
        most = max(len(r.demonstrations) for r in dev)
        chosen, scores = pick_on_dev(range(1, most + 1), lambda n: dev_f1(knn_predictions(dev, majority[0].pred, n)))
        return knn_predictions(records, majority[0].pred, chosen), {"k": chosen, "dev_weighted_f1": scores}
    if not k.isdigit() or int(k) < 1:
        raise UserError(f"--k expects a positive number, auto or all; got {k!r}")
    return knn_predictions(records, majority[0].pred, int(k)), {"k": int(k)}


def run(args) -> int:
    out = Path(args.out)
    check_out_dir(out)
    records = load_split(args.data, args.split)
    start = time.perf_counter()
    preds, chosen = predictions(args.kind, args.data, records, args.k)
    metrics = evaluation_metrics(records, preds, args.kind, time.perf_counter() - start)
    metrics["run"] = {"data": str(args.data), "split": args.split, "baseline": args.kind, "chosen_on_dev": chosen}
    title = f"{Path(args.data).resolve().name} {args.split} ({args.kind} baseline): weighted-F1 {metrics['weighted_f1'] * 100:.2f}"
    write_outputs(out, preds, metrics, title)
    print(format_table(metrics, title))
    if chosen:
        setting = {key: v for key, v in chosen.items() if key != "dev_weighted_f1"}
        print(f"chosen on dev: {setting} (dev weighted-F1 {max(chosen['dev_weighted_f1'].values()) * 100:.2f})"
              if "dev_weighted_f1" in chosen else f"setting: {setting}")
    print(f"{len(preds)} examples -> {out}")
    return 0
