"""Token tries with tree attention: many sequences that share beginnings, computed in one forward.

Scoring (`decode.label_logprobs`) and packed training (`batching.pack_losses`) both run a trie:

- every sequence is inserted token by token; a token is stored once per distinct prefix, so
  prompts that begin alike (the instruction, a dialogue's growing history) share those nodes;
- nodes are flattened so that a parent precedes its children;
- a 4-D attention mask lets each node see exactly its ancestors and itself, and its position id
  is its depth: each node's hidden state is the one a plain causal forward of its own sequence
  would give, so sums over the trie equal sums over the sequences (forward and gradient);
- the lm_head runs only on the nodes whose next token is scored.

The mask is dense, so attention costs grow with the square of the node count: callers bound
the size of a trie (`max_tokens`, `max_pack_tokens`).
"""

from __future__ import annotations

from typing import Sequence


class Trie:
    """Token sequences stored once per distinct prefix, flattened so a parent precedes its children."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self._child: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def insert(self, ids: Sequence[int], after: int = -1) -> list[int]:
        """Add `ids` below node `after` (-1: the root); return the node of each token."""
        nodes = []
        for tok in ids:
            node = self._child.get((after, tok))
            if node is None:
                node = self._child[(after, tok)] = len(self.tokens)
                self.tokens.append(tok)
                self.parent.append(after)
                self.depth.append(self.depth[after] + 1 if after >= 0 else 0)
            nodes.append(node)
            after = node
        return nodes

    def new_nodes(self, ids: Sequence[int], after: int = -1) -> int:
        """How many nodes inserting `ids` below `after` would add."""
        for k, tok in enumerate(ids):
            after = self._child.get((after, tok), -2)
            if after == -2:
                return len(ids) - k
        return 0

    def ancestor_mask(self):
        """(n, n) bool: node i may attend to node j iff j is i or one of its ancestors."""
        import torch

        n = len(self.tokens)
        mask = torch.zeros((n, n), dtype=torch.bool)
        for i, p in enumerate(self.parent):  # parents come first, so their rows are complete
            if p >= 0:
                mask[i] = mask[p]
            mask[i, i] = True
        return mask


def group_by_budget(order: Sequence[int], sequences: Sequence[Sequence[int]], max_tokens: int,
                    max_items: int = 0, extra: Sequence[int] | None = None) -> tuple[list[list[int]], list[int]]:
    """Cut `order` (indices into `sequences`) into consecutive groups whose tries hold at most
    `max_tokens` nodes (plus `extra[i]` nodes that sequence i adds on top, e.g. label branches) and
    at most `max_items` sequences (0: no limit). A sequence too large alone gets a group of its own.

    Returns the groups and their sizes in nodes. Order matters: neighbours that share beginnings
    (lexicographic order is depth-first order of the trie) share nodes only inside one group.
    """
    groups: list[list[int]] = []
    sizes: list[int] = []
    trie = Trie()
    for i in order:
        branch = extra[i] if extra is not None else 0
        grow = trie.new_nodes(sequences[i]) + branch
        full = bool(groups) and max_items and len(groups[-1]) >= max_items
        if not groups or full or sizes[-1] + grow > max_tokens:
            groups.append([])
            sizes.append(0)
            trie = Trie()
            grow = len(sequences[i]) + branch
        groups[-1].append(i)
        sizes[-1] += grow
        trie.insert(sequences[i])
    return groups, sizes


def tree_logits(model, trie: Trie, keep: Sequence[int]):
    """Logits (len(keep), vocab) of the trie's nodes `keep`, from one forward of the whole trie.

    Runs with or without gradients, as the caller's context says."""
    import torch

    attn = getattr(model.config, "_attn_implementation", "sdpa")
    if attn not in ("sdpa", "eager"):  # flash kernels ignore a custom 4-D mask: the results would be wrong
        raise ValueError(f"tree attention needs attn_implementation 'sdpa' or 'eager', not {attn!r}")
    device = next(model.parameters()).device
    dtype = compute_dtype(model)
    allowed = trie.ancestor_mask().to(device)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return model(
        input_ids=torch.tensor([trie.tokens], device=device),
        position_ids=torch.tensor([trie.depth], device=device),
        attention_mask=bias[None, None], logits_to_keep=torch.tensor(list(keep), device=device), use_cache=False,
    ).logits[0]


def compute_dtype(model):
    """The dtype attention runs in: autocast's when it is on, else the weights'."""
    import torch

    device = next(model.parameters()).device
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    dtype = next(model.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32
