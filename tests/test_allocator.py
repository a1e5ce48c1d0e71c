"""The compute commands restart themselves once under tcmalloc (allocator.py), and only then."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc import allocator

REPO = Path(__file__).resolve().parents[1]
LIB = "/opt/lib/libtcmalloc_minimal.so.4"


def test_a_restart_preloads_the_library_once_and_keeps_what_was_preloaded():
    env = allocator.restart_env({"LD_PRELOAD": "/x/libfoo.so", "PATH": "/bin"}, "system", LIB)
    assert env["LD_PRELOAD"] == f"{LIB} /x/libfoo.so" and env["PATH"] == "/bin"
    # the restarted process does not restart again, even if the library did not load
    assert allocator.restart_env(env, "system", LIB) is None


@pytest.mark.parametrize("env, running, found", [
    ({}, "system", None),  # nothing to preload
    ({}, "jemalloc", LIB),  # the user chose an allocator already
    ({"INSTRUCTERC_MALLOC": "system"}, "system", LIB),
])
def test_no_restart(env, running, found):
    assert allocator.restart_env(env, running, found) is None


def test_a_library_named_in_the_environment_is_used_as_is():
    env = allocator.restart_env({"INSTRUCTERC_MALLOC": "/my/libtcmalloc.so"}, "system", None)
    assert env["LD_PRELOAD"] == "/my/libtcmalloc.so"


def test_the_library_is_found_in_the_first_folder_that_has_one(tmp_path):
    (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    (tmp_path / "b" / "libtcmalloc.so.4").touch()
    (tmp_path / "c" / "libtcmalloc_minimal.so.4").touch()
    dirs = [str(tmp_path / d) for d in "abc"]
    assert allocator.find_tcmalloc(dirs) == str(tmp_path / "b" / "libtcmalloc.so.4")
    assert allocator.find_tcmalloc(dirs[:1]) is None


def test_the_allocator_in_use_is_read_from_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n")
    assert allocator.in_use(str(maps)) == "tcmalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.in_use(str(maps)) == "system"
    assert allocator.in_use(str(tmp_path / "absent")) == "system"


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator.find_tcmalloc() is None,
                    reason="no tcmalloc on this machine (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
def test_the_restarted_process_runs_under_tcmalloc_and_a_bad_choice_is_one_line(tmp_path):
    # the restart re-runs the same command line: here a `python -c` that asks again, then reports
    probe = "from instructerc import allocator as a; a.restart_with_tcmalloc(); print(a.in_use())"

    def run(**env):
        clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator._TRIED)}
        return subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                              env={**clean, **env}, timeout=120)

    assert run().stdout.split() == ["tcmalloc"]
    assert run(INSTRUCTERC_MALLOC="system").stdout.split() == ["system"]
    bad = run(INSTRUCTERC_MALLOC=str(tmp_path / "nope.so"))
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"instructerc: error: INSTRUCTERC_MALLOC={tmp_path / 'nope.so'} "
                                               "is neither auto, system nor a library file"]
