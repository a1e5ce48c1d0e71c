"""Full-data check of `prepare --template paper` against the released InstructERC code.

Runs the authors' own `code/data_process.py` (from a clone of their repository: this project
ships none of it) on the COSMIC pickles, in the two modes its scripts use -- speaker_task True
(speaker/ and window/ files) and emotion_prediction True (the joined ERC***prediction training
file) -- runs `instructerc prepare --template paper` on the same pickles, and compares every
record of every split. The one intended difference, meld.pkl's Windows-1252 repair, is applied
to the released text before comparing.

    python bench/check_paper_prompts.py --released PATH/TO/InstructERC/code --raw-dir ../shared/datasets \
        --out bench/results/paper_prompts_check.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from instructerc.fileio import write_json
from instructerc.records import load_records
from instructerc.unpickle import repair_cp1252

NAMES = {"meld": ("meld", "meld.pkl"), "iemocap": ("iemocap", "iemocap.pkl"), "emorynlp": ("EmoryNLP", "EmoryNLP.pkl")}
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
PREDICT_DIR = "/mnt/dolphinfs/hdd_pool/docker/user/hadoop-aipnlp/leishanglin/LLMs_for_ERC/data"  # hard-coded there


def run_released(script: Path, work: Path, name: str, pickle: Path, window: int) -> dict[str, list[tuple[str, str]]]:
    """The released files, {relative path: [(input, target)]}, for one dataset."""
    data = work / "YOUR_DATASET_COLLECTIONS_FOR_ERC_PATH" / name
    data.mkdir(parents=True)
    (data / f"{name}.pkl").symlink_to(pickle.resolve())
    # The prediction mode writes under an absolute path of the authors' cluster: point it here.
    local = work / "data_process.py"
    local.write_text(script.read_text(encoding="utf-8").replace(PREDICT_DIR, "PREDICT_OUT"), encoding="utf-8")
    for speaker, predict in (("True", "False"), ("None", "True")):
        subprocess.run([sys.executable, str(local), "--dataset", name, "--historical_window", str(window),
                        "--speaker_task", speaker, "--domain_base", "False", "--emotion_prediction", predict],
                       cwd=work, check=True, capture_output=True, text=True)
    out = {}
    for path in sorted(work.rglob("*.json")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]  # not splitlines: the text holds \x85
        out[str(path.relative_to(work))] = [(repair_cp1252(r["input"]), r["target"]) for r in rows]
    return out


def ours(data: Path, name: str) -> dict[str, list[tuple[str, str]]]:
    """Our prepared records laid out as the released files."""
    out = {}
    for split, released in SPLITS.items():
        records = load_records(data / f"{split}.jsonl")
        erc = [(r.prompt, r.target) for r in records if r.task == "erc"]
        out[f"YOUR_PROCESSED_DATASET_COLLECTIONS_FOR_ERC_PATH/{name}/window/{released}.json"] = erc
        if split != "train":  # the prediction mode's dev/test files hold the ERC prompts alone
            out[f"PREDICT_OUT/{name}/predict/window/{released}.json"] = erc
    train = load_records(data / "train.jsonl")
    out[f"YOUR_PROCESSED_DATASET_COLLECTIONS_FOR_ERC_PATH{name}/speaker/train.json"] = \
        [(r.prompt, r.target) for r in train if r.task == "speaker"]
    predict = {(r.dialogue_id, r.turn): r.prompt for r in train if r.task == "predict"}
    out[f"PREDICT_OUT/{name}/predict/window/train.json"] = \
        [(r.prompt + "***" + predict[(r.dialogue_id, r.turn)], r.target) for r in train if r.task == "erc"]
    return out


def compare(released: list, mine: list) -> dict:
    same = sum(a == b for a, b in zip(released, mine))
    first = next((i for i, (a, b) in enumerate(zip(released, mine)) if a != b), None)
    result = {"released": len(released), "ours": len(mine), "identical": same}
    if first is not None:
        result["first_difference"] = {"index": first, "released": released[first], "ours": mine[first]}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--released", required=True, type=Path, help="the `code` folder of a clone of LIN-SHANG/InstructERC")
    ap.add_argument("--raw-dir", required=True, type=Path, help="folder with cosmic/{meld,iemocap,EmoryNLP}.pkl")
    ap.add_argument("--window", type=int, default=12, help="historical window (the released scripts use 12)")
    ap.add_argument("--datasets", nargs="+", default=list(NAMES), choices=list(NAMES))
    ap.add_argument("--out", type=Path, help="JSON report")
    args = ap.parse_args()
    script = args.released / "data_process.py"
    if not script.is_file():
        sys.exit(f"{script}: not found (clone github.com/LIN-SHANG/InstructERC and give its code/ folder)")
    report = {"window": args.window, "released_script": str(script), "datasets": {}}
    ok = True
    for ds in args.datasets:
        name, pkl = NAMES[ds]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            released = run_released(script, tmp / "released", name, args.raw_dir / "cosmic" / pkl, args.window)
            subprocess.run([sys.executable, "-m", "instructerc", "prepare", "--dataset", ds, "--format", "cosmic",
                            "--raw-dir", str(args.raw_dir), "--template", "paper", "--window", str(args.window),
                            "--out", str(tmp / "ours")], check=True, capture_output=True, text=True)
            mine = ours(tmp / "ours", name)
        files = {f: compare(released[f], rows) for f, rows in mine.items()}
        unmatched = sorted(set(released) - set(mine))
        report["datasets"][ds] = {"files": files, "released_files_not_compared": unmatched,
                                  "seconds": round(time.perf_counter() - t0, 1)}
        for f, r in files.items():
            good = r["released"] == r["ours"] == r["identical"]
            ok &= good
            print(f"{ds:9} {f.split('/', 1)[-1]:40} released {r['released']:6}  ours {r['ours']:6}  "
                  f"identical {r['identical']:6}  {'OK' if good else 'DIFFERENT'}")
        if unmatched:
            print(f"{ds:9} not compared (stage-1 dev/test speaker files, never scored by the released code): "
                  f"{', '.join(unmatched)}")
    report["all_identical"] = ok
    if args.out:
        write_json(args.out, report)
    print("every compared record identical" if ok else "DIFFERENCES (see the report)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
