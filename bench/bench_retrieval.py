"""Retrieval benchmarks (issue 3): speed of a full MELD prepare with demonstrations, and whether
retrieval carries signal.

    .venv/bin/python bench/bench_retrieval.py --raw-dir ../shared/datasets

1. `instructerc prepare --dataset meld --demonstrations K` three times, side by side in one run:
   without retrieval, with a cold embedding cache (a fresh folder), and warm (the same folder again).
2. On MELD dev and test, with the training split as the domain base: agreement of the top-1
   demonstration's label with the gold label, against the agreement of a random training
   utterance (the label prior, sum_l p_train(l) * p_split(l)); and the weighted-F1 of the kNN vote
   of the top-k demonstrations (majority label, ties to the larger summed similarity), next to
   the majority-class baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sklearn.metrics import f1_score

from instructerc import retrieval
from instructerc.readers import read_dataset

REPO = Path(__file__).resolve().parents[1]


def timed_prepare(raw_dir: Path, out: Path, cache: Path, k: int) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "instructerc", "prepare", "--dataset", "meld", "--raw-dir", str(raw_dir),
           "--out", str(out), "--demonstrations", str(k), "--embedding-cache", str(cache)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "manifest.json").read_text()).get("retrieval", {})


def knn_vote(demos) -> str:
    votes, weight = Counter(), Counter()
    for d in demos:
        votes[d.emotion] += 1
        weight[d.emotion] += d.similarity
    return max(votes, key=lambda lab: (votes[lab], weight[lab]))


def signal(raw_dir: Path, cache: Path, ks: list[int]) -> dict:
    splits, _ = read_dataset("meld", raw_dir=raw_dir)
    opts = retrieval.RetrievalOptions(k=max(ks), cache_dir=str(cache))
    queries = splits["dev"] + splits["test"]
    demos = retrieval.retrieve(splits["train"], queries, opts).demonstrations
    train_labels = Counter(u.emotion for d in splits["train"] for u in d.utterances)
    n_train = sum(train_labels.values())
    out = {}
    for split in ("dev", "test"):
        keys = [(d.dataset, d.split, d.dialogue_id, u.turn) for d in splits[split] for u in d.utterances]
        gold = [u.emotion for d in splits[split] for u in d.utterances]
        p_split = {lab: c / len(gold) for lab, c in Counter(gold).items()}
        majority = train_labels.most_common(1)[0][0]
        row = {
            "utterances": len(gold),
            # Unlimited top-k is sorted by similarity, so the top-j for j < k is a prefix of it.
            "top1_agreement": sum(demos[key][0].emotion == g for key, g in zip(keys, gold)) / len(gold),
            "prior_agreement": sum(train_labels[lab] / n_train * p for lab, p in p_split.items()),
            "prior_agreement_self": sum(p * p for p in p_split.values()),
            "majority_class": majority,
            "majority_weighted_f1": f1_score(gold, [majority] * len(gold), average="weighted", zero_division=0),
        }
        for k in ks:
            pred = [knn_vote(demos[key][:k]) for key in keys]
            row[f"knn{k}_weighted_f1"] = f1_score(gold, pred, average="weighted", zero_division=0)
        out[split] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--k", type=int, default=3, help="demonstrations per prompt in the prepare timing")
    ap.add_argument("--vote-k", type=int, nargs="+", default=[1, 3, 5, 10], help="k of the kNN-vote baselines")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_retrieval.") as tmp:
        tmp = Path(tmp)
        base_s, _ = timed_prepare(args.raw_dir, tmp / "out0", tmp / "cache", 0)
        cold_s, cold = timed_prepare(args.raw_dir, tmp / "out", tmp / "cache", args.k)
        warm_s, warm = timed_prepare(args.raw_dir, tmp / "out", tmp / "cache", args.k)
        records = [json.loads(line) for line in (tmp / "out" / "test.jsonl").read_text().splitlines()]
        erc = [r for r in records if r["task"] == "erc"]
        assert all(len(r["demonstrations"]) == args.k for r in erc)
        speed = {
            "prepare_no_retrieval_s": round(base_s, 2), "prepare_cold_s": round(cold_s, 2),
            "prepare_warm_s": round(warm_s, 2), "cold_over_warm": round(cold_s / warm_s, 2),
            "embedded_cold": cold["cache"]["misses"], "embedded_warm": warm["cache"]["misses"],
            "embeddings_per_s": cold["embeddings_per_s"], "encode_s": cold["timings_s"]["encode"],
            "search_s": cold["timings_s"]["search"], "mean_similarity": cold["mean_similarity"],
            "leak_check": cold["leak_check"]["passed"], "pairs_checked": cold["leak_check"]["pairs_checked"],
        }
        quality = signal(args.raw_dir, tmp / "cache", args.vote_k)

    results = {"k": args.k, "speed": speed, "signal": quality}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
