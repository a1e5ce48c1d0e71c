"""Run the compute commands under tcmalloc when the machine has it.

A CPU training step of a small model spends much of its time allocating: torch and oneDNN ask
for and free many short-lived buffers, and glibc's malloc hands the large ones back to the
kernel each time. py-spy put about half of a SmolLM2 LoRA step inside allocation on glibc;
with tcmalloc the same steps ran 1.39x faster (BENCHMARKS.md, bench/bench_allocator.py).

An allocator can only be swapped before the process starts, so `instructerc train|eval|...`
restarts itself once with tcmalloc in LD_PRELOAD (same pid, same arguments) and says so in
what it writes (`summary.json`'s "allocator"). INSTRUCTERC_MALLOC chooses:

    auto (default)   tcmalloc if found (Debian/Ubuntu: libtcmalloc-minimal4), else glibc's malloc
    system           glibc's malloc, no restart
    /path/lib.so     that library
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig

ENV = "INSTRUCTERC_MALLOC"
_TRIED = "INSTRUCTERC_MALLOC_TRIED"  # set across the restart: a library that fails to preload is not retried
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so")
KNOWN = ("tcmalloc", "jemalloc", "mimalloc")


def library_dirs() -> list[str]:
    """Where a tcmalloc may be: the active environment's lib (conda, venv), then the system's."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [os.environ.get("CONDA_PREFIX", ""), sys.prefix, os.path.expanduser("~/.local")]
    dirs = [os.path.join(d, "lib") for d in dirs if d]
    for root in ("/usr/local/lib", "/usr/lib", "/lib"):
        dirs += [os.path.join(root, multiarch)] if multiarch else []
        dirs.append(root)
    return dirs + ["/usr/lib64"]


def find_tcmalloc(dirs: list[str] | None = None) -> str | None:
    for d in library_dirs() if dirs is None else dirs:
        for name in NAMES:
            hit = sorted(glob.glob(os.path.join(d, name)))
            if hit:
                return hit[0]
    return None


def in_use(maps_file: str = "/proc/self/maps") -> str:
    """The allocator this process runs: "tcmalloc", "jemalloc", "mimalloc" or "system"."""
    try:
        with open(maps_file, encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        return "system"
    return next((name for name in KNOWN if f"lib{name}" in maps), "system")


def restart_env(env: dict[str, str], running: str, found: str | None) -> dict[str, str] | None:
    """The environment to restart with, or None to carry on as we are."""
    choice = env.get(ENV, "auto")
    if choice == "system" or running != "system" or env.get(_TRIED) or not sys.platform.startswith("linux"):
        return None
    lib = found if choice == "auto" else choice
    if not lib:
        return None
    preload = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    # gperftools reports every allocation over 1 GiB on stderr; a base model's weights are one
    return {**env, "LD_PRELOAD": preload, _TRIED: lib, "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD":
            env.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))}


def restart_with_tcmalloc() -> None:
    """Replace this process by itself under tcmalloc, when there is one and it is not running yet.
    Call it first thing: whatever was done before is done again."""
    choice = os.environ.get(ENV, "auto")
    if choice not in ("auto", "system") and not os.path.isfile(choice):
        print(f"instructerc: error: {ENV}={choice} is neither auto, system nor a library file", file=sys.stderr)
        sys.exit(2)
    env = restart_env(dict(os.environ), in_use(), find_tcmalloc() if choice == "auto" else None)
    if env is None:
        return
    sys.stdout.flush(), sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
