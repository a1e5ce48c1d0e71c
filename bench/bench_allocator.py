"""The same training steps under the system malloc and under tcmalloc, side by side.

    .venv/bin/instructerc prepare --dataset meld --raw-dir ../shared/datasets --data-percent 0.0625 \\
        --out /tmp/meld16
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_allocator.py --data /tmp/meld16 --steps 14 --rounds 2 \\
        --json bench/results/bench_allocator.json

Each round runs `instructerc train --stage plain` for --steps steps once per allocator
(INSTRUCTERC_MALLOC=system, then auto: tcmalloc), alternating, so both see the same machine load.
Per run: mean seconds per optimizer step over the steps after the first two (warm-up), and the
process's peak resident memory. The ratio is system / tcmalloc: above 1, tcmalloc is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructerc.allocator import find_tcmalloc  # noqa: E402
from instructerc.fileio import read_jsonl, write_json  # noqa: E402

ARMS = {"system": "system", "tcmalloc": "auto"}


def train_once(args, arm: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "instructerc", "train", "--stage", "plain", "--data", str(args.data),
           "--model", args.model, "--out", str(out), "--config", str(args.config),
           "--set", f"stop_after={args.steps}", "--set", "checkpoint_every=0", "--set", "log_every=1"]
    env = {**os.environ, "INSTRUCTERC_MALLOC": ARMS[arm]}
    env.pop("LD_PRELOAD", None)
    t0 = time.perf_counter()
    err = out.with_name(out.name + ".stderr")  # a file, not a pipe: nobody reads a pipe during wait4
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{arm}: training failed:\n{err.read_text(errors='replace')[-2000:]}")
    steps = [r["seconds"] for r in read_jsonl(out / "metrics.jsonl") if "seconds" in r and r.get("step", 0) > 2]
    log = (out / "train.log").read_text()
    return {"arm": arm, "mean_step_s": statistics.mean(steps), "steps_timed": len(steps),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "wall_s": round(time.perf_counter() - t0, 1),
            "malloc_logged": "malloc tcmalloc" in log}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="prepared data (see the command above)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "small" / "meld.yaml")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if find_tcmalloc() is None:
        raise SystemExit("no tcmalloc on this machine (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-allocator-") as tmp:
        for r in range(args.rounds):
            for arm in ARMS:
                run = train_once(args, arm, Path(tmp) / f"{arm}{r}")
                runs.append(run)
                print(f"round {r + 1}/{args.rounds} {arm:9} {run['mean_step_s']:.3f} s/step "
                      f"(steps 3-{args.steps}), peak RSS {run['peak_rss_gib']:.2f} GiB", flush=True)
    mean = {arm: statistics.mean(x["mean_step_s"] for x in runs if x["arm"] == arm) for arm in ARMS}
    rss = {arm: max(x["peak_rss_gib"] for x in runs if x["arm"] == arm) for arm in ARMS}
    result = {"command": " ".join(sys.argv), "threads": os.environ.get("OMP_NUM_THREADS"), "tcmalloc": find_tcmalloc(),
              "runs": runs, "mean_step_s": mean, "peak_rss_gib": rss,
              "speedup_system_over_tcmalloc": round(mean["system"] / mean["tcmalloc"], 3)}
    print(f"system {mean['system']:.3f} s/step, tcmalloc {mean['tcmalloc']:.3f} s/step: "
          f"{result['speedup_system_over_tcmalloc']:.2f}x; peak RSS {rss['system']:.2f} vs {rss['tcmalloc']:.2f} GiB")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
