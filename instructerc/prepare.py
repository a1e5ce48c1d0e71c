"""`instructerc prepare`: a dataset's splits -> instruction records (JSONL) and a manifest.

    read (readers) -> unify labels (mixed) -> sample train (--data-percent)
    -> retrieve demonstrations (--demonstrations K) -> build records (prompts) -> write, atomically

Dev and test get ERC records only; train also gets the speaker-identification records of
stage 1 and the emotion-prediction records of stage 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

from instructerc import __version__
from instructerc.dialogue import Demonstration, Dialogue
from instructerc.errors import UserError
from instructerc.fileio import atomic_path, sha256_file, write_json
from instructerc.labels import LABEL_SETS, LabelSet, label_set, to_unified
from instructerc.prompts import erc_prompt, predict_prompt, speaker_names, speaker_prompt
from instructerc.readers import DEFAULT_FORMAT, FORMATS, SOURCES, SPLITS, custom_labels, read_dataset
from instructerc.records import PromptRecord, save_records

DATASETS = ("meld", "emorynlp", "iemocap", "mixed", "custom")
MIXED = ("meld", "emorynlp", "iemocap")

DemoTable = Mapping[tuple[str, str, str, int], Sequence[Demonstration]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from instructerc import retrieval

    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--raw-dir", metavar="DIR",
                        help="folder holding the dataset's files (or a root with meld/, emorynlp/, cosmic/ "
                             "subfolders, e.g. ../shared/datasets; mixed needs such a root)")
    for split in SPLITS:
        parser.add_argument(f"--{split}", metavar="FILE", help=f"{split} file, overriding the default name in --raw-dir")
    parser.add_argument("--format", choices=FORMATS,
                        help="source format (default: csv for meld/emorynlp, cosmic for iemocap)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced if it holds a previous prepare)")
    parser.add_argument("--window", type=int, default=12, help="history utterances shown before the target (default 12)")
    parser.add_argument("--speaker-mode", choices=("name", "index"), default="name",
                        help="show speakers by name, or as Speaker_0, Speaker_1, ... per dialogue (the paper)")
    parser.add_argument("--data-percent", default="1", metavar="P",
                        help="fraction of training dialogues kept, 0 < P <= 1; for mixed also per dataset: meld=0.5,iemocap=1")
    parser.add_argument("--seed", type=int, default=42, help="seed of the --data-percent sample")
    parser.add_argument("--labels", metavar="NAME|A,B,...",
                        help="custom only: a label set name (meld, iemocap, emorynlp, mixed) or the label words "
                             "(default: the emotions of the training file)")
    parser.add_argument("--tokenizer", metavar="PATH", help="also report prompt lengths in this tokenizer's tokens")
    retrieval.add_arguments(parser)


# ------------------------------------------------------------------------ reading


def read_sources(args) -> tuple[dict[str, list[Dialogue]], list[Path], LabelSet]:
    """The dialogues of every split (in the label space of the output), and the input files."""
    files = {s: getattr(args, s) for s in SPLITS}
    if args.dataset == "mixed":
        if any(files.values()):
            raise UserError("--dataset mixed reads every dataset from --raw-dir; --train/--dev/--test do not apply")
        splits: dict[str, list[Dialogue]] = {s: [] for s in SPLITS}
        inputs = []
        for name in MIXED:
            fmt = args.format if (name, args.format) in SOURCES else DEFAULT_FORMAT[name]
            part, paths = read_dataset(name, fmt, args.raw_dir)
            for s in SPLITS:
                splits[s] += [unify(d) for d in part[s]]
            inputs += paths
        return splits, inputs, label_set("mixed")
    labels = custom_label_set(args.labels) if args.dataset == "custom" else None
    splits, inputs = read_dataset(args.dataset, args.format, args.raw_dir, files, labels)
    if args.dataset != "custom":
        return splits, inputs, label_set(args.dataset)
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
    """A reproducible `percent` of the dialogues (at least one), in their original order.

    Whole dialogues are sampled so that the kept ones keep their context, and retrieval draws
    demonstrations only from what was kept.
    """
    if percent >= 1 or not dialogues:
        return list(dialogues)
    k = max(1, round(len(dialogues) * percent))
    keep = sorted(random.Random(seed).sample(range(len(dialogues)), k))
    return [dialogues[i] for i in keep]


def sample_train(train: list[Dialogue], percents: dict[str, float], seed: int) -> list[Dialogue]:
    """Sample each source dataset's training dialogues by its own percent (ratio mixing)."""
    out = []
    for name, percent in percents.items():
        out += sample_dialogues([d for d in train if d.dataset == name], percent, seed)
    return out


# ------------------------------------------------------------------------ records


def record_id(dialogue: Dialogue, turn: int, task: str) -> str:
    return f"{dialogue.dataset}/{dialogue.dialogue_id}/{turn}/{task}"


def _demo_json(d: Demonstration) -> dict:
    return {"dataset": d.dataset, "dialogue_id": d.dialogue_id, "turn": d.turn, "emotion": d.emotion, "similarity": round(float(d.similarity), 6)}


def erc_records(
    dialogues: Iterable[Dialogue],
    labels: LabelSet,
    window: int = 12,
    speaker_mode: str = "name",
    demonstrations: DemoTable | None = None,
) -> list[PromptRecord]:
    """One ERC record per utterance; the target is its emotion, or "" for unlabelled input.

    `demonstrations` maps (dataset, split, dialogue_id, turn) to that utterance's retrieved
    examples (see retrieval.retrieve).
    """
    out = []
    for d in dialogues:
        names = speaker_names(d, speaker_mode)
        for u in d.utterances:
            demos = tuple((demonstrations or {}).get((d.dataset, d.split, d.dialogue_id, u.turn), ()))
            out.append(PromptRecord(
                id=record_id(d, u.turn, "erc"), dataset=d.dataset, label_set=labels.name, split=d.split,
                dialogue_id=d.dialogue_id, turn=u.turn, task="erc",
                prompt=erc_prompt(d, u.turn, labels.labels, window, demos, speaker_mode),
                target=u.emotion or "", labels=labels.labels, speaker=names[u.speaker],
                demonstrations=tuple(_demo_json(x) for x in demos),
            ))
    return out


def speaker_records(dialogues: Iterable[Dialogue], labels: LabelSet, speaker_mode: str = "name") -> list[PromptRecord]:
    """Stage 1: who said each utterance, from the dialogue's speakers."""
    out = []
    for d in dialogues:
        names = speaker_names(d, speaker_mode)
        for u in d.utterances:
            prompt, candidates = speaker_prompt(d, u.turn, speaker_mode)
            out.append(PromptRecord(
                id=record_id(d, u.turn, "speaker"), dataset=d.dataset, label_set=labels.name, split=d.split,
                dialogue_id=d.dialogue_id, turn=u.turn, task="speaker", prompt=prompt,
                target=names[u.speaker], labels=tuple(candidates), speaker=names[u.speaker],
            ))
    return out


def predict_records(dialogues: Iterable[Dialogue], labels: LabelSet, window: int = 12, speaker_mode: str = "name") -> list[PromptRecord]:
    """Stage 2 auxiliary: the next speaker's emotion from the history alone (turns >= 1)."""
    out = []
    for d in dialogues:
        names = speaker_names(d, speaker_mode)
        for u in d.utterances[1:]:
            out.append(PromptRecord(
                id=record_id(d, u.turn, "predict"), dataset=d.dataset, label_set=labels.name, split=d.split,
                dialogue_id=d.dialogue_id, turn=u.turn, task="predict",
                prompt=predict_prompt(d, u.turn, labels.labels, window, speaker_mode),
                target=u.emotion or "", labels=labels.labels, speaker=names[u.speaker],
            ))
    return out


def split_records(dialogues: list[Dialogue], split: str, labels: LabelSet, window: int, speaker_mode: str,
                  demonstrations: DemoTable | None = None) -> list[PromptRecord]:
    """A split's records, dialogue by dialogue: ERC everywhere, speaker and predict in train."""
    out = []
    for d in tqdm(dialogues, desc=f"prompts {split}", unit="dlg", leave=False):
        out += erc_records([d], labels, window, speaker_mode, demonstrations)
        if split == "train":
            out += speaker_records([d], labels, speaker_mode) + predict_records([d], labels, window, speaker_mode)
    return out


# ------------------------------------------------------------------------ stats and writing


def percentiles(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {}
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": v[-1]}


def token_lengths(records: list[PromptRecord], tokenizer_path: str) -> list[int]:
    from instructerc.models import load_tokenizer, prompt_ids

    tok = load_tokenizer(tokenizer_path)
    return [len(prompt_ids(tok, r.prompt)) for r in tqdm(records, desc="tokens", unit="rec", leave=False)]


def build_manifest(args, inputs: list[Path], labels: LabelSet, records: dict[str, list[PromptRecord]],
                   dialogues: dict[str, list[Dialogue]], percents: dict[str, float], retrieval_info: dict | None) -> dict:
    arguments = {k: v for k, v in vars(args).items() if k not in ("command", "local_rank") and not callable(v)}
    manifest = {
        "instructerc": __version__,
        "command": "prepare",
        "arguments": arguments,
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
        "label_set": labels.name,
        "labels": list(labels.labels),
        "data_percent": percents,
        "dialogues": {s: len(dialogues[s]) for s in SPLITS},
        "counts": {s: dict(Counter(r.task for r in records[s])) for s in SPLITS},
        "label_distribution": {
            s: dict(Counter(r.target for r in records[s] if r.task == "erc").most_common()) for s in SPLITS
        },
        "prompt_chars": {s: percentiles([len(r.prompt) for r in records[s] if r.task == "erc"]) for s in SPLITS},
    }
    if args.tokenizer:
        manifest["prompt_tokens"] = {
            s: percentiles(token_lengths([r for r in records[s] if r.task == "erc"], args.tokenizer)) for s in SPLITS
        }
    if retrieval_info is not None:
        manifest["retrieval"] = retrieval_info
    return manifest


def check_out_dir(out: Path) -> None:
    """Refuse to replace anything but an earlier prepare's output (it is removed wholesale)."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").exists())):
        raise UserError("exists and is not an earlier `instructerc prepare` output; choose another --out", path=out)


def write_output(out: Path, records: dict[str, list[PromptRecord]], manifest: dict) -> None:
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            save_records(tmp / f"{split}.jsonl", records[split])
        write_json(tmp / "manifest.json", manifest)


def summary(out: Path, manifest: dict, seconds: float) -> str:
    lines = [f"prepared {manifest['arguments']['dataset']} -> {out} in {seconds:.1f}s "
             f"(labels: {', '.join(manifest['labels'])})"]
    lines.append(f"{'split':6} {'dialogues':>9} {'erc':>7} {'speaker':>7} {'predict':>7}   prompt chars p50/p90/p99/max")
    for s in SPLITS:
        c, p = manifest["counts"][s], manifest["prompt_chars"][s]
        lines.append(f"{s:6} {manifest['dialogues'][s]:>9,} {c.get('erc', 0):>7,} {c.get('speaker', 0):>7,} "
                     f"{c.get('predict', 0):>7,}   {'/'.join(str(v) for v in p.values())}")
    if "prompt_tokens" in manifest:
        lines.append("prompt tokens p50/p90/p99/max: " + "  ".join(
            f"{s} {'/'.join(str(v) for v in manifest['prompt_tokens'][s].values())}" for s in SPLITS))
    for s in SPLITS:
        dist = manifest["label_distribution"][s]
        total = sum(dist.values()) or 1
        lines.append(f"{s} labels: " + ", ".join(f"{k or '(none)'} {v / total:.1%}" for k, v in dist.items()))
    if "retrieval" in manifest:
        lines.append(f"demonstrations: {manifest['arguments'].get('demonstrations')} per ERC prompt")
    return "\n".join(lines)


# ------------------------------------------------------------------------ the command


def run(args) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    check_out_dir(out)
    if args.window < 0:
        raise UserError("--window must be >= 0")
    if args.labels and args.dataset != "custom":
        raise UserError("--labels applies to --dataset custom only; the other datasets have fixed label sets")

    dialogues, inputs, labels = read_sources(args)
    sources = MIXED if args.dataset == "mixed" else (args.dataset,)
    percents = parse_percent(args.data_percent, sources)
    dialogues["train"] = sample_train(dialogues["train"], percents, args.seed)

    demonstrations, retrieval_info = None, None
    if getattr(args, "demonstrations", 0) > 0:  # retrieval pulls in torch; import it only when asked
        from instructerc import retrieval

        queries = [d for s in SPLITS for d in dialogues[s]]
        result = retrieval.retrieve(dialogues["train"], queries, retrieval.options_from_args(args))
        demonstrations, retrieval_info = result.demonstrations, result.manifest

    records = {s: split_records(dialogues[s], s, labels, args.window, args.speaker_mode, demonstrations) for s in SPLITS}
    manifest = build_manifest(args, inputs, labels, records, dialogues, percents, retrieval_info)
    write_output(out, records, manifest)
    print(summary(out, manifest, time.perf_counter() - start), file=sys.stderr)
    return 0
