"""Our assembly is torchvision's Faster R-CNN when the ROI op is RoIAlign avg, sampling 2 (with FPN too:
our multi-level pooler is then torchvision's MultiScaleRoIAlign).

`benchmarks/train_step.py` compares speed against `torchvision_twin(ours)`; this test
pins down that the two compute the same thing (same losses, same detections), so the
ratio it reports compares like with like, and so nothing in our glue (adapter, heads,
target checks, transform settings) changes torchvision's semantics.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from model_helpers import scene, tiny_config

from detector.models import build_detector

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"
_spec = importlib.util.spec_from_file_location("bench_train_step", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("layout", [dict(stride=32), dict(stride=16), dict(fpn=True, out_channels=16)],
                         ids=["s32", "s16", "fpn"])
def test_same_losses_and_detections_as_torchvision(layout):
    cfg = tiny_config(**layout, roi_op="roi_align", roi_options={"sampling_ratio": 2})
    ours = build_detector(cfg)
    theirs = bench.torchvision_twin(ours, cfg)
    images, targets = scene(mask=False, empty_second=False)
    results = []
    for model in (ours, theirs):
        torch.manual_seed(3)
        results.append(model.train()(images, targets))
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        dets = [model.eval()(images) for model in (ours, theirs)]
    for a, b in zip(*dets):
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])
