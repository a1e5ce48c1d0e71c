"""The typed core every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Utterance:
    turn: int  # 0-based position in its dialogue, without gaps
    speaker: str
    text: str
    emotion: str | None = None  # canonical label word of the dialogue's label set; None if unlabelled


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
