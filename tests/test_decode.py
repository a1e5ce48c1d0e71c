"""Decoding: the fast one-forward label scoring equals the naive reference; generation maps to labels."""

from __future__ import annotations

import math

import pytest
import torch

from instructerc import models
from instructerc.decode import (generate_records, label_logprobs, levenshtein, match_label, naive_label_logprobs,
                                score_records)
from instructerc.labels import LABEL_SETS
from instructerc.records import PromptRecord

MELD = LABEL_SETS["meld"].labels
TEXTS = ["hey", "oh okay great really what how why yes no " * 6, "I", "Monica: what? Chandler: no!", "yes " * 30,
         "oh okay great really what how why yes no " * 3]  # shares a long prefix with TEXTS[1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return models.load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model with its weights scaled up, so label log-probabilities differ by whole nats
    (a near-uniform random model would let a wrong mask pass the comparison)."""
    m = models.load_model(tiny_model_dir)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return m.eval()


def record(i: int, text: str, labels=MELD, target="sad", dataset="meld") -> PromptRecord:
    return PromptRecord(id=f"{dataset}/d{i}/0/erc", dataset=dataset, label_set=dataset, split="test",
                        dialogue_id=f"d{i}", turn=0, task="erc",
                        prompt=f"Please select the emotional label of <{text}> from <{', '.join(labels)}>:",
                        target=target, labels=tuple(labels))


def test_fast_scoring_equals_naive_reference(model, tokenizer):
    # prompts of different lengths (left padding) and label lists of different sizes and lengths
    prompts = [models.prompt_ids(tokenizer, t) for t in TEXTS]
    label_lists = [MELD, MELD[:3], MELD[2:], LABEL_SETS["iemocap"].labels, ("Monica", "Chandler"), MELD]
    answers = [[models.answer_ids(tokenizer, lab) for lab in labs] for labs in label_lists]
    fast = label_logprobs(model, prompts, answers)
    for prompt, cands, got in zip(prompts, answers, fast):
        want = naive_label_logprobs(model, prompt, cands)
        assert len(got) == len(want)
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
        assert max(want) - min(want) > 1.0  # the comparison is not between near-equal numbers


def test_prompts_sharing_a_prefix_and_duplicates(model, tokenizer):
    """One prompt is a prefix of another, one appears twice: the trie shares them, scores stay exact."""
    from instructerc.trie import Trie

    base = models.prompt_ids(tokenizer, TEXTS[1])
    prompts = [base, base[:-7], base, base[:25] + [5, 6, 7]]
    answers = [[models.answer_ids(tokenizer, lab) for lab in MELD]] * len(prompts)
    fast = label_logprobs(model, prompts, answers)
    for prompt, got in zip(prompts, fast):
        want = naive_label_logprobs(model, prompt, answers[0])
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert fast[0] == fast[2]
    trie = Trie()
    for p in prompts:
        trie.insert(p)
    assert len(trie) == len(base) + 3  # everything else is shared


def test_fast_scoring_with_eager_attention(tiny_model_dir, tokenizer):
    m = models.load_model(tiny_model_dir)
    m.config._attn_implementation = "eager"
    prompts = [models.prompt_ids(tokenizer, t) for t in TEXTS[:3]]
    answers = [[models.answer_ids(tokenizer, lab) for lab in MELD]] * 3
    fast = label_logprobs(m, prompts, answers)
    for prompt, got in zip(prompts, fast):
        want = naive_label_logprobs(m, prompt, answers[0])
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4


def test_fast_scoring_with_a_lora_adapter(model, tokenizer):
    from peft import LoraConfig, get_peft_model

    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    prompts = [models.prompt_ids(tokenizer, t) for t in TEXTS[:2]]
    answers = [[models.answer_ids(tokenizer, lab) for lab in MELD]] * 2
    fast = label_logprobs(peft_model, prompts, answers)
    base = label_logprobs(model, prompts, answers)
    for prompt, got in zip(prompts, fast):
        want = naive_label_logprobs(peft_model, prompt, answers[0])
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert fast != base  # the adapter is really applied


def test_score_records_probabilities_and_labels(model, tokenizer):
    records = [record(i, t, target=MELD[i % 7]) for i, t in enumerate(TEXTS * 3)]
    preds = score_records(model, tokenizer, records, batch_size=4, progress=False)
    assert [p.id for p in preds] == [r.id for r in records]  # input order, whatever the batching
    for r, p in zip(records, preds):
        assert p.pred in r.labels and p.gold == r.target and p.dataset == "meld"
        assert set(p.probs) == set(r.labels)
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-4)
        assert p.pred == max(p.probs, key=p.probs.get)
        want = naive_label_logprobs(model, models.prompt_ids(tokenizer, r.prompt),
                                    [models.answer_ids(tokenizer, lab) for lab in r.labels])
        assert p.pred == r.labels[max(range(len(want)), key=want.__getitem__)]


def test_score_records_batch_size_does_not_change_results(model, tokenizer):
    records = [record(i, t) for i, t in enumerate(TEXTS)]
    one = score_records(model, tokenizer, records, batch_size=1, progress=False)
    many = score_records(model, tokenizer, records, batch_size=5, progress=False)
    for a, b in zip(one, many):
        assert a.pred == b.pred
        assert all(abs(a.probs[k] - b.probs[k]) < 1e-4 for k in a.probs)


def test_scoring_restores_training_mode(model, tokenizer):
    model.train()
    try:
        score_records(model, tokenizer, [record(0, "hey")], progress=False)
        assert model.training
    finally:
        model.eval()


def test_levenshtein():
    assert levenshtein("", "abc") == 3
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("sad", "sad") == 0
    assert levenshtein("flaw", "lawn") == 2


@pytest.mark.parametrize("text, want", [
    ("sad", "sad"), (" Sad.", "sad"), ("joyful", "joyful"), ("joyfull", "joyful"), ("joy", "sad"),  # joy: a tie at distance 3, first label wins
    ("angri", "angry"),
    ("suprise", "surprise"), ("disgusted", "disgust"), ("neutral</s>", "neutral"),
    ("I think she is sad, not angry", "sad"), ("angry. sad.", "angry"), ("Surprise!", "surprise"),
])
def test_match_label_exact_then_edit_distance(text, want):
    assert match_label(text, MELD) == want


def test_match_label_tie_takes_first_in_label_order():
    assert match_label("xxx", ("sad", "mad")) == "sad"
    assert match_label("xxx", ("mad", "sad")) == "mad"


def test_generate_records_maps_text_to_labels(model, tokenizer):
    records = [record(i, t) for i, t in enumerate(TEXTS)]
    for beams in (1, 2):
        preds = generate_records(model, tokenizer, records, batch_size=2, num_beams=beams, progress=False)
        assert [p.id for p in preds] == [r.id for r in records]
        for r, p in zip(records, preds):
            assert p.text is not None and p.pred in r.labels
            assert p.pred == match_label(p.text, r.labels)


def test_generate_max_length_is_a_total_budget(model, tokenizer, monkeypatch):
    """--max-length as the original: padded prompt + answer, so the longest prompt of a batch sets
    how many new tokens may follow."""
    records = [record(i, t) for i, t in enumerate(TEXTS[:2])]
    width = max(len(models.prompt_ids(tokenizer, r.prompt)) for r in records)
    generate, new_tokens = model.generate, []

    def spy(**kw):
        out = generate(**kw)
        new_tokens.append((kw["max_new_tokens"], out.shape[1] - kw["input_ids"].shape[1]))
        return out

    monkeypatch.setattr(model, "generate", spy)
    for extra in (1, 3):
        generate_records(model, tokenizer, records, batch_size=2, max_length=width + extra, progress=False)
    assert [budget for budget, _ in new_tokens] == [1, 3]
    assert all(0 < got <= budget for budget, got in new_tokens)


def test_bfloat16_weights_score_close_to_float32(tiny_model_dir):
    """--dtype bfloat16 is a speed option: scores move only by bf16 rounding."""
    import torch

    from instructerc import models
    from instructerc.decode import label_logprobs

    tok = models.load_tokenizer(tiny_model_dir)
    prompt = models.prompt_ids(tok, 'Please select the emotional label of <Joey: "hi"> from <joyful, sad>:')
    answers = [[models.answer_ids(tok, lab) for lab in ("joyful", "sad", "neutral")]]
    full = label_logprobs(models.load_model(tiny_model_dir).eval(), [prompt], answers)[0]
    half = label_logprobs(models.load_model(tiny_model_dir, dtype=torch.bfloat16).eval(), [prompt], answers)[0]
    assert max(abs(a - b) for a, b in zip(full, half)) < 0.1
