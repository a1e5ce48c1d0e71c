"""`instructerc prepare`: a dataset's splits -> instruction records (JSONL) and a manifest.

The options become a `Source` and a `PromptSpec` (spec.py); building the records is the
library's (build.py): read -> unify labels (mixed) -> sample train (--data-percent) -> retrieve
demonstrations (--demonstrations K) -> records -> write, atomically.

Test gets ERC records only; train also gets the speaker-identification records of stage 1 and
the emotion-prediction records of stage 2, and dev the speaker records that score stage 1 (where
the template has those tasks).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from instructerc import __version__
from instructerc.build import (DATASETS, MIXED, RecordBuilder, name_speakers, parse_percent,
                               read_sources, retrieve_demonstrations, sample_train, split_records)
from instructerc.dialogue import Dialogue
from instructerc.errors import UserError
from instructerc.fileio import atomic_path, write_json
from instructerc.labels import LabelSet
from instructerc.prompts import TEMPLATES, template
from instructerc.readers import FORMATS, SPLITS
from instructerc.records import PromptRecord, save_records
from instructerc.spec import SAMPLE_UNITS, PromptSpec, Source, manifest_head


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
    parser.add_argument("--template", default="default", metavar="NAME",
                        help="prompt wording: " + "; ".join(f"{t.name}: {t.description}" for t in TEMPLATES.values())
                             + " (default: default)")
    parser.add_argument("--window", type=int, default=12, help="history utterances shown before the target (default 12)")
    parser.add_argument("--speaker-mode", choices=("name", "index"), default="name",
                        help="show speakers as the source names them, or as Speaker_0, Speaker_1, ... by first "
                             "appearance in each dialogue")
    parser.add_argument("--data-percent", default="1", metavar="P",
                        help="fraction of the training set kept, 0 < P <= 1; for mixed also per dataset: meld=0.5,iemocap=1")
    parser.add_argument("--sample-by", choices=SAMPLE_UNITS, default="dialogue",
                        help="what --data-percent draws: whole dialogues (default), or utterance records as the "
                             "released code (and the paper's data-scaling table) did; every dialogue then stays as context")
    parser.add_argument("--seed", type=int, default=42, help="seed of the --data-percent sample")
    parser.add_argument("--labels", metavar="NAME|A,B,...",
                        help="custom only: a label set name (meld, iemocap, emorynlp, mixed) or the label words "
                             "(default: the emotions of the training file)")
    parser.add_argument("--tokenizer", metavar="PATH", help="also report prompt lengths in this tokenizer's tokens")
    retrieval.add_arguments(parser)


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
    return [len(prompt_ids(tok, r.prompt, r.chat)) for r in tqdm(records, desc="tokens", unit="rec", leave=False)]


def source_of(args) -> Source:
    """The source, its paths absolute: `predict` reads the training dialogues again from any folder."""
    absolute = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
    return Source(args.dataset, args.format, absolute(args.raw_dir),
                  {s: absolute(getattr(args, s)) for s in SPLITS if getattr(args, s)}, args.labels)


def spec_of(args, labels: LabelSet) -> PromptSpec:
    sources = MIXED if args.dataset == "mixed" else (args.dataset,)
    return PromptSpec(
        template=args.template, label_set=labels.name, labels=template(args.template).labels(labels.name, labels.labels),
        window=args.window, speaker_mode=args.speaker_mode, demonstrations=args.demonstrations,
        retriever=args.retriever, max_per_label=args.max_per_label, min_similarity=args.min_similarity,
        data_percent=parse_percent(args.data_percent, sources), sample_by=args.sample_by, seed=args.seed,
    )


def build_manifest(args, spec: PromptSpec, source: Source, inputs: list[Path], records: dict[str, list[PromptRecord]],
                   dialogues: dict[str, list[Dialogue]], retrieval_info: dict | None) -> dict:
    arguments = {k: v for k, v in vars(args).items() if k not in ("command", "local_rank") and not callable(v)}
    manifest = {
        "instructerc": __version__,
        "command": "prepare",
        **manifest_head(spec, source, inputs),
        "arguments": arguments,  # for the record: what is read back is the spec and the source
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
    spec = manifest["prompt_spec"]
    lines = [f"prepared {manifest['source']['dataset']} -> {out} in {seconds:.1f}s "
             f"(template {spec['template']}, labels: {', '.join(manifest['labels'])})"]
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
        lines.append(f"demonstrations: {spec['demonstrations']} per ERC prompt")
    return "\n".join(lines)


# ------------------------------------------------------------------------ the command


def run(args) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    check_out_dir(out)
    template(args.template)
    if args.labels and args.dataset != "custom":
        raise UserError("--labels applies to --dataset custom only; the other datasets have fixed label sets")

    source = source_of(args)
    dialogues, inputs, labels = read_sources(source)
    spec = spec_of(args, labels)
    dialogues = {s: name_speakers(dialogues[s], spec, where=inputs[0]) for s in SPLITS}
    train = sample_train(dialogues["train"], spec)
    dialogues["train"] = train.dialogues
    queries = [d for s in SPLITS for d in dialogues[s]]
    demonstrations, retrieval_info = retrieve_demonstrations(
        train, queries, spec, cache_dir=None if args.no_embedding_cache else args.embedding_cache,
        batch_size=args.embedding_batch_size)

    builder = RecordBuilder(spec, labels, demonstrations)
    records = {s: split_records(dialogues[s], s, builder, train) for s in SPLITS}
    manifest = build_manifest(args, spec, source, inputs, records, dialogues, retrieval_info)
    write_output(out, records, manifest)
    print(summary(out, manifest, time.perf_counter() - start), file=sys.stderr)
    return 0
