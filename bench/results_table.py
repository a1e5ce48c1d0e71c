"""A markdown table of stored eval/baseline outputs: one row per method, columns per dataset.

    python bench/results_table.py bench/results/full_baselines/{meld,iemocap,emorynlp}_{majority,tfidf,knn}.json
    python bench/results_table.py bench/results/full_table/*_1/*/eval/metrics.json

A file is DATASET_ROW.json, or STUDY/ROW/eval/metrics.json in a stored study (bench/store_table.py),
STUDY being DATASET_FRACTION (fraction 1 is named by the dataset alone). A cell is test weighted-F1
(accuracy, macro-F1), and what the row chose on dev when it chose something. Rows of stored studies
come in the order they ran (the first study's first); rows trained with several seeds (ROW and
ROW@seedN) share one cell: the mean weighted-F1, then each seed's.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import read_json  # noqa: E402


def dataset_and_row(path: Path) -> tuple[str, str]:
    if path.name == "metrics.json":
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


def table(paths: list[str]) -> None:
    runs: dict[str, dict[str, list[dict]]] = {}
    datasets: list[str] = []
    for path in map(Path, paths):
        dataset, row = dataset_and_row(path)
        runs.setdefault(row.split("@")[0], {}).setdefault(dataset, []).append(read_metrics(path))
        datasets += [dataset] if dataset not in datasets else []
    order: dict[str, int] = {}  # rows of stored studies in the order they ran (full_table.sh: order of value)
    studies = dict.fromkeys(Path(p).parents[2] / "results.json" for p in paths if Path(p).name == "metrics.json")
    for results in studies:  # each study's results.json read once
        if results.exists():
            for name in read_json(results):
                order.setdefault(name.split("@")[0], len(order))
    runs = dict(sorted(runs.items(), key=lambda kv: order.get(kv[0], len(order))))
    print("| row | " + " | ".join(datasets) + " |")
    print("|---|" + "---:|" * len(datasets))
    for row, by in runs.items():
        print(f"| {row} | " + " | ".join(cell(by[d]) if d in by else "" for d in datasets) + " |")


def main(paths: list[str]) -> int:
    try:
        table(paths)
    except UserError as e:
        print(f"results_table: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
