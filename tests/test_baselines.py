"""`instructerc baseline`: majority class and the kNN vote of the retrieved demonstrations."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
from sklearn.base import clone

from instructerc.baselines import tfidf_model
from instructerc.cli import main
from instructerc.fileio import read_jsonl
from instructerc.records import PromptRecord, save_records
from train_fixtures import LABELS, record


def demo(emotion: str, similarity: float) -> dict:
    return {"dataset": "meld", "dialogue_id": "9", "turn": 0, "emotion": emotion, "similarity": similarity}


def write(root, test: list[PromptRecord]):
    root.mkdir()
    save_records(root / "train.jsonl", [record("erc", i, t, LABELS) for i, t in enumerate(["sad", "sad", "joyful"])])
    save_records(root / "test.jsonl", test)
    return root


def test_majority_and_knn_votes(tmp_path, capsys):
    base = [replace(record("erc", i, t, LABELS, "test"), id=f"meld/t{i}/0/erc") for i, t in enumerate(["angry", "fear", "sad"])]
    test = [replace(base[0], demonstrations=(demo("angry", 0.9), demo("angry", 0.2), demo("fear", 0.95))),
            replace(base[1], demonstrations=(demo("fear", 0.3), demo("joyful", 0.8))),  # tie 1-1: larger similarity
            base[2]]  # no demonstrations left (--min-similarity): the majority label
    data = write(tmp_path / "data", test)
    assert main(["baseline", "--data", str(data), "--kind", "majority", "--out", str(tmp_path / "maj")]) == 0
    assert [p["pred"] for p in read_jsonl(tmp_path / "maj" / "predictions.jsonl")] == ["sad"] * 3
    assert main(["baseline", "--data", str(data), "--kind", "knn", "--out", str(tmp_path / "knn")]) == 0
    assert [p["pred"] for p in read_jsonl(tmp_path / "knn" / "predictions.jsonl")] == ["angry", "joyful", "sad"]
    metrics = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert metrics["accuracy"] == 2 / 3 and metrics["decoding"]["mode"] == "knn"
    assert "knn baseline" in capsys.readouterr().out


def test_knn_without_demonstrations_is_one_line(tmp_path, capsys):
    data = write(tmp_path / "data", [replace(record("erc", 0, "sad", LABELS, "test"), id="meld/t/0/erc")])
    assert main(["baseline", "--data", str(data), "--kind", "knn", "--out", str(tmp_path / "knn")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--demonstrations" in err[0] and not (tmp_path / "knn").exists()


def test_knn_k_chosen_on_dev(tmp_path, capsys):
    """Dev shows the nearest demonstration right and the vote of three wrong: auto takes k = 1."""
    three = (demo("fear", 0.9), demo("angry", 0.5), demo("angry", 0.4))
    dev = [replace(record("erc", i, "fear", LABELS, "dev"), id=f"meld/d{i}/0/erc", demonstrations=three) for i in range(3)]
    test = [replace(record("erc", 0, "fear", LABELS, "test"), id="meld/t/0/erc", demonstrations=three)]
    data = write(tmp_path / "data", test)
    save_records(data / "dev.jsonl", dev)
    assert main(["baseline", "--data", str(data), "--kind", "knn", "--k", "auto", "--out", str(tmp_path / "auto")]) == 0
    assert [p["pred"] for p in read_jsonl(tmp_path / "auto" / "predictions.jsonl")] == ["fear"]
    chosen = json.loads((tmp_path / "auto" / "metrics.json").read_text())["run"]["chosen_on_dev"]
    assert chosen["k"] == 1 and chosen["dev_weighted_f1"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    assert "chosen on dev: {'k': 1}" in capsys.readouterr().out
    assert main(["baseline", "--data", str(data), "--kind", "knn", "--k", "3", "--out", str(tmp_path / "k3")]) == 0
    assert [p["pred"] for p in read_jsonl(tmp_path / "k3" / "predictions.jsonl")] == ["angry"]
    assert main(["baseline", "--data", str(data), "--kind", "knn", "--k", "0", "--out", str(tmp_path / "k0")]) == 2
    assert "--k expects" in capsys.readouterr().err and not (tmp_path / "k0").exists()


def test_tfidf_reads_the_utterance_alone(tmp_path):
    words = {"joyful": "great wonderful", "sad": "terrible crying", "angry": "furious shut up"}
    rows = [(f"oh {w} today {i}", e) for i in range(4) for e, w in words.items()]
    train = [replace(record("erc", i, e, LABELS), utterance=u, id=f"meld/{i}/0/erc") for i, (u, e) in enumerate(rows)]
    dev = [replace(record("erc", i, e, LABELS, "dev"), utterance=f"so {w}", id=f"meld/v{i}/0/erc")
           for i, (e, w) in enumerate(words.items())]
    test = [replace(record("erc", i, e, LABELS, "test"), utterance=f"{w}!", prompt="the same prompt", id=f"meld/t{i}/0/erc")
            for i, (e, w) in enumerate(words.items())]
    data = tmp_path / "data"
    data.mkdir()
    save_records(data / "train.jsonl", train)
    save_records(data / "dev.jsonl", dev)
    save_records(data / "test.jsonl", test)
    assert main(["baseline", "--data", str(data), "--kind", "tfidf", "--out", str(tmp_path / "tfidf")]) == 0
    assert [p["pred"] for p in read_jsonl(tmp_path / "tfidf" / "predictions.jsonl")] == list(words)
    chosen = json.loads((tmp_path / "tfidf" / "metrics.json").read_text())["run"]["chosen_on_dev"]
    assert chosen["C"] in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0) and len(chosen["dev_weighted_f1"]) == 7


def test_tfidf_fit_reaches_the_optimum():
    """Noisy labels at the grid's largest C: a fit stopped early gives answers that shift with BLAS threads."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    train = [replace(record("erc", i, rng.choice(LABELS), LABELS), utterance=" ".join(rng.choices(vocab, k=rng.randint(3, 12))))
             for i in range(400)]
    texts = [r.utterance for r in train]
    fitted = tfidf_model(train, 100.0)
    exact = clone(fitted).set_params(logisticregression__tol=1e-10, logisticregression__max_iter=100_000)
    exact.fit(texts, [r.target for r in train])
    assert np.abs(fitted.predict_proba(texts) - exact.predict_proba(texts)).max() < 1e-3  # 0.013 at sklearn's default tol
