"""Metrics equal scikit-learn's, the table prints, the confusion picture is written."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from instructerc.labels import LABEL_SETS
from instructerc.metrics import (classification_metrics, format_table, paired_bootstrap, save_confusion_png,
                                 weighted_f1_interval)

MELD = list(LABEL_SETS["meld"].labels)


def sample(n=200, seed=0):
    rng = random.Random(seed)
    golds = [rng.choice(MELD) for _ in range(n)]
    preds = [g if rng.random() < 0.5 else rng.choice(MELD[:4]) for g in golds]
    return golds, preds


def test_matches_sklearn():
    golds, preds = sample()
    m = classification_metrics(golds, preds, MELD)
    assert m["weighted_f1"] == pytest.approx(f1_score(golds, preds, labels=MELD, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(golds, preds, labels=MELD, average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(golds, preds))
    assert m["confusion"] == confusion_matrix(golds, preds, labels=MELD).tolist()
    assert [m["per_class"][lab]["support"] for lab in MELD] == [golds.count(lab) for lab in MELD]
    assert m["counts"]["n"] == 200 and m["counts"]["correct"] == sum(g == p for g, p in zip(golds, preds))


def test_hand_computed_example():
    golds = ["sad", "sad", "angry", "neutral"]
    preds = ["sad", "angry", "angry", "angry"]
    m = classification_metrics(golds, preds, ["neutral", "sad", "angry"])
    # sad: P 1, R 1/2, F1 2/3; angry: P 1/3, R 1, F1 1/2; neutral: 0.  weighted = (2*2/3 + 1*1/2 + 0)/4
    assert m["per_class"]["sad"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["angry"]["precision"] == pytest.approx(1 / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 0.5) / 4)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["confusion"] == [[0, 0, 1], [0, 1, 1], [0, 0, 1]]


def test_absent_classes_do_not_move_weighted_f1_but_count_in_macro():
    golds, preds = ["sad", "angry"], ["sad", "sad"]
    small = classification_metrics(golds, preds, ["sad", "angry"])
    big = classification_metrics(golds, preds, MELD)
    assert small["weighted_f1"] == pytest.approx(big["weighted_f1"])
    assert big["macro_f1"] < small["macro_f1"]


def test_perfect_and_empty():
    assert classification_metrics(MELD, MELD, MELD)["weighted_f1"] == 1.0
    with pytest.raises(ValueError):
        classification_metrics([], [], MELD)


def test_the_interval_from_the_confusion_matrix_is_the_utterance_bootstrap():
    """Drawing the confusion matrix's cells (with an answer outside the labels kept as one) gives the
    percentile interval of resampling the utterances themselves and rescoring them with scikit-learn."""
    import numpy as np

    golds, preds = sample(300, seed=1)
    preds[:5] = ["(no answer)"] * 5
    m = classification_metrics(golds, preds, MELD)
    lo, hi = weighted_f1_interval(m, resamples=2000, seed=3)
    rng = np.random.default_rng(4)
    scores = []
    for _ in range(2000):
        idx = rng.integers(0, len(golds), len(golds))
        scores.append(f1_score([golds[i] for i in idx], [preds[i] for i in idx], labels=MELD,
                               average="weighted", zero_division=0))
    ref_lo, ref_hi = np.quantile(scores, [0.025, 0.975])
    assert lo < m["weighted_f1"] < hi and hi - lo > 0.05
    assert lo == pytest.approx(ref_lo, abs=0.01) and hi == pytest.approx(ref_hi, abs=0.01)
    assert weighted_f1_interval(classification_metrics(MELD, MELD, MELD)) == (1.0, 1.0)


def test_the_paired_bootstrap_resamples_utterances_for_both_rows_at_once():
    import numpy as np

    golds, better = sample(400, seed=2)
    worse = [p if i % 3 else "neutral" for i, p in enumerate(better)]
    worse[:3] = ["(no answer)"] * 3
    d = paired_bootstrap(golds, better, worse, MELD, resamples=2000, seed=5)
    gap = f1_score(golds, better, labels=MELD, average="weighted", zero_division=0) - \
        f1_score(golds, worse, labels=MELD, average="weighted", zero_division=0)
    assert d["difference"] == pytest.approx(gap) and d["n"] == 400
    rng, diffs = np.random.default_rng(6), []
    for _ in range(2000):
        idx = rng.integers(0, 400, 400)
        g = [golds[i] for i in idx]
        diffs.append(f1_score(g, [better[i] for i in idx], labels=MELD, average="weighted", zero_division=0)
                     - f1_score(g, [worse[i] for i in idx], labels=MELD, average="weighted", zero_division=0))
    assert d["low"] == pytest.approx(np.quantile(diffs, 0.025), abs=0.01)
    assert d["high"] == pytest.approx(np.quantile(diffs, 0.975), abs=0.01)
    assert d["a_ahead"] == pytest.approx(np.mean(np.array(diffs) > 0), abs=0.02)
    same = paired_bootstrap(golds, better, better, MELD)
    assert (same["difference"], same["low"], same["high"], same["a_ahead"]) == (0.0, 0.0, 0.0, 0.0)


def test_table_and_picture(tmp_path):
    golds, preds = sample(50)
    m = classification_metrics(golds, preds, MELD)
    table = format_table(m, "meld test")
    assert table.splitlines()[0] == "meld test" and all(lab in table for lab in MELD)
    lo, hi = weighted_f1_interval(m)
    assert f"weighted-F1 {m['weighted_f1'] * 100:.2f} (95% bootstrap interval {lo * 100:.2f}-{hi * 100:.2f})" in table
    save_confusion_png(m, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
