"""The boundary between `prepare` and everything downstream: one prompt/answer record.

`prepare` writes these as JSONL (train.jsonl, dev.jsonl, test.jsonl); train, eval and predict
read them back with `load_records`, which checks every line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from instructerc.errors import UserError
from instructerc.fileio import iter_jsonl, write_jsonl

TASKS = ("erc", "speaker", "predict")


@dataclass(frozen=True)
class PromptRecord:
    id: str  # unique within a split: "<dataset>/<dialogue_id>/<turn>/<task>"
    dataset: str  # source dataset of the utterance (meld, iemocap, emorynlp, or a user's name)
    label_set: str  # label space of `labels` and `target` (the dataset's own, or "mixed")
    split: str
    dialogue_id: str
    turn: int
    task: str  # one of TASKS
    prompt: str
    target: str  # the answer; "" when unknown (prediction on unlabelled input)
    labels: tuple[str, ...]  # the closed candidate list the prompt states
    speaker: str = ""
    demonstrations: tuple[dict, ...] = field(default_factory=tuple)  # {dialogue_id, turn, emotion, similarity}
    chat: bool = True  # in the model's chat template (when it has one); False: raw text, as the released code
    utterance: str = ""  # the text of utterance `turn` (for context-free baselines and error analysis)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["demonstrations"] = list(self.demonstrations)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PromptRecord":
        d = dict(d)
        d["labels"] = tuple(d["labels"])
        d["demonstrations"] = tuple(d.get("demonstrations", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_REQUIRED = ("id", "dataset", "label_set", "split", "dialogue_id", "turn", "task", "prompt", "target", "labels")


def load_records(path: str | Path, tasks: tuple[str, ...] | None = None) -> list[PromptRecord]:
    """Read a prepared JSONL split, validating each line; keep only `tasks` if given."""
    out = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise UserError(f"record lacks {', '.join(missing)} (was it written by `instructerc prepare`?)", path=path, row=lineno)
        if row["task"] not in TASKS:
            raise UserError(f"unknown task {row['task']!r}", path=path, row=lineno)
        if row["target"] and row["target"] not in row["labels"]:
            raise UserError(f"target {row['target']!r} is not among its labels", path=path, row=lineno)
        if tasks is None or row["task"] in tasks:
            out.append(PromptRecord.from_json(row))
    return out


def load_split(data: str | Path, split: str, tasks: tuple[str, ...]) -> list[PromptRecord]:
    """The `tasks` records of one split of a prepared-data folder; none at all is an error."""
    path = Path(data) / f"{split}.jsonl"
    if not Path(data).is_dir():
        raise UserError("prepared-data folder not found", path=data)
    if not path.is_file():
        raise UserError("file not found (prepare the data with `instructerc prepare`)", path=path)
    records = load_records(path, tasks=tasks)
    if not records:
        raise UserError(f"no {' or '.join(tasks)} records (empty file?)", path=path)
    return records


def save_records(path: str | Path, records: list[PromptRecord]) -> int:
    return write_jsonl(path, (r.to_json() for r in records))
