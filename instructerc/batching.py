"""Training batches: encode records, plan each epoch's forward units per rank, and the loss.

Two ways to lay examples out for the model (`packing` in the config):

- `dialogue` (the default): a unit is a PACK, the token trie (`instructerc/trie.py`) of several
  records, most often all of one dialogue's records of the stage. A dialogue's ERC prompts share
  its history and its emotion-prediction prompts are little else, so in one trie the history is
  computed once and each record adds only its own branch (demonstrations, question, answer).
  Tree attention makes every record's logits, and so its loss and gradient, those of a plain
  forward of that record alone.
- `none`: a unit is a left-padded micro-batch of `micro_batch` records, one row each.

The plan of an epoch is a pure function of (examples, seed, epoch, sizes), computed identically
on every rank, so ranks never exchange indices, a resumed run rebuilds exactly the same plan,
and each rank knows how many examples of each task the whole optimizer step holds (the loss
normalisation below needs it). Every rank gets the same number of units per step (an empty
unit fills a gap), since ZeRO stage 2 reduces gradients after every backward.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from instructerc.models import answer_ids, prompt_ids
from instructerc.records import PromptRecord
from instructerc.train_config import grad_accum
from instructerc.trie import Trie, group_by_budget, tree_logits


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]  # prompt + answer
    n_answer: int  # the last n_answer tokens are the answer (the only ones with a loss)
    task: str
    truncated: bool
    dialogue: str = ""  # "<dataset>/<dialogue_id>": packs keep a dialogue's records together


def encode(tokenizer, record: PromptRecord, max_length: int) -> Example:
    """Prompt and answer tokens, through the same functions decoding uses.

    Too long a prompt loses its OLDEST tokens: the question and the target utterance sit at the
    end of every prompt, the far history at its start.
    """
    p, a = prompt_ids(tokenizer, record.prompt, record.chat), answer_ids(tokenizer, record.target)
    room = max(1, max_length - len(a))
    truncated = len(p) > room
    return Example(tuple(p[-room:] + a), len(a), record.task, truncated, f"{record.dataset}/{record.dialogue_id}")


def micro_batch_plan(lengths: list[int], micro_batch: int, accum: int, world: int, seed: int,
                     epoch: int, mega: int = 50) -> list[list[list[list[int]]]]:
    """`packing: none`. plan[step][rank] = that rank's `accum` micro-batches (lists of example indices).

    Shuffled with (seed, epoch); padded like DistributedSampler by repeating the first indices so
    every step is full on every rank; then grouped by length inside mega-batches of `mega`
    micro-batches (similar lengths share a micro-batch: little padding), as HF's
    LengthGroupedSampler does.
    """
    order = list(range(len(lengths)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    per_step = micro_batch * accum * world
    n = -(-len(order) // per_step) * per_step
    order = (order * (n // max(1, len(order)) + 1))[:n]
    span = micro_batch * mega
    grouped: list[int] = []
    for start in range(0, n, span):
        grouped += sorted(order[start:start + span], key=lambda i: -lengths[i])
    micro = [grouped[i:i + micro_batch] for i in range(0, n, micro_batch)]
    # each step takes consecutive micro-batches: ranks in one step see similar lengths (balanced)
    steps = []
    for s in range(0, len(micro), accum * world):
        chunk = micro[s:s + accum * world]
        steps.append([chunk[r::world] for r in range(world)])
    return steps


def packed_plan(sequences: list[tuple[int, ...]], dialogues: list[str], batch_size: int, world: int,
                seed: int, epoch: int, max_pack_tokens: int, dialogue_run: int = 0) -> list[list[list[list[int]]]]:
    """`packing: dialogue`. plan[step][rank] = that rank's packs (lists of example indices).

    A dialogue's examples, in token order (the trie's depth-first order: the records that share
    most sit side by side), are cut into runs of `dialogue_run` (0: one run, the whole dialogue)
    and the runs are shuffled with (seed, epoch). Whole dialogues share the most history, but a
    step then holds one or two dialogues, whose labels are far from a sample of the data's: on
    IEMOCAP (about 50 records a dialogue) such steps kept a model at lr 3e-3 answering one label
    (BENCHMARKS.md, "Mixing dialogues in a step"). Every step takes the next `batch_size`
    examples, as the micro-batch plan does (the last step of an epoch may hold fewer), and cuts them into packs of at most `max_pack_tokens` trie nodes, and
    with several ranks of at most about 1/world of the step's nodes: a dialogue too large for one
    pack is split between records, small ones share a pack. The packs of a step go to the ranks
    largest first in snake order, so ranks compute similar token counts. Any cut gives the same
    loss and gradient (each record's own forward), so the plans of 1 and N ranks agree up to
    floating-point summation order.
    """
    members: dict[str, list[int]] = {}
    for i, d in enumerate(dialogues):
        members.setdefault(d, []).append(i)
    runs = []
    for idx in members.values():
        idx = sorted(idx, key=lambda i: sequences[i])
        size = dialogue_run or len(idx)
        runs += [idx[k:k + size] for k in range(0, len(idx), size)]
    random.Random(seed * 1000 + epoch).shuffle(runs)
    order = [i for r in runs for i in r]
    steps = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        budget = max_pack_tokens
        if world > 1:  # packs of about a rank's share of the step's nodes keep every rank busy
            trie = Trie()
            for i in chunk:
                trie.insert(sequences[i])
            budget = min(budget, -(-len(trie) // world))
        packs, sizes = group_by_budget(chunk, sequences, budget)
        steps.append(share_among_ranks(packs, sizes, world))
    return steps


def share_among_ranks(units: list[list[int]], sizes: list[int], world: int) -> list[list[list[int]]]:
    """Each rank's units: largest first, dealt in snake order (0, 1, .., w-1, w-1, .., 0, ...) so
    every rank's total is close; ranks with one unit fewer get an empty one."""
    ranks: list[list[list[int]]] = [[] for _ in range(world)]
    for j, k in enumerate(sorted(range(len(units)), key=lambda k: -sizes[k])):
        lap, pos = divmod(j, world)
        ranks[pos if lap % 2 == 0 else world - 1 - pos].append(units[k])
    most = max(len(r) for r in ranks)
    return [r + [[] for _ in range(most - len(r))] for r in ranks]


def collate(examples: list[Example], pad_id: int):
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


def pack_losses(model, examples: list[Example]):
    """Per-example losses of a pack (as `example_losses` defines them), from one forward of its trie.

    Returns the losses and the number of trie nodes computed."""
    import torch
    import torch.nn.functional as F

    trie = Trie()
    rows: list[int] = []  # the node whose logits predict each answer token
    targets: list[int] = []
    owner: list[int] = []
    for k, e in enumerate(examples):
        nodes = trie.insert(e.input_ids)
        start = len(e.input_ids) - e.n_answer
        rows += nodes[start - 1:-1]
        targets += e.input_ids[start:]
        owner += [k] * e.n_answer
    keep = sorted(set(rows))
    column = {n: c for c, n in enumerate(keep)}
    logits = tree_logits(model, trie, keep).float()
    device = logits.device
    nll = F.cross_entropy(logits[torch.tensor([column[n] for n in rows], device=device)],
                          torch.tensor(targets, device=device), reduction="none")
    sums = torch.zeros(len(examples), device=device).index_add(0, torch.tensor(owner, device=device), nll)
    counts = torch.tensor([e.n_answer for e in examples], dtype=sums.dtype, device=device)
    return sums / counts, len(trie)


def unit_losses(model, examples: list[Example], packing: str, pad_id: int):
    """Per-example losses of one forward unit of the plan, and the token positions it computed.

    An empty unit (a rank's filler) computes one token with a zero loss: every rank still runs a
    backward, which ZeRO stage 2 needs, and adds nothing to the gradient."""
    import torch

    if not examples:
        device = next(model.parameters()).device
        logits = model(input_ids=torch.tensor([[pad_id]], device=device), logits_to_keep=1, use_cache=False).logits
        return logits.float().sum()[None] * 0.0, 1
    if packing == "none":
        batch = collate(examples, pad_id)
        batch = {k: v.to(next(model.parameters()).device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return example_losses(model, batch), int(batch["input_ids"].numel())
    return pack_losses(model, examples)


def epoch_plan(examples: list[Example], cfg: dict, world: int, epoch: int) -> list[list[list[list[int]]]]:
    """plan[step][rank] = that rank's forward units (lists of example indices), as `cfg["packing"]` says."""
    if cfg["packing"] == "none":
        lengths = [len(e.input_ids) for e in examples]
        return micro_batch_plan(lengths, cfg["micro_batch"], grad_accum(cfg, world), world, cfg["seed"], epoch)
    return packed_plan([e.input_ids for e in examples], [e.dialogue for e in examples], cfg["batch_size"], world,
                       cfg["seed"], epoch, cfg["max_pack_tokens"], cfg["dialogue_run"])


def task_scales(tasks: list[str], task_weight: dict[str, float]) -> dict[str, float]:
    """Per-example weight of each task in one optimizer step, given the tasks of ALL its examples
    (every rank, every micro-batch):

        loss = sum_t task_weight[t] * mean_{examples of task t in the step} loss_i

    i.e. L_erc + beta * L_predict with each task averaged over its own examples, whatever the mix
    of a micro-batch."""
    return {t: task_weight[t] / tasks.count(t) for t in set(tasks)}
