"""Build and load the C++ CPU kernels of ``detector.ops`` (once per source version, cached).

The kernels in ``csrc/`` (RoIAlign max mode, PrRoIPool) are compiled on first use with
``torch.utils.cpp_extension.load`` (ninja, ``-O3 -fopenmp``) and registered as
``torch.ops.detector_ops.*`` through ``TORCH_LIBRARY`` (no pybind11: that halves the
build time). Why JIT rather than a compiled wheel: the package stays pure-Python to
install, and the build (~20-40 s, once) happens where the compiler and the exact torch
headers are.

The build directory is keyed by a hash of the sources, the torch version and the Python
version, so edits or upgrades never load a stale binary. ``torch.utils.cpp_extension``
guards the directory with a file lock, so parallel processes (pytest-xdist, DDP ranks)
build once and the others wait. Location: ``$DETECTOR_OPS_BUILD_DIR``, else
``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``, else the temp dir.

If the build fails (no compiler, read-only disk, ...) :func:`load_extension` warns once
and returns ``None``; the operators then use their pure-PyTorch paths, which give the same
values, only slower. ``DETECTOR_OPS_NO_EXTENSION=1`` forces that path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = ("align_max.cpp", "prroi_pool.cpp")
_HEADERS = ("roi_common.h",)
_NAME = "detector_roi_ops"


def _build_dir(digest: str) -> Path:
    tag = f"{_NAME}_py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{digest}"
    tag = tag.replace("+", "_").replace(".", "_")
    candidates = [os.environ.get("DETECTOR_OPS_BUILD_DIR"), os.environ.get("TORCH_EXTENSIONS_DIR")]
    candidates += [str(Path.home() / ".cache" / "torch_extensions"), tempfile.gettempdir()]
    for base in candidates:
        if not base:
            continue
        path = Path(base) / tag
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise OSError("no writable directory for the detector.ops C++ build")


@functools.lru_cache(maxsize=None)
def load_extension():
    """Return ``torch.ops.detector_ops`` with the C++ kernels loaded, or ``None`` (warned once)."""
    if os.environ.get("DETECTOR_OPS_NO_EXTENSION", "") not in ("", "0"):
        return None
    try:
        from torch.utils.cpp_extension import load

        digest = hashlib.sha1()
        for name in _SOURCES + _HEADERS:
            digest.update((_CSRC / name).read_bytes())
        build_dir = _build_dir(digest.hexdigest()[:12])
        load(
            name=_NAME,
            sources=[str(_CSRC / s) for s in _SOURCES],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
        return torch.ops.detector_ops
    except Exception as error:  # any build/load failure -> fallback, said once
        warnings.warn(
            "detector.ops: the C++ CPU kernels could not be built or loaded "
            f"({type(error).__name__}: {str(error).strip()[:300]}); RoIAlign max mode and PrRoIPool "
            "use the pure-PyTorch path instead (same values, slower).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
