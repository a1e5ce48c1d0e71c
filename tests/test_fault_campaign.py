"""The kill campaign's quick mode (bench/fault_campaign.py): one seeded SIGKILL per command; the full
campaign (20 per command) is in BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_kill_at_a_random_moment_leaves_nothing_partial_and_a_rerun_equals_the_uninterrupted_run(tmp_path):
    out = tmp_path / "campaign.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "fault_campaign.py"), "--kills", "1", "--seed", "1",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["command"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"prepare", "train", "eval", "predict", "pull"}
    for r in results.values():
        assert r["failures"] == [] and r["tried"] + r["finished_before_kill"] == 1
