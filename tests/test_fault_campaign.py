"""The kill campaign's quick mode (bench/fault_campaign.py): one seeded SIGKILL per command; the full
campaign (20 per command) is in BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
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


@pytest.fixture
def fc(monkeypatch):
    spec = importlib.util.spec_from_file_location("fault_campaign", REPO / "bench" / "fault_campaign.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fault_campaign", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_measured_timing_may_differ_even_where_the_two_reference_runs_agreed(tmp_path, fc):
    """Timings rounded to 1 ms agree between two runs by chance; a rerun that differs there is still
    right (a CI run failed on retrieval's cache lookup, 0.0 s in both references)."""
    manifest = {"queries": 12, "retrieval": {"k": 2, "timings_s": {"cache_lookup": 0.0, "encode": 1.5}}}
    for name, lookup, k in (("a", 0.0, 2), ("b", 0.0, 2), ("rerun", 0.004, 2), ("wrong", 0.0, 3)):
        (tmp_path / name).mkdir()
        data = {**manifest, "retrieval": {**manifest["retrieval"], "k": k,
                                          "timings_s": {"cache_lookup": lookup, "encode": 1.5}}}
        (tmp_path / name / "manifest.json").write_text(json.dumps(data))
    volatile = fc.volatile_keys(tmp_path / "a", tmp_path / "b")
    assert fc.same_output(tmp_path / "a", tmp_path / "rerun", volatile) == []
    assert fc.same_output(tmp_path / "a", tmp_path / "wrong", volatile) == ["manifest.json differs at ['retrieval.k']"]


@pytest.mark.parametrize("key, is_measured", [
    ("seconds", True), ("step_seconds", True), ("decoding.examples_per_second", True), ("tokens_per_s", True),
    ("retrieval.embeddings_per_s", True), ("retrieval.timings_s.search", True), ("peak_rss_gib", True),
    ("retrieval.k", False), ("best.step", False), ("adapter_sha256", False), ("weighted_f1", False),
    ("tokens", False), ("decoding.mode", False)])
def test_measurements_are_told_by_their_names_and_outputs_are_not(fc, key, is_measured):
    assert fc.measured(key) is is_measured
