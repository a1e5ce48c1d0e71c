"""scripts/gpu_check.sh: its CPU dry run (configs, imports, data) works on any machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and set(report["versions"]) == {"torch", "transformers", "peft", "deepspeed"}
    sizes = report["sizes"]
    assert 130e6 < sizes["smollm2-135m-like"]["parameters"] < 140e6  # SmolLM2-135M's shape
    assert 6.7e9 < sizes["llama2-7b-like"]["parameters"] < 6.8e9  # LLaMA-2-7B's shape
    assert report["data_records"] > 0


def test_gpu_check_refuses_an_unknown_option(tmp_path):
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--gpus", "2"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --gpus" in done.stderr
