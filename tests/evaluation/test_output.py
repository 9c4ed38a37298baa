"""evaluate.py's output folder: refused when it holds results, probed before the work, cleared
of exactly its own files, and write errors that name the file (issue 12, items 7 and 9).

Tests run as root, where ``chmod`` does not stop writes: an unwritable folder is either a
path under a regular file (real) or a file system error raised by a stand-in (mocked).
"""

from __future__ import annotations

import errno
import json
import os
import types

import pytest

import detector.io
from detector.evaluation import output
from detector.evaluation.output import OutputError, check_output, clear_results, result_files, write_results


def _results(folder, labels=()):
    """A folder as evaluate.py leaves it: one checkpoint (no labels) or a comparison."""
    folder.mkdir(parents=True, exist_ok=True)
    if not labels:
        (folder / "metrics.json").write_text("{}")
        (folder / "detections.json").write_text("[]")
    for label in labels:
        (folder / label).mkdir()
        (folder / label / "metrics.json").write_text("{}")
        (folder / label / "detections.json").write_text("[]")
    if labels:
        (folder / "comparison.json").write_text("{}")


def test_folder_with_results_is_refused_unless_overwrite(tmp_path):
    _results(tmp_path / "eval")
    with pytest.raises(ValueError) as err:
        check_output(tmp_path / "eval")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "eval") in message and "--overwrite true" in message
    assert "metrics.json" in message and "detections.json" in message
    check_output(tmp_path / "eval", overwrite=True)


@pytest.mark.parametrize("name", ["comparison.json", "a_last/metrics.json", "b_last/detections.json",
                                  ".tmp-metrics.json-x1y2.partial"])
def test_any_of_our_files_counts_as_results(tmp_path, name):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match="already holds evaluation results"):
        check_output(tmp_path)


def test_other_files_do_not_count(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "metrics.json").write_text("{}")  # two levels down: not ours
    assert result_files(tmp_path) == []
    check_output(tmp_path)


def test_clear_results_removes_only_ours(tmp_path):
    """A comparison (a/, b/, comparison.json) then a single evaluation: no stale file survives,
    and the user's files (and folders holding them) stay."""
    _results(tmp_path, labels=("a", "b"))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "b" / "plot.png").write_bytes(b"png")
    (tmp_path / ".tmp-detections.json-abc.partial").write_text("half")
    removed = clear_results(tmp_path)
    assert len(removed) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "notes.txt"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["plot.png"]
    assert clear_results(tmp_path) == [] and clear_results(tmp_path / "missing") == []


def test_probe_leaves_nothing_behind(tmp_path):
    check_output(tmp_path / "a" / "b" / "eval")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "eval").mkdir()
    check_output(tmp_path / "eval")
    assert list((tmp_path / "eval").iterdir()) == []


@pytest.mark.parametrize("under", ["file", "file/eval"])
def test_output_that_is_or_is_under_a_file_is_refused(tmp_path, under):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError) as err:
        check_output(tmp_path / under)
    assert str(err.value) == (f"--output {tmp_path / under}: cannot write there ({tmp_path / 'file'} is a file, "
                              "not a folder); choose a writable folder")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_unwritable_folder_is_refused_with_the_reason(tmp_path, monkeypatch, code):
    """Mocked: mkstemp (EROFS, EACCES) or the probe's write (ENOSPC) fails as on a read-only,
    forbidden or full file system."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if code == errno.ENOSPC:
        monkeypatch.setattr(output.os, "write", fail)
    else:
        monkeypatch.setattr(output, "tempfile", types.SimpleNamespace(mkstemp=fail))
    with pytest.raises(ValueError) as err:
        check_output(tmp_path / "eval")
    assert str(err.value) == (f"--output {tmp_path / 'eval'}: cannot write there ({os.strerror(code)}); "
                              "choose a writable folder")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no folder, no probe file


def test_write_results_names_the_file_that_did_not_fit(tmp_path, monkeypatch):
    real_atomic_write = detector.io.atomic_write

    def full_disk(path, write):
        def fail(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_atomic_write(path, fail)

    monkeypatch.setattr(detector.io, "atomic_write", full_disk)
    with pytest.raises(OutputError) as err:
        write_results(tmp_path, [("a/detections.json", [])])
    assert err.value.errno == errno.ENOSPC
    assert err.value.strerror == f"cannot write {tmp_path / 'a' / 'detections.json'}: No space left on device"
    monkeypatch.undo()
    write_results(tmp_path, [("metrics.json", {"AP": None})])
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"AP": None}
