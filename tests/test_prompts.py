from __future__ import annotations

import pytest

from instructerc.build import RecordBuilder, unify
from instructerc.dialogue import Demonstration, Dialogue, Utterance, index_speakers
from instructerc.labels import LABEL_SETS, UNIFIED, label_set, to_unified
from instructerc.prompts import TEMPLATES, erc_prompt, predict_prompt, speaker_prompt
from instructerc.spec import PromptSpec

DEFAULT = TEMPLATES["default"]

HEAD = (
    "Now you are an expert in sentiment and emotional analysis. The following conversation noted "
    "between '### ###' involves several speakers."
)
MELD = ("neutral", "surprise", "fear", "sad", "joyful", "disgust", "angry")

DIALOGUE = Dialogue("meld", "train", "d1", (
    Utterance(0, "Ross", "Hi.", "neutral"),
    Utterance(1, "Rachel", "Oh, hey!", "joyful"),
    Utterance(2, "Ross", "I got the job.", "joyful"),
    Utterance(3, "Joey", "No way.", "surprise"),
))


def test_erc_prompt_exact():
    assert erc_prompt(DEFAULT, DIALOGUE, 2, MELD, window=12) == (
        f"{HEAD}\n"
        '### Ross: "Hi."\n'
        'Rachel: "Oh, hey!"\n'
        'Ross: "I got the job." ###\n'
        'Please select the emotional label of <Ross: "I got the job."> '
        "from <neutral, surprise, fear, sad, joyful, disgust, angry>:"
    )


def test_erc_prompt_window_index_mode_and_demonstrations():
    demos = [Demonstration("Monica", "We did it!", "joyful", 0.91, "d9", 4)]
    assert erc_prompt(DEFAULT, index_speakers(DIALOGUE), 3, ("a", "b"), window=1, demonstrations=demos) == (
        f"{HEAD}\n"
        '### Speaker_0: "I got the job."\n'
        'Speaker_2: "No way." ###\n'
        "Here are similar utterances from other conversations with their emotional labels:\n"
        'Monica: "We did it!" -> joyful\n'
        'Please select the emotional label of <Speaker_2: "No way."> from <a, b>:'
    )


def test_erc_prompt_window_zero_shows_only_the_target():
    assert '### Joey: "No way." ###' in erc_prompt(DEFAULT, DIALOGUE, 3, MELD, window=0)


def test_speaker_prompt_exact_names_and_indices():
    prompt, candidates = speaker_prompt(DEFAULT, DIALOGUE, 1)
    assert candidates == ["Ross", "Rachel", "Joey"]
    assert prompt == (
        "Now you are an expert in sentiment and emotional analysis. Identify who speaks the following "
        "utterance, taken from a conversation.\n"
        'Utterance: "Oh, hey!"\n'
        "Please select the speaker of this utterance from <Ross, Rachel, Joey>:"
    )
    prompt, candidates = speaker_prompt(DEFAULT, index_speakers(DIALOGUE), 1)
    assert candidates == ["Speaker_0", "Speaker_1", "Speaker_2"]
    assert prompt.endswith("from <Speaker_0, Speaker_1, Speaker_2>:")


def test_predict_prompt_exact_hides_the_utterance():
    prompt = predict_prompt(DEFAULT, DIALOGUE, 3, MELD, window=2)
    assert prompt == (
        f"{HEAD}\n"
        '### Rachel: "Oh, hey!"\n'
        'Ross: "I got the job." ###\n'
        "Based on the above historical utterances, the next utterance is spoken by <Joey>. "
        "Please predict the emotional state of <Joey> from <neutral, surprise, fear, sad, joyful, disgust, angry>:"
    )
    assert "No way" not in prompt
    with pytest.raises(ValueError):
        predict_prompt(DEFAULT, DIALOGUE, 0, MELD)


def builder(template="default", labels="meld", demonstrations=None, **spec) -> RecordBuilder:
    ls = label_set(labels)
    return RecordBuilder(PromptSpec(template=template, label_set=ls.name, labels=TEMPLATES[template].labels(ls.name, ls.labels),
                                    **spec), ls, demonstrations)


def test_records_from_prompts():
    demos = {("meld", "train", "d1", 1): (Demonstration("M", "Yay", "joyful", 0.5, "d9", 2),)}
    records = builder(demonstrations=demos).dialogue_records(DIALOGUE, ("erc", "speaker", "predict"))
    erc = [r for r in records if r.task == "erc"]
    assert [r.id for r in erc] == ["meld/d1/0/erc", "meld/d1/1/erc", "meld/d1/2/erc", "meld/d1/3/erc"]
    assert [r.target for r in erc] == ["neutral", "joyful", "joyful", "surprise"]
    assert erc[1].demonstrations == ({"dataset": "", "dialogue_id": "d9", "turn": 2, "emotion": "joyful", "similarity": 0.5},)
    assert erc[1].prompt == erc_prompt(DEFAULT, DIALOGUE, 1, MELD, 12, demos[("meld", "train", "d1", 1)])
    assert erc[0].demonstrations == () and erc[0].labels == MELD and erc[0].speaker == "Ross" and erc[0].chat
    spk = [r for r in builder().dialogue_records(index_speakers(DIALOGUE), ("speaker",))]
    assert [r.target for r in spk] == ["Speaker_0", "Speaker_1", "Speaker_0", "Speaker_2"]
    assert spk[0].labels == ("Speaker_0", "Speaker_1", "Speaker_2")
    pred = [r for r in records if r.task == "predict"]
    assert [r.turn for r in pred] == [1, 2, 3]
    assert [r.task for r in records] == ["erc"] * 4 + ["speaker"] * 4 + ["predict"] * 3


def test_unlabelled_dialogue_gives_empty_targets():
    d = Dialogue("custom", "predict", "x", (Utterance(0, "A", "hello"),))
    (r,) = builder().dialogue_records(d, ("erc",))
    assert r.target == "" and r.split == "predict"


def test_utterance_template_has_no_context_and_no_auxiliary_tasks():
    records = builder("utterance").dialogue_records(DIALOGUE, ("erc", "speaker", "predict"))
    assert [r.task for r in records] == ["erc"] * 4 and not records[0].chat
    assert records[2].prompt == ("Please select the emotional label of <I got the job.> "
                                 "from <neutral, surprise, fear, sad, joyful, disgust, angry>:")


def test_unified_mapping_covers_every_label():
    mixed = set(LABEL_SETS["mixed"].labels)
    assert len(mixed) == 9
    for name in ("meld", "iemocap", "emorynlp"):
        assert set(UNIFIED[name]) == set(LABEL_SETS[name].labels)
        assert set(UNIFIED[name].values()) <= mixed
    assert set().union(*(UNIFIED[n].values() for n in UNIFIED)) == mixed
    assert to_unified("meld", "angry") == "mad"
    assert to_unified("meld", "surprise") == "powerful"
    assert to_unified("iemocap", "happy") == "joyful"
    assert to_unified("iemocap", "frustrated") == "fear"
    assert to_unified("emorynlp", "scared") == "fear"


def test_unify_dialogue():
    d = unify(DIALOGUE)
    assert [u.emotion for u in d.utterances] == ["neutral", "joyful", "joyful", "powerful"]
    assert d.dataset == "meld" and [u.text for u in d.utterances] == [u.text for u in DIALOGUE.utterances]


def test_canonical_label_words():
    assert label_set("meld").canonical("Joy") == "joyful"
    assert label_set("meld").canonical("sadness") == "sad"
    assert label_set("iemocap").canonical("fru") == "frustrated"
    assert label_set("emorynlp").canonical("Scared") == "scared"
    with pytest.raises(KeyError):
        label_set("meld").canonical("bored")
