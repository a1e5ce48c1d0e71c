"""Copy the small outputs of a results-table work folder (bench/full_table.sh) into the repository.

    python bench/store_table.py /path/to/WORK --out bench/results/full_table

For each study WORK/DATASET_FRACTION/ with a results.json: that file, and for each of its finished
rows ROW/eval/{metrics.json,confusion.png} and ROW/eval/answers.jsonl.gz (id, gold and answer of each
test utterance from predictions.jsonl, ~10 KB: enough for a paired comparison of two rows later,
bench/error_analysis.py); for every trained stage ROW/STAGE, finished or not, its
{summary.json, metrics.jsonl, config.yaml, train.log} (the dev curve, the exact settings and when each
epoch ended), so a row a session could not finish still leaves the epochs it measured. Also
WORK/errors_*.md and WORK/*.png. Full predictions (label probabilities), adapters, checkpoints and prepared data stay in WORK.
Run it again as rows finish; it overwrites.
Render the table with `python bench/results_table.py OUT/*_1/*/eval/metrics.json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.errors import UserError  # noqa: E402
from instructerc.fileio import atomic_path, iter_jsonl, read_json  # noqa: E402

ROW_FILES = ("eval/metrics.json", "eval/confusion.png")
STAGE_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "train.log")
ANSWERS = "answers.jsonl.gz"


def answers_of(predictions: Path) -> bytes:
    """The id, gold and answer of each prediction, as gzipped JSONL (mtime 0: the same answers stored
    again leave the file unchanged)."""
    lines = []
    for lineno, row in iter_jsonl(predictions):
        if not all(isinstance(row.get(k), str) for k in ("id", "gold", "pred")):
            raise UserError("a prediction needs id, gold and pred as strings", path=predictions, row=lineno)
        lines.append(json.dumps({k: row[k] for k in ("id", "gold", "pred")}, ensure_ascii=False) + "\n")
    return gzip.compress("".join(lines).encode("utf-8"), mtime=0)


def store(work: Path, out: Path) -> list[Path]:
    copied = []

    def copy(src: Path, dst: Path) -> None:
        with atomic_path(dst) as tmp:  # a stop mid-copy never leaves a truncated file in the repository
            shutil.copyfile(src, tmp)
        copied.append(dst)

    # every results.json and predictions.jsonl read and checked before anything is copied: a damaged
    # one leaves OUT as it was
    studies = [(results, read_json(results)) for results in sorted(work.glob("*/results.json"))]
    for results, rows in studies:
        if not isinstance(rows, dict):
            raise UserError("not a results table: expected an object of rows by name", path=results)
    predictions = [r.parent / row / "eval" / "predictions.jsonl" for r, rows in studies for row in rows]
    answers = {p.parent: answers_of(p) for p in predictions if p.exists()}
    for results, rows in studies:
        study = results.parent
        copy(results, out / study.name / "results.json")
        for row in rows:
            for name in ROW_FILES:
                if (study / row / name).exists():
                    copy(study / row / name, out / study.name / row / name)
            if study / row / "eval" in answers:
                dst = out / study.name / row / "eval" / ANSWERS
                with atomic_path(dst) as tmp:
                    tmp.write_bytes(answers[study / row / "eval"])
                copied.append(dst)
        # metrics.jsonl marks a stage, not summary.json: that comes only at a stage's end, and a stage
        # that stopped (its row not in results.json yet) still has a dev curve worth keeping
        for stage in sorted(p.parent for p in study.glob("*/*/metrics.jsonl")):
            for name in STAGE_FILES:
                if (stage / name).exists():
                    copy(stage / name, out / study.name / stage.parent.name / stage.name / name)
    for extra in sorted([*work.glob("errors_*.md"), *work.glob("*.png")]):
        copy(extra, out / extra.name)
    return copied


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--out", type=Path, default=Path("bench/results/full_table"))
    args = p.parse_args()
    if not any(args.work.glob("*/results.json")):
        print(f"error: {args.work}: no study with a results.json (run bench/full_table.sh first)", file=sys.stderr)
        return 1
    try:
        copied = store(args.work, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"stored {len(copied)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
