"""Prompt templates, as data, and the three prompt builders that fill them. No I/O, no model.

A template is a handful of format strings: how one history turn is written, how the target
utterance is quoted, the ERC question with its context, the emotion-prediction and the
speaker-identification prompts. `default` is this project's wording, `paper` reproduces the
released InstructERC code (`data_process.py`) character for character, `utterance` is the
released `data_process_plain.py`: the utterance alone, no context (the paper's plain-LoRA row).

Slots: {history} the turns joined; {target} the target utterance as quoted by `target`;
{demonstrations} the retrieved examples block ("" without any); {labels} / {candidates} the
closed answer list; {next} the next speaker's name and {next_index} its index (prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from instructerc.dialogue import Demonstration, Dialogue, Utterance
from instructerc.errors import UserError

_EXPERT = "Now you are an expert in sentiment and emotional analysis."
_CONVERSATION = "The following conversation noted between '### ###' involves several speakers."
_RELEASED_EXPERT = "Now you are expert of sentiment and emotional analysis. "
_RELEASED_LABELS = {"emorynlp": ("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared")}


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    erc: str
    turn: str = '{speaker}: "{text}"'
    turn_sep: str = "\n"
    target: str = '{speaker}: "{text}"'
    demonstrations: str = ""  # the block around {lines}; "" leaves the slot empty
    demonstration: str = '{speaker}: "{text}" -> {emotion}'
    demonstration_sep: str = "\n"
    predict: str | None = None  # None: the template has no emotion-prediction task
    speaker: str | None = None  # None: no speaker-identification task
    # Speaker task candidates: a fixed Speaker_0..Speaker_{n-1} per label set, or (None) the
    # dialogue's own speakers.
    speaker_candidates: Mapping[str, int] | None = None
    label_words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # respelt label sets
    # The released code's turn-0 "prediction" is its ERC prompt again (no history to predict from).
    predict_first_turn: bool = False
    needs_speaker_index: bool = False  # speakers named by the source's index (Speaker_<i>)
    chat: bool = True  # wrap in the model's chat template; False: raw text after BOS, answer after ':'

    def labels(self, label_set: str, words: Sequence[str]) -> tuple[str, ...]:
        """The label words as this template spells them (the same order)."""
        return tuple(self.label_words.get(label_set, words))


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template(
        name="default",
        description="this project's wording: one turn per line, demonstrations before the question",
        erc=f"{_EXPERT} {_CONVERSATION}\n### {{history}} ###\n{{demonstrations}}"
            "Please select the emotional label of <{target}> from <{labels}>:",
        demonstrations="Here are similar utterances from other conversations with their emotional labels:\n{lines}\n",
        predict=f"{_EXPERT} {_CONVERSATION}\n### {{history}} ###\n"
                "Based on the above historical utterances, the next utterance is spoken by <{next}>. "
                "Please predict the emotional state of <{next}> from <{labels}>:",
        speaker=f"{_EXPERT} Identify who speaks the following utterance, taken from a conversation.\n"
                'Utterance: "{text}"\nPlease select the speaker of this utterance from <{candidates}>:',
    ),
    Template(
        name="paper",
        description="the released InstructERC code's text (tab-separated turns, fixed speaker lists, raw prompt)",
        erc=_RELEASED_EXPERT + "{demonstrations}" + _CONVERSATION
            + " ### {history} ### Please select the emotional label of <{target}> from <{labels}>:",
        turn='\t {speaker}:"{text}"',
        turn_sep="",
        target=' {speaker}:"{text}"',
        # The released code has a slot here but never shipped its retrieval: this block is ours.
        demonstrations="Here are similar utterances from other conversations with their emotional labels: {lines} ",
        demonstration='{speaker}:"{text}" -> {emotion}',
        demonstration_sep="; ",
        predict=_RELEASED_EXPERT + _CONVERSATION + " ### {history}###Based on the above historical utterances, "
                "next utterance is spoken by <{next_index}>, please predict the emotion states of <{next_index}> "
                "from <{labels}>:",
        speaker=_RELEASED_EXPERT + "Please select the Speaker label of the utterance <Speaker: {text}> from <{candidates}>:",
        speaker_candidates={"meld": 9, "emorynlp": 9, "iemocap": 2},
        label_words=_RELEASED_LABELS,
        predict_first_turn=True,
        needs_speaker_index=True,
        chat=False,
    ),
    Template(
        name="utterance",
        description="the utterance alone, no context or instruction (the released Plain baseline)",
        erc="Please select the emotional label of <{target}> from <{labels}>:",
        target="{text}",
        label_words=_RELEASED_LABELS,
        chat=False,
    ),
)}


def template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UserError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def _history(t: Template, utterances: Sequence[Utterance]) -> str:
    return t.turn_sep.join(t.turn.format(speaker=u.speaker, text=u.text) for u in utterances)


def _demonstration_block(t: Template, demos: Sequence[Demonstration]) -> str:
    if not demos:
        return ""
    lines = t.demonstration_sep.join(t.demonstration.format(speaker=d.speaker, text=d.text, emotion=d.emotion)
                                     for d in demos)
    return t.demonstrations.format(lines=lines)


def erc_prompt(t: Template, dialogue: Dialogue, turn: int, labels: Sequence[str], window: int = 12,
               demonstrations: Sequence[Demonstration] = ()) -> str:
    """Main task: the emotion of utterance `turn`, seeing up to `window` previous utterances."""
    target = dialogue.utterances[turn]
    return t.erc.format(
        history=_history(t, dialogue.utterances[max(0, turn - window):turn + 1]),
        target=t.target.format(speaker=target.speaker, text=target.text),
        demonstrations=_demonstration_block(t, demonstrations),
        labels=", ".join(labels),
    )


def predict_prompt(t: Template, dialogue: Dialogue, turn: int, labels: Sequence[str], window: int = 12) -> str:
    """Stage-2 auxiliary: the emotion of the next speaker from the history alone (turn >= 1)."""
    if t.predict is None:
        raise ValueError(f"template {t.name!r} has no emotion-prediction task")
    if turn < 1:
        raise ValueError("emotion prediction needs at least one previous utterance")
    nxt = dialogue.utterances[turn]
    return t.predict.format(
        history=_history(t, dialogue.utterances[max(0, turn - window):turn]),
        next=nxt.speaker, next_index=nxt.speaker_index, labels=", ".join(labels),
    )


def speaker_candidates(t: Template, dialogue: Dialogue) -> list[str]:
    if t.speaker_candidates is None:
        return dialogue.speakers
    return [f"Speaker_{i}" for i in range(t.speaker_candidates[dialogue.dataset])]


def speaker_prompt(t: Template, dialogue: Dialogue, turn: int) -> tuple[str, list[str]]:
    """Stage-1 warm-up: who said this utterance, without context. Returns the prompt and its candidates."""
    if t.speaker is None:
        raise ValueError(f"template {t.name!r} has no speaker-identification task")
    candidates = speaker_candidates(t, dialogue)
    return t.speaker.format(text=dialogue.utterances[turn].text, candidates=", ".join(candidates)), candidates
