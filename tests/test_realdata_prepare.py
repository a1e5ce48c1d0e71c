"""The real benchmarks (../shared/datasets): counts, and CSV vs COSMIC pickle agreement.

Differences between the sources found here are genuine and pinned down exactly, not papered over:
- meld.pkl has a no-break space (U+00A0) where the CSV has a plain space, in 5 utterances.
- EmoryNLP.pkl stores one speaker per utterance; the CSV credits some utterances to several
  speakers (61 utterances, e.g. ['Monica Geller', 'Phoebe Buffay']); the pickle keeps the first.
- The official EmoryNLP JSON (dev, test) holds more scenes and utterances than the CSV, which
  keeps a subset of them with the same labels.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from instructerc.cli import main
from instructerc.readers import SPLITS, read_dataset

pytestmark = pytest.mark.realdata

ERC_COUNTS = {
    "meld": {"train": 9989, "dev": 1109, "test": 2610},
    "emorynlp": {"train": 7551, "dev": 954, "test": 984},
    "iemocap": {"train": 5163, "dev": 647, "test": 1623},
}


@pytest.mark.parametrize("dataset", ["meld", "emorynlp", "iemocap", "mixed"])
def test_prepare_counts(shared_datasets, tmp_path, dataset):
    out = tmp_path / dataset
    assert main(["prepare", "--dataset", dataset, "--raw-dir", str(shared_datasets), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    wanted = ERC_COUNTS.get(dataset) or {s: sum(c[s] for c in ERC_COUNTS.values()) for s in SPLITS}
    assert {s: manifest["counts"][s]["erc"] for s in SPLITS} == wanted
    assert manifest["counts"]["train"]["speaker"] == wanted["train"]
    assert manifest["counts"]["dev"] == {"erc": wanted["dev"], "speaker": wanted["dev"]}  # speaker: the warm-up's dev
    assert set(manifest["counts"]["test"]) == {"erc"}
    assert set(manifest["label_distribution"]["train"]) == set(manifest["labels"])


def _by_id(dialogues):
    return {d.dialogue_id: d for d in dialogues}


def _both(shared, dataset):
    csv, _ = read_dataset(dataset, "csv", shared)
    pkl, _ = read_dataset(dataset, "cosmic", shared)
    for split in SPLITS:
        a, b = _by_id(csv[split]), _by_id(pkl[split])
        assert set(a) == set(b), split
        for did in a:
            assert len(a[did].utterances) == len(b[did].utterances), (split, did)
            yield split, did, a[did], b[did]


def test_meld_csv_and_pickle_agree(shared_datasets):
    nbsp = []
    for split, did, a, b in _both(shared_datasets, "meld"):
        speakers = {}
        for x, y in zip(a.utterances, b.utterances):
            assert x.emotion == y.emotion, (split, did, x.turn)
            assert speakers.setdefault(x.speaker, y.speaker) == y.speaker  # same speaker partition
            assert not any("\x80" <= ch <= "\x9f" for ch in y.text)  # every Windows-1252 character repaired
            if x.text != y.text:
                assert y.text.replace("\xa0", " ") == x.text, (split, did, x.turn)
                nbsp.append((split, did, x.turn))
        assert len(set(speakers.values())) == len(speakers)
    assert nbsp == [("train", "473", 3), ("train", "761", 2), ("train", "761", 3), ("dev", "26", 8), ("test", "190", 0)]


def test_emorynlp_csv_and_pickle_agree(shared_datasets):
    shared = Counter()
    for split, did, a, b in _both(shared_datasets, "emorynlp"):
        assert [(u.text, u.emotion) for u in a.utterances] == [(u.text, u.emotion) for u in b.utterances], (split, did)
        pairs = list(zip((u.speaker for u in a.utterances), (u.speaker for u in b.utterances)))
        name_of = {}
        for csv_name, pkl_name in pairs:
            if " and " not in csv_name:
                assert name_of.setdefault(pkl_name, csv_name) == csv_name, (split, did)  # same partition
        for csv_name, pkl_name in pairs:
            if " and " in csv_name:  # the pickle keeps the first listed speaker
                first = csv_name.split(" and ")[0]
                assert name_of.get(pkl_name, first) == first, (split, did)
                shared["first" if pkl_name in name_of else "speaks only in shared lines"] += 1
    assert shared == {"first": 56, "speaks only in shared lines": 5}


def test_emorynlp_json_holds_the_csv(shared_datasets):
    csv, _ = read_dataset("emorynlp", "csv", shared_datasets)
    json_dev_test, _ = read_dataset("emorynlp", "json", shared_datasets,
                                    files={"train": shared_datasets / "emorynlp" / "emorynlp_train_final.csv"})
    for split in ("dev", "test"):
        a, b = _by_id(csv[split]), _by_id(json_dev_test[split])
        assert set(a) < set(b)
        for did, d in a.items():
            labelled = {(u.text, u.emotion) for u in b[did].utterances}
            assert all((u.text, u.emotion) in labelled for u in d.utterances), (split, did)
