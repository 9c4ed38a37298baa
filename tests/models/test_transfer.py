"""detector.models.transfer: the class rows reordered or re-initialised, and the module's runnable examples.

(init_from's files, category tables and FPN checks: tests/lit/test_init_from.py.)
"""

from __future__ import annotations

import doctest

import pytest
import torch
from model_helpers import tiny_config

import detector.models.transfer as transfer
from detector.models import build_detector
from detector.models.transfer import CLASS_SPECIFIC, permute_classes, select_classes, transfer_weights

MASK = {"mask": True}  # tiny_config: 3 classes, an 8-channel mask head


def test_docstring_examples():
    result = doctest.testmod(transfer, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_permute_classes_moves_every_class_specific_tensor_by_class():
    state = build_detector(tiny_config(**MASK)).state_dict()
    out = permute_classes(state, [0, 2, 1])
    cls, box, mask = (state[f"roi_heads.{k}.weight"] for k in ("box_predictor.cls_score", "box_predictor.bbox_pred",
                                                                "mask_predictor.mask_fcn_logits"))
    assert torch.equal(out["roi_heads.box_predictor.cls_score.weight"], cls[[0, 2, 1]])
    assert torch.equal(out["roi_heads.box_predictor.bbox_pred.weight"], box[[0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7]])
    assert torch.equal(out["roi_heads.mask_predictor.mask_fcn_logits.weight"], mask[[0, 2, 1]])
    assert torch.equal(out["roi_heads.box_predictor.bbox_pred.bias"][4:8], state["roi_heads.box_predictor.bbox_pred.bias"][8:12])
    assert all(out[k] is v for k, v in state.items() if not k.startswith(CLASS_SPECIFIC))
    with pytest.raises(ValueError, match=r"order=\[1, 0, 2\] must be a permutation of 0..2 starting with 0"):
        permute_classes(state, [1, 0, 2])
    with pytest.raises(ValueError, match="cls_score.weight has 3 rows, not a multiple of the 2 classes"):
        permute_classes(state, [0, 1])


def test_reinit_classes_keeps_the_fitting_class_rows_fresh():
    config = tiny_config(**MASK)
    source, model = build_detector(config), build_detector(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source.state_dict(), source="test", reinit_classes=True)
    assert report.counts["box predictor"]["re-initialised"] == 4 and report.counts["mask predictor"]["re-initialised"] == 2
    assert report.total("re-initialised") == 6 and report.total("skipped (shape)") == report.total("missing") == 0
    state = model.state_dict()
    for key, value in state.items():
        expected = fresh[key] if key.startswith(CLASS_SPECIFIC) else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_select_classes_builds_every_class_specific_tensor_at_the_model_count():
    source = build_detector(tiny_config(num_classes=4, **MASK)).state_dict()  # background + 3
    fresh = build_detector(tiny_config(num_classes=3, **MASK)).state_dict()  # background + 2
    out = select_classes(source, fresh, [0, 3, None])  # label 1 <- file label 3, label 2 new
    for key in ("box_predictor.cls_score.weight", "box_predictor.bbox_pred.weight", "box_predictor.bbox_pred.bias",
                "mask_predictor.mask_fcn_logits.weight", "mask_predictor.mask_fcn_logits.bias"):
        key = f"roi_heads.{key}"
        got = out[key].reshape(3, -1, *out[key].shape[1:])  # (K*m, ...) -> (K, m, ...)
        src = source[key].reshape(4, -1, *source[key].shape[1:])
        new = fresh[key].reshape(3, -1, *fresh[key].shape[1:])
        assert out[key].shape == fresh[key].shape, key
        assert torch.equal(got[0], src[0]) and torch.equal(got[1], src[3]) and torch.equal(got[2], new[2]), key
    assert all(out[k] is v for k, v in source.items() if not k.startswith(CLASS_SPECIFIC))
