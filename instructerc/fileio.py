"""Small file helpers shared by every stage: atomic writes, JSONL, hashing, the cache folder."""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def cache_home() -> Path:
    """Where models and embeddings are kept: $INSTRUCTERC_HOME, else $XDG_CACHE_HOME/instructerc,
    else ~/.cache/instructerc."""
    if os.environ.get("INSTRUCTERC_HOME"):
        return Path(os.environ["INSTRUCTERC_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instructerc"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    Works for a file or a directory, so a crash never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_twins(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_OWNER}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


_OWNER = f"{socket.gethostname()}-{os.getpid()}"


def remove_stale_twins(path: Path) -> None:
    """Delete the temporary twins of `path` that a killed process of this host left behind (a
    half-converted 7B model is 13 GB). A twin is named after its writer (host-pid), so one that a
    live process or another host is still writing is left alone."""
    host = socket.gethostname()
    for twin in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(host)}-*"):
        pid = twin.name[len(f".{path.name}.{host}-"):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(twin, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_text(path: str | os.PathLike) -> str:
    """A text file's content; a missing file or one that is not UTF-8 is a UserError with the line."""
    from instructerc.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path)
    data = path.read_bytes()
    if path.suffix == ".gz":  # e.g. the answers bench/store_table.py keeps of each stored row
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UserError(f"not a complete gzip file ({e})", path=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"not UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8", path=path, row=line) from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a malformed line is a UserError naming it."""
    from instructerc.errors import UserError

    # Lines end at "\n" only: splitlines() would also cut at U+2028, U+0085, ... which JSON
    # strings may hold as they are (json.dumps(ensure_ascii=False) writes them so).
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise UserError(f"not valid JSON ({json_problem(e)})", path=path, row=lineno) from None
        if not isinstance(row, dict):
            raise UserError("each line must be a JSON object", path=path, row=lineno)
        yield lineno, row


def json_problem(e: ValueError | RecursionError) -> str:
    """Why json.loads refused a text. Besides JSONDecodeError it raises ValueError for an integer
    longer than Python's int/str digit limit and RecursionError for arrays nested too deep."""
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return "a number with too many digits"


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a missing or malformed file is a UserError naming it."""
    from instructerc.errors import UserError

    try:
        return json.loads(read_text(path))
    except (ValueError, RecursionError) as e:
        raise UserError(f"not valid JSON ({json_problem(e)})", path=path) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a malformed line is a UserError naming the file and line."""
    return [row for _, row in iter_jsonl(path)]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_records(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Size and sha256 of every file below `folder` (but `skip`), keyed by relative path: what a
    writer records so that a reader can tell a whole folder from a damaged one."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def first_damage(folder: str | os.PathLike, records: dict[str, dict], full: bool = True) -> str | None:
    """The first recorded file that is missing, of another size or (with `full`) another sha256."""
    for name, want in records.items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["size"]:
            return f"{name} has {path.stat().st_size} bytes, {want['size']} were written"
        if full and sha256_file(path) != want["sha256"]:
            return f"{name} changed since it was written (sha256 differs)"
    return None
