"""Training batches: encode records, plan length-grouped micro-batches per rank, pad, and the loss.

The plan of an epoch is a pure function of (records, seed, epoch, sizes), computed identically
on every rank, so ranks never exchange indices, a resumed run rebuilds exactly the same plan,
and each rank knows how many examples of each task the whole optimizer step holds (the loss
normalisation below needs it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from instructerc.models import answer_ids, prompt_ids
from instructerc.records import PromptRecord


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]  # prompt + answer
    n_answer: int  # the last n_answer tokens are the answer (the only ones with a loss)
    task: str
    truncated: bool


def encode(tokenizer, record: PromptRecord, max_length: int) -> Example:
    """Prompt and answer tokens, through the same functions decoding uses.

    Too long a prompt loses its OLDEST tokens: the question and the target utterance sit at the
    end of every prompt, the far history at its start.
    """
    p, a = prompt_ids(tokenizer, record.prompt), answer_ids(tokenizer, record.target)
    room = max(1, max_length - len(a))
    truncated = len(p) > room
    return Example(tuple(p[-room:] + a), len(a), record.task, truncated)


def epoch_plan(lengths: list[int], micro_batch: int, grad_accum: int, world: int, seed: int,
               epoch: int, mega: int = 50) -> list[list[list[list[int]]]]:
    """plan[step][rank] = that rank's `grad_accum` micro-batches (lists of example indices).

    Shuffled with (seed, epoch); padded like DistributedSampler by repeating the first indices so
    every step is full on every rank; then grouped by length inside mega-batches of `mega`
    micro-batches (similar lengths share a micro-batch: little padding), as HF's
    LengthGroupedSampler does.
    """
    order = list(range(len(lengths)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    per_step = micro_batch * grad_accum * world
    n = -(-len(order) // per_step) * per_step
    order = (order * (n // max(1, len(order)) + 1))[:n]
    span = micro_batch * mega
    grouped: list[int] = []
    for start in range(0, n, span):
        grouped += sorted(order[start:start + span], key=lambda i: -lengths[i])
    micro = [grouped[i:i + micro_batch] for i in range(0, n, micro_batch)]
    # each step takes consecutive micro-batches: ranks in one step see similar lengths (balanced)
    steps = []
    for s in range(0, len(micro), grad_accum * world):
        chunk = micro[s:s + grad_accum * world]
        steps.append([chunk[r::world] for r in range(world)])
    return steps


def collate(examples: list[Example], pad_id: int, weights: list[float]):
    """Left-padded batch: every answer ends in the last column, so the model computes logits
    only for the last (longest answer + 1) positions (`logits_to_keep`)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    answer = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, width - n:] = torch.tensor(e.input_ids)
        attn[i, width - n:] = 1
        answer[i, width - e.n_answer:] = True
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "position_ids": (attn.cumsum(1) - 1).clamp(min=0),
        "answer_mask": answer,
        "weights": torch.tensor(weights, dtype=torch.float32),
        "tokens": int(attn.sum()),
    }


def example_losses(model, batch):
    """Per-example loss: mean negative log-likelihood of its answer tokens, nothing else.

    Per-example (not per-token) means: label words differ in token count, and a token mean would
    weigh a 3-token label three times more than a 1-token one; weighted-F1 counts utterances.
    """
    import torch.nn.functional as F

    mask = batch["answer_mask"]
    a = int(mask.sum(1).max())
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=a + 1, use_cache=False)
    logits = out.logits[:, :-1].float()  # position t predicts token t+1: the last `a` tokens
    targets = batch["input_ids"][:, -a:]
    m = mask[:, -a:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    nll = nll.view(targets.shape) * m
    return nll.sum(1) / m.sum(1)


def task_scales(tasks: list[str], task_weight: dict[str, float]) -> dict[str, float]:
    """Per-example weight of each task in one optimizer step, given the tasks of ALL its examples
    (every rank, every micro-batch):

        loss = sum_t task_weight[t] * mean_{examples of task t in the step} loss_i

    i.e. L_erc + beta * L_predict with each task averaged over its own examples, whatever the mix
    of a micro-batch."""
    return {t: task_weight[t] / tasks.count(t) for t in set(tasks)}
