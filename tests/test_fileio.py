"""Atomic outputs: the temporary twin a killed writer leaves is removed by the next write."""

from __future__ import annotations

import subprocess
import sys

from instructerc.fileio import _OWNER, write_text


def test_a_twin_left_by_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "out.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = _OWNER.rsplit("-", 1)[0]
    left = tmp_path / f".out.json.{host}-{dead.stdout.strip()}.abc123"  # as a SIGKILL leaves it
    (left / "out.json").mkdir(parents=True)
    live = tmp_path / f".out.json.{_OWNER}.def456"  # this process, still writing
    other_host = tmp_path / ".out.json.elsewhere-1.ghi789"  # on a shared disk: not ours to judge
    for keep in (live, other_host):
        keep.mkdir()
    write_text(out, "whole")
    assert out.read_text() == "whole"
    assert not left.exists() and live.exists() and other_host.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.json", live.name, other_host.name])


def test_gzipped_jsonl_reads_as_jsonl_and_a_cut_one_is_named(tmp_path):
    import gzip

    import pytest

    from instructerc.errors import UserError
    from instructerc.fileio import read_jsonl

    whole = gzip.compress(b'{"id": "a"}\n{"id": "b"}\n')
    (tmp_path / "a.jsonl.gz").write_bytes(whole)
    assert read_jsonl(tmp_path / "a.jsonl.gz") == [{"id": "a"}, {"id": "b"}]
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:-6])
    with pytest.raises(UserError, match=r"cut\.jsonl\.gz: not a complete gzip file"):
        read_jsonl(tmp_path / "cut.jsonl.gz")
