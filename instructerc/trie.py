"""Token tries with tree attention: many sequences that share beginnings, computed in one forward.

Scoring (`decode.label_logprobs`) and packed training (`batching.pack_losses`) both run a trie:

- every sequence is inserted token by token; a token is stored once per distinct prefix, so
  prompts that begin alike (the instruction, a dialogue's growing history) share those nodes;
- nodes are flattened so that a parent precedes its children;
- each node attends to exactly its ancestors and itself, and its position id is its depth: each
  node's hidden state is the one a plain causal forward of its own sequence would give, so sums
  over the trie equal sums over the sequences (forward and gradient);
- the lm_head runs only on the nodes whose next token is scored.

Tree attention, two ways. Models loaded by `models.load_model` run TREE_ATTENTION, an attention
implementation registered with transformers: the trie is cut into groups of consecutive nodes
that share their ancestors (a record's own branch, a prompt's label branches) and each group
attends to its ancestors and itself only, so attention costs the sum of the nodes' depths. Any
other sdpa or eager model gets a dense (n, n) ancestor mask instead, whose attention cost grows
with the square of the trie: a 1,024-node MELD pack trained 1.3x faster sparse than dense, a
4,096-node one 2.0x (BENCHMARKS.md). Callers bound the size of a trie either way (`max_tokens`,
`max_pack_tokens`).
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

    inner = getattr(model, "module", model)  # a DeepSpeed engine's own `config` is DeepSpeed's
    attn = getattr(inner.config, "_attn_implementation", "sdpa")
    device = next(model.parameters()).device
    inputs = {"input_ids": torch.tensor([trie.tokens], device=device),
              "position_ids": torch.tensor([trie.depth], device=device),
              "logits_to_keep": torch.tensor(list(keep), device=device), "use_cache": False}
    if attn == TREE_ATTENTION:
        # a 4-D mask is passed on untouched by transformers; the layout says who sees whom
        placeholder = torch.zeros((1, 1, 1, 1), dtype=torch.bool, device=device)
        return model(**inputs, attention_mask=placeholder, tree_layout=TreeLayout.of(trie)).logits[0]
    if attn not in ("sdpa", "eager"):  # flash kernels ignore a custom 4-D mask: the results would be wrong
        raise ValueError(f"tree attention needs attn_implementation {TREE_ATTENTION!r}, 'sdpa' or 'eager', not {attn!r}")
    dtype = compute_dtype(model)
    allowed = trie.ancestor_mask().to(device)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return model(**inputs, attention_mask=bias[None, None]).logits[0]


def compute_dtype(model):
    """The dtype attention runs in: autocast's when it is on, else the weights'."""
    import torch

    device = next(model.parameters()).device
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    dtype = next(model.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32


# ----------------------------------------------------------------------------------------------
# sparse tree attention

TREE_ATTENTION = "instructerc_tree"


class TreeLayout:
    """The trie as groups of consecutive nodes that see the same ancestors.

    A chain is a maximal run of nodes each of which is the child of the node before it (inserting
    a sequence appends its new nodes as one chain). Consecutive chains hanging off the same node
    (a prompt's label branches) form one group. Group g is (start, end, ancestors, mask): nodes
    start..end-1 attend to the `ancestors` (node indices, root first) and, through the boolean
    `mask` (end - start, len(ancestors) + end - start), causally to their own chain.
    """

    def __init__(self, parent: Sequence[int]):
        import torch

        n = len(parent)
        starts = [i for i in range(n) if i == 0 or parent[i] != i - 1]
        ends = starts[1:] + [n]
        chain_of = [0] * n
        for c, (s, e) in enumerate(zip(starts, ends)):
            chain_of[s:e] = [c] * (e - s)
        self.groups = []
        k = 0
        while k < len(starts):
            j = k + 1
            while j < len(starts) and parent[starts[j]] == parent[starts[k]] >= 0:
                j += 1
            ancestors, p = [], parent[starts[k]]
            while p >= 0:  # walk up chain by chain
                first = starts[chain_of[p]]
                ancestors[:0] = range(first, p + 1)
                p = parent[first]
            s, e = starts[k], ends[j - 1]
            own = torch.zeros((e - s, e - s), dtype=torch.bool)
            for c in range(k, j):
                a, b = starts[c] - s, ends[c] - s
                own[a:b, a:b] = torch.ones((b - a, b - a), dtype=torch.bool).tril()
            mask = torch.cat([torch.ones((e - s, len(ancestors)), dtype=torch.bool), own], dim=1)
            self.groups.append((s, e, torch.tensor(ancestors, dtype=torch.long), mask))
            k = j

    @classmethod
    def of(cls, trie: Trie) -> "TreeLayout":
        return cls(trie.parent)


def tree_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                           tree_layout: TreeLayout | None = None, **kwargs):
    """transformers attention function: sdpa, or sparse tree attention when given a `tree_layout`.
    query (1, heads, n, d), key and value (1, kv_heads, n, d); returns (1, n, heads, d)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if tree_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    outputs = []
    for start, end, ancestors, mask in tree_layout.groups:
        keys, values = key[:, :, start:end], value[:, :, start:end]
        if len(ancestors):
            ancestors = ancestors.to(key.device)
            keys = torch.cat([key.index_select(2, ancestors), keys], dim=2)
            values = torch.cat([value.index_select(2, ancestors), values], dim=2)
        outputs.append(F.scaled_dot_product_attention(query[:, :, start:end], keys, values, attn_mask=mask.to(query.device),
                                                      dropout_p=dropout, scale=scaling, enable_gqa=gqa))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register_tree_attention() -> str:
    """Make TREE_ATTENTION known to transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(TREE_ATTENTION, tree_attention_forward)
    AttentionMaskInterface.register(TREE_ATTENTION, sdpa_mask)
    return TREE_ATTENTION
