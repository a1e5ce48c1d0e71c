from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from instructerc.errors import UserError
from instructerc.unpickle import repair_cp1252, safe_load


def _write(tmp_path, obj, name="x.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def test_loads_plain_data_and_numpy_scalars(tmp_path):
    obj = [{"a": [np.int32(1), np.int32(0)]}, {"a": ["text"]}, [1, 2], ("t",)]
    loaded = safe_load(_write(tmp_path, obj))
    assert loaded == [{"a": [1, 0]}, {"a": ["text"]}, [1, 2], ("t",)]
    assert isinstance(loaded[0]["a"][0], np.int32)


def test_loads_numpy1_scalar_name(tmp_path):
    # EmoryNLP.pkl was written by numpy 1, whose scalar constructor lived in numpy.core.multiarray
    data = pickle.dumps(np.int32(5), protocol=4)
    assert data[2:3] == pickle.FRAME
    data = data[:2] + data[11:]  # drop the optional frame header, whose length would no longer match
    data = data.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data)
    assert safe_load(path) == 5


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsSubprocess:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_RunsCommand, _CallsSubprocess, _Evals])
def test_refuses_a_pickle_that_would_run_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, {"speakers": [payload(marker)]})
    with pytest.raises(UserError, match=r"refused to load: the pickle asks for .*(system|call|eval)") as e:
        safe_load(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_the_crafted_payload_would_really_run(tmp_path):
    marker = tmp_path / "really"
    pickle.loads(pickle.dumps(_RunsCommand(marker)))  # the thing safe_load must never do
    assert marker.exists()


def test_refuses_other_numpy_callables(tmp_path):
    # numpy.load (or any numpy function) is not a data type: refused too
    data = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x05numpy\x94\x8c\x04load\x94\x93\x94."
    path = tmp_path / "np.pkl"
    path.write_bytes(data)
    with pytest.raises(UserError, match="numpy.load"):
        safe_load(path)


def test_truncated_and_missing(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(UserError, match="not a readable pickle"):
        safe_load(path)
    with pytest.raises(UserError, match="file not found"):
        safe_load(tmp_path / "absent.pkl")


def test_repair_cp1252():
    assert repair_cp1252("It\x92s \x93ok\x94\x85 \x97 \x91x\x92") == "It’s “ok”… — ‘x’"
    assert repair_cp1252("plain café ’") == "plain café ’"
    assert repair_cp1252("\x81") == "\x81"  # undefined in Windows-1252: left alone
