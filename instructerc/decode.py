"""Decoding: from prompt records to one label each.

Two ways, as issue 5 asks:

- `score_records` (the default): label-constrained scoring. Every candidate label is scored by
  the log-probability of its answer tokens (`models.answer_ids`: the label and end-of-sequence,
  exactly what the trainer trains on) after the prompt; the best one wins and a softmax over the
  labels' sequence log-probabilities gives a probability per label. Every answer is a valid label.
- `generate_records`: free generation (greedy or beam search, as InstructERC does), the text then
  mapped to a label as the original code does: the text itself if it is a label, else the first
  label found inside it, else the label at the smallest edit distance. Kept to compare with the
  paper's method.

Scoring speed: prompts and their labels' continuations are packed into a token TRIE and run
through the model in one forward pass per pack (tree attention):

- prompts sorted so that prompts with a common beginning sit together; each token of the pack
  is stored once per distinct prefix. ERC prompts share the instruction, and those of one
  dialogue their growing history (until the window slides): on the first 200 MELD test prompts
  the packs compute 1.6 times fewer tokens than the prompts hold, label branches included
  (`bench/bench_decode.py --stats-only`);
- every label's answer tokens hang off their prompt's last token as a short branch (labels
  with a common first token share it);
- a 4-D attention mask lets each token see exactly its ancestors in the trie, and its position
  id is its depth: each token's hidden state is exactly the one a plain forward of its own
  prompt (+ answer) would give;
- the lm_head runs only on the nodes whose next token is scored (`logits_to_keep` as indices).

The end-of-sequence token is scored too, so "sad" is not rewarded for being the prefix of a
longer answer; this is why whole label sequences are scored rather than the first token alone.
`naive_label_logprobs` is the slow reference (one full forward per prompt + answer) the tests
compare against. The dense mask makes attention cost grow with the pack's size squared, hence
the token budget per pack (`max_tokens`).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Sequence

from instructerc.models import answer_ids, prompt_ids
from instructerc.records import PromptRecord
from instructerc.trie import Trie, group_by_budget, tree_logits


@dataclass(frozen=True)
class Prediction:
    id: str
    gold: str  # "" when the record is unlabelled
    pred: str
    probs: dict[str, float] = field(default_factory=dict)  # label -> probability (scoring mode only)
    text: str | None = None  # the raw generated text (generate mode only)
    dataset: str = ""  # the record's source dataset, for per-source metrics on mixed data

    def to_json(self) -> dict:
        row = {"id": self.id, "dataset": self.dataset, "gold": self.gold, "pred": self.pred, "probs": self.probs}
        if self.text is not None:
            row["text"] = self.text
        return row


# ----------------------------------------------------------------------------------------------
# label-constrained scoring


def score_records(model, tokenizer, records: list[PromptRecord], batch_size: int = 8,
                  progress: bool = True, max_tokens: int = 1024) -> list[Prediction]:
    """Label-constrained scoring of `records` (any task with a candidate list), in input order.

    A pack holds at most `batch_size` prompts and about `max_tokens` trie nodes (a single longer
    prompt gets a pack of its own).
    """
    import torch
    from tqdm import tqdm

    label_tokens = _answer_tokens(tokenizer, records)
    answers = [[label_tokens[lab] for lab in r.labels] for r in records]
    prompts = fit_context(model, [prompt_ids(tokenizer, r.prompt, r.chat) for r in records],
                          reserve=max(len(a) for a in label_tokens.values()))
    logprobs: list[list[float]] = [[] for _ in records]
    with _eval_mode(model), torch.inference_mode(), \
            tqdm(total=len(records), desc="scoring", unit="ex", disable=not progress, leave=False) as bar:
        for idx in _packs(prompts, answers, batch_size, max_tokens):
            for i, lp in zip(idx, label_logprobs(model, [prompts[i] for i in idx], [answers[i] for i in idx])):
                logprobs[i] = lp
            bar.update(len(idx))
    return [_prediction(r, lp) for r, lp in zip(records, logprobs)]


def fit_context(model, prompts: list[list[int]], reserve: int) -> list[list[int]]:
    """Prompts that would not fit the model's context with `reserve` answer tokens keep their last
    tokens (the question and the newest history), as training's truncation does: positions past the
    context are out of the model's range. Says how many were cut."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return prompts
    keep = max(1, limit - reserve)
    cut = sum(len(p) > keep for p in prompts)
    if cut:
        print(f"{cut} prompt(s) longer than the model's {limit}-token context kept their last {keep} tokens",
              file=sys.stderr)
    return [p[-keep:] if len(p) > keep else p for p in prompts]


def label_logprobs(model, prompts: list[list[int]], answers: list[list[list[int]]]) -> list[list[float]]:
    """Sum of log-probabilities of each answer token sequence after its prompt, in one forward.

    `answers[i]` lists the candidate token sequences of prompt i; the result mirrors that shape.
    """
    import torch

    trie = Trie()
    plan = []  # per prompt, per answer: (nodes whose logits predict the answer's tokens, the tokens)
    for prompt, cands in zip(prompts, answers):
        last = trie.insert(prompt)[-1]
        plan.append([([last] + trie.insert(a[:-1], last), a) for a in cands])
    keep = sorted({n for row in plan for nodes, _ in row for n in nodes})
    column = {n: c for c, n in enumerate(keep)}
    with torch.inference_mode():
        logp = torch.log_softmax(tree_logits(model, trie, keep).float(), dim=-1).cpu()
    return [[float(logp[[column[n] for n in nodes], toks].sum()) for nodes, toks in row] for row in plan]


def _packs(prompts: list[list[int]], answers: list[list[list[int]]], batch_size: int, max_tokens: int):
    """Index groups to score together: prompts in lexicographic token order (shared prefixes adjacent),
    cut when a group reaches `batch_size` prompts or its trie would exceed `max_tokens` nodes."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    branches = [sum(len(a) - 1 for a in cands) for cands in answers]
    return group_by_budget(order, prompts, max_tokens, max_items=batch_size, extra=branches)[0]


def naive_label_logprobs(model, prompt: list[int], answers: list[list[int]]) -> list[float]:
    """Reference: one full forward of prompt + answer per answer. Slow; for tests and checks."""
    import torch

    out = []
    with torch.inference_mode():
        for ans in answers:
            ids = torch.tensor([prompt + ans], device=next(model.parameters()).device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(ans))
            out.append(float(logp[positions, torch.tensor(ans)].sum()))
    return out


def _prediction(record: PromptRecord, logprobs: list[float]) -> Prediction:
    import torch

    probs = torch.softmax(torch.tensor(logprobs, dtype=torch.float64), dim=0).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    return Prediction(
        id=record.id, gold=record.target, pred=record.labels[best],
        probs={lab: round(p, 6) for lab, p in zip(record.labels, probs)}, dataset=record.dataset,
    )


def _answer_tokens(tokenizer, records: list[PromptRecord]) -> dict[str, list[int]]:
    labels = dict.fromkeys(lab for r in records for lab in r.labels)
    return {lab: answer_ids(tokenizer, lab) for lab in labels}


# ----------------------------------------------------------------------------------------------
# free generation, mapped to labels as InstructERC does


def generate_records(model, tokenizer, records: list[PromptRecord], batch_size: int = 8, num_beams: int = 1,
                     max_new_tokens: int = 32, max_length: int | None = None,
                     progress: bool = True) -> list[Prediction]:
    """Greedy (num_beams=1) or beam-search generation until end-of-sequence, at most
    `max_new_tokens` (a label is a few tokens; the cap only cuts off an untrained model's chatter),
    each text mapped with `match_label`.

    `max_length` replaces that cap with the original code's budget: a total length (padded prompt
    plus answer) per batch, 1024 for MELD and EmoryNLP in its scripts."""
    import torch

    prompts = fit_context(model, [prompt_ids(tokenizer, r.prompt, r.chat) for r in records],
                          reserve=max_new_tokens if max_length is None else 1)
    pad = _pad_id(tokenizer)
    texts: list[str] = [""] * len(records)
    with _eval_mode(model), torch.inference_mode():
        for idx in _batches(prompts, batch_size, progress, "generating"):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx])
            attn = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
            device = next(model.parameters()).device
            budget = max_new_tokens if max_length is None else max(1, max_length - width)
            out = model.generate(
                input_ids=ids.to(device), attention_mask=attn.to(device), max_new_tokens=budget,
                num_beams=num_beams, do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            )
            for i, seq in zip(idx, out[:, width:].tolist()):
                texts[i] = tokenizer.decode(seq, skip_special_tokens=True)
    return [
        Prediction(id=r.id, gold=r.target, pred=match_label(t, r.labels), text=t, dataset=r.dataset)
        for r, t in zip(records, texts)
    ]


def match_label(text: str, labels: Sequence[str]) -> str:
    """The label a generated text names, as the original InstructERC code maps answers: the text
    itself if it is a label; else the label found earliest inside it (the longest at that spot);
    else the label at the smallest Levenshtein distance (the first in label order on ties)."""
    clean = _clean(text)
    lowered = {lab.lower(): lab for lab in labels}
    if clean in lowered:
        return lowered[clean]
    found = [(clean.find(low), -len(low), lab) for low, lab in lowered.items() if low and low in clean]
    if found:
        return min(found)[2]
    return min(labels, key=lambda lab: levenshtein(clean, lab.lower()))


def is_label(text: str, labels: Sequence[str]) -> bool:
    """Whether a generated answer is exactly a label (ignoring case, blanks and end punctuation)."""
    return _clean(text) in {lab.lower() for lab in labels}


def _clean(text: str) -> str:
    return text.strip().strip(".'\"<>").strip().lower()


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# ----------------------------------------------------------------------------------------------
# shared plumbing


def _batches(prompts: list[list[int]], batch_size: int, progress: bool, desc: str):
    """Generation batches: indices of similar prompt length (longest first: memory trouble shows at once)."""
    from tqdm import tqdm

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    with tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress, leave=False) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(len(chunk))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() for the block, restoring training mode after (the trainer calls us mid-run)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------
# what `eval` and `predict` share: options, loading, and running the chosen decoding

DECODE_MODES = ("score", "generate")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a zero batch or budget is a mistake, not a request)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_decoding_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="base model: local folder, .gguf file or alias (see `instructerc model`)")
    parser.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder (e.g. RUN/best); omit for zero-shot")
    parser.add_argument("--decode", choices=DECODE_MODES, default="score",
                        help="score: label-constrained scoring (default); generate: free generation mapped to "
                             "the nearest label by edit distance, as the paper")
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beams for --decode generate (default 1: greedy)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32,
                        help="cap on generated tokens for --decode generate (default 32)")
    parser.add_argument("--max-length", type=positive_int, metavar="N",
                        help="--decode generate with the original code's budget instead: N tokens in all, "
                             "padded prompt included (its scripts: 1024 for MELD and EmoryNLP, 1200 for IEMOCAP)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="prompts per forward pass (default 8)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="weights' precision for decoding. auto (default): bfloat16 where the hardware computes "
                             "it natively (a bf16 GPU, a CPU with AMX or AVX512-BF16), else float32, as training does")


def load_for_decoding(model_spec: str, adapter: str | None = None, dtype: str = "auto"):
    """(model, tokenizer): the base model in `dtype` (auto: `models.fast_dtype()`), with the LoRA
    adapter applied when given."""
    import torch

    from instructerc import models

    models.quiet_libraries()
    path = models.resolve_model(model_spec)
    tokenizer = models.load_tokenizer(path)
    model = models.load_model(path, dtype=getattr(torch, models.fast_dtype() if dtype == "auto" else dtype))
    if adapter is not None:
        model = models.load_adapter(model, adapter)
    return model.eval(), tokenizer


def decoding_options(args) -> dict:
    """The `decode_records` keywords from the options `add_decoding_arguments` defined."""
    return {"mode": args.decode, "batch_size": args.batch_size, "num_beams": args.num_beams,
            "max_new_tokens": args.max_new_tokens, "max_length": args.max_length}


def decode_records(model, tokenizer, records: list[PromptRecord], mode: str = "score", batch_size: int = 8,
                   num_beams: int = 1, max_new_tokens: int = 32, max_length: int | None = None,
                   progress: bool = True) -> list[Prediction]:
    if mode == "generate":
        return generate_records(model, tokenizer, records, batch_size=batch_size, num_beams=num_beams,
                                max_new_tokens=max_new_tokens, max_length=max_length, progress=progress)
    return score_records(model, tokenizer, records, batch_size=batch_size, progress=progress)
