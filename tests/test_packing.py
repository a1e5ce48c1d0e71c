"""Dialogue-packed training: the plan, and exactness against one forward per record."""

from __future__ import annotations

import random

import pytest
import torch

from instructerc import batching
from instructerc.dialogue import Dialogue, Utterance
from instructerc.labels import LABEL_SETS
from instructerc.models import load_tokenizer
from instructerc.spec import PromptSpec
from instructerc.build import RecordBuilder
from instructerc.trie import Trie
from test_train import lora_model

MELD = LABEL_SETS["meld"]
WORDS = ("oh", "okay", "great", "really", "why", "no", "yes", "hey", "what", "it", "is", "was")


def dialogue(k: int, turns: int) -> Dialogue:
    rng = random.Random(k)
    utterances = tuple(
        Utterance(t, rng.choice(("Ross", "Rachel", "Monica")), " ".join(rng.choice(WORDS) for _ in range(2 + t % 4)),
                  rng.choice(MELD.labels))
        for t in range(turns))
    return Dialogue("meld", "train", str(k), utterances)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def joint_examples(tokenizer):
    """ERC + prediction examples of four dialogues (window 3, so the history slides), in file order."""
    dialogues = [dialogue(k, turns) for k, turns in enumerate((5, 3, 7, 4))]
    build = RecordBuilder(PromptSpec(template="default", label_set="meld", labels=MELD.labels, window=3), MELD)
    records = [r for d in dialogues for r in build.dialogue_records(d, ("erc",))] \
        + [r for d in dialogues for r in build.dialogue_records(d, ("predict",))]
    return [batching.encode(tokenizer, r, 1024) for r in records]


def test_a_dialogue_trie_computes_far_fewer_tokens(joint_examples):
    trie = Trie()
    for e in joint_examples:
        trie.insert(e.input_ids)
    assert len(trie) < 0.6 * sum(len(e.input_ids) for e in joint_examples)


def test_packed_plan_keeps_dialogues_together_and_covers_each_example_once(joint_examples):
    seqs, dialogues = [e.input_ids for e in joint_examples], [e.dialogue for e in joint_examples]
    plan = batching.packed_plan(seqs, dialogues, batch_size=8, world=1, seed=3, epoch=0, max_pack_tokens=400)
    steps = [[i for units in step for unit in units for i in unit] for step in plan]
    assert sorted(i for s in steps for i in s) == list(range(len(seqs)))  # each example once, no padding
    assert [len(s) for s in steps[:-1]] == [8] * (len(steps) - 1) and 0 < len(steps[-1]) <= 8
    for d in set(dialogues):  # a dialogue's examples sit in consecutive steps
        where = [k for k, s in enumerate(steps) if any(dialogues[i] == d for i in s)]
        assert where == list(range(where[0], where[-1] + 1))
    for step in plan:
        for unit in step[0]:
            trie = Trie()
            for i in unit:
                trie.insert(seqs[i])
            assert len(trie) <= 400 or len(unit) == 1
    assert plan == batching.packed_plan(seqs, dialogues, 8, 1, seed=3, epoch=0, max_pack_tokens=400)
    assert plan != batching.packed_plan(seqs, dialogues, 8, 1, seed=3, epoch=1, max_pack_tokens=400)


def test_dialogue_runs_mix_dialogues_in_a_step_and_keep_each_run_in_trie_order():
    rng = random.Random(0)
    dialogues = [f"d{d}" for d in range(6) for _ in range(10)]
    seqs = [(int(d[1]),) + tuple(rng.randrange(50) for _ in range(5)) for d in dialogues]
    whole = batching.packed_plan(seqs, dialogues, batch_size=8, world=1, seed=1, epoch=0, max_pack_tokens=10_000)
    runs = batching.packed_plan(seqs, dialogues, 8, 1, seed=1, epoch=0, max_pack_tokens=10_000, dialogue_run=2)
    flat = lambda plan: [[i for unit in step[0] for i in unit] for step in plan]  # noqa: E731
    assert sorted(i for s in flat(runs) for i in s) == list(range(len(seqs)))
    per_step = lambda plan: [len({dialogues[i] for i in s}) for s in flat(plan)]  # noqa: E731
    assert max(per_step(whole)) <= 2 and min(per_step(runs)) >= 2 and max(per_step(runs)) > 2
    order = [i for s in flat(runs) for i in s]
    for d in set(dialogues):  # runs of one dialogue: pairs in its trie (token) order
        mine = sorted((i for i in range(len(seqs)) if dialogues[i] == d), key=lambda i: seqs[i])
        pairs = {tuple(mine[k:k + 2]) for k in range(0, 10, 2)}
        assert {tuple(order[k:k + 2]) for k in range(0, len(order), 2) if dialogues[order[k]] == d} == pairs
    assert whole == batching.packed_plan(seqs, dialogues, 8, 1, seed=1, epoch=0, max_pack_tokens=10_000,
                                         dialogue_run=10)  # a run as long as the dialogue: whole dialogues


def test_ranks_get_the_same_examples_per_step_balanced_and_equal_in_count(joint_examples):
    seqs, dialogues = [e.input_ids for e in joint_examples], [e.dialogue for e in joint_examples]
    one = batching.packed_plan(seqs, dialogues, 16, 1, seed=0, epoch=0, max_pack_tokens=150)
    three = batching.packed_plan(seqs, dialogues, 16, 3, seed=0, epoch=0, max_pack_tokens=150)
    assert len(one) == len(three)
    for a, b in zip(one, three):
        assert sorted(i for u in a[0] for i in u) == sorted(i for r in b for u in r for i in u)
        assert len({len(r) for r in b}) == 1  # every rank runs the same number of units (empty ones fill)


def test_share_among_ranks_deals_largest_first_in_snake_order():
    units = [[0], [1], [2], [3], [4]]
    ranks = batching.share_among_ranks(units, [50, 40, 30, 20, 10], world=2)
    assert ranks == [[[0], [3], [4]], [[1], [2], []]]


def _loss_and_grads(model, per_unit, weights):
    """Weighted loss over units of examples and the LoRA gradient it gives."""
    model.zero_grad()
    losses = []
    for unit, w in zip(per_unit, weights):
        lo = unit(model)
        losses.append(lo.detach())
        (lo * torch.tensor(w)).sum().backward()
    return torch.cat(losses), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_packed_loss_and_gradient_equal_one_forward_per_record(tiny_model_dir, tokenizer, joint_examples):
    """fp32, dropout 0: packs (one dialogue split over two packs) give each record the loss and the
    LoRA gradient of its own plain forward, within 1e-4."""
    model = lora_model(tiny_model_dir)
    examples = joint_examples
    seqs, dialogues = [e.input_ids for e in examples], [e.dialogue for e in examples]
    plan = batching.packed_plan(seqs, dialogues, batch_size=len(examples), world=1, seed=0, epoch=0,
                                max_pack_tokens=300)
    packs = plan[0][0]
    split = {d for d in dialogues if sum(any(dialogues[i] == d for i in p) for p in packs) > 1}
    assert split and len(packs) > 2, "the test needs a dialogue split over packs"
    scale = batching.task_scales([e.task for e in examples], {"erc": 1.0, "predict": 0.3})
    order = [i for p in packs for i in p]

    def pack_unit(p):
        return lambda m: batching.pack_losses(m, [examples[i] for i in p])[0]

    def record_unit(i):
        return lambda m: batching.unit_losses(m, [examples[i]], "none", tokenizer.pad_token_id)[0]

    packed, g_packed = _loss_and_grads(model, [pack_unit(p) for p in packs],
                                       [[scale[examples[i].task] for i in p] for p in packs])
    single, g_single = _loss_and_grads(model, [record_unit(i) for i in order], [[scale[examples[i].task]] for i in order])
    torch.testing.assert_close(packed, single, rtol=1e-4, atol=1e-4)
    assert any(g.abs().sum() > 0 for g in g_packed)
    for a, b in zip(g_packed, g_single):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_an_empty_unit_adds_nothing_to_the_gradient(tiny_model_dir, tokenizer):
    model = lora_model(tiny_model_dir)
    losses, computed = batching.unit_losses(model, [], "dialogue", tokenizer.pad_token_id)
    assert computed == 1 and float(losses.detach().sum()) == 0.0
    losses.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and not g.any() for g in grads)


def test_sparse_tree_attention_equals_the_dense_mask(tiny_model_dir, joint_examples):
    """The registered tree attention (groups of nodes over their ancestors) gives the logits of
    the dense ancestor mask, on a trie with shared histories and label-like sibling branches."""
    from instructerc.models import load_model
    from instructerc.trie import TREE_ATTENTION, TreeLayout, tree_logits

    model = load_model(tiny_model_dir)
    assert model.config._attn_implementation == TREE_ATTENTION
    trie = Trie()
    for e in joint_examples:
        last = trie.insert(e.input_ids[:-2])[-1]
        for branch in ([5], [6, 7], [5, 9]):  # siblings below one node, one sharing a first token
            trie.insert(branch, last)
    layout = TreeLayout.of(trie)
    assert [g[0] for g in layout.groups][0] == 0 and layout.groups[-1][1] == len(trie)
    assert all(a[1] == b[0] for a, b in zip(layout.groups, layout.groups[1:]))  # groups tile the nodes
    keep = list(range(len(trie)))
    with torch.no_grad():
        sparse = tree_logits(model, trie, keep)
        model.config._attn_implementation = "sdpa"
        dense = tree_logits(model, trie, keep)
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)
