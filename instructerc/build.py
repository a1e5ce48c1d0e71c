"""Dialogues -> prompt records, as a PromptSpec says. `prepare` and `predict` both build through here.

    read a source (readers) -> unify labels (mixed) -> sample the training set (--data-percent)
    -> name speakers -> retrieve demonstrations -> ERC / speaker / prediction records (prompts)
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

from instructerc.dialogue import Demonstration, Dialogue, index_speakers
from instructerc.errors import UserError
from instructerc.labels import LABEL_SETS, LabelSet, label_set, to_unified
from instructerc.prompts import erc_prompt, predict_prompt, speaker_prompt, template
from instructerc.readers import DEFAULT_FORMAT, SOURCES, SPLITS, custom_labels, read_dataset
from instructerc.records import PromptRecord
from instructerc.spec import PromptSpec, Source

DATASETS = ("meld", "emorynlp", "iemocap", "mixed", "custom")
MIXED = ("meld", "emorynlp", "iemocap")

DemoTable = Mapping[tuple[str, str, str, int], Sequence[Demonstration]]
UtteranceKey = tuple[str, str, int]  # (dataset, dialogue_id, turn)


# ------------------------------------------------------------------------ reading


def read_sources(source: Source) -> tuple[dict[str, list[Dialogue]], list[Path], LabelSet]:
    """The dialogues of every split (in the label space of the output), the input files, the label set."""
    if source.dataset == "mixed":
        if source.files:
            raise UserError("--dataset mixed reads every dataset from --raw-dir; --train/--dev/--test do not apply")
        splits: dict[str, list[Dialogue]] = {s: [] for s in SPLITS}
        inputs = []
        for name in MIXED:
            fmt = source.format if (name, source.format) in SOURCES else DEFAULT_FORMAT[name]
            part, paths = read_dataset(name, fmt, source.raw_dir)
            for s in SPLITS:
                splits[s] += [unify(d) for d in part[s]]
            inputs += paths
        return splits, inputs, label_set("mixed")
    labels = custom_label_set(source.labels) if source.dataset == "custom" else None
    splits, inputs = read_dataset(source.dataset, source.format, source.raw_dir, source.files, labels)
    if source.dataset != "custom":
        return splits, inputs, label_set(source.dataset)
    labels = labels or custom_labels(splits["train"])
    if not labels.labels:
        raise UserError("no emotions in the training file: give it an 'emotion' column (or --labels)", path=inputs[0])
    return splits, inputs, labels


def custom_label_set(spec: str | None) -> LabelSet | None:
    if not spec:
        return None
    if spec in LABEL_SETS:
        return LABEL_SETS[spec]
    return LabelSet("custom", tuple(w.strip().lower() for w in spec.split(",") if w.strip()))


def canonical_label_set(spec: PromptSpec) -> LabelSet:
    """The label set whose words the dialogues carry (a template may respell it in prompts)."""
    known = LABEL_SETS.get(spec.label_set)
    return known if known is not None and len(known.labels) == len(spec.labels) else LabelSet(spec.label_set, spec.labels)


def unify(dialogue: Dialogue) -> Dialogue:
    """A dialogue with its labels mapped into the 9-label Feeling-Wheel space."""
    utterances = tuple(
        dataclasses.replace(u, emotion=to_unified(dialogue.dataset, u.emotion) if u.emotion else u.emotion)
        for u in dialogue.utterances
    )
    return dataclasses.replace(dialogue, utterances=utterances)


# ------------------------------------------------------------------------ sampling


def parse_percent(spec: str, datasets: Iterable[str]) -> dict[str, float]:
    """`0.25` for every dataset, or `meld=0.5,iemocap=1` (datasets not named keep 1)."""
    datasets = list(datasets)
    out = dict.fromkeys(datasets, 1.0)
    try:
        if "=" not in spec:
            out = dict.fromkeys(datasets, float(spec))
        else:
            for part in spec.split(","):
                name, value = part.split("=")
                if name.strip() not in out:
                    raise UserError(f"--data-percent names {name.strip()!r}, not one of: {', '.join(datasets)}")
                out[name.strip()] = float(value)
    except ValueError:
        raise UserError(f"--data-percent {spec!r}: expected a number like 0.25 or a list like meld=0.5,iemocap=1") from None
    bad = {k: v for k, v in out.items() if not 0 < v <= 1}
    if bad:
        raise UserError(f"--data-percent must lie in (0, 1]; got {bad}")
    return out


def sample_dialogues(dialogues: list[Dialogue], percent: float, seed: int) -> list[Dialogue]:
    """A reproducible `percent` of the dialogues (at least one), in their original order."""
    if percent >= 1 or not dialogues:
        return list(dialogues)
    k = max(1, round(len(dialogues) * percent))
    keep = sorted(random.Random(seed).sample(range(len(dialogues)), k))
    return [dialogues[i] for i in keep]


def sample_utterances(dialogues: list[Dialogue], percent: float, seed: int) -> set[UtteranceKey]:
    """A `percent` of the utterances (at least one), drawn by the very call the released code makes on
    its training records in file order: pandas' `DataFrame.sample(n=int(len * percent), random_state=seed)`."""
    import pandas as pd

    keys = pd.DataFrame([(d.dataset, d.dialogue_id, u.turn) for d in dialogues for u in d.utterances])
    if percent >= 1:
        return set(keys.itertuples(index=False, name=None))
    n = max(1, int(len(keys) * percent))
    return set(keys.sample(n=n, random_state=seed).itertuples(index=False, name=None))


@dataclass(frozen=True)
class TrainingSet:
    """The sampled training data: whole dialogues, and (utterance sampling) which utterances give records.

    Utterance sampling keeps every dialogue for context, as the released code did."""

    dialogues: list[Dialogue]
    kept: frozenset[UtteranceKey] | None = None  # None: every utterance

    def keeps(self, d: Dialogue, turn: int) -> bool:
        return self.kept is None or (d.dataset, d.dialogue_id, turn) in self.kept

    def labelled(self) -> list[Dialogue]:
        """The dialogues with the emotions of unsampled utterances hidden: the demonstration pool."""
        if self.kept is None:
            return self.dialogues
        return [dataclasses.replace(d, utterances=tuple(
            u if self.keeps(d, u.turn) else dataclasses.replace(u, emotion=None) for u in d.utterances))
            for d in self.dialogues]


def sample_train(train: list[Dialogue], spec: PromptSpec) -> TrainingSet:
    """Each source dataset's training data sampled by its own percent (ratio mixing)."""
    by_dataset = {name: [d for d in train if d.dataset == name] for name in spec.data_percent}
    if spec.sample_by == "dialogue":
        return TrainingSet([d for name, p in spec.data_percent.items()
                            for d in sample_dialogues(by_dataset[name], p, spec.seed)])
    kept = set()
    for name, p in spec.data_percent.items():
        kept |= sample_utterances(by_dataset[name], p, spec.seed)
    return TrainingSet([d for name in spec.data_percent for d in by_dataset[name]], frozenset(kept))


# ------------------------------------------------------------------------ speakers and demonstrations


def name_speakers(dialogues: list[Dialogue], spec: PromptSpec, where: object = None) -> list[Dialogue]:
    """Speakers as the spec shows them; the paper template needs the source's speaker numbers."""
    if spec.speaker_mode == "index":
        if template(spec.template).needs_speaker_index:
            raise UserError(f"--template {spec.template} numbers speakers as its source does; "
                            "--speaker-mode index does not apply")
        return [index_speakers(d) for d in dialogues]
    if template(spec.template).needs_speaker_index and any(u.speaker_index is None for d in dialogues for u in d.utterances):
        raise UserError(f"--template {spec.template} reproduces the released code, which reads speaker numbers "
                        "from the COSMIC pickles; this data has none (use --format cosmic with meld, iemocap "
                        "or emorynlp)", path=where)
    return dialogues


def retrieve_demonstrations(train: TrainingSet, queries: list[Dialogue], spec: PromptSpec, **runtime):
    """Demonstrations for every utterance of `queries` from the sampled training utterances
    (None without --demonstrations), and retrieval's manifest entry. `runtime`: the options that
    do not change a prompt (cache_dir, batch_size)."""
    if spec.demonstrations <= 0:
        return None, None
    from instructerc import retrieval  # pulls in torch; only when asked

    opts = retrieval.RetrievalOptions(k=spec.demonstrations, retriever=spec.retriever, max_per_label=spec.max_per_label,
                                      min_similarity=spec.min_similarity, **runtime)
    result = retrieval.retrieve(train.labelled(), queries, opts)
    return result.demonstrations, result.manifest


# ------------------------------------------------------------------------ records


def record_id(dialogue: Dialogue, turn: int, task: str) -> str:
    return f"{dialogue.dataset}/{dialogue.dialogue_id}/{turn}/{task}"


def _demo_json(d: Demonstration) -> dict:
    return {"dataset": d.dataset, "dialogue_id": d.dialogue_id, "turn": d.turn, "emotion": d.emotion,
            "similarity": round(float(d.similarity), 6)}


class RecordBuilder:
    """The records of one dialogue, written as `spec` says; `labels` is the canonical label set
    of the dialogues' emotions (the spec may respell it)."""

    def __init__(self, spec: PromptSpec, labels: LabelSet, demonstrations: DemoTable | None = None):
        self.spec, self.template = spec, template(spec.template)
        self.spelling = dict(zip(labels.labels, spec.labels))
        self.demonstrations = demonstrations or {}

    def _record(self, d: Dialogue, turn: int, task: str, prompt: str, target: str, labels, **extra) -> PromptRecord:
        return PromptRecord(
            id=record_id(d, turn, task), dataset=d.dataset, label_set=self.spec.label_set, split=d.split,
            dialogue_id=d.dialogue_id, turn=turn, task=task, prompt=prompt, target=target, labels=tuple(labels),
            speaker=d.utterances[turn].speaker, chat=self.template.chat, utterance=d.utterances[turn].text, **extra)

    def _target(self, emotion: str | None) -> str:
        return self.spelling.get(emotion, emotion) if emotion else ""

    def _demos(self, d: Dialogue, turn: int) -> tuple[Demonstration, ...]:
        return tuple(self.demonstrations.get((d.dataset, d.split, d.dialogue_id, turn), ()))

    def _erc_prompt(self, d: Dialogue, turn: int) -> str:
        return erc_prompt(self.template, d, turn, self.spec.labels, self.spec.window, self._demos(d, turn))

    def erc(self, d: Dialogue, turn: int) -> PromptRecord:
        """Main task; the target is the utterance's emotion, or "" for unlabelled input."""
        return self._record(d, turn, "erc", self._erc_prompt(d, turn), self._target(d.utterances[turn].emotion),
                            self.spec.labels, demonstrations=tuple(_demo_json(x) for x in self._demos(d, turn)))

    def speaker(self, d: Dialogue, turn: int) -> PromptRecord | None:
        """Stage 1: who said the utterance (None when the template has no such task)."""
        if self.template.speaker is None:
            return None
        prompt, candidates = speaker_prompt(self.template, d, turn)
        return self._record(d, turn, "speaker", prompt, d.utterances[turn].speaker, candidates)

    def predict(self, d: Dialogue, turn: int) -> PromptRecord | None:
        """Stage 2 auxiliary: the next speaker's emotion from the history alone (None where there is
        no history, unless the template repeats the ERC prompt there as the released code does)."""
        if self.template.predict is None or (turn == 0 and not self.template.predict_first_turn):
            return None
        prompt = self._erc_prompt(d, 0) if turn == 0 else predict_prompt(self.template, d, turn, self.spec.labels,
                                                                           self.spec.window)
        return self._record(d, turn, "predict", prompt, self._target(d.utterances[turn].emotion), self.spec.labels)

    def dialogue_records(self, d: Dialogue, tasks: Sequence[str], keep=lambda d, turn: True) -> list[PromptRecord]:
        """The dialogue's records of `tasks`, task by task, turns in order; `keep(d, turn)` filters utterances."""
        build = {"erc": self.erc, "speaker": self.speaker, "predict": self.predict}
        out = []
        for task in tasks:
            out += [r for u in d.utterances if keep(d, u.turn) for r in [build[task](d, u.turn)] if r is not None]
        return out


def split_records(dialogues: list[Dialogue], split: str, builder: RecordBuilder,
                  train: TrainingSet | None = None) -> list[PromptRecord]:
    """A split's records, dialogue by dialogue: ERC everywhere; speaker and prediction records too
    in train, for the sampled utterances only; speaker records in dev too, to score the warm-up."""
    tasks = {"train": ("erc", "speaker", "predict"), "dev": ("erc", "speaker")}.get(split, ("erc",))
    keep = train.keeps if split == "train" and train is not None else (lambda d, turn: True)
    out = []
    for d in tqdm(dialogues, desc=f"prompts {split}", unit="dlg", leave=False):
        out += builder.dialogue_records(d, tasks, keep)
    return out
