"""`instructerc baseline`: majority class and the kNN vote of the retrieved demonstrations."""

from __future__ import annotations

import json
from dataclasses import replace

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
