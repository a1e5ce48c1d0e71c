"""`instructerc predict`: label the utterances of a user's own conversations.

    read FILE (bring-your-own CSV/JSONL: dialogue_id, speaker, utterance[, emotion])
    -> the prompt settings of training (prepared data's manifest) -> retrieve demonstrations from
       the same training dialogues -> ERC records -> decode -> OUT (.jsonl or .csv), atomically

Prompts are built exactly as for training: window, speaker mode, label set and retrieval options
come from the manifest of the prepared data the adapter was trained on (`--data DIR`, or the
`data` of the adapter's run config). Without a manifest (zero-shot), from --labels/--window/
--speaker-mode, and without demonstrations.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from instructerc.decode import Prediction, add_decoding_arguments, decode_records, decoding_options, load_for_decoding
from instructerc.dialogue import Dialogue
from instructerc.errors import UserError
from instructerc.fileio import atomic_path, sha256_file, write_jsonl
from instructerc.labels import LABEL_SETS, LabelSet
from instructerc.records import PromptRecord
from instructerc.runs import check_adapter, run_config

DEFAULT_WINDOW, DEFAULT_SPEAKER_MODE = 12, "name"


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
    parser.add_argument("--window", type=int, help=f"without prepared data: history window (default {DEFAULT_WINDOW})")
    parser.add_argument("--speaker-mode", choices=("name", "index"),
                        help=f"without prepared data: speaker naming (default {DEFAULT_SPEAKER_MODE})")


# ------------------------------------------------------------------------ settings


def find_manifest(data: str | None, adapter: str | None) -> Path | None:
    if data is not None:
        manifest = Path(data) / "manifest.json"
        if not manifest.is_file():
            raise UserError("no manifest.json: not a folder written by `instructerc prepare`", path=data)
        return manifest
    cfg = run_config(Path(adapter)) if adapter else None
    if cfg and cfg.get("data") and (Path(cfg["data"]) / "manifest.json").is_file():
        return Path(cfg["data"]) / "manifest.json"
    return None


def label_set_of(name: str, labels) -> LabelSet:
    known = LABEL_SETS.get(name)
    return known if known is not None and known.labels == tuple(labels) else LabelSet(name, tuple(labels))


def settings(args, manifest: dict | None) -> tuple[LabelSet, int, str]:
    """Label set, window and speaker mode: the manifest's, or the flags' (never both disagreeing)."""
    if manifest is None:
        from instructerc.prepare import custom_label_set

        if not args.labels:
            raise UserError("give --data DIR (the prepared data of training) or --labels NAME|A,B,... for zero-shot")
        window = DEFAULT_WINDOW if args.window is None else args.window
        return custom_label_set(args.labels), window, args.speaker_mode or DEFAULT_SPEAKER_MODE
    prepared = manifest["arguments"]
    for flag, value in (("window", args.window), ("speaker_mode", args.speaker_mode)):
        if value is not None and value != prepared[flag]:
            raise UserError(f"--{flag.replace('_', '-')} {value} differs from the prepared data's {prepared[flag]}; "
                            "prompts must be built as in training (drop the flag)")
    labels = label_set_of(manifest["label_set"], manifest["labels"])
    if args.labels and args.labels not in (labels.name, ",".join(labels.labels)):
        raise UserError(f"--labels {args.labels} differs from the prepared data's {labels.name} "
                        f"<{', '.join(labels.labels)}>")
    return labels, prepared["window"], prepared["speaker_mode"]


def training_dialogues(manifest: dict, manifest_path: Path) -> list[Dialogue]:
    """The training dialogues the prepared data's demonstrations came from, read and sampled again."""
    from instructerc.prepare import read_sources, sample_train

    for item in manifest["inputs"]:
        path = Path(item["path"])
        if not path.is_file() or sha256_file(path) != item["sha256"]:
            raise UserError(f"{path} is missing or changed since `prepare` (sha256 differs); demonstrations "
                            "must come from the same training data", path=manifest_path)
    args = argparse.Namespace(**manifest["arguments"])
    dialogues, _, _ = read_sources(args)
    return sample_train(dialogues["train"], manifest["data_percent"], args.seed)


def build_records(dialogues: list[Dialogue], labels: LabelSet, window: int, speaker_mode: str,
                  manifest: dict | None, manifest_path: Path | None) -> list[PromptRecord]:
    from instructerc.prepare import erc_records

    demonstrations = None
    if manifest is not None and manifest["arguments"].get("demonstrations", 0) > 0:
        from instructerc import retrieval

        opts = retrieval.options_from_args(argparse.Namespace(**manifest["arguments"]))
        demonstrations = retrieval.retrieve(training_dialogues(manifest, manifest_path), dialogues, opts).demonstrations
    return erc_records(dialogues, labels, window, speaker_mode, demonstrations)


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


def write_rows(path: Path, rows: list[dict], labels: LabelSet) -> None:
    if path.suffix.lower() == ".jsonl":
        write_jsonl(path, rows)
        return
    base = [k for k in rows[0] if k != "probs"]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=base + [f"p_{lab}" for lab in labels.labels])
        writer.writeheader()
        for row in rows:
            flat = {k: row.get(k, "") for k in base}
            flat.update({f"p_{lab}": row["probs"].get(lab, "") for lab in labels.labels})
            writer.writerow(flat)


def run(args) -> int:
    from instructerc.readers import read_custom

    out = Path(args.out)
    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError("--out must end in .jsonl or .csv", path=out)
    if args.adapter is not None and not Path(args.adapter).is_dir():
        raise UserError("adapter folder not found", path=args.adapter)
    manifest_path = find_manifest(args.data, args.adapter)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path else None
    labels, window, speaker_mode = settings(args, manifest)
    if window < 0:
        raise UserError("--window must be >= 0")
    check_adapter(args.adapter, labels.labels)

    dialogues = read_custom(args.input, "predict", dataset="custom")
    if not dialogues:
        raise UserError("no utterances (empty file?)", path=args.input)
    records = build_records(dialogues, labels, window, speaker_mode, manifest, manifest_path)
    model, tokenizer = load_for_decoding(args.model, args.adapter, args.dtype)
    preds = decode_records(model, tokenizer, records, **decoding_options(args))
    write_rows(out, output_rows(dialogues, records, preds), labels)

    counts: dict[str, int] = {}
    for p in preds:
        counts[p.pred] = counts.get(p.pred, 0) + 1
    print(f"labelled {len(preds)} utterances in {len(dialogues)} dialogues -> {out}")
    print("  " + ", ".join(f"{lab} {counts.get(lab, 0)}" for lab in labels.labels))
    return 0
