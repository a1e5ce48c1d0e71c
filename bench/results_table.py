"""A markdown table of stored eval/baseline outputs: one row per method, columns per dataset.

    python bench/results_table.py bench/results/full_baselines/{meld,iemocap,emorynlp}_{majority,tfidf,knn}.json
    python bench/results_table.py bench/results/full_table/*_1/*/eval/metrics.json
    python bench/results_table.py bench/results/full_table/*_1/*/eval/metrics.json --minus full \
        --reference roberta-base=meld:63.5,iemocap:62.8,emorynlp:34.4

A file is DATASET_ROW.json, or STUDY/ROW/eval/metrics.json in a stored study (bench/store_table.py),
STUDY being DATASET_FRACTION (fraction 1 is named by the dataset alone). A cell is test weighted-F1
(accuracy, macro-F1), and what the row chose on dev when it chose something. Rows of stored studies
come in the order they ran (the first study's first); rows trained with several seeds (ROW and
ROW@seedN) share one cell: the mean weighted-F1, then each seed's.

With --minus ROW it prints gaps instead: ROW's mean test weighted-F1 minus every other row's (and
each --reference, a published number), in points; where either side has several seeds, each seed
pair's difference too; and the seed spread (largest minus smallest) of every row trained with several.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import read_json  # noqa: E402


def dataset_and_row(path: Path) -> tuple[str, str]:
    if path.name == "metrics.json":
        if len(path.parents) < 4:
            raise UserError("a metrics.json must lie in STUDY/ROW/eval/ (or be named DATASET_ROW.json)", path=path)
        study, row = path.parents[2].name, path.parents[1].name
        dataset, _, fraction = study.rpartition("_")
        return (dataset if fraction == "1" else study), row
    dataset, _, row = path.stem.partition("_")
    return dataset, row


def cell(runs: list[dict]) -> str:
    if len(runs) > 1:
        f1 = [100 * m["weighted_f1"] for m in runs]
        return (f"{statistics.mean(f1):.2f} ({' / '.join(f'{v:.2f}' for v in f1)}; {len(runs)} seeds)")
    m = runs[0]
    chosen = {k: v for k, v in m.get("run", {}).get("chosen_on_dev", {}).items() if k != "dev_weighted_f1"}
    note = f"; {', '.join(f'{k}={v:g}' for k, v in chosen.items())}" if chosen else ""
    return f"{m['weighted_f1'] * 100:.2f} ({m['accuracy'] * 100:.2f}, {m['macro_f1'] * 100:.2f}{note})"


def read_metrics(path: Path) -> dict:
    m = read_json(path)
    if not isinstance(m, dict) or not {"weighted_f1", "accuracy", "macro_f1"} <= set(m):
        raise UserError("not an eval/baseline metrics.json (no weighted_f1, accuracy, macro_f1)", path=path)
    return m


def load(paths: list[str]) -> tuple[dict[str, dict[str, list[dict]]], list[str]]:
    """Every row's runs per dataset (one per seed), rows of stored studies in the order they ran."""
    runs: dict[str, dict[str, list[dict]]] = {}
    datasets: list[str] = []
    for path in map(Path, paths):
        metrics = read_metrics(path)
        dataset, row = dataset_and_row(path)
        runs.setdefault(row.split("@")[0], {}).setdefault(dataset, []).append(metrics)
        datasets += [dataset] if dataset not in datasets else []
    order: dict[str, int] = {}  # rows of stored studies in the order they ran (full_table.sh: order of value)
    studies = dict.fromkeys(Path(p).parents[2] / "results.json" for p in paths if Path(p).name == "metrics.json")
    for results in studies:  # each study's results.json read once
        if results.exists():
            for name in read_json(results):
                order.setdefault(name.split("@")[0], len(order))
    return dict(sorted(runs.items(), key=lambda kv: order.get(kv[0], len(order)))), datasets


def markdown(head: str, datasets: list[str], rows: dict[str, list[str]]) -> None:
    print(f"| {head} | " + " | ".join(datasets) + " |")
    print("|---|" + "---:|" * len(datasets))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def gap(ours: list[float], theirs: list[float]) -> str:
    text = f"{statistics.mean(ours) - statistics.mean(theirs):+.2f}"
    if len(ours) * len(theirs) > 1:
        text += f" (pairs {' / '.join(f'{a - b:+.2f}' for a in ours for b in theirs)})"
    return text


def gaps(runs: dict[str, dict[str, list[dict]]], datasets: list[str], minus: str,
         references: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    if minus not in runs:
        raise UserError(f"--minus {minus}: no such row among the files given (rows: {', '.join(runs)})")
    f1 = {row: {d: [100 * m["weighted_f1"] for m in by[d]] for d in by} for row, by in runs.items()}
    f1 |= {name: {d: [v] for d, v in values.items()} for name, values in references.items()}
    ours = f1.pop(minus)
    rows = {row: [gap(ours[d], by[d]) if d in ours and d in by else "" for d in datasets] for row, by in f1.items()}
    for row, by in {minus: ours, **f1}.items():
        if any(len(v) > 1 for v in by.values()):
            rows[f"seed spread: {row}"] = [f"{max(by[d]) - min(by[d]):.2f}" if len(by.get(d, [])) > 1
                                           else "one seed" if d in by else "" for d in datasets]
    return rows


def reference(text: str) -> tuple[str, dict[str, float]]:
    """NAME=DATASET:F1,... as --reference gives it."""
    name, _, values = text.partition("=")
    try:
        return name, {d: float(v) for d, _, v in (item.partition(":") for item in values.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DATASET:F1,DATASET:F1") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="results_table", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="eval/baseline metrics.json files")
    parser.add_argument("--minus", metavar="ROW", help="print ROW minus every other row instead of the table")
    parser.add_argument("--reference", type=reference, action="append", default=[],
                        metavar="NAME=DATASET:F1,...", help="a published weighted-F1 to subtract from (with --minus)")
    args = parser.parse_args(argv)
    if args.reference and not args.minus:
        parser.error("--reference needs --minus ROW (a published number is only shown as a gap)")
    try:
        runs, datasets = load(args.paths)
        if args.minus:
            markdown(f"{args.minus} minus", datasets, gaps(runs, datasets, args.minus, dict(args.reference)))
        else:
            markdown("row", datasets, {row: [cell(by[d]) if d in by else "" for d in datasets]
                                       for row, by in runs.items()})
    except UserError as e:
        print(f"results_table: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
