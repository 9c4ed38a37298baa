"""Detections are scored in the annotation file's frame, whatever the data pipeline resized.

The regression: with ``data.min_size`` set, boxes stayed in the resized image's pixels and a
perfect detector scored AP 0 with exit 0 (evaluate.py and validation during training alike).
"""

import pytest
import torch
from tiny_run import _tiny

from detector.cli import section
from detector.data import DetectionDataModule
from detector.evaluation import batch_results, to_annotation_frame
from detector.evaluation.runner import score_detections


def test_boxes_scale_per_axis_to_the_file():
    out = {"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    moved = to_annotation_frame(out, input_size=(50, 100), orig_size=(100, 150))  # y x2, x x1.5
    assert torch.allclose(moved["boxes"], torch.tensor([[15.0, 10.0, 45.0, 50.0]]))
    assert moved["labels"] is out["labels"] and moved["scores"] is out["scores"]
    assert torch.equal(out["boxes"], torch.tensor([[10.0, 5.0, 30.0, 25.0]])), "the caller's output is not edited"


def test_same_size_is_returned_untouched():
    out = {"boxes": torch.rand(3, 4), "labels": torch.ones(3, dtype=torch.long), "scores": torch.rand(3),
           "masks": torch.rand(3, 1, 20, 30)}
    assert to_annotation_frame(out, (20, 30), (20, 30)) is out


def test_masks_resize_to_the_file_before_thresholding():
    prob = torch.zeros(1, 1, 20, 30)
    prob[..., 5:15, 10:20] = 1.0  # a 10 x 10 square at the input size
    out = {"boxes": torch.tensor([[10.0, 5.0, 20.0, 15.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([1.0]),
           "masks": prob}
    moved = to_annotation_frame(out, (20, 30), (40, 60))
    assert moved["masks"].shape == (1, 1, 40, 60)
    binary = moved["masks"][0, 0] > 0.5
    rows, cols = binary.any(1).nonzero().flatten(), binary.any(0).nonzero().flatten()
    assert (rows.min().item(), rows.max().item() + 1) == (10, 30)  # the square at twice the size
    assert (cols.min().item(), cols.max().item() + 1) == (20, 40)
    empty = dict(out, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0),
                 masks=torch.zeros(0, 1, 20, 30))
    assert to_annotation_frame(empty, (20, 30), (40, 60))["masks"].shape == (0, 1, 40, 60)


@pytest.mark.parametrize("min_size", [None, 40, 100])  # none, shrink (64 -> 40), enlarge (64 -> 100)
def test_a_perfect_detector_scores_ap_100_with_a_data_resize(data_root, min_size):
    """Ground truth as the model sees it (after the resize) given back as detections must score AP 1."""
    dm = DetectionDataModule(**{**section(_tiny(), "data"), "root": str(data_root), "num_workers": 0,
                                "min_size": min_size, "masks": True})
    dm.setup("validate")
    per_image, shapes = {}, set()
    for images, targets in dm.val_dataloader():
        shapes |= {tuple(im.shape[-2:]) for im in images}
        outputs = [{"boxes": t["boxes"].as_subclass(torch.Tensor).float(), "labels": t["labels"],
                    "scores": torch.linspace(1.0, 0.5, len(t["labels"])),
                    "masks": t["masks"].as_subclass(torch.Tensor)[:, None].float()} for t in targets]
        per_image.update(batch_results(images, targets, outputs, dm.category_ids, masks=True))
    assert (min(min(s) for s in shapes) == min_size) if min_size else shapes == {(64, 96)}
    metrics = score_detections(per_image, dm.val_annotation_file, ("bbox", "segm")).metrics
    assert metrics["bbox"].stats["AP"] == pytest.approx(1.0, abs=1e-6)
    # Masks went through a nearest-neighbour resize on the way in and a bilinear one on the way out:
    # exact at IoU .5; at .95 a shrink to 40 px loses thin parts (mask AP 0.51), which is the resize, not the scoring.
    assert metrics["segm"].stats["AP50"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["segm"].stats["AP"] > (0.999 if min_size is None else 0.4)
