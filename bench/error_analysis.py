"""Where the errors are (issue 13): per-class F1 beside reference rows (with each row's bootstrap
interval of weighted-F1), a paired bootstrap of the difference to each reference row whose answers
are at hand, the largest confusions, and a seeded sample of wrong test answers with their prompts,
as one markdown file.

    python bench/error_analysis.py --data DATA --eval RUNS/meld/full/eval \
        --compare tfidf=RUNS/meld/tfidf/eval --compare knn=RUNS/meld/knn/eval \
        --n 20 --out bench/results/errors_meld_full.md

DATA is the prepared folder the row was evaluated on (its test.jsonl holds the prompts); each
--compare is another eval/baseline output folder of the same test split. A folder's answers are its
predictions.jsonl, or the answers.jsonl.gz bench/store_table.py keeps of a stored row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import read_json, read_jsonl, write_text  # noqa: E402
from instructerc.metrics import paired_bootstrap, weighted_f1_interval  # noqa: E402
from instructerc.records import load_records  # noqa: E402


ANSWERS = ("predictions.jsonl", "answers.jsonl.gz")


def read_metrics(folder: Path) -> dict:
    """metrics.json of an `instructerc eval` / `baseline` output folder."""
    return read_json(folder / "metrics.json")


def read_answers(folder: Path) -> dict[str, dict] | None:
    """{id: row with gold and pred} of an output folder, or None when neither answers file is there."""
    for name in ANSWERS:
        if (folder / name).is_file():
            return {row["id"]: row for row in read_jsonl(folder / name)}
    return None


def paired_lines(metrics: dict, answers: dict[str, dict], compare: dict[str, dict | None]) -> list[str]:
    lines, ours = [], our_spelling(metrics)
    for name, other in compare.items():
        if other is None:
            lines.append(f"- {name}: its answers are not at hand ({' or '.join(ANSWERS)}); only the intervals above")
            continue
        if other.keys() != answers.keys():
            raise UserError(f"--compare {name}: its answers are not of the same test utterances as this row's")
        ids = sorted(answers)
        differ = next((i for i in ids if ours(other[i]["gold"]) != answers[i]["gold"]), None)
        if differ is not None:
            raise UserError(f"--compare {name}: gold label of {differ} is {other[differ]['gold']!r}, "
                            f"this row's {answers[differ]['gold']!r}: not the same test labels")
        d = paired_bootstrap([answers[i]["gold"] for i in ids], [answers[i]["pred"] for i in ids],
                             [ours(other[i]["pred"]) for i in ids], metrics["labels"])
        lines.append(f"- this row minus **{name}**: {100 * d['difference']:+.2f} weighted-F1 points, 95% interval "
                     f"{100 * d['low']:+.2f} to {100 * d['high']:+.2f}; this row ahead in {100 * d['a_ahead']:.1f}% "
                     f"of {d['resamples']} resamples of the {d['n']} utterances")
    return lines


def our_spelling(metrics: dict):
    """Maps a label to this row's spelling of it: the paper's released EmoryNLP template (the
    utterance row) writes `Joyful` where the other rows write `joyful`, the same class."""
    spelling = {label.lower(): label for label in metrics["labels"]}
    return lambda label: spelling.get(label.lower(), label)


def per_class_table(metrics: dict, compare: dict[str, dict]) -> list[str]:
    names = ["this row"] + list(compare)
    lines = ["| label | support | " + " | ".join(f"F1 {n}" for n in names) + " | precision | recall |",
             "|---|---:|" + "---:|" * (len(names) + 2)]
    ours = our_spelling(metrics)
    others = [{ours(label): m for label, m in c["per_class"].items()} for c in compare.values()]
    for label, m in metrics["per_class"].items():
        f1s = [m["f1"]] + [other.get(label, {}).get("f1", float("nan")) for other in others]
        lines.append(f"| {label} | {m['support']} | " + " | ".join(f"{100 * f:.1f}" for f in f1s)
                     + f" | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} |")
    heads = [metrics] + list(compare.values())
    lines.append("| **weighted-F1** | | " + " | ".join(f"**{100 * h['weighted_f1']:.2f}**" for h in heads) + " | | |")
    intervals = [weighted_f1_interval(h) for h in heads]
    lines.append("| weighted-F1 95% interval (bootstrap over test utterances) | | "
                 + " | ".join(f"{100 * lo:.2f}-{100 * hi:.2f}" for lo, hi in intervals) + " | | |")
    lines.append("| macro-F1 | | " + " | ".join(f"{100 * h['macro_f1']:.2f}" for h in heads) + " | | |")
    return lines


def top_confusions(metrics: dict, n: int = 6) -> list[str]:
    labels, cm = metrics["labels"], metrics["confusion"]
    cells = sorted(((cm[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
                    if i != j and cm[i][j]), reverse=True)[:n]
    total = sum(map(sum, cm)) - sum(cm[i][i] for i in range(len(labels)))
    return [f"- gold **{g}** answered **{p}**: {c} ({100 * c / total:.1f}% of all errors)" for c, g, p in cells]


def wrong_examples(data: Path, preds: list[dict], n: int, seed: int) -> list[str]:
    records = {r.id: r for r in load_records(data / "test.jsonl", tasks=("erc",))}
    wrong = [p for p in preds if p["pred"] != p["gold"]]
    missing = [p["id"] for p in wrong if p["id"] not in records]
    if missing:
        raise UserError(f"no record {missing[0]!r} of the predictions: not the data of this eval", path=data / "test.jsonl")
    lines = []
    for k, p in enumerate(sorted(random.Random(seed).sample(wrong, min(n, len(wrong))), key=lambda p: p["id"]), 1):
        r = records[p["id"]]
        lines += [f"{k}. `{r.id}` {r.speaker}: \"{r.utterance}\" -- gold **{p['gold']}**, answered **{p['pred']}**",
                  "", "   <details><summary>prompt</summary>", "", "   ```text"]
        lines += ["   " + line for line in r.prompt.splitlines()]
        lines += ["   ```", "", "   </details>", ""]
    return lines


def main() -> int:
    try:
        return report()
    except UserError as e:
        print(f"error_analysis: error: {e}", file=sys.stderr)
        return 2


def report() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="prepared data of the evaluated row")
    ap.add_argument("--eval", required=True, type=Path, help="the row's eval output folder")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                    help="another eval/baseline output of the same test split, for the per-class table")
    ap.add_argument("--n", type=int, default=20, help="wrong answers shown")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample of wrong answers")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", required=True, type=Path, help="markdown file")
    args = ap.parse_args()

    metrics, answers = read_metrics(args.eval), read_answers(args.eval)
    if answers is None:
        raise UserError(f"no answers: neither {' nor '.join(ANSWERS)} is there", path=args.eval)
    preds = list(answers.values())
    folders = {name: Path(folder) for name, _, folder in (c.partition("=") for c in args.compare)}
    compare = {name: read_metrics(folder) for name, folder in folders.items()}
    n_wrong = sum(p["pred"] != p["gold"] for p in preds)
    # relative to the report, so it still points at the picture once both are stored in the repository
    picture = os.path.relpath(args.eval / "confusion.png", args.out.resolve().parent)
    lines = [f"# {args.title or args.eval}", "",
             f"{len(preds)} test utterances, {n_wrong} wrong; confusion matrix: `{picture}`.", "",
             "## Per-class F1", ""] + per_class_table(metrics, compare)
    if compare:
        lines += ["", "## Paired bootstrap against each compared row", ""]
        lines += paired_lines(metrics, answers, {name: read_answers(folder) for name, folder in folders.items()})
    lines += ["", "## Largest confusions", ""] + top_confusions(metrics)
    lines += ["", f"## {min(args.n, n_wrong)} wrong answers (seeded sample, seed {args.seed})", ""]
    lines += wrong_examples(args.data, preds, args.n, args.seed)
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}: {n_wrong} of {len(preds)} wrong, {min(args.n, n_wrong)} shown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
