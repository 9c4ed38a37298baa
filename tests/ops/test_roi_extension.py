"""The C++ extension's loader: fallback when it cannot be built, errors, build directory."""

import importlib
import warnings

import pytest
import torch
from roi_reference import prroi_ref, roi_align_ref
from roi_shapes import SCALE

# Internals on purpose: this file tests the C++ extension loader (_extension) and the dispatch to it.
import detector.ops._align_max as align_max_module
import detector.ops._extension as extension
from detector.ops import prroi_pool, roi_align

# The package exports the function prroi_pool, which hides the module of the same name
# from attribute access (as in torchvision.ops); import_module returns the module.
prroi_module = importlib.import_module("detector.ops.prroi_pool")


def test_forced_fallback_returns_none_quietly(monkeypatch):
    monkeypatch.setenv("DETECTOR_OPS_NO_EXTENSION", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extension.load_extension.__wrapped__() is None


def test_failed_build_warns_once_and_returns_none(monkeypatch):
    monkeypatch.setattr(extension, "_SOURCES", ("no_such_file.cpp",))
    with pytest.warns(RuntimeWarning, match="could not be built or loaded .* pure-PyTorch path"):
        assert extension.load_extension.__wrapped__() is None


def test_ops_use_the_torch_path_without_the_extension(monkeypatch, feat, rois):
    monkeypatch.setattr(align_max_module, "load_extension", lambda: None)
    monkeypatch.setattr(prroi_module, "load_extension", lambda: None)
    out = roi_align(feat, rois, 2, SCALE, -1, False, "max")
    torch.testing.assert_close(out, roi_align_ref(feat, rois, 2, 2, SCALE, -1, False, "max"), rtol=1e-10, atol=1e-12)
    out = prroi_pool(feat, rois, 2, SCALE)
    torch.testing.assert_close(out, prroi_ref(feat, rois, 2, 2, SCALE), rtol=1e-10, atol=1e-12)
    x = feat.clone().requires_grad_(True)
    for empty in (roi_align(x, rois[:0], 2, SCALE, 2, False, "max"), prroi_pool(x, rois[:0], 2, SCALE)):
        assert empty.shape == (0, 3, 2, 2)
        empty.sum().backward()
    assert x.grad.abs().max() == 0


def test_build_directory_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTOR_OPS_BUILD_DIR", str(tmp_path))
    path = extension._build_dir("abc123")
    assert path.parent == tmp_path and path.name.endswith("abc123") and path.is_dir()


def test_kernel_errors_surface_as_python_exceptions(feat, rois):
    kernels = extension.load_extension()
    if kernels is None:
        pytest.skip("C++ extension unavailable")
    with pytest.raises(TypeError, match="float32/float64"):
        kernels.prroi_forward(feat.float(), rois, SCALE, 2, 2)
    grad = torch.zeros(rois.shape[0], 3, 2, 2, dtype=torch.float64)
    bad_index = torch.zeros(rois.shape[0], 3, 2, 2, dtype=torch.uint8).view(torch.int8)
    with pytest.raises(RuntimeError, match="index_bytes must be 1, 2 or 4"):
        kernels._call(
            kernels.lib.detector_align_max_backward,
            1,
            grad.data_ptr(),
            rois.data_ptr(),
            bad_index.data_ptr(),
            3,
            torch.zeros_like(feat).data_ptr(),
            rois.shape[0],
            3,
            9,
            11,
            2,
            2,
            SCALE,
            2,
            0,
        )
