"""A markdown table of stored eval/baseline outputs: one row per metrics.json, columns per dataset.

    python bench/results_table.py bench/results/full_baselines/{meld,iemocap,emorynlp}_{majority,tfidf,knn}.json

File names are DATASET_ROW.json; a cell is test weighted-F1 (accuracy, macro-F1), and what the row
chose on dev when it chose something.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    cells: dict[str, dict[str, str]] = {}
    datasets: list[str] = []
    for path in map(Path, paths):
        dataset, _, row = path.stem.partition("_")
        m = json.loads(path.read_text())
        chosen = {k: v for k, v in m.get("run", {}).get("chosen_on_dev", {}).items() if k != "dev_weighted_f1"}
        note = f"; {', '.join(f'{k}={v:g}' for k, v in chosen.items())}" if chosen else ""
        cells.setdefault(row, {})[dataset] = (f"{m['weighted_f1'] * 100:.2f} ({m['accuracy'] * 100:.2f}, "
                                              f"{m['macro_f1'] * 100:.2f}{note})")
        datasets += [dataset] if dataset not in datasets else []
    print("| row | " + " | ".join(datasets) + " |")
    print("|---|" + "---:|" * len(datasets))
    for row, by in cells.items():
        print(f"| {row} | " + " | ".join(by.get(d, "") for d in datasets) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
