"""The console scripts of ``pyproject.toml``: each runs one command line exactly as its file does.

=========================  ==========================================
``detector-train``         ``python train.py``
``detector-evaluate``      ``python evaluate.py``
``detector-ablation``      ``python -m detector.ablation``
``detector-check``         ``python -m detector.data.check``
``detector-synthetic``     ``python -m detector.data.synthetic``
``detector-quantization``  ``python -m detector.analysis.quantization``
=========================  ==========================================

Why wrappers and not the ``main`` functions themselves: a console script's launcher calls
``sys.exit(target())``, and several ``main`` functions return their result for tests and
notebooks (train.py's `DetectorCLI`, the ablation's table, evaluate.py's metrics), which
``sys.exit`` would print to stderr and turn into exit status 1. The module CLIs also keep
their user-error handling (one ``error: ...`` line, exit statuses) in their ``__main__``
block, so they run through ``runpy`` as ``python -m`` does, never through a second copy of it.
Each wrapper imports its command lazily: ``detector-check --help`` does not import Lightning.
"""

from __future__ import annotations

import runpy

#: Console script name -> module run as ``python -m``.
MODULE_SCRIPTS = {
    "detector-ablation": "detector.ablation",
    "detector-check": "detector.data.check",
    "detector-synthetic": "detector.data.synthetic",
    "detector-quantization": "detector.analysis.quantization",
}


def _run_module(module: str) -> int:
    """``python -m module`` in this process (its ``sys.exit`` propagates); 0 when it returns."""
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def train() -> int:
    """``detector-train``: train.py (`detector.cli.main_train`)."""
    from detector.cli import main_train

    main_train()
    return 0


def evaluate() -> int:
    """``detector-evaluate``: evaluate.py (`detector.cli.main_evaluate`)."""
    from detector.cli import main_evaluate

    main_evaluate()
    return 0


def ablation() -> int:
    """``detector-ablation``: ``python -m detector.ablation``."""
    return _run_module(MODULE_SCRIPTS["detector-ablation"])


def check() -> int:
    """``detector-check``: ``python -m detector.data.check``."""
    return _run_module(MODULE_SCRIPTS["detector-check"])


def synthetic() -> int:
    """``detector-synthetic``: ``python -m detector.data.synthetic``."""
    return _run_module(MODULE_SCRIPTS["detector-synthetic"])


def quantization() -> int:
    """``detector-quantization``: ``python -m detector.analysis.quantization``."""
    return _run_module(MODULE_SCRIPTS["detector-quantization"])
