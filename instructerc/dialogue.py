"""The typed core every reader produces and every later stage consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Utterance:
    turn: int  # 0-based position in its dialogue, without gaps
    speaker: str
    text: str
    emotion: str | None = None  # canonical label word of the dialogue's label set; None if unlabelled
    speaker_index: int | None = None  # the source's own speaker number (COSMIC pickles), else None


@dataclass(frozen=True)
class Dialogue:
    dataset: str  # label-set name: meld, iemocap, emorynlp (or a mixed source's name)
    split: str  # train, dev, test, or predict
    dialogue_id: str
    utterances: tuple[Utterance, ...] = field(default_factory=tuple)

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance."""
        return list(dict.fromkeys(u.speaker for u in self.utterances))


def index_speakers(dialogue: Dialogue) -> Dialogue:
    """The dialogue with its speakers renamed Speaker_0, Speaker_1, ... by first appearance
    (the numbering of the MELD and EmoryNLP pickles)."""
    number = {s: i for i, s in enumerate(dialogue.speakers)}
    return dataclasses.replace(dialogue, utterances=tuple(
        dataclasses.replace(u, speaker=f"Speaker_{number[u.speaker]}", speaker_index=number[u.speaker])
        for u in dialogue.utterances))


@dataclass(frozen=True)
class Demonstration:
    """A labelled training utterance shown to the model as an example (see retrieval)."""

    speaker: str
    text: str
    emotion: str
    similarity: float = 0.0
    dialogue_id: str = ""
    turn: int = -1
    dataset: str = ""  # source dataset: dialogue ids repeat across datasets in mixed data
