"""Label sets as the field uses them, and the unified Feeling-Wheel space of InstructERC.

Each set lists its canonical label words (the words prompts show and models answer with) in
the index order of the COSMIC pickles, plus the raw spellings each source file uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instructerc.errors import UserError


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)  # raw spelling (lower-case) -> canonical

    def canonical(self, raw: str) -> str:
        """Map a raw emotion string to this set's label word; KeyError if it is not one."""
        key = raw.strip().lower()
        if key in self.labels:
            return key
        return self.aliases[key]

    def text(self) -> str:
        return ", ".join(self.labels)


LABEL_SETS: dict[str, LabelSet] = {
    "meld": LabelSet(
        "meld",
        ("neutral", "surprise", "fear", "sad", "joyful", "disgust", "angry"),
        {"joy": "joyful", "sadness": "sad", "anger": "angry"},
    ),
    "iemocap": LabelSet(
        "iemocap",
        ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
        {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"},
    ),
    "emorynlp": LabelSet(
        "emorynlp",
        ("joyful", "mad", "peaceful", "neutral", "sad", "powerful", "scared"),
    ),
    # The paper's unified space (Feeling Wheel), 9 labels.
    "mixed": LabelSet(
        "mixed",
        ("joyful", "sad", "neutral", "mad", "excited", "powerful", "fear", "peaceful", "disgust"),
    ),
}

# Source label -> unified label, as InstructERC's released mixed-data code maps them. Two choices
# there are debatable (MELD surprise -> powerful, IEMOCAP frustrated -> fear); they are kept so
# that unified-space numbers stay comparable with the paper.
UNIFIED: dict[str, dict[str, str]] = {
    "meld": {
        "neutral": "neutral", "surprise": "powerful", "fear": "fear", "sad": "sad",
        "joyful": "joyful", "disgust": "disgust", "angry": "mad",
    },
    "iemocap": {
        "happy": "joyful", "sad": "sad", "neutral": "neutral", "angry": "mad",
        "excited": "excited", "frustrated": "fear",
    },
    "emorynlp": {
        "joyful": "joyful", "mad": "mad", "peaceful": "peaceful", "neutral": "neutral",
        "sad": "sad", "powerful": "powerful", "scared": "fear",
    },
}


def label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise UserError(f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)}") from None


def to_unified(dataset: str, label: str) -> str:
    return UNIFIED[dataset][label]
