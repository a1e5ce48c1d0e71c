"""Scores as the field reports them (scikit-learn), a compact table, and a confusion-matrix picture.

Weighted-F1 is `sklearn.metrics.f1_score(golds, preds, labels=LABELS, average="weighted")` over the
dataset's full label set (IEMOCAP 6 classes, MELD 7, EmoryNLP 7; 9 in the unified mixed space).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence


def classification_metrics(golds: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> dict:
    """weighted/macro F1, accuracy, per-class P/R/F1/support, confusion matrix and counts."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(labels)
    golds, preds = list(golds), list(preds)
    if not golds:
        raise ValueError("no predictions to score")
    n_gold, n_pred = Counter(golds), Counter(preds)
    p, r, f, s = precision_recall_fscore_support(golds, preds, labels=labels, zero_division=0)
    return {
        "weighted_f1": float(f1_score(golds, preds, labels=labels, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(golds, preds)),
        "macro_f1": float(f1_score(golds, preds, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            lab: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, lab in enumerate(labels)
        },
        "labels": labels,
        # rows: gold, columns: predicted, both in `labels` order
        "confusion": confusion_matrix(golds, preds, labels=labels).tolist(),
        "counts": {
            "n": len(golds),
            "correct": sum(g == q for g, q in zip(golds, preds)),
            "gold": {lab: n_gold[lab] for lab in labels},
            "pred": {lab: n_pred[lab] for lab in labels},
            "pred_not_in_labels": sum(q not in labels for q in preds),
        },
    }


def weighted_f1_interval(metrics: dict, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of weighted-F1 over the scored utterances, from the confusion
    matrix alone (resampling utterances with replacement draws the matrix's cells from a multinomial),
    so a stored metrics.json suffices. It is how far the score moves with the sample of test
    utterances, not between training seeds; two rows' intervals overlapping is no paired test."""
    import numpy as np

    cm = np.asarray(metrics["confusion"], dtype=float)
    gold = np.array([metrics["counts"]["gold"][lab] for lab in metrics["labels"]], dtype=float)
    cells = np.concatenate([cm, (gold - cm.sum(1))[:, None]], axis=1)  # last column: answers outside the labels
    n = int(cells.sum())
    draws = np.random.default_rng(seed).multinomial(n, (cells / n).ravel(), size=resamples)
    scores = weighted_f1_of_counts(draws.reshape(resamples, *cells.shape).astype(float))
    lo, hi = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_bootstrap(golds: Sequence[str], preds_a: Sequence[str], preds_b: Sequence[str], labels: Sequence[str],
                     resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Weighted-F1 of answers a minus answers b on the same utterances: the difference, its percentile
    interval when the utterances are resampled for both rows at once, and the share of resamples in
    which a is ahead. Pairing removes the variation both rows share (which utterances are hard), so
    this separates two rows where their separate intervals overlap."""
    import numpy as np

    labels = list(labels)
    column = {lab: k for k, lab in enumerate(labels)}
    if any(g not in column for g in golds):
        raise ValueError("a gold label outside the label set")
    rows, n = np.array([column[g] for g in golds]), len(golds)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)

    def scores(preds: Sequence[str]):
        cells = rows * (len(labels) + 1) + np.array([column.get(p, len(labels)) for p in preds])
        onehot = np.zeros((n, len(labels) * (len(labels) + 1)))
        onehot[np.arange(n), cells] = 1.0
        counts = np.concatenate([onehot.sum(0, keepdims=True), weights @ onehot])  # the sample, then resamples
        return weighted_f1_of_counts(counts.reshape(-1, len(labels), len(labels) + 1))

    diff = scores(preds_a) - scores(preds_b)
    lo, hi = np.quantile(diff[1:], [(1 - level) / 2, (1 + level) / 2])
    return {"difference": float(diff[0]), "low": float(lo), "high": float(hi),
            "a_ahead": float((diff[1:] > 0).mean()), "resamples": resamples, "n": n}


def weighted_f1_of_counts(counts):
    """Weighted-F1 of confusion counts shaped (..., labels, labels + 1): gold rows, answered columns,
    the last column for answers outside the labels; as scikit-learn's with zero_division=0."""
    import numpy as np

    tp = np.diagonal(counts[..., :-1], axis1=-2, axis2=-1)
    support, answered = counts.sum(-1), counts[..., :-1].sum(-2)
    f1 = np.divide(2 * tp, support + answered, out=np.zeros_like(tp), where=support + answered > 0)
    return (support * f1).sum(-1) / support.sum(-1)


def format_table(metrics: dict, title: str = "") -> str:
    """A compact per-class table followed by the headline scores, weighted-F1 with its interval over
    the scored utterances: how much of a gap between two rows the test split can tell apart."""
    lines = [title] if title else []
    lines.append(f"{'label':<12}{'prec':>7}{'rec':>7}{'f1':>7}{'support':>9}")
    for lab, m in metrics["per_class"].items():
        lines.append(f"{lab:<12}{m['precision']:>7.3f}{m['recall']:>7.3f}{m['f1']:>7.3f}{m['support']:>9d}")
    lo, hi = weighted_f1_interval(metrics)
    lines.append(
        f"weighted-F1 {metrics['weighted_f1'] * 100:.2f} (95% bootstrap interval {lo * 100:.2f}-{hi * 100:.2f})  "
        f"accuracy {metrics['accuracy'] * 100:.2f}  macro-F1 {metrics['macro_f1'] * 100:.2f}  (n={metrics['counts']['n']})"
    )
    return "\n".join(lines)


def save_confusion_png(metrics: dict, path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = metrics["labels"]
    cm = np.asarray(metrics["confusion"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 1.0 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{lab} ({int(n)})" for lab, n in zip(labels, rows[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold (support)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    ax.set_title(title or f"weighted-F1 {metrics['weighted_f1'] * 100:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
