"""Label-constrained scoring against free generation, side by side in one run.

Same model, same first N prompts of a prepared split, same batch size: examples per second of
each and their ratio, agreement of the two decodings' labels, how many generated answers were
not a label, and (as a check on the real model) the largest difference between the one-forward
scoring and the naive per-label reference on a few prompts.

    .venv/bin/python bench/bench_decode.py --data runs/data/meld --model smollm2-135m -n 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from functools import partial

import torch

from instructerc import decode, models
from instructerc.trie import Trie
from instructerc.evaluate import load_split
from instructerc.metrics import classification_metrics


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def pack_stats(tok, records, batch_size: int, max_tokens: int) -> dict:
    """How many tokens the scoring packs compute against the prompts' own token count."""
    prompts = [models.prompt_ids(tok, r.prompt, r.chat) for r in records]
    answers = [[models.answer_ids(tok, lab) for lab in r.labels] for r in records]
    nodes = packs = 0
    for group in decode._packs(prompts, answers, batch_size, max_tokens):
        trie = Trie()
        for i in group:
            last = trie.insert(prompts[i])[-1]
            for a in answers[i]:
                trie.insert(a[:-1], last)
        nodes, packs = nodes + len(trie), packs + 1
    total = sum(map(len, prompts))
    # what no prefix sharing can save: each ERC prompt's own end, after the history block
    tails = [len(tok(r.prompt[r.prompt.rindex(" ###\n") + 5:], add_special_tokens=False).input_ids)
             for r in records if " ###\n" in r.prompt]
    return {"prompt_tokens": total, "mean_prompt_tokens": round(total / len(prompts), 1),
            "mean_tokens_after_history": round(sum(tails) / len(tails), 1) if tails else None, "packs": packs,
            "pack_tokens_with_label_branches": nodes, "prompt_tokens_per_pack_token": round(total / nodes, 2)}



def relaid_template_bound(tok, records) -> dict:
    """The most an exact scorer could share if the ERC template were re-laid for it (and the model
    retrained): every fixed phrase ahead of the history, so that after its branch point a prompt holds
    only its demonstration lines, its target utterance and the chat template's closing tokens, plus
    its label branches; each dialogue's history (its longest, with the template's opening) once."""
    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False).input_ids)

    probe = models.prompt_ids(tok, "XYZQ")  # where the chat template puts a prompt's text
    inner = tok("XYZQ", add_special_tokens=False).input_ids
    opening = next(i for i in range(len(probe)) if probe[i:i + len(inner)] == inner)
    closing = len(probe) - opening - len(inner)
    own = branches = 0
    heads: dict[tuple[str, str], str] = {}
    for r in records:
        cut = r.prompt.rindex(" ###\n")
        own += sum(n(line) for line in r.prompt[cut:].splitlines() if " -> " in line)
        own += n(r.prompt[r.prompt.rindex("label of <") + 10:r.prompt.rindex("> from <")]) + closing
        labels = Trie()  # labels with a common first token share it, as in the packs
        for lab in r.labels:
            labels.insert(models.answer_ids(tok, lab)[:-1])
        branches += len(labels)
        key = (r.dataset, r.dialogue_id)
        heads[key] = max(heads.get(key, ""), r.prompt[:cut], key=len)
    head_tokens = sum(n(h) + opening for h in heads.values())
    total = sum(len(models.prompt_ids(tok, r.prompt, r.chat)) for r in records)
    least = own + branches + head_tokens
    return {"own_tokens_after_branch_point": own, "label_branch_tokens": branches,
            "dialogue_head_tokens": head_tokens, "least_tokens": least,
            "prompt_tokens_per_least_token": round(total / least, 2)}

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", help="LoRA adapter folder (default: zero-shot)")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-beams", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-length", type=int, help="generate with the original's total budget instead "
                                                   "(1024 in its MELD script)")
    ap.add_argument("--max-tokens", type=int, default=1024, help="trie nodes per scoring pack")
    ap.add_argument("--chunk", type=int, default=40, help="records per alternating timing chunk")
    ap.add_argument("--check", type=int, default=6, help="prompts compared with the naive reference")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice); 1 keeps a shared CPU "
                                                "from stalling either side on busy-waiting threads")
    ap.add_argument("--stats-only", action="store_true", help="only the packing statistics (no model run)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    records = load_split(args.data, args.split, args.n)
    if args.stats_only:
        tok = models.load_tokenizer(models.resolve_model(args.model))
        stats = pack_stats(tok, records, args.batch_size, args.max_tokens)
        print(json.dumps({**stats, "relaid_template_bound": relaid_template_bound(tok, records)}, indent=2))
        return
    model, tok = decode.load_for_decoding(args.model, args.adapter)
    decode.score_records(model, tok, records[:2], progress=False)  # warm-up, not timed

    # The CPU is shared: time the two decodings on alternating chunks of the same records, so
    # load changes during the run hit both alike; each chunk's order alternates too.
    decoders = {
        "score": partial(decode.score_records, model, tok, batch_size=args.batch_size, max_tokens=args.max_tokens),
        "generate": partial(decode.generate_records, model, tok, batch_size=args.batch_size,
                            num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, max_length=args.max_length),
    }
    preds = {name: [] for name in decoders}
    seconds = {name: 0.0 for name in decoders}
    for k, start in enumerate(range(0, len(records), args.chunk)):
        chunk = records[start:start + args.chunk]
        for name in (("score", "generate") if k % 2 == 0 else ("generate", "score")):
            out, took = timed(lambda: decoders[name](chunk))
            preds[name] += out
            seconds[name] += took
        print(f"chunk {k}: score {seconds['score']:.1f}s, generate {seconds['generate']:.1f}s so far", flush=True)
    scored, generated, t_score, t_gen = preds["score"], preds["generate"], seconds["score"], seconds["generate"]

    labels = records[0].labels
    # the first prompts of the split come from one dialogue: one pack sharing their history
    prompts = [models.prompt_ids(tok, r.prompt, r.chat) for r in records[: args.check]]
    answers = [models.answer_ids(tok, lab) for lab in labels]
    fast = decode.label_logprobs(model, prompts, [answers] * len(prompts))
    diffs = [max(abs(a - b) for a, b in zip(got, decode.naive_label_logprobs(model, p, answers)))
             for p, got in zip(prompts, fast)]

    golds = [r.target for r in records]
    n = len(records)
    result = {
        "model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split, "examples": n,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens, "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
        "max_length": args.max_length, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "score_seconds": round(t_score, 2), "generate_seconds": round(t_gen, 2),
        "score_examples_per_s": round(n / t_score, 2), "generate_examples_per_s": round(n / t_gen, 2),
        "speedup_score_over_generate": round(t_gen / t_score, 2),
        "agreement": round(sum(a.pred == b.pred for a, b in zip(scored, generated)) / n, 4),
        "generated_not_a_label": sum(not decode.is_label(g.text, labels) for g in generated),
        "mean_generated_tokens": round(sum(len(tok(g.text, add_special_tokens=False).input_ids)
                                           for g in generated) / n, 1),
        "score_weighted_f1": round(classification_metrics(golds, [p.pred for p in scored], labels)["weighted_f1"], 4),
        "generate_weighted_f1": round(classification_metrics(golds, [p.pred for p in generated], labels)["weighted_f1"], 4),
        **pack_stats(tok, records, args.batch_size, args.max_tokens),
        "max_abs_diff_fast_vs_naive": max(diffs) if diffs else None,
        "score_pred_counts": dict(Counter(p.pred for p in scored).most_common()),
        "generate_pred_counts": dict(Counter(p.pred for p in generated).most_common()),
        "generated_examples": [g.text for g in generated[:5]],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
