"""Atomic checkpoint writes: a SIGKILL during a save never leaves a truncated file; safe loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from detector.checkpointing import load_checkpoint
from detector.io import atomic_write_bytes
from detector.lit.checkpoints import AtomicCheckpointIO

WRITER = textwrap.dedent("""
    import sys, torch
    from detector.lit.checkpoints import AtomicCheckpointIO
    io, path, i = AtomicCheckpointIO(), sys.argv[1], 0
    while True:  # ~12 MB per save: each one takes long enough to be interrupted
        io.save_checkpoint({"i": i, "w": torch.full((3_000_000,), float(i))}, path)
        print(i, flush=True)
        i += 1
""")


def test_sigkill_during_saves_never_leaves_a_truncated_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    for round_ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete save
        time.sleep(0.05 + 0.13 * round_)  # then kill it at some point of a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)
        assert ckpt["w"].shape == (3_000_000,) and bool((ckpt["w"] == ckpt["i"]).all())
        # a stray temp file may remain, but never under a name that resume or evaluate would pick up
        assert all(p.name == "last.ckpt" or (p.name.startswith(".tmp-") and p.suffix == ".partial")
                   for p in tmp_path.iterdir())


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_checkpoint_io_round_trip(tmp_path):
    AtomicCheckpointIO().save_checkpoint({"a": torch.arange(3)}, tmp_path / "sub" / "x.ckpt")
    assert torch.equal(load_checkpoint(tmp_path / "sub" / "x.ckpt")["a"], torch.arange(3))
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "sub" / "x.ckpt").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600


class Payload:
    def __reduce__(self):  # what a malicious pickle would do on load
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content, match", [
    (b"not a checkpoint at all", "not a checkpoint that loads safely"),
    (None, "not a checkpoint that loads safely"),  # a pickle with code in it
])
def test_load_checkpoint_refuses_non_checkpoints(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    if content is None:
        torch.save({"state_dict": {}, "evil": Payload()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
