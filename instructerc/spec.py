"""What a prepared-data folder was made from, and how its prompts were written.

`prepare` writes two objects into manifest.json: the `source` (dataset, format, files) and the
`prompt_spec` (everything that decides a record's text). `train`, `eval` and `predict` read
them back through `read_prepared`, so a prompt built for prediction is the prompt of training.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from instructerc.errors import UserError
from instructerc.prompts import TEMPLATES

MANIFEST_VERSION = 2
DEFAULT_RETRIEVER = "all-MiniLM-L6-v2"
SPEAKER_MODES = ("name", "index")
SAMPLE_UNITS = ("dialogue", "utterance")


@dataclass(frozen=True)
class PromptSpec:
    template: str  # a name in prompts.TEMPLATES
    label_set: str
    labels: tuple[str, ...]  # as the prompts spell them, in the label set's order
    window: int = 12  # history utterances before the target
    speaker_mode: str = "name"  # name: as the source names them | index: Speaker_i by first appearance
    demonstrations: int = 0  # retrieved examples per ERC prompt
    retriever: str = DEFAULT_RETRIEVER
    max_per_label: int = 0
    min_similarity: float | None = None
    data_percent: dict[str, float] = field(default_factory=dict)  # per source dataset; 1 = all
    sample_by: str = "dialogue"  # what --data-percent draws: whole dialogues | utterance records
    seed: int = 42

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise UserError(f"unknown template {self.template!r}; choose one of: {', '.join(TEMPLATES)}")
        if self.speaker_mode not in SPEAKER_MODES:
            raise UserError(f"speaker mode must be name or index, got {self.speaker_mode!r}")
        if self.sample_by not in SAMPLE_UNITS:
            raise UserError(f"--sample-by must be dialogue or utterance, got {self.sample_by!r}")
        if self.window < 0:
            raise UserError("--window must be >= 0")

    @property
    def speaker_candidates(self) -> str:
        """The speaker task's candidate rule: a fixed Speaker_0..n list, or the dialogue's speakers."""
        return "dialogue" if TEMPLATES[self.template].speaker_candidates is None else "fixed"

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "labels": list(self.labels), "speaker_candidates": self.speaker_candidates}

    @classmethod
    def from_json(cls, d: dict) -> "PromptSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if k == "labels" else v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Source:
    """Where the dialogues came from: enough to read the same training dialogues again."""

    dataset: str
    format: str | None = None
    raw_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # split -> file, overriding raw_dir's default names
    labels: str | None = None  # custom data: a label set name or the label words


@dataclass(frozen=True)
class Prepared:
    spec: PromptSpec
    source: Source
    inputs: tuple[tuple[str, str], ...]  # (path, sha256) of every file read
    manifest: Path


def manifest_head(spec: PromptSpec, source: Source, inputs: list[Path]) -> dict:
    """The manifest entries `read_prepared` reads back (prepare adds its statistics after them)."""
    from instructerc.fileio import sha256_file

    return {
        "manifest_version": MANIFEST_VERSION,
        "prompt_spec": spec.to_json(),
        "source": dataclasses.asdict(source),
        "inputs": [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in inputs],
        "label_set": spec.label_set,
        "labels": list(spec.labels),
    }


def read_prepared(data: str | Path) -> Prepared:
    """The spec and source of a prepared-data folder; a one-line error for anything else."""
    path = Path(data) / "manifest.json"
    if not Path(data).is_dir():
        raise UserError("prepared-data folder not found", path=data)
    if not path.is_file():
        raise UserError("no manifest.json: not a folder written by `instructerc prepare`", path=data)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not valid JSON ({e})", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise UserError("written by an older instructerc (no prompt spec); run `instructerc prepare` again", path=path)
    try:
        return Prepared(PromptSpec.from_json(manifest["prompt_spec"]), Source(**manifest["source"]),
                        tuple((i["path"], i["sha256"]) for i in manifest["inputs"]), path)
    except (KeyError, TypeError) as e:
        raise UserError(f"damaged manifest ({type(e).__name__}: {e}); run `instructerc prepare` again", path=path) from None
