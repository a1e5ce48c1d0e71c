"""`prepare --template paper` writes the released InstructERC code's prompts, character for character."""

from __future__ import annotations

import json

import pytest
from erc_fixtures import write_root
from paper_expected import EXPECTED, PLAIN

from instructerc.cli import main
from instructerc.records import PromptRecord, load_records
from instructerc.unpickle import repair_cp1252

RELEASED_SPLIT = {"train": "train", "dev": "valid", "test": "test"}


def released_files(data) -> dict[str, list[tuple[str, str]]]:
    """Prepared records laid out as the released code's output files (see paper_expected.py)."""
    files: dict[str, list[tuple[str, str]]] = {}
    for split, name in RELEASED_SPLIT.items():
        records = load_records(data / f"{split}.jsonl")
        files[f"window/{name}.json"] = [(r.prompt, r.target) for r in records if r.task == "erc"]
    train = load_records(data / "train.jsonl")
    files["speaker/train.json"] = [(r.prompt, r.target) for r in train if r.task == "speaker"]
    predict = {(r.dialogue_id, r.turn): r for r in train if r.task == "predict"}
    if predict:
        files["predict/train.json"] = [(r.prompt + "***" + predict[(r.dialogue_id, r.turn)].prompt, r.target)
                                       for r in train if r.task == "erc"]
    return files


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_root(tmp_path_factory.mktemp("raw"))


@pytest.mark.parametrize("dataset", ["meld", "emorynlp", "iemocap"])
def test_paper_template_equals_the_released_code(root, tmp_path, dataset):
    out = tmp_path / "paper"
    assert main(["prepare", "--dataset", dataset, "--format", "cosmic", "--raw-dir", str(root), "--template", "paper",
                 "--window", "1", "--out", str(out)]) == 0
    got = released_files(out)
    for name, expected in EXPECTED[dataset].items():
        assert got[name] == [(repair_cp1252(i), t) for i, t in expected], name
    records = load_records(out / "train.jsonl")
    assert not any(r.chat for r in records)  # raw prompt, answer right after the colon
    spec = json.loads((out / "manifest.json").read_text())["prompt_spec"]
    assert spec["template"] == "paper" and spec["speaker_candidates"] == "fixed"


@pytest.mark.parametrize("dataset", sorted(PLAIN))
def test_utterance_template_equals_the_released_plain_code(root, tmp_path, dataset):
    out = tmp_path / "plain"
    assert main(["prepare", "--dataset", dataset, "--format", "cosmic", "--raw-dir", str(root), "--template", "utterance",
                 "--out", str(out)]) == 0
    got = released_files(out)
    for name, expected in PLAIN[dataset].items():
        assert got[name] == expected, name
    assert [r.task for r in load_records(out / "train.jsonl")] == ["erc"] * len(got["window/train.json"])


def test_emorynlp_labels_are_capitalised_throughout(root, tmp_path):
    out = tmp_path / "paper"
    assert main(["prepare", "--dataset", "emorynlp", "--format", "cosmic", "--raw-dir", str(root), "--template", "paper",
                 "--out", str(out)]) == 0
    labels = ("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared")
    assert json.loads((out / "manifest.json").read_text())["labels"] == list(labels)
    assert all(r.labels == labels and r.target in labels for r in load_records(out / "test.jsonl"))


@pytest.mark.parametrize("args, message", [
    (["--dataset", "meld", "--template", "nosuch"], "unknown template 'nosuch'"),
    (["--dataset", "meld", "--template", "paper"], "COSMIC pickles"),  # the CSV has names, not numbers
    (["--dataset", "meld", "--format", "cosmic", "--template", "paper", "--speaker-mode", "index"], "does not apply"),
    (["--dataset", "mixed", "--template", "paper"], "COSMIC pickles"),
])
def test_templates_refuse_what_they_cannot_reproduce(root, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["prepare", *args, "--raw-dir", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_utterance_sampling_draws_the_released_records(root, tmp_path):
    """--sample-by utterance keeps the ERC records the released code's DataFrame.sample(n, random_state=seed)
    keeps (numpy's RandomState(seed).choice underneath), and every dialogue as context."""
    import numpy as np

    full, half = tmp_path / "full", tmp_path / "half"
    for out, extra in ((full, []), (half, ["--data-percent", "0.5", "--sample-by", "utterance", "--seed", "7"])):
        assert main(["prepare", "--dataset", "iemocap", "--raw-dir", str(root), "--template", "paper",
                     "--out", str(out), *extra]) == 0
    erc = [r for r in load_records(full / "train.jsonl") if r.task == "erc"]
    picked = np.random.RandomState(7).choice(len(erc), size=int(len(erc) * 0.5), replace=False)
    kept = load_records(half / "train.jsonl")
    assert {r.id for r in kept if r.task == "erc"} == {erc[i].id for i in picked}
    assert {(r.dialogue_id, r.turn) for r in kept} == {(erc[i].dialogue_id, erc[i].turn) for i in picked}
    by_id = {r.id: r for r in erc}
    assert all(r.prompt == by_id[r.id].prompt for r in kept if r.task == "erc")  # full context kept


def test_record_without_chat_field_reads_as_chat():
    row = {"id": "a/1/0/erc", "dataset": "a", "label_set": "a", "split": "test", "dialogue_id": "1", "turn": 0,
           "task": "erc", "prompt": "p", "target": "x", "labels": ["x"]}
    assert PromptRecord.from_json(row).chat


@pytest.mark.parametrize("template, stage", [("paper", "joint"), ("utterance", "plain")])
def test_raw_templates_train_and_evaluate_end_to_end(root, tmp_path, tiny_model_dir, capsys, monkeypatch, template, stage):
    """Prepare -> train (the paper recipe's keys) -> eval, with prompts encoded raw: the prompt's
    own tokens, then the answer and EOS, no chat template."""
    import torch

    from instructerc.batching import encode
    from instructerc.models import load_tokenizer

    betas = []
    real_adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **kw: betas.append(kw["betas"]) or real_adamw(*a, **kw))
    data = tmp_path / "data"
    assert main(["prepare", "--dataset", "emorynlp", "--format", "cosmic", "--raw-dir", str(root),
                 "--template", template, "--out", str(data)]) == 0
    sets = ["batch_size=2", "epochs.joint=1", "epochs.plain=1", "adam_betas=[0.9,0.95]", "schedule=linear",
            "lora.target_modules=[q_proj,k_proj,v_proj]", "beta=1.0"]
    argv = ["train", "--stage", stage, "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run")]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0, capsys.readouterr().err
    assert betas == [(0.9, 0.95)]
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(data), "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "run" / "best"),
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["counts"]["n"] == 1

    tok = load_tokenizer(tiny_model_dir)
    rec = load_records(data / "train.jsonl")[0]
    example = encode(tok, rec, 1024)
    prompt = tok(rec.prompt, add_special_tokens=True)["input_ids"]
    assert list(example.input_ids) == prompt + tok(rec.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_predict_builds_the_paper_prompts_of_prepare(root, tmp_path):
    """A user's file of the test dialogue (speakers by name) gets the prompts `prepare` wrote from the
    pickle: predict numbers speakers by first appearance, as the EmoryNLP and MELD pickles do."""
    from argparse import Namespace

    from instructerc import predict
    from instructerc.readers import read_custom

    data = tmp_path / "paper"
    assert main(["prepare", "--dataset", "meld", "--format", "cosmic", "--raw-dir", str(root), "--template", "paper",
                 "--out", str(data)]) == 0
    mine = tmp_path / "mine.csv"
    mine.write_text('dialogue_id,speaker,utterance\n7,Joey,Wow.\n7,Ross,Sad.\n7,Joey,Scary.\n', encoding="utf-8")
    prepared = predict.find_prepared(str(data), None)
    spec = predict.settings(Namespace(labels=None, template=None, window=None, speaker_mode=None), prepared)
    records = predict.build_records(read_custom(mine, "predict"), spec, predict.demonstration_pool(prepared, spec))
    assert [r.prompt for r in records] == [r.prompt for r in load_records(data / "test.jsonl")]
    assert not any(r.chat for r in records)
