"""Build, load and call the C++ CPU kernels of ``detector.ops`` (built once per source version).

The kernels in ``csrc/`` (RoIAlign avg and max modes, PrRoIPool) are compiled on first use with
``torch.utils.cpp_extension.load`` (ninja, ``-O3 -fopenmp``, ``at::parallel_for``) into a
shared library of plain ``extern "C"`` functions, which :class:`Kernels` calls through
``ctypes`` on tensors it allocates and checks. Why not ``TORCH_LIBRARY`` or pybind11:
their headers alone take ~10-25 s to compile; without them the build takes a few seconds.
Why JIT rather than a compiled wheel: the package stays pure Python to install, and the
build happens once where the compiler and the exact torch headers are.

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

import ctypes
import functools
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from .options import MAX_SAMPLING_GRID

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = ("align_avg.cpp", "align_max.cpp", "prroi_pool.cpp")
_HEADERS = ("roi_common.h", "align_common.h")
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


_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_INDEX_DTYPES = {1: torch.int8, 2: torch.int16, 4: torch.int32}
_I64, _DBL, _INT, _PTR = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Kernels:
    """Tensor-level wrappers of the C functions (CPU, float32/float64, any contiguity)."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        err = [ctypes.c_char_p, _I64]
        lib.detector_align_max_grid.argtypes = [_INT, _PTR, _I64, _I64, _I64, _DBL, _I64, _INT]
        lib.detector_align_max_grid.argtypes += [ctypes.POINTER(_I64), ctypes.POINTER(_DBL)] + err
        lib.detector_align_max_forward.argtypes = [_INT, _PTR, _PTR, _PTR, _PTR, _INT] + [_I64] * 6
        lib.detector_align_max_forward.argtypes += [_DBL, _I64, _INT, _DBL] + err
        lib.detector_align_max_backward.argtypes = [_INT, _PTR, _PTR, _PTR, _INT, _PTR] + [_I64] * 6
        lib.detector_align_max_backward.argtypes += [_DBL, _I64, _INT] + err
        for fn in ("forward", "backward"):
            getattr(lib, f"detector_align_avg_{fn}").argtypes = [_INT, _PTR, _PTR, _PTR] + [_I64] * 6
            getattr(lib, f"detector_align_avg_{fn}").argtypes += [_DBL, _I64, _INT, _DBL] + err
            getattr(lib, f"detector_align_avg_{fn}").restype = _INT
        lib.detector_prroi_forward.argtypes = [_INT, _PTR, _PTR, _PTR] + [_I64] * 6 + [_DBL] + err
        lib.detector_prroi_backward.argtypes = [_INT] + [_PTR] * 6 + [_I64] * 6 + [_DBL] + err
        for fn in ("grid", "forward", "backward"):
            getattr(lib, f"detector_align_max_{fn}").restype = _INT
        lib.detector_prroi_forward.restype = lib.detector_prroi_backward.restype = _INT
        lib.detector_align_grid_limit.argtypes, lib.detector_align_grid_limit.restype = [], _I64
        if lib.detector_align_grid_limit() != MAX_SAMPLING_GRID:  # one limit, two languages
            raise RuntimeError(
                f"csrc kMaxGrid is {lib.detector_align_grid_limit()} but options.MAX_SAMPLING_GRID is "
                f"{MAX_SAMPLING_GRID}; make them equal"
            )
        self.lib = lib

    @staticmethod
    def _call(fn, *args) -> None:
        error = ctypes.create_string_buffer(512)
        if fn(*args, error, len(error)) != 0:
            raise RuntimeError(f"detector.ops C++ kernel {fn.__name__}: {error.value.decode(errors='replace')}")

    @staticmethod
    def _check(input: torch.Tensor, rois: torch.Tensor, contiguous: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
        if input.device.type != "cpu" or rois.device.type != "cpu":
            raise ValueError("detector.ops C++ kernels take CPU tensors")
        if input.dtype not in _DTYPE_CODES or rois.dtype != input.dtype:
            raise TypeError(f"detector.ops C++ kernels take float32/float64, got {input.dtype} and {rois.dtype}")
        if input.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"expected input [N, C, H, W] and rois [K, 5], got {tuple(input.shape)}, {tuple(rois.shape)}"
            )
        return (input.contiguous() if contiguous else input), rois.contiguous(), _DTYPE_CODES[input.dtype]

    def _align_grid(self, rois, code, scale, ph, pw, sampling_ratio, aligned) -> tuple[int, float]:
        """-> (most samples in one bin, samples of one channel over all boxes)."""
        most, samples = _I64(0), _DBL(0.0)
        self._call(
            self.lib.detector_align_max_grid,
            code,
            _ptr(rois),
            rois.shape[0],
            ph,
            pw,
            scale,
            sampling_ratio,
            int(aligned),
            ctypes.byref(most),
            ctypes.byref(samples),
        )
        return most.value, samples.value

    def align_avg_forward(self, input, rois, scale, ph, pw, sampling_ratio, aligned):
        """-> (output (K, C, PH, PW), samples of one channel: the backward's parallel grain)."""
        input, rois, code = self._check(input, rois, contiguous=False)
        k, (_, c, h, w) = rois.shape[0], input.shape
        _, samples = self._align_grid(rois, code, scale, ph, pw, sampling_ratio, aligned)
        output = input.new_empty((k, c, ph, pw))
        if output.numel() > 0:
            nhwc = input.permute(0, 2, 3, 1).contiguous()  # (N, C, H, W) -> (N, H, W, C); free if channels_last
            self._call(self.lib.detector_align_avg_forward, code, _ptr(nhwc), _ptr(rois), _ptr(output),
                       k, c, h, w, ph, pw, scale, sampling_ratio, int(aligned), samples)
        return output, samples

    def align_avg_backward(self, grad, rois, scale, ph, pw, sampling_ratio, aligned, shape, samples):
        """-> grad_input (N, C, H, W) in channels_last memory for the output gradient ``grad`` (K, C, PH, PW)."""
        grad, rois, code = self._check(grad, rois, contiguous=False)
        n, c, h, w = shape
        grad_nhwc = grad.new_zeros((n, h, w, c))
        if grad.numel() > 0:
            g = grad.permute(0, 2, 3, 1).contiguous()  # (K, C, PH, PW) -> (K, PH, PW, C)
            self._call(self.lib.detector_align_avg_backward, code, _ptr(g), _ptr(rois), _ptr(grad_nhwc),
                       rois.shape[0], c, h, w, ph, pw, scale, sampling_ratio, int(aligned), samples)
        return grad_nhwc.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W) view, channels_last strides

    def align_max_forward(self, input, rois, scale, ph, pw, sampling_ratio, aligned):
        """-> (output (K, C, PH, PW), argmax (same shape, int8/int16/int32 sample index, -1 = empty bin))."""
        input, rois, code = self._check(input, rois, contiguous=False)  # read through an NHWC copy below
        k, (_, c, h, w) = rois.shape[0], input.shape
        most, samples = self._align_grid(rois, code, scale, ph, pw, sampling_ratio, aligned)
        index_bytes = 1 if most <= 127 else (2 if most <= 32767 else 4)
        output = input.new_empty((k, c, ph, pw))
        argmax = torch.empty((k, c, ph, pw), dtype=_INDEX_DTYPES[index_bytes])
        if output.numel() > 0:
            nhwc = input.permute(0, 2, 3, 1).contiguous()  # (N, C, H, W) -> (N, H, W, C)
            self._call(
                self.lib.detector_align_max_forward,
                code,
                _ptr(nhwc),
                _ptr(rois),
                _ptr(output),
                _ptr(argmax),
                index_bytes,
                k,
                c,
                h,
                w,
                ph,
                pw,
                scale,
                sampling_ratio,
                int(aligned),
                samples,
            )
        return output, argmax

    def align_max_backward(self, grad, rois, argmax, scale, ph, pw, sampling_ratio, aligned, shape):
        """-> grad_input (N, C, H, W) for the output gradient ``grad`` (K, C, PH, PW)."""
        grad, rois, code = self._check(grad, rois)
        argmax = argmax.contiguous()
        n, c, h, w = shape
        grad_input = grad.new_zeros((n, c, h, w))
        if grad.numel() > 0:
            self._call(
                self.lib.detector_align_max_backward,
                code,
                _ptr(grad),
                _ptr(rois),
                _ptr(argmax),
                argmax.element_size(),
                _ptr(grad_input),
                rois.shape[0],
                c,
                h,
                w,
                ph,
                pw,
                scale,
                sampling_ratio,
                int(aligned),
            )
        return grad_input

    def prroi_forward(self, input, rois, scale, ph, pw):
        """-> output (K, C, PH, PW)."""
        input, rois, code = self._check(input, rois)
        k, (_, c, h, w) = rois.shape[0], input.shape
        output = input.new_empty((k, c, ph, pw))
        if output.numel() > 0:
            self._call(
                self.lib.detector_prroi_forward, code, _ptr(input), _ptr(rois), _ptr(output), k, c, h, w, ph, pw, scale
            )
        return output

    def prroi_backward(self, grad, input, rois, output, scale, ph, pw, need_input, need_rois):
        """-> (grad_input or None, grad_rois or None); ``output`` is needed only for ``need_rois``."""
        input, rois, code = self._check(input, rois)
        grad = grad.contiguous()
        output = output.contiguous() if need_rois else None
        k, (_, c, h, w) = rois.shape[0], input.shape
        grad_input = torch.zeros_like(input) if need_input else None
        grad_rois = torch.zeros_like(rois) if need_rois else None
        if grad.numel() > 0 and (need_input or need_rois):
            self._call(
                self.lib.detector_prroi_backward,
                code,
                _ptr(grad),
                _ptr(input),
                _ptr(rois),
                _ptr(output),
                _ptr(grad_input),
                _ptr(grad_rois),
                k,
                c,
                h,
                w,
                ph,
                pw,
                scale,
            )
        return grad_input, grad_rois


@functools.cache
def load_extension() -> Kernels | None:
    """Return the :class:`Kernels` (building them on first use), or ``None`` (warned once)."""
    if os.environ.get("DETECTOR_OPS_NO_EXTENSION", "") not in ("", "0"):
        return None
    try:
        from torch.utils.cpp_extension import load

        digest = hashlib.sha1()
        for name in _SOURCES + _HEADERS:
            digest.update((_CSRC / name).read_bytes())
        build_dir = _build_dir(digest.hexdigest()[:12])
        path = load(
            name=_NAME,
            sources=[str(_CSRC / s) for s in _SOURCES],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
        return Kernels(path)
    except Exception as error:  # any build/load failure -> fallback, said once
        warnings.warn(
            "detector.ops: the C++ CPU kernels could not be built or loaded "
            f"({type(error).__name__}: {str(error).strip()[:300]}); RoIAlign (avg: torchvision's kernel; max) and "
            "PrRoIPool use the pure-PyTorch path instead (same values, slower).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
