"""`instructerc predict`: label the utterances of a user's own conversations.

    read FILE (bring-your-own CSV/JSONL: dialogue_id, speaker, utterance[, emotion])
    -> the prompt settings of training (prepared data's manifest) -> in chunks of whole dialogues:
       retrieve demonstrations from the same training dialogues -> ERC records -> decode -> rows
    -> OUT (.jsonl or .csv), written as chunks finish into a temporary twin renamed at the end

Prompts are built exactly as for training, by the same library code (build.py): the prompt spec
(template, window, speaker naming, labels, retrieval) is the one of the prepared data the adapter
was trained on (`--data DIR`, or the `data` of the adapter's run config). Without prepared data
(zero-shot), from --labels/--template/--window/--speaker-mode, and without demonstrations.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from instructerc.build import (RecordBuilder, TrainingSet, canonical_label_set, custom_label_set, name_speakers,
                               read_sources, retrieve_demonstrations, sample_train, split_records)
from instructerc.decode import Prediction, add_decoding_arguments, decode_records, decoding_options, load_for_decoding
from instructerc.dialogue import Dialogue, index_speakers
from instructerc.errors import UserError
from instructerc.export import check_exported, exported_record
from instructerc.fileio import atomic_path, sha256_file
from instructerc.prompts import TEMPLATES, template
from instructerc.records import PromptRecord
from instructerc.runs import check_adapter, run_config
from instructerc.spec import Prepared, PromptSpec, read_prepared

DEFAULT_TEMPLATE, DEFAULT_WINDOW, DEFAULT_SPEAKER_MODE = "default", 12, "name"
# Dialogues are labelled and written about this many utterances at a time: memory stays bounded by
# the chunk (its prompts and token ids), not by the file.
CHUNK_UTTERANCES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="your conversations: CSV or JSONL with dialogue_id, speaker, utterance[, emotion][, turn]")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .jsonl or .csv")
    add_decoding_arguments(parser)
    parser.add_argument("--data", metavar="DIR",
                        help="the prepared data the adapter was trained on: its manifest gives the prompt settings "
                             "and its training dialogues the demonstrations (default: the adapter run's data)")
    parser.add_argument("--labels", metavar="NAME|A,B,...",
                        help="without prepared data: a label set (meld, iemocap, emorynlp, mixed) or label words")
    parser.add_argument("--template", choices=tuple(TEMPLATES),
                        help=f"without prepared data: prompt wording (default {DEFAULT_TEMPLATE})")
    parser.add_argument("--window", type=int, help=f"without prepared data: history window (default {DEFAULT_WINDOW})")
    parser.add_argument("--speaker-mode", choices=("name", "index"),
                        help=f"without prepared data: speaker naming (default {DEFAULT_SPEAKER_MODE})")


# ------------------------------------------------------------------------ settings


def find_prepared(data: str | None, adapter: str | None, model: str | None = None) -> Prepared | None:
    """The prepared data of training: --data, else the adapter run's `data`, else the `data` an
    exported model records (None: zero-shot)."""
    if data is not None:
        return read_prepared(data)
    cfg = run_config(Path(adapter)) if adapter else (exported_record(model) if model else None)
    if cfg and cfg.get("data") and (Path(cfg["data"]) / "manifest.json").is_file():
        return read_prepared(cfg["data"])
    return None


def settings(args, prepared: Prepared | None) -> PromptSpec:
    """The prompt spec: the prepared data's, or (zero-shot) the flags' -- never both disagreeing."""
    if prepared is None:
        labels = custom_label_set(args.labels)
        if labels is None:
            raise UserError("give --data DIR (the prepared data of training) or --labels NAME|A,B,... for zero-shot")
        name = args.template or DEFAULT_TEMPLATE
        return PromptSpec(template=name, label_set=labels.name, labels=template(name).labels(labels.name, labels.labels),
                          window=DEFAULT_WINDOW if args.window is None else args.window,
                          speaker_mode=args.speaker_mode or DEFAULT_SPEAKER_MODE)
    spec = prepared.spec
    for flag, value in (("template", args.template), ("window", args.window), ("speaker_mode", args.speaker_mode)):
        if value is not None and value != getattr(spec, flag):
            raise UserError(f"--{flag.replace('_', '-')} {value} differs from the prepared data's {getattr(spec, flag)}; "
                            "prompts must be built as in training (drop the flag)")
    if args.labels and args.labels not in (spec.label_set, ",".join(spec.labels)):
        raise UserError(f"--labels {args.labels} differs from the prepared data's {spec.label_set} <{', '.join(spec.labels)}>")
    return spec


def training_set(prepared: Prepared) -> TrainingSet:
    """The training dialogues the prepared data's demonstrations came from, read and sampled again."""
    for path, sha in prepared.inputs:
        if not Path(path).is_file():
            raise UserError(f"{path}, an input of `prepare`, is missing; demonstrations come from the training "
                            "data it read", path=prepared.manifest)
        if sha256_file(path) != sha:
            raise UserError(f"{path} changed since `prepare` (sha256 differs); demonstrations must come from the "
                            "same training data", path=prepared.manifest)
    dialogues, _, _ = read_sources(prepared.source)
    return sample_train(name_speakers(dialogues["train"], prepared.spec), prepared.spec)


def demonstration_pool(prepared: Prepared | None, spec: PromptSpec) -> TrainingSet | None:
    """The training dialogues demonstrations are drawn from, when the prompts have any."""
    return training_set(prepared) if prepared is not None and spec.demonstrations > 0 else None


def build_records(dialogues: list[Dialogue], spec: PromptSpec, training: TrainingSet | None) -> list[PromptRecord]:
    """ERC records of the user's dialogues, built by the library code `prepare` uses."""
    if template(spec.template).needs_speaker_index:  # a user's file has names: number them by first appearance
        dialogues = [index_speakers(d) for d in dialogues]
    dialogues = name_speakers(dialogues, spec)
    demonstrations = None
    if training is not None:
        demonstrations, _ = retrieve_demonstrations(training, dialogues, spec)
    return split_records(dialogues, "predict", RecordBuilder(spec, canonical_label_set(spec), demonstrations))


def chunks(dialogues: list[Dialogue], utterances: int) -> Iterator[list[Dialogue]]:
    """Whole dialogues, about `utterances` at a time: what is labelled and written before the next."""
    chunk, size = [], 0
    for d in dialogues:
        chunk.append(d)
        size += len(d.utterances)
        if size >= utterances:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# ------------------------------------------------------------------------ output


def output_rows(dialogues: list[Dialogue], records: list[PromptRecord], preds: list[Prediction]) -> list[dict]:
    utterances = {(d.dialogue_id, u.turn): u for d in dialogues for u in d.utterances}
    rows = []
    for rec, pred in zip(records, preds):
        u = utterances[(rec.dialogue_id, rec.turn)]
        row = {"dialogue_id": rec.dialogue_id, "turn": rec.turn, "speaker": u.speaker, "utterance": u.text,
               "emotion": pred.pred, "probs": pred.probs}
        if pred.text is not None:
            row["generated"] = pred.text
        if u.emotion is not None:
            row["given_emotion"] = u.emotion
        rows.append(row)
    return rows


@contextlib.contextmanager
def row_writer(path: Path, labels: Sequence[str], generated: bool, given: bool) -> Iterator[Callable[[list[dict]], None]]:
    """A function that appends rows to OUT's temporary twin; OUT appears, whole, when the block ends
    without an error. JSONL rows as they are; CSV flattens the probabilities into p_<label> columns."""
    csv_out = path.suffix.lower() == ".csv"
    fields = ["dialogue_id", "turn", "speaker", "utterance", "emotion"] + ["generated"] * generated + ["given_emotion"] * given
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + [f"p_{lab}" for lab in labels]) if csv_out else None
        if writer:
            writer.writeheader()

        def write(rows: list[dict]) -> None:
            for row in rows:
                if writer:
                    writer.writerow({**{k: row.get(k, "") for k in fields},
                                     **{f"p_{lab}": row["probs"].get(lab, "") for lab in labels}})
                else:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()

        yield write


def run(args) -> int:
    from instructerc.readers import read_custom

    out = Path(args.out)
    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError("--out must end in .jsonl or .csv", path=out)
    if args.adapter is not None and not Path(args.adapter).is_dir():
        raise UserError("adapter folder not found", path=args.adapter)
    prepared = find_prepared(args.data, args.adapter, args.model)
    spec = settings(args, prepared)
    check_adapter(args.adapter, spec.labels)
    check_exported(args.model, spec.labels)

    dialogues = read_custom(args.input, "predict", dataset="custom")
    if not dialogues:
        raise UserError("no utterances (empty file?)", path=args.input)
    training = demonstration_pool(prepared, spec)  # before the model loads: a changed input fails at once
    model, tokenizer = load_for_decoding(args.model, args.adapter, args.dtype)
    total = sum(len(d.utterances) for d in dialogues)
    given = any(u.emotion is not None for d in dialogues for u in d.utterances)
    counts: Counter = Counter()
    with row_writer(out, spec.labels, args.decode == "generate", given) as write, \
            tqdm(total=total, desc="labelling", unit="utt") as bar:
        for chunk in chunks(dialogues, CHUNK_UTTERANCES):
            records = build_records(chunk, spec, training)
            preds = decode_records(model, tokenizer, records, progress=False, **decoding_options(args))
            write(output_rows(chunk, records, preds))
            counts.update(p.pred for p in preds)
            bar.update(len(preds))
    print(f"labelled {total} utterances in {len(dialogues)} dialogues -> {out}")
    print("  " + ", ".join(f"{lab} {counts.get(lab, 0)}" for lab in spec.labels))
    return 0
