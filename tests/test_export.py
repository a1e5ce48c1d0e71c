"""`instructerc export`: the merged model scores as base + adapter did; it refuses another base."""

from __future__ import annotations

import json

import pytest
from train_fixtures import LABELS, write_data

from instructerc.cli import main
from instructerc.fileio import read_jsonl
from instructerc.train import train
from instructerc.train_config import resolve_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("export")
    data = write_data(root / "data")
    cfg = resolve_config(None, ["batch_size=4", "epochs.plain=1", "lr=1e-2", "lora.dropout=0"])
    train(cfg, stage="plain", data=data, model_spec=str(tiny_model_dir), out=root / "run")
    return root, data


def test_merged_model_gives_the_adapter_s_probabilities(trained, tiny_model_dir, capsys):
    root, data = trained
    out = root / "merged"
    assert main(["export", "--model", str(tiny_model_dir), "--adapter", str(root / "run"), "--out", str(out)]) == 0
    record = json.loads((out / "instructerc.json").read_text())
    assert record["labels"] == list(LABELS) and record["prompt_spec"]["template"] == "default"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    for name, model_args in (("adapter", ["--model", str(tiny_model_dir), "--adapter", str(root / "run" / "best")]),
                             ("merged", ["--model", str(out)])):
        assert main(["eval", "--data", str(data), "--split", "dev", *model_args, "--dtype", "float32",
                     "--out", str(root / f"eval_{name}")]) == 0
    a = read_jsonl(root / "eval_adapter" / "predictions.jsonl")
    b = read_jsonl(root / "eval_merged" / "predictions.jsonl")
    assert [p["pred"] for p in a] == [p["pred"] for p in b]
    for p, q in zip(a, b):
        assert all(abs(p["probs"][k] - q["probs"][k]) < 1e-4 for k in p["probs"])
    # predict takes the prompt spec of training from the exported folder: no --data, no --labels
    chats = root / "chats.csv"
    chats.write_text("dialogue_id,speaker,utterance\n1,Ross,Hi.\n1,Rachel,Oh no!\n", encoding="utf-8")
    assert main(["predict", "--model", str(out), "--input", str(chats), "--out", str(root / "chats.jsonl")]) == 0
    assert [r["emotion"] in LABELS for r in read_jsonl(root / "chats.jsonl")] == [True, True]


def test_export_onto_another_base_is_refused(trained, tmp_path, capsys):
    from tiny_model import make_tiny_model

    root, _ = trained
    other = make_tiny_model(tmp_path / "other", seed=1)  # the same architecture, other weights
    out = tmp_path / "merged"
    capsys.readouterr()
    assert main(["export", "--model", str(other), "--adapter", str(root / "run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter was trained on" in err[0] and not out.exists()


def test_exported_model_refuses_another_label_set(trained, tiny_model_dir, tmp_path, capsys):
    from test_evaluate import prepared

    root, _ = trained
    out = root / "merged2"
    assert main(["export", "--model", str(tiny_model_dir), "--adapter", str(root / "run"), "--out", str(out)]) == 0
    other = prepared(tmp_path / "iemocap", label_set="iemocap")
    capsys.readouterr()
    assert main(["eval", "--data", str(other), "--model", str(out), "--out", str(tmp_path / "e")]) == 2
    assert "trained on labels" in capsys.readouterr().err and not (tmp_path / "e").exists()
