from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from erc_fixtures import write_root

from instructerc.cli import main
from instructerc.dialogue import Demonstration, Dialogue, Utterance
from instructerc.errors import UserError
from instructerc.fileio import sha256_file
from instructerc.build import parse_percent, sample_dialogues
from instructerc.records import load_records


@pytest.fixture
def root(tmp_path):
    return write_root(tmp_path / "raw")


def prepare(*args) -> int:
    return main(["prepare", *map(str, args)])


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_meld_output_contract(root, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare("--dataset", "meld", "--raw-dir", root / "meld", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dev.jsonl", "manifest.json", "test.jsonl", "train.jsonl"]
    train = load_records(out / "train.jsonl")
    assert {r.task for r in train} == {"erc", "speaker", "predict"}
    assert sum(r.task == "erc" for r in train) == 8 and sum(r.task == "speaker" for r in train) == 8
    assert sorted((r.dialogue_id, r.turn) for r in train if r.task == "predict") == [
        ("0", 1), ("0", 2), ("1", 1), ("1", 2), ("2", 1)]
    assert {r.task for r in load_records(out / "dev.jsonl")} == {"erc", "speaker"}  # speaker: the warm-up's dev
    assert {r.task for r in load_records(out / "test.jsonl")} == {"erc"}
    line = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert {"id", "dataset", "dialogue_id", "turn", "task", "prompt", "target", "labels"} <= set(line)
    m = manifest(out)
    assert m["counts"] == {"train": {"erc": 8, "speaker": 8, "predict": 5}, "dev": {"erc": 2, "speaker": 2}, "test": {"erc": 3}}
    assert m["label_distribution"]["dev"] == {"neutral": 1, "joyful": 1}
    assert m["inputs"][0] == {"path": str(root / "meld" / "train_sent_emo.csv"),
                              "sha256": sha256_file(root / "meld" / "train_sent_emo.csv")}
    assert m["arguments"]["window"] == 12 and "retrieval" not in m
    err = capsys.readouterr().err
    assert "prepared meld" in err and "train labels:" in err and "p50/p90/p99/max" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


@pytest.mark.parametrize("dataset,fmt,erc", [
    ("emorynlp", "csv", (5, 2, 2)), ("emorynlp", "json", (5, 2, 2)), ("emorynlp", "cosmic", (3, 1, 1)),
    ("meld", "cosmic", (2, 1, 3)), ("iemocap", None, (3, 2, 2)),
])
def test_each_dataset_and_format(root, tmp_path, dataset, fmt, erc):
    out = tmp_path / "out"
    assert prepare("--dataset", dataset, "--raw-dir", root, "--out", out, *(["--format", fmt] if fmt else [])) == 0
    counts = manifest(out)["counts"]
    assert tuple(counts[s]["erc"] for s in ("train", "dev", "test")) == erc


def test_mixed_is_the_union_in_the_unified_space(root, tmp_path):
    out = tmp_path / "out"
    assert prepare("--dataset", "mixed", "--raw-dir", root, "--out", out) == 0
    train = load_records(out / "train.jsonl", tasks=("erc",))
    assert len(train) == 8 + 5 + 3
    assert {r.dataset for r in train} == {"meld", "emorynlp", "iemocap"}
    assert {r.label_set for r in train} == {"mixed"}
    by_id = {r.id: r.target for r in train}
    assert by_id["meld/1/1/erc"] == "mad"  # anger -> angry -> mad
    assert by_id["iemocap/Ses01F_impro01/1/erc"] == "fear"  # frustrated
    assert by_id["emorynlp/s01_e02_c03/1/erc"] == "powerful"
    assert set(by_id.values()) <= set(manifest(out)["labels"])


def test_mixed_ratio_by_dataset(root, tmp_path):
    out = tmp_path / "out"
    assert prepare("--dataset", "mixed", "--raw-dir", root, "--out", out, "--data-percent", "meld=0.34,emorynlp=1") == 0
    m = manifest(out)
    assert m["prompt_spec"]["data_percent"] == {"meld": 0.34, "emorynlp": 1.0, "iemocap": 1.0}
    train = load_records(out / "train.jsonl", tasks=("erc",))
    assert len({r.dialogue_id for r in train if r.dataset == "meld"}) == 1  # round(3 * 0.34)
    assert len({r.dialogue_id for r in train if r.dataset == "emorynlp"}) == 2
    assert m["counts"]["dev"]["erc"] == 2 + 2 + 2  # only train is sampled


def test_custom_csv(tmp_path):
    raw = tmp_path / "mine"
    raw.mkdir()
    (raw / "train.csv").write_text("dialogue_id,speaker,utterance,emotion\na,Ann,Hi,Happy\na,Bob,Hey,calm\n", encoding="utf-8")
    (raw / "dev.csv").write_text("dialogue_id,speaker,utterance,emotion\nb,Ann,Yo,calm\n", encoding="utf-8")
    (raw / "test.jsonl").write_text('{"dialogue_id": "c", "speaker": "Cy", "utterance": "Hm"}\n', encoding="utf-8")
    out = tmp_path / "out"
    assert prepare("--dataset", "custom", "--raw-dir", raw, "--out", out) == 0
    (test,) = load_records(out / "test.jsonl")
    assert test.labels == ("calm", "happy") and test.target == ""
    assert manifest(out)["label_set"] == "custom"


def test_sampling_is_reproducible():
    dialogues = [Dialogue("meld", "train", str(i), (Utterance(0, "A", "x", "neutral"),)) for i in range(200)]
    ids = lambda ds: [d.dialogue_id for d in ds]  # noqa: E731
    a = sample_dialogues(dialogues, 0.1, seed=1)
    assert len(a) == 20 and ids(a) == ids(sample_dialogues(dialogues, 0.1, seed=1))
    assert ids(a) != ids(sample_dialogues(dialogues, 0.1, seed=2))
    assert ids(a) == sorted(ids(a), key=int)  # original order kept
    assert len(sample_dialogues(dialogues, 1 / 1000, seed=1)) == 1
    assert sample_dialogues(dialogues, 1.0, seed=1) == dialogues


def test_data_percent_end_to_end_reproducible(root, tmp_path):
    outs = []
    for i, seed in enumerate((3, 3)):
        out = tmp_path / f"out{i}"
        assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out, "--data-percent", "0.5", "--seed", seed) == 0
        outs.append((out / "train.jsonl").read_text())
    assert outs[0] == outs[1]
    assert manifest(tmp_path / "out0")["dialogues"]["train"] == 2


def test_parse_percent():
    assert parse_percent("0.25", ["meld"]) == {"meld": 0.25}
    assert parse_percent("meld=0.5,iemocap=1", ["meld", "emorynlp", "iemocap"]) == {"meld": 0.5, "emorynlp": 1.0, "iemocap": 1.0}
    for bad in ("0", "1.5", "x", "meld=0.5", "iemocap=0.5"):
        with pytest.raises(UserError):
            parse_percent(bad, ["emorynlp"])


def test_retrieval_contract(root, tmp_path, monkeypatch):
    from instructerc import retrieval

    seen = {}

    def fake_retrieve(train, queries, options):
        seen.update(train=len(train), queries=len(queries), options=options)
        demo = Demonstration("Joey", "What?", "surprise", 0.8, "1", 0, dataset="meld")
        return SimpleNamespace(demonstrations={("meld", "test", "0", 2): (demo,)}, manifest={"retriever": "fake"})

    monkeypatch.setattr(retrieval, "retrieve", fake_retrieve)
    out = tmp_path / "out"
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out, "--demonstrations", "1",
                   "--max-per-label", "2", "--no-embedding-cache") == 0
    opts = seen.pop("options")
    assert seen == {"train": 3, "queries": 3 + 1 + 1}
    assert (opts.k, opts.max_per_label, opts.cache_dir) == (1, 2, None)
    test = {r.turn: r for r in load_records(out / "test.jsonl")}
    assert test[2].demonstrations == ({"dataset": "meld", "dialogue_id": "1", "turn": 0, "emotion": "surprise", "similarity": 0.8},)
    assert 'Joey: "What?" -> surprise' in test[2].prompt and test[1].demonstrations == ()
    assert manifest(out)["retrieval"] == {"retriever": "fake"}


def test_plain_prepare_imports_no_torch(root, tmp_path):
    code = (
        "import sys; from instructerc.cli import main; "
        f"assert main(['prepare', '--dataset', 'meld', '--raw-dir', {str(root)!r}, '--out', {str(tmp_path / 'o')!r}]) == 0; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_tokenizer_lengths(root, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out, "--tokenizer", tiny_model_dir) == 0
    tokens = manifest(out)["prompt_tokens"]
    assert set(tokens) == {"train", "dev", "test"} and 0 < tokens["dev"]["p50"] <= tokens["dev"]["max"]


def test_replaces_an_earlier_output_but_nothing_else(root, tmp_path):
    out = tmp_path / "out"
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out) == 0
    assert prepare("--dataset", "emorynlp", "--raw-dir", root, "--out", out) == 0
    assert manifest(out)["label_set"] == "emorynlp"
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", other) == 2
    assert (other / "thesis.tex").read_text() == "keep me"


# ------------------------------------------------------------------ errors: one line, exit 2, nothing written

MELD_TRAIN = ("meld", "train_sent_emo.csv")


def _edit(root, where, transform):
    path = root.joinpath(*where)
    path.write_bytes(transform(path.read_bytes()))
    return path


def _cut_after(marker: bytes):
    return lambda data: data[: data.index(marker) + len(marker)]


ERRORS = {
    # name: (file, transform, expected message fragment)
    "missing column": (MELD_TRAIN, lambda b: b.replace(b"Emotion,", b"Feeling,", 1), "row 1: missing column 'Emotion'"),
    "unknown emotion": (MELD_TRAIN, lambda b: b.replace(b"sadness", b"bored"), "row 5: unknown emotion 'bored'"),
    "empty utterance": (MELD_TRAIN, lambda b: b.replace(b'"Fine."', b'"  "'), "row 8: empty utterance"),
    "not utf-8": (MELD_TRAIN, lambda b: b.replace("’".encode(), b"\x92"), "row 2: not UTF-8 (byte 0x92)"),
    "unterminated quote": (MELD_TRAIN, _cut_after(b'"Scary.'), "row 10: malformed CSV"),
    "truncated row": (MELD_TRAIN, _cut_after(b'"Scary.",Chandler,'), "row 10: 4 fields where the header has 11"),
    "repeated turn": (MELD_TRAIN, lambda b: b.replace(b",1,2,1,1", b",1,1,1,1"), "row 8: dialogue '1': turn 1 comes after turn 1"),
    "dialogue split": (("emorynlp", "emorynlp_train_final.csv"), lambda b: b.replace(b"3,2,1,2,", b"1,5,1,2,"),
                       "row 6: dialogue 's01_e02_c01' continues here after other dialogues"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_bad_input_is_one_line_and_writes_nothing(root, tmp_path, capsys, name):
    where, transform, message = ERRORS[name]
    path = _edit(root, where, transform)
    out = tmp_path / "out" / "prepared"
    assert prepare("--dataset", where[0], "--raw-dir", root, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}, {message}" in err
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare("--dataset", "meld", "--raw-dir", empty, "--out", tmp_path / "out") == 2
    assert f"{empty / 'train_sent_emo.csv'}: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows,message", [
    ([("a", 0), ("a", 2)], "row 3: dialogue 'a' has a gap in its turns: turn 2 where 1 was expected"),
    ([("a", 1)], "row 2: dialogue 'a' has a gap in its turns: turn 1 where 0 was expected"),
    ([("a", 0), ("b", 0), ("a", 1)], "row 4: dialogue 'a' continues here after other dialogues"),
])
def test_custom_gaps(tmp_path, capsys, rows, message):
    path = tmp_path / "train.csv"
    path.write_text("dialogue_id,turn,speaker,utterance,emotion\n" + "".join(f"{d},{t},S,hi,joy\n" for d, t in rows))
    for split in ("dev", "test"):
        (tmp_path / f"{split}.csv").write_text("dialogue_id,speaker,utterance,emotion\nz,S,hi,joy\n")
    assert prepare("--dataset", "custom", "--raw-dir", tmp_path, "--out", tmp_path / "out") == 2
    assert f"{path}, {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_rerun_keeps_the_previous_output(root, tmp_path):
    out = tmp_path / "out"
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out) == 0
    before = (out / "train.jsonl").read_bytes()
    _edit(root, MELD_TRAIN, lambda b: b.replace(b"sadness", b"bored"))
    assert prepare("--dataset", "meld", "--raw-dir", root, "--out", out) == 2
    assert (out / "train.jsonl").read_bytes() == before


def test_malicious_pickle_through_the_cli(root, tmp_path, capsys):
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (root / "cosmic" / "iemocap.pkl").write_bytes(pickle.dumps([Payload()]))
    assert prepare("--dataset", "iemocap", "--raw-dir", root, "--out", tmp_path / "out") == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
