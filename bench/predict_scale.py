"""`instructerc predict` on big files (issue 15): peak RSS against the number of utterances, and how
soon the first rows are written.

Writes conversations of 8 turns as a custom CSV (N utterances), labels it zero-shot with a model, and
samples the process's resident memory (psutil, every 0.2 s) and the size of the output's temporary
twin (the rows written so far). Memory that does not grow with N is what chunked labelling promises.

    python bench/predict_scale.py --sizes 10000,100000 --model tiny --out bench/results/predict_scale.json
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from instructerc.fileio import write_json  # noqa: E402

WORDS = "oh okay great really why no yes hey what fine sure wow stop listen please sorry thanks".split()


def write_input(path: Path, utterances: int, turns: int = 8, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("dialogue_id,speaker,utterance\n")
        for i in range(utterances):
            f.write(f"d{i // turns},{'AB'[i % 2]},{' '.join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))}\n")


def measure(cmd: list[str], out: Path) -> dict:
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak, first_rows = 0, None
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if first_rows is None and any(p.stat().st_size > 0 for p in out.parent.glob(f".{out.name}.*/*")):
            first_rows = time.perf_counter() - t0
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"predict failed: {stderr[-2000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(peak / 2**20),
            "first_rows_after_s": None if first_rows is None else round(first_rows, 1),
            "rows": sum(1 for _ in open(out, encoding="utf-8")), "summary": stdout.strip().splitlines()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="utterances per file, comma-separated")
    ap.add_argument("--model", default="tiny", help="`tiny` (the tests' random model, made here) or any --model")
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="instructerc-scale-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model == "tiny":
            from tiny_model import make_tiny_model

            model = str(make_tiny_model(tmp / "model"))
        rows = []
        for n in map(int, args.sizes.split(",")):
            src, out = tmp / f"in{n}.csv", tmp / f"out{n}.jsonl"
            write_input(src, n)
            cmd = [sys.executable, "-m", "instructerc", "predict", "--model", model, "--input", str(src),
                   "--out", str(out), "--labels", "meld", "--window", str(args.window), "--batch-size", str(args.batch_size)]
            rows.append({"utterances": n, "input_mib": round(src.stat().st_size / 2**20, 1), **measure(cmd, out)})
            print(rows[-1], flush=True)
    print(f"\n{'utterances':>10} {'input MiB':>9} {'peak RSS MiB':>12} {'first rows s':>12} {'total s':>8}")
    for r in rows:
        print(f"{r['utterances']:>10,} {r['input_mib']:>9} {r['peak_rss_mib']:>12} {r['first_rows_after_s']!s:>12} {r['seconds']:>8}")
    if args.out:
        write_json(args.out, {"command": " ".join(sys.argv), "model": args.model, "window": args.window,
                              "batch_size": args.batch_size, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
