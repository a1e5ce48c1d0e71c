"""`instructerc eval`: three files or none, scikit-learn's weighted-F1, clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score

from instructerc.cli import main
from instructerc.fileio import read_jsonl, write_jsonl
from instructerc.labels import LABEL_SETS, UNIFIED
from instructerc.records import PromptRecord
from train_fixtures import write_manifest

MELD = LABEL_SETS["meld"].labels
MIXED = LABEL_SETS["mixed"].labels
TEXTS = ["hey", "oh okay great", "I was what?", "really really really", "no", "yes yes", "how why", "Joey!"]


def erc_record(i: int, labels, target: str, dataset: str, label_set: str) -> dict:
    text = TEXTS[i % len(TEXTS)]
    return PromptRecord(
        id=f"{dataset}/d{i}/0/erc", dataset=dataset, label_set=label_set, split="test", dialogue_id=f"d{i}", turn=0,
        task="erc", prompt=f'### Monica: "{text}" ###\nPlease select the emotional label of <Monica: "{text}"> '
                           f"from <{', '.join(labels)}>:", target=target, labels=tuple(labels)).to_json()


def prepared(root: Path, n: int = 10, label_set: str = "meld") -> Path:
    """A prepared-data folder as `instructerc prepare` writes it (test split and manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    if label_set == "mixed":
        sources = list(UNIFIED)
        rows = [erc_record(i, MIXED, list(UNIFIED[sources[i % 3]].values())[i % 6], sources[i % 3], "mixed")
                for i in range(n)]
    else:
        labels = LABEL_SETS[label_set].labels
        rows = [erc_record(i, labels, labels[i % len(labels)], label_set, label_set) for i in range(n)]
    write_jsonl(root / "test.jsonl", rows)
    write_jsonl(root / "dev.jsonl", rows[:3])
    write_manifest(root, label_set, rows[0]["labels"])
    return root


def run_eval(capsys, *args) -> tuple[int, str, str]:
    code = main(["eval", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_writes_three_files_and_sklearn_weighted_f1(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data")
    out = tmp_path / "eval"
    code, stdout, _ = run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", out, "--batch-size", 3)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "predictions.jsonl"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = read_jsonl(out / "predictions.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(preds) == 10 and metrics["counts"]["n"] == 10
    assert all(p["pred"] in MELD and set(p["probs"]) == set(MELD) for p in preds)
    golds, guesses = [p["gold"] for p in preds], [p["pred"] for p in preds]
    assert metrics["weighted_f1"] == pytest.approx(f1_score(golds, guesses, labels=list(MELD), average="weighted"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(golds, guesses, labels=list(MELD), average="macro"))
    assert metrics["decoding"]["mode"] == "score" and metrics["decoding"]["threads"] == torch.get_num_threads()
    assert set(metrics["per_class"]) == set(MELD)
    assert "weighted-F1" in stdout
    assert stdout.splitlines()[0].startswith("data test (score, zero-shot)")  # titled by the data folder


def test_infer_is_eval_by_another_name(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data")
    assert main(["infer", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "i"),
                 "--limit", "2"]) == 0
    assert len(read_jsonl(tmp_path / "i" / "predictions.jsonl")) == 2
    from instructerc.cli import COMMANDS

    assert COMMANDS["infer"][0] == COMMANDS["eval"][0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "infer" in listing and "eval" in listing


def test_eval_limit_and_dev_split(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data")
    code, _, _ = run_eval(capsys, "--data", data, "--split", "dev", "--model", tiny_model_dir,
                          "--out", tmp_path / "e", "--limit", 2)
    assert code == 0
    assert len(read_jsonl(tmp_path / "e" / "predictions.jsonl")) == 2


def test_eval_generate_counts_answers_that_are_not_labels(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data", n=4)
    out = tmp_path / "gen"
    code, stdout, _ = run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", out, "--decode", "generate",
                               "--max-new-tokens", 8)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_jsonl(out / "predictions.jsonl")
    from instructerc.decode import is_label, match_label

    assert metrics["decoding"]["mode"] == "generate"
    assert metrics["decoding"]["generated_not_a_label"] == sum(not is_label(p["text"], MELD) for p in preds)
    assert all(p["pred"] == match_label(p["text"], MELD) for p in preds)
    assert "not a label" in stdout


def test_eval_mixed_reports_each_source(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data", n=12, label_set="mixed")
    out = tmp_path / "mixed"
    assert run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", out)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_jsonl(out / "predictions.jsonl")
    assert set(metrics["by_dataset"]) == set(UNIFIED)
    for src, m in metrics["by_dataset"].items():
        mine = [p for p in preds if p["dataset"] == src]
        assert m["counts"]["n"] == len(mine)
        # the same weighted-F1 as over the whole 9-label space: absent classes weigh nothing
        assert m["weighted_f1"] == pytest.approx(f1_score([p["gold"] for p in mine], [p["pred"] for p in mine],
                                                          labels=list(MIXED), average="weighted", zero_division=0))
        assert set(m["labels"]) == set(UNIFIED[src].values())


def fake_adapter(root: Path, labels) -> Path:
    """A run folder as the trainer leaves it: RUN/config.yaml and RUN/best/adapter_config.json."""
    (root / "best").mkdir(parents=True)
    (root / "best" / "adapter_config.json").write_text("{}")
    (root / "config.yaml").write_text("labels: [" + ", ".join(labels) + "]\n")
    return root / "best"


@pytest.mark.parametrize("problem", ["unknown adapter", "other label set", "empty file", "missing split", "no data",
                                     "old manifest"])
def test_eval_bad_input_one_line_error_nothing_written(tmp_path, tiny_model_dir, capsys, problem):
    data = prepared(tmp_path / "data")
    args = ["--data", data, "--model", tiny_model_dir, "--out", tmp_path / "out"]
    if problem == "unknown adapter":
        args += ["--adapter", tmp_path / "no-such-run" / "best"]
    elif problem == "other label set":
        args += ["--adapter", fake_adapter(tmp_path / "run", LABEL_SETS["iemocap"].labels)]
    elif problem == "empty file":
        (data / "test.jsonl").write_text("")
    elif problem == "missing split":
        (data / "test.jsonl").unlink()
    elif problem == "no data":
        args[1] = tmp_path / "nowhere"
    elif problem == "old manifest":  # written before the prompt spec existed
        (data / "manifest.json").write_text('{"label_set": "meld", "labels": [], "arguments": {"window": 12}}')
    code, stdout, err = run_eval(capsys, *args)
    assert code == 2
    assert err.startswith("instructerc eval: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert {"unknown adapter": "adapter folder not found", "other label set": "trained on labels",
            "empty file": "empty file", "missing split": "file not found",
            "no data": "folder not found", "old manifest": "older instructerc"}[problem] in err


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--max-length", "-5"], ["--max-new-tokens", "0"],
                                    ["--num-beams", "two"]])
def test_eval_refuses_a_zero_or_malformed_decoding_number(tmp_path, tiny_model_dir, capsys, option):
    data = prepared(tmp_path / "data")
    with pytest.raises(SystemExit) as stop:
        run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", tmp_path / "out", *option)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option[0]}:" in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_eval_refuses_to_replace_a_foreign_folder(tmp_path, tiny_model_dir, capsys):
    data = prepared(tmp_path / "data")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", out)
    assert code == 2 and "not an earlier" in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_eval_with_a_saved_adapter(tmp_path, tiny_model_dir, capsys):
    from peft import LoraConfig, get_peft_model

    from instructerc.models import load_model

    run = tmp_path / "run"
    peft_model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                                      init_lora_weights=False))
    peft_model.save_pretrained(run / "best")
    (run / "config.yaml").write_text("labels: [" + ", ".join(MELD) + "]\n")
    data = prepared(tmp_path / "data", n=4)
    zero = tmp_path / "zero"
    tuned = tmp_path / "tuned"
    assert run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--out", zero)[0] == 0
    assert run_eval(capsys, "--data", data, "--model", tiny_model_dir, "--adapter", run / "best", "--out", tuned)[0] == 0
    p0, p1 = read_jsonl(zero / "predictions.jsonl"), read_jsonl(tuned / "predictions.jsonl")
    assert [p["probs"] for p in p0] != [p["probs"] for p in p1]  # the adapter changes the scores
    assert json.loads((tuned / "metrics.json").read_text())["run"]["adapter"] == str(run / "best")
