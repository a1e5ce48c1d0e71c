"""The three ways in reach the same CLI: console script, `python -m`, and the deepspeed launch form."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args, cwd=REPO):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_python_m_lists_every_subcommand():
    r = _run(sys.executable, "-m", "instructerc", "--help")
    assert r.returncode == 0
    for name in ("prepare", "train", "eval", "predict", "model"):
        assert name in r.stdout


def test_deepspeed_launch_form_with_local_rank_before_subcommand():
    # deepspeed runs `python -u instructerc --local_rank=N <subcommand> ...` from the repo root.
    r = _run(sys.executable, "-u", "instructerc", "--local_rank=1", "prepare", "--help")
    assert r.returncode == 0, r.stderr
    assert "--dataset" in r.stdout


def test_unknown_subcommand_is_a_usage_error():
    r = _run(sys.executable, "-m", "instructerc", "frobnicate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
