"""detector.io: atomic writes (old file kept on failure, errors name the path, plain-open
permissions) and the one JSON rule (non-finite -> null, numpy scalars -> numbers, newline)."""

from __future__ import annotations

import errno
import json
import math
import os

import numpy as np
import pytest

from detector.io import atomic_write, atomic_write_bytes, atomic_write_text, to_json_text, write_json


def test_atomic_write_error_names_the_destination_and_keeps_the_old_file(tmp_path):
    """ENOSPC in the middle of a write: the OS message names no file; ours names the destination,
    keeps the errno, leaves no temp file and the previous complete file in place."""
    target = tmp_path / "metrics.json"
    atomic_write_bytes(target, b"old")

    def write(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as err:
        atomic_write(target, write)
    assert err.value.errno == errno.ENOSPC and str(target) in str(err.value) and "\n" not in str(err.value)
    assert str(err.value) == f"[Errno {errno.ENOSPC}] cannot write {target}: No space left on device"
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_write_keeps_the_error_class_and_names_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError) as err:  # the folder cannot be made (EEXIST): the OSError subclass is kept
        atomic_write_bytes(tmp_path / "file" / "metrics.json", b"{}")
    assert str(tmp_path / "file" / "metrics.json") in str(err.value)

    def interrupted(f):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not an OSError: re-raised as it is
        atomic_write(tmp_path / "x.json", interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_json_error_keeps_the_old_file(tmp_path):
    """An object JSON cannot hold fails before anything is replaced."""
    target = tmp_path / "run.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(target, {"path": object()})
    assert json.loads(target.read_text()) == {"ok": 1} and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_new_files_get_plain_open_permissions(tmp_path):
    """mkstemp makes 0600; the result has the mode ``open(path, "w")`` gives under the umask."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "héllo")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    def mode(name):
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("a.txt") == mode("b.txt") == 0o644
    assert (tmp_path / "a.txt").read_bytes() == "héllo".encode()


def test_parent_folders_are_created(tmp_path):
    write_json(tmp_path / "a" / "b" / "x.json", [1, 2])
    assert (tmp_path / "a" / "b" / "x.json").read_text() == "[\n 1,\n 2\n]\n"


def test_non_finite_numbers_are_null_everywhere(tmp_path):
    """The one NaN rule: NaN, +inf, -inf -> null, at any depth, numpy floats included."""
    obj = {"AP": math.nan, "rows": [{"std": math.inf, "n": 1}, (-math.inf, 0.5)], "np": np.float32("nan")}
    expected = {"AP": None, "rows": [{"std": None, "n": 1}, [None, 0.5]], "np": None}
    write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    assert json.loads(text) == expected
    assert json.loads(to_json_text(obj)) == expected
    assert math.isnan(obj["AP"])  # the caller's object is not modified


def test_numpy_scalars_become_plain_numbers():
    obj = {"i": np.int64(3), "f": np.float64(0.25), "b": np.bool_(True), "l": [np.float32(1.5)]}
    assert json.loads(to_json_text(obj)) == {"i": 3, "f": 0.25, "b": True, "l": [1.5]}


def test_finite_json_is_exactly_json_dumps():
    """The fast path: an all-finite object is written exactly as json.dumps writes it, plus a newline."""
    obj = {"b": [1, 2.5, "x", None, True], "a": {"k": -0.0}}
    assert to_json_text(obj) == json.dumps(obj, indent=1) + "\n"
    assert to_json_text(obj, indent=2) == json.dumps(obj, indent=2) + "\n"
    assert to_json_text(obj, indent=None) == json.dumps(obj) + "\n"


def test_types_json_cannot_hold_are_refused():
    with pytest.raises(TypeError):
        to_json_text({"s": {1, 2}})
    with pytest.raises(TypeError):
        to_json_text([np.zeros(3)])  # an array, not a scalar: the caller converts on purpose


def test_docstring_examples():
    import doctest

    import detector.io

    result = doctest.testmod(detector.io, verbose=False)
    assert result.attempted > 0 and result.failed == 0
