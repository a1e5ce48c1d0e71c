"""Data scaling on MELD (issue 13): test weighted-F1 against the fraction of training data, one line per
row of `bench/fraction_study.py` (seeds of a row averaged, each seed drawn as a dot), beside the paper.

    python bench/scaling_plot.py RUNS/meld_1_64/results.json RUNS/meld_1_16/results.json ... \
        --rows full plain knn --out bench/results/meld_scaling.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.errors import UserError  # noqa: E402
from instructerc.curves import save_png  # noqa: E402
from instructerc.fileio import read_text  # noqa: E402

# InstructERC with LLaMA2-7B on MELD, single-dataset training: Table 5 (1/64, 1/16, 1/4) and the main
# table (all data) of Lei et al. 2023.
PAPER = {1 / 64: 45.48, 1 / 16: 62.89, 1 / 4: 66.42, 1.0: 69.15}


def collect(paths: list[Path], rows: list[str]) -> dict[str, dict[float, list[float]]]:
    """row -> fraction -> weighted-F1 of each seed (ROW and ROW@seedN are seeds of one row)."""
    points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        try:
            results = json.loads(read_text(path))
            for name, r in results.items():
                row = name.partition("@")[0]
                if row in rows:
                    points[row][float(r["fraction"])].append(100 * r["weighted_f1"])
        except (ValueError, AttributeError, TypeError, KeyError) as e:
            raise UserError(f"not a fraction_study results.json ({type(e).__name__}: {e})", path=path) from None
    return points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="results.json of fraction_study runs")
    ap.add_argument("--rows", nargs="+", default=["full", "plain", "knn"])
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        points = collect(args.results, args.rows)
    except UserError as e:
        print(f"scaling_plot: error: {e}", file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row in args.rows:
        if not points.get(row):
            print(f"no results for row {row!r}", file=sys.stderr)
            continue
        fracs = sorted(points[row])
        means = [sum(points[row][f]) / len(points[row][f]) for f in fracs]
        (line,) = ax.plot(fracs, means, marker="o", label=f"{row} (SmolLM2-135M)" if row not in ("knn", "tfidf",
                          "majority") else row)
        for f in fracs:
            ax.scatter([f] * len(points[row][f]), points[row][f], s=12, color=line.get_color(), alpha=0.5)
        print(f"{row:10} " + "  ".join(f"{f:g}: {m:.2f} (n={len(points[row][f])})" for f, m in zip(fracs, means)))
    ax.plot(list(PAPER), list(PAPER.values()), linestyle="--", marker="s", color="grey",
            label="InstructERC LLaMA2-7B (paper)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1 / 64, 1 / 16, 1 / 4, 1], ["1/64", "1/16", "1/4", "1"])
    ax.set_xlabel("fraction of the MELD training set")
    ax.set_ylabel("test weighted-F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
