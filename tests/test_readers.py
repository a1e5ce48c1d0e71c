from __future__ import annotations

import json

import pytest
from erc_fixtures import write_root

from instructerc.dialogue import Utterance
from instructerc.readers import (
    read_cosmic,
    read_custom,
    read_dataset,
    read_emorynlp_csv,
    read_emorynlp_json,
    read_meld_csv,
)


@pytest.fixture
def root(tmp_path):
    return write_root(tmp_path / "raw")


def test_meld_csv(root):
    dialogues = read_meld_csv(root / "meld" / "train_sent_emo.csv", "train")
    assert [d.dialogue_id for d in dialogues] == ["0", "1", "2"]
    d0 = dialogues[0]
    assert (d0.dataset, d0.split) == ("meld", "train")
    # the official files' holes in Utterance_ID (1 -> 3) are renumbered; a quoted newline stays in the text
    assert d0.utterances == (
        Utterance(0, "Ross", "Hi, how’s it going?", "neutral"),
        Utterance(1, "Rachel", "Great!\nReally great.", "joyful"),
        Utterance(2, "Ross", "Oh no.", "sad"),
    )
    assert [u.emotion for u in dialogues[1].utterances] == ["surprise", "angry", "neutral"]


def test_emorynlp_csv_and_json_agree(root):
    csv_d = read_emorynlp_csv(root / "emorynlp" / "emorynlp_train_final.csv", "train")
    json_d = read_emorynlp_json(root / "emorynlp" / "emotion-detection-trn.json", "train")
    assert [d.dialogue_id for d in csv_d] == ["s01_e02_c01", "s01_e02_c03"]
    assert csv_d[0].utterances[1] == Utterance(1, "Ross Geller and Joey Tribbiani", "Hi, Mon.", "neutral")
    assert [u.emotion for d in csv_d for u in d.utterances] == ["joyful", "neutral", "mad", "peaceful", "powerful"]
    assert csv_d == json_d


def test_cosmic_meld_repairs_text_and_restores_csv_ids(root):
    splits = read_cosmic(root / "cosmic" / "meld.pkl", "meld")
    assert {s: [d.dialogue_id for d in v] for s, v in splits.items()} == {"train": ["0"], "dev": ["0"], "test": ["0"]}
    assert splits["train"][0].utterances == (
        Utterance(0, "Speaker_0", "It’s fine.", "neutral", 0),
        Utterance(1, "Speaker_1", "Wait… really?", "joyful", 1),
    )
    assert [u.emotion for u in splits["test"][0].utterances] == ["surprise", "sad", "fear"]
    assert [u.speaker for u in splits["test"][0].utterances] == ["Speaker_0", "Speaker_1", "Speaker_0"]


def test_cosmic_emorynlp_numpy_scalars_and_scene_ids(root):
    splits = read_cosmic(root / "cosmic" / "EmoryNLP.pkl", "emorynlp")
    (train,) = splits["train"]
    assert train.dialogue_id == "s01_e02_c01"
    assert [(u.speaker, u.emotion) for u in train.utterances] == [
        ("Speaker_0", "joyful"), ("Speaker_1", "neutral"), ("Speaker_0", "mad")]
    assert [d.dialogue_id for d in splits["dev"]] == ["s02_e01_c01"]
    assert [d.dialogue_id for d in splits["test"]] == ["s03_e01_c01"]


def test_cosmic_iemocap_speakers_by_gender(root):
    """M is Speaker_0 and F Speaker_1 in every dialogue (the released code's numbering), whoever speaks first."""
    splits = read_cosmic(root / "cosmic" / "iemocap.pkl", "iemocap")
    (train,) = splits["train"]
    assert train.utterances == (
        Utterance(0, "Speaker_1", "Hello.", "happy", 1),
        Utterance(1, "Speaker_0", "Ugh.", "frustrated", 0),
        Utterance(2, "Speaker_1", "Yes!", "excited", 1),
    )
    assert [d.dialogue_id for d in splits["dev"]] == ["Ses02F_impro01"]


def test_custom_csv_ignores_extra_columns_and_allows_unlabelled(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("dialogue_id,speaker,utterance,emotion,notes\na,Ann,Hello there,Happy,x\na,Bob,Hi,,y\nb,Cy,Bye,sad,z\n",
                    encoding="utf-8")
    dialogues = read_custom(path, "test")
    assert [d.dialogue_id for d in dialogues] == ["a", "b"]
    assert dialogues[0].utterances == (Utterance(0, "Ann", "Hello there", "happy"), Utterance(1, "Bob", "Hi", None))


def test_custom_jsonl_with_turns(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"dialogue_id": 7, "speaker": "A", "utterance": "x", "turn": 0},
            {"dialogue_id": 7, "speaker": "B", "utterance": "y", "turn": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (d,) = read_custom(path, "predict")
    assert d.dialogue_id == "7" and [u.text for u in d.utterances] == ["x", "y"]
    assert all(u.emotion is None for u in d.utterances)


def test_read_dataset_finds_files_directly_or_under_a_root(root):
    direct, paths = read_dataset("meld", raw_dir=root / "meld")
    nested, _ = read_dataset("meld", raw_dir=root)
    assert direct == nested
    assert [p.name for p in paths] == ["train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"]
    cosmic, paths = read_dataset("iemocap", raw_dir=root / "cosmic")
    assert [p.name for p in paths] == ["iemocap.pkl"]
    assert sum(len(d.utterances) for d in cosmic["train"]) == 3


def test_read_dataset_explicit_files_any_name(root, tmp_path):
    renamed = tmp_path / "my_meld_train.csv"
    renamed.write_bytes((root / "meld" / "train_sent_emo.csv").read_bytes())
    splits, paths = read_dataset("meld", raw_dir=root / "meld", files={"train": renamed})
    assert paths[0] == renamed and len(splits["train"]) == 3


def test_emorynlp_json_format_by_default_names(root):
    splits, paths = read_dataset("emorynlp", "json", root)
    assert [p.name for p in paths] == ["emotion-detection-trn.json", "emotion-detection-dev.json", "emotion-detection-tst.json"]
    assert [d.dialogue_id for d in splits["dev"]] == ["s02_e01_c01"]


def test_custom_jsonl_errors_name_the_line(tmp_path):
    from instructerc.errors import UserError

    path = tmp_path / "mine.jsonl"
    path.write_bytes(b'{"dialogue_id": "a", "speaker": "A", "utterance": "x"}\n\n{"dialogue_id": "a", "speaker": "B"}\n')
    with pytest.raises(UserError, match=r"mine.jsonl, row 3: missing field 'utterance'"):
        read_custom(path, "test")
    path.write_bytes(b'{"dialogue_id": "a", "speaker": "A", "utterance": "x"}\n{"dialogue_id": "a", "speaker": "B", "utterance": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"mine.jsonl, row 2: not UTF-8 \(byte 0xe9\)"):
        read_custom(path, "test")
    path.write_text('{"dialogue_id": "a", "speaker": "A", "utterance": "x"}\n{"dialogue_id": "a", "speak', encoding="utf-8")
    with pytest.raises(UserError, match=r"mine.jsonl, row 2: not valid JSON"):
        read_custom(path, "test")


def test_known_dataset_from_a_jsonl_file_uses_its_label_words(tmp_path):
    from instructerc.readers import read_file

    path = tmp_path / "meld_like.jsonl"
    path.write_text('{"dialogue_id": "a", "speaker": "A", "utterance": "x", "emotion": "joy"}\n', encoding="utf-8")
    (d,) = read_file(path, "meld", "train")
    assert d.dataset == "meld" and d.utterances[0].emotion == "joyful"


# ------------------------------------------------------------------ found by tests/test_fuzz_readers.py


@pytest.mark.parametrize("header,message", [
    (b'"dialogue_id"x,speaker,utterance\n', r"row 1: malformed CSV \(',' expected after '\"'\)"),
    (b'"dialogue_id,speaker,utterance\na,A,hi\n', r"row 1: malformed CSV \(unexpected end of data\)"),
    (b'"' + b"x" * 200_000 + b'",speaker,utterance\n', r"row 1: malformed CSV \(field larger than field limit"),
])
def test_malformed_csv_header_is_a_user_error(tmp_path, header, message):
    from instructerc.errors import UserError

    path = tmp_path / "mine.csv"
    path.write_bytes(header)
    with pytest.raises(UserError, match=message):
        read_custom(path, "test")


def test_user_errors_quoting_line_breaks_stay_one_line(tmp_path):
    from instructerc.errors import UserError

    path = tmp_path / "mine.csv"
    path.write_bytes(b'"dia\nlogue",speaker,utterance\r\n')
    with pytest.raises(UserError) as e:
        read_custom(path, "test")
    assert str(e.value).endswith(r"(header has: dia\nlogue, speaker, utterance)")
    assert str(UserError("unknown emotion (expected one of: a\rb, c\u2028d)", path="x\ny")) == (
        r"x\ny: unknown emotion (expected one of: a\rb, c\u2028d)")


def _emorynlp_doc(**utterance) -> str:
    u = {"utterance_id": "s01_e01_c01_u001", "speakers": ["Ross Geller"], "transcript": "Hi.", "emotion": "Joyful", **utterance}
    return json.dumps({"episodes": [{"scenes": [{"scene_id": "s01_e01_c01", "utterances": [u]}]}]})


@pytest.mark.parametrize("text,message", [
    (_emorynlp_doc(speakers=None), "row 1: utterance s01_e01_c01_u001: speakers is not a list of names"),
    (_emorynlp_doc(speakers=[1]), "speakers is not a list of names"),
    (_emorynlp_doc(speakers="Ross"), "speakers is not a list of names"),  # was read as "R and o and s and s"
    (_emorynlp_doc(transcript=5), "transcript and emotion must be strings"),
    (_emorynlp_doc(emotion=["Joyful"]), "transcript and emotion must be strings"),
    ('{"episodes": [{"scenes": [{"scene_id": "x", "utterances": [7]}]}]}', "row 1: scene 'x': an utterance is int, not an object"),
    ('{"episodes": [{"scenes": [{"scene_id": "x", "utterances": 7}]}]}', "scene 'x': expected a string scene_id and a list"),
    ('{"episodes": [{"scenes": [{"scene_id": ["x"], "utterances": []}]}]}', r"scene \['x'\]: expected a string scene_id"),
    ('{"episodes": [], "n": ' + "9" * 5000 + "}", r"not valid JSON \(a number with too many digits\)"),
    ("[" * 100_000, r"not valid JSON \(nested too deeply\)"),
])
def test_emorynlp_json_of_the_wrong_shape_is_a_user_error(tmp_path, text, message):
    from instructerc.errors import UserError

    path = tmp_path / "emotion-detection-dev.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_emorynlp_json(path, "dev")


@pytest.mark.parametrize("line,message", [
    ('{"dialogue_id": "a", "speaker": "A", "utterance": "x", "turn": ' + "9" * 5000 + "}", "a number with too many digits"),
    ("[" * 100_000, "nested too deeply"),
])
def test_custom_jsonl_python_cannot_parse_is_a_user_error(tmp_path, line, message):
    from instructerc.errors import UserError

    path = tmp_path / "mine.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"mine.jsonl, row 1: not valid JSON \({message}\)"):
        read_custom(path, "test")


@pytest.mark.parametrize("speaker", ["{[1]}", "-" * 100_000 + "1"])
def test_emorynlp_speaker_cell_python_cannot_build_is_kept_as_written(tmp_path, speaker):
    path = tmp_path / "emorynlp_dev_final.csv"
    path.write_text("Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode\n"
                    f'Hi.,"{speaker}",Joyful,1,1,1,1\n', encoding="utf-8")
    (d,) = read_emorynlp_csv(path, "dev")
    assert d.utterances[0].speaker == speaker


def test_jsonl_lines_end_at_newlines_only(tmp_path):
    """U+2028, U+0085, ... inside JSON strings, as json.dumps(ensure_ascii=False) writes them."""
    from instructerc.fileio import read_jsonl, write_jsonl

    text = "one\u2028two\x85three\x1cfour\x0bfive"
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"dialogue_id": "a", "speaker": "A", "utterance": text}, ensure_ascii=False) + "\r\n",
                    encoding="utf-8")
    (d,) = read_custom(path, "test")
    assert d.utterances[0].text == text
    write_jsonl(tmp_path / "records.jsonl", [{"prompt": text}])  # prepare's output, read back by train
    assert read_jsonl(tmp_path / "records.jsonl") == [{"prompt": text}]
