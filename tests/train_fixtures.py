"""Small prepared-data folders for the trainer's tests: {train,dev}.jsonl of PromptRecords."""

from __future__ import annotations

import random
from pathlib import Path

from instructerc.labels import LABEL_SETS
from instructerc.fileio import write_json
from instructerc.records import PromptRecord, save_records
from instructerc.spec import PromptSpec, Source, manifest_head

LABELS = LABEL_SETS["meld"].labels
SPEAKERS = ("Ross", "Rachel", "Monica")


def record(task: str, i: int, target: str, labels, split: str = "train") -> PromptRecord:
    words = " ".join(random.Random(i).choice(("oh", "okay", "great", "really", "why", "no")) for _ in range(3 + i % 7))
    prompts = {
        "erc": f"Please select the emotional label of <Ross: \"{words}\"> from <{', '.join(labels)}>:",
        "predict": f"Based on the above historical utterances, the next utterance is spoken by <Ross>. "
                   f"Please predict the emotional state of <Ross> from <{', '.join(labels)}>:",
        "speaker": f"Identify who speaks the following utterance: \"{words}\" from <{', '.join(labels)}>:",
    }
    return PromptRecord(id=f"meld/{i // 4}/{i % 4}/{task}", dataset="meld", label_set="meld", split=split,
                        dialogue_id=str(i // 4), turn=i % 4, task=task, prompt=prompts[task], target=target,
                        labels=tuple(labels), speaker="Ross")


def write_data(out: Path, n: int = 12, dev: int = 6, tasks=("erc", "speaker", "predict"),
               dev_tasks=("erc", "speaker")) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        for task in tasks:
            labels = SPEAKERS if task == "speaker" else LABELS
            rows.append(record(task, i, labels[i % len(labels)], labels))
    save_records(out / "train.jsonl", rows)
    save_records(out / "dev.jsonl", [record(task, i, labels[i % len(labels)], labels, "dev") for task in dev_tasks
                                     for labels in [SPEAKERS if task == "speaker" else LABELS] for i in range(dev)])
    write_manifest(out, "meld", LABELS)
    return out


def write_manifest(out: Path, label_set: str, labels) -> None:
    """The manifest entries the commands read back, for a folder of hand-made records."""
    spec = PromptSpec(template="default", label_set=label_set, labels=tuple(labels))
    write_json(out / "manifest.json", manifest_head(spec, Source(label_set), []))
