"""Read train.py's options without training: the one config reader for every tool.

The ablation, the quantization analysis and the data benchmark all need "the settings a
``train.py fit --config A.yaml --config B.yaml --model.detector.stride 32`` would use". They
get them from train.py's own parser (`DetectorCLI`'s), so layered configs, ``--x.y``
overrides, defaults, types and error messages are jsonargparse's, never a hand-written
YAML merge that could disagree with the real run.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Sequence
from typing import Any

from jsonargparse import Namespace

#: Parsing is process-global work: jsonargparse enters each config file's folder (``os.chdir``) to
#: resolve the paths inside it, and the reader swaps ``sys.argv``. Two threads parsing at once (the
#: ablation's ``--jobs N`` slots) would read each other's relative paths; one parse at a time.
_PARSE_LOCK = threading.Lock()


def read_train_config(args: Sequence[str]) -> Namespace:
    """The options ``train.py fit <args>`` would run with, parsed and validated, nothing built.

    `args` are train.py's ``fit`` arguments (``["--config", "configs/quickstart.yaml",
    "--model.detector.stride", "32"]``). Returns the parsed `jsonargparse.Namespace`:
    ``cfg.model.detector.stride``, ``cfg.data.dataset``, ``cfg.trainer.max_epochs``...
    Raises ValueError with jsonargparse's message (which names the key) on a bad option.
    """
    from detector.cli.train import DetectorCLI

    class ParseOnly(DetectorCLI):
        """train.py's CLI stopped after parsing ``fit``: no seeding, no classes, no run."""

        def _set_seed(self) -> None:  # Lightning's hook that seeds the RNGs after parsing: not for a reader
            pass

        def instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str | None) -> None:
            pass

    with _PARSE_LOCK:
        argv, sys.argv = sys.argv, sys.argv[:1]  # the caller's own argv is not train.py's (Lightning warns otherwise)
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                cli = ParseOnly(args=["fit", *map(str, args)], save_config_callback=None,
                                load_from_checkpoint_support=False)
        except SystemExit:  # jsonargparse wrote the usage and the message (naming the key) on stderr
            raise ValueError(f"train.py fit {' '.join(map(str, args))} does not parse: "
                             f"{parse_error_message(stderr.getvalue())}") from None
        finally:
            sys.argv = argv
    return cli.config["fit"]


def parse_error_message(stderr: str) -> str:
    """The ``error: ...`` part of what jsonargparse wrote on exit (without the long usage
    text before it), or the whole text when it has no such line."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    if not starts:
        return stderr.strip() or "(no message)"
    return "\n".join(lines[starts[-1]:])[len("error: "):].strip()


def section(config: Namespace, key: str) -> dict[str, Any]:
    """``config[key]`` as a plain dict (``{}`` when absent): e.g. ``section(cfg, "data")``."""
    value = config.get(key)
    if value is None:
        return {}
    return value.as_dict() if isinstance(value, Namespace) else dict(value)
