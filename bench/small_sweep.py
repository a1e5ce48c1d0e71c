"""Settings for a small model, chosen on dev only (issue 13): one training run per grid point, each
scored on the dev split after every epoch, then a table of dev weighted-F1 by epoch.

Runs one point after another and may span sessions: a finished point (summary.json) is skipped,
an interrupted one continues with --resume. A point stopped on purpose (SIGTERM to its trainer, e.g.
when it diverged) is reported with its dev curve so far and marked unfinished; `--report` writes the
table of what is trained so far and trains nothing. The test split is never touched here.

    python bench/small_sweep.py --data DATA --model smollm2-135m --root RUNS/sweep \\
        --grid lr=3e-4,1e-3,3e-3 --set epochs.plain=4 --set batch_size=16 --set eval.max_records=200 \\
        --out bench/results/small_sweep_meld_1_16.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from instructerc.fileio import write_json


def grid_points(specs: list[str]) -> list[dict[str, str]]:
    """`lr=1e-4,1e-3` `lora.r=8,16` -> every combination, as --set values."""
    axes = [(key, values.split(",")) for key, _, values in (s.partition("=") for s in specs)]
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def point_name(point: dict[str, str]) -> str:
    return "_".join(f"{k.replace('.', '-')}={v}" for k, v in point.items()) or "default"


def dev_curve(run: Path) -> list[dict]:
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    return [{"epoch": r["epoch"], "dev_weighted_f1": r["dev_weighted_f1"], "dev_macro_f1": r["dev_macro_f1"]}
            for r in rows if "dev_weighted_f1" in r]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--root", required=True, type=Path, help="run folders, one per grid point (keep outside the repo)")
    ap.add_argument("--stage", default="plain")
    ap.add_argument("--config", help="base config (default: the trainer's defaults)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="an axis of the grid")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed settings of every point")
    ap.add_argument("--out", type=Path, help="JSON table of dev curves")
    ap.add_argument("--report", action="store_true", help="train nothing: the table of the points trained so far")
    args = ap.parse_args()

    results = []
    for point in grid_points(args.grid):
        run = args.root / point_name(point)
        if not (run / "summary.json").is_file() and not args.report:
            cmd = [sys.executable, "-m", "instructerc", "train", "--stage", args.stage, "--data", args.data,
                   "--model", args.model, "--out", str(run)]
            cmd += ["--config", args.config] if args.config else []
            cmd += [x for s in args.set + [f"{k}={v}" for k, v in point.items()] for x in ("--set", s)]
            cmd += ["--resume"] if (run / "config.yaml").is_file() else []
            print(f"==> {point_name(point)}: {' '.join(cmd[2:])}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run(cmd).returncode
            print(f"==> {point_name(point)} exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if (run / "summary.json").is_file():
            summary = json.loads((run / "summary.json").read_text())
            results.append({"point": point, "run": str(run), "finished": True, "dev": dev_curve(run),
                            "best": summary["best"], "seconds": summary["seconds"]})
        elif (run / "config.yaml").is_file():  # stopped or still running: the epochs scored so far
            curve = dev_curve(run)
            best = max(curve, key=lambda c: c["dev_weighted_f1"], default=None)
            results.append({"point": point, "run": str(run), "finished": False, "dev": curve, "best": best,
                            "seconds": None})
    if not results:
        sys.exit(f"{args.root}: no point of this grid has been trained")
    for r in results:
        curve = "  ".join(f"{c['dev_weighted_f1'] * 100:5.2f}" for c in r["dev"])
        best = f"best epoch {r['best']['epoch']}" if r["best"] else "no epoch scored"
        print(f"{point_name(r['point']):40} dev weighted-F1 by epoch: {curve}   {best}"
              + ("" if r["finished"] else "   (unfinished)"))
    if args.out:
        write_json(args.out, {"data": args.data, "model": args.model, "stage": args.stage, "config": args.config,
                              "fixed": args.set, "grid": args.grid, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
