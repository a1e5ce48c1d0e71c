"""`instructerc predict` on a bring-your-own file: prompts built as in training, probabilities out."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from instructerc.cli import main
from instructerc.fileio import read_jsonl
from instructerc.labels import LABEL_SETS

MELD = LABEL_SETS["meld"].labels

CONVERSATION = [  # dialogue_id, speaker, utterance, emotion
    ("a", "Monica", "Hey, how are you?", "neutral"),
    ("a", "Chandler", "Great, I got the job!", "joy"),
    ("a", "Monica", "Really? That is wonderful!", "surprise"),
    ("a", "Chandler", "And then they fired me.", "sadness"),
    ("b", "Ross", "Who ate my sandwich?", "anger"),
    ("b", "Joey", "Not me.", "fear"),
    ("b", "Ross", "It was my sandwich!", "anger"),
]


def byo_csv(path: Path, rows=CONVERSATION, emotion=True) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["dialogue_id", "speaker", "utterance"] + (["emotion"] if emotion else []))
        for r in rows:
            w.writerow(r if emotion else r[:3])
    return path


def run(capsys, command, *args):
    code = main([command, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_zero_shot_csv(tmp_path, tiny_model_dir, capsys):
    src = byo_csv(tmp_path / "mine.csv", emotion=False)
    out = tmp_path / "labelled.csv"
    code, stdout, _ = run(capsys, "predict", "--model", tiny_model_dir, "--input", src, "--out", out, "--labels", "meld")
    assert code == 0, stdout
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(CONVERSATION)
    assert [(r["dialogue_id"], r["speaker"], r["utterance"]) for r in rows] == [c[:3] for c in CONVERSATION]
    assert [r["turn"] for r in rows] == ["0", "1", "2", "3", "0", "1", "2"]
    for r in rows:
        probs = {lab: float(r[f"p_{lab}"]) for lab in MELD}
        assert r["emotion"] in MELD and r["emotion"] == max(probs, key=probs.get)
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
    assert "labelled 7 utterances in 2 dialogues" in stdout


def prepare_custom(tmp_path: Path, capsys, *extra) -> tuple[Path, Path]:
    train = byo_csv(tmp_path / "train.csv")
    test = byo_csv(tmp_path / "test.csv", CONVERSATION[:4])
    data = tmp_path / "prepared"
    code, _, err = run(capsys, "prepare", "--dataset", "custom", "--labels", "meld", "--train", train,
                       "--dev", test, "--test", test, "--out", data, *extra)
    assert code == 0, err
    return data, test


@pytest.mark.parametrize("extra", [("--window", "1", "--speaker-mode", "index"), ("--demonstrations", "2", "--window", "2"),
                                   ("--template", "utterance"), ("--sample-by", "utterance", "--data-percent", "0.5",
                                                                 "--demonstrations", "1")])
def test_predict_builds_prompts_as_prepare_did(tmp_path, capsys, extra):
    """The spec and demonstrations come from the manifest: the prompts predict builds for the
    test file are the very prompts `prepare` wrote for it."""
    from argparse import Namespace

    from instructerc import predict
    from instructerc.readers import read_custom

    data, test = prepare_custom(tmp_path, capsys, *extra)
    prepared = predict.find_prepared(str(data), None)
    spec = predict.settings(Namespace(labels=None, template=None, window=None, speaker_mode=None), prepared)
    assert spec.labels == MELD and spec == prepared.spec
    dialogues = read_custom(test, "test", dataset="custom")
    records = predict.build_records(dialogues, spec, predict.demonstration_pool(prepared, spec))
    prepared_rows = read_jsonl(data / "test.jsonl")
    assert [r.prompt for r in records] == [r["prompt"] for r in prepared_rows]
    assert [r.chat for r in records] == [r["chat"] for r in prepared_rows]
    if "--demonstrations" in extra:
        assert "similar utterances" in records[-1].prompt


def test_predict_with_prepared_data_jsonl(tmp_path, tiny_model_dir, capsys):
    data, test = prepare_custom(tmp_path, capsys, "--window", "2")
    out = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "predict", "--model", tiny_model_dir, "--input", test, "--out", out, "--data", data)
    assert code == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 4
    assert all(r["emotion"] in MELD and set(r["probs"]) == set(MELD) for r in rows)
    assert [r["given_emotion"] for r in rows] == [c[3] for c in CONVERSATION[:4]]


@pytest.mark.parametrize("problem", ["empty file", "unknown adapter", "other label set", "window differs",
                                     "template differs", "old manifest", "bad suffix", "no settings"])
def test_predict_bad_input(tmp_path, tiny_model_dir, capsys, problem):
    src = byo_csv(tmp_path / "mine.csv", emotion=False)
    out = tmp_path / "out.jsonl"
    args = ["--model", tiny_model_dir, "--input", src, "--out", out, "--labels", "meld"]
    want = {"empty file": "empty", "unknown adapter": "adapter folder not found", "other label set": "trained on labels",
            "window differs": "differs from the prepared data", "template differs": "--template paper differs",
            "old manifest": "older instructerc", "bad suffix": ".jsonl or .csv",
            "no settings": "--labels"}[problem]
    if problem == "empty file":
        src.write_text("")
    elif problem == "unknown adapter":
        args += ["--adapter", tmp_path / "nope"]
    elif problem == "other label set":
        run_dir = tmp_path / "run"
        (run_dir / "best").mkdir(parents=True)
        (run_dir / "best" / "adapter_config.json").write_text("{}")
        (run_dir / "config.yaml").write_text("labels: [happy, sad, neutral, angry, excited, frustrated]\n")
        args += ["--adapter", run_dir / "best"]
    elif problem == "window differs":
        data, _ = prepare_custom(tmp_path, capsys)
        args = args[:6] + ["--data", data, "--window", "3"]
    elif problem == "template differs":
        data, _ = prepare_custom(tmp_path, capsys)
        args = args[:6] + ["--data", data, "--template", "paper"]
    elif problem == "old manifest":
        data, _ = prepare_custom(tmp_path, capsys)
        manifest = json.loads((data / "manifest.json").read_text())
        for key in ("manifest_version", "prompt_spec", "source"):
            del manifest[key]
        (data / "manifest.json").write_text(json.dumps(manifest))
        args = args[:6] + ["--data", data]
    elif problem == "bad suffix":
        args[5] = tmp_path / "out.txt"
    elif problem == "no settings":
        args = args[:6]
    code, _, err = run(capsys, "predict", *args)
    assert code == 2
    assert err.startswith("instructerc predict: error:") and len(err.strip().splitlines()) == 1
    assert want in err
    assert not out.exists() and not (tmp_path / "out.txt").exists()


def test_prepared_with_relative_paths_predicts_from_anywhere(tmp_path, capsys, monkeypatch):
    """Paths given relative to where `prepare` ran still resolve later from another folder; a
    missing input is called missing, an edited one changed."""
    from argparse import Namespace

    from instructerc import predict
    from instructerc.errors import UserError
    from instructerc.readers import read_custom

    work = tmp_path / "work"
    work.mkdir()
    byo_csv(work / "train.csv")
    byo_csv(work / "test.csv", CONVERSATION[:4])
    monkeypatch.chdir(work)
    code, _, err = run(capsys, "prepare", "--dataset", "custom", "--labels", "meld", "--train", "train.csv", "--dev",
                       "test.csv", "--test", "test.csv", "--out", "prepared", "--demonstrations", "1")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    prepared = predict.find_prepared(str(work / "prepared"), None)
    spec = predict.settings(Namespace(labels=None, template=None, window=None, speaker_mode=None), prepared)
    records = predict.build_records(read_custom(work / "test.csv", "test"), spec, predict.demonstration_pool(prepared, spec))
    assert [r.prompt for r in records] == [r["prompt"] for r in read_jsonl(work / "prepared" / "test.jsonl")]
    with open(work / "train.csv", "a", encoding="utf-8") as f:
        f.write("c,Rachel,Hi.,neutral\n")
    with pytest.raises(UserError, match="train.csv changed since `prepare`"):
        predict.build_records(read_custom(work / "test.csv", "test"), spec, predict.demonstration_pool(prepared, spec))
    (work / "train.csv").unlink()
    with pytest.raises(UserError, match="train.csv, an input of `prepare`, is missing"):
        predict.build_records(read_custom(work / "test.csv", "test"), spec, predict.demonstration_pool(prepared, spec))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_chunks_of_dialogues_write_what_one_pass_writes(tmp_path, tiny_model_dir, capsys, monkeypatch, suffix):
    """Labelling a file a few dialogues at a time (bounded memory) gives the same file as one pass."""
    from instructerc import predict

    data, _ = prepare_custom(tmp_path, capsys, "--demonstrations", "2")
    src = byo_csv(tmp_path / "mine.csv", [(f"{d}{k}", *rest) for k in range(3) for d, *rest in CONVERSATION])
    outs = []
    for chunk in (10_000, 3):
        monkeypatch.setattr(predict, "CHUNK_UTTERANCES", chunk)
        outs.append(tmp_path / f"chunk{chunk}{suffix}")
        code, _, err = run(capsys, "predict", "--model", tiny_model_dir, "--input", src, "--out", outs[-1], "--data", data)
        assert code == 0, err
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert len(outs[0].read_text(encoding="utf-8").splitlines()) == 21 + (suffix == ".csv")


def test_a_long_dialogue_and_a_huge_utterance_are_labelled(tmp_path, tiny_model_dir, capsys):
    """1,000 turns (the window bounds the history; 2 keeps the test short) and a 100,000-character utterance (its prompt keeps
    its last tokens within the model's context) label without error."""
    rows = [("long", "Ann" if i % 2 else "Bob", f"turn {i} is fine", "neutral") for i in range(1000)]
    rows += [("huge", "Ann", "la " * 33_334, "neutral"), ("huge", "Bob", "What?", "surprise")]
    src = byo_csv(tmp_path / "big.csv", rows, emotion=False)
    out = tmp_path / "big.jsonl"
    code, stdout, err = run(capsys, "predict", "--model", tiny_model_dir, "--input", src, "--out", out, "--labels", "meld",
                            "--window", "2")
    assert code == 0, err
    labelled = read_jsonl(out)
    assert len(labelled) == 1002 and all(r["emotion"] in MELD for r in labelled)
    assert "prompt(s) longer than the model's 2048-token context kept their last" in err
    assert "labelled 1002 utterances in 2 dialogues" in stdout
