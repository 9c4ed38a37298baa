"""``train.py predict`` writes its detections: `PredictionsWriter`, a Lightning prediction writer.

`DetectorModule.predict_step` returns ``{image_id: [COCO result, ...]}`` per batch (the
datamodule's predict split: test when given, else val). Lightning only returns those from
``trainer.predict``; this callback also writes them, gathered from every rank (each image
once, `detector.evaluation.distributed.gather_per_image`), sorted by image id, as one COCO
results list (each record with the image's ``file_name`` too, as evaluate.py's predictions
carry it) to ``ROOT/predictions.json`` (``ROOT`` = ``trainer.default_root_dir``), through
`detector.io.write_json` (atomic).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from detector.evaluation.distributed import flatten, gather_per_image
from detector.io import write_json

PREDICTIONS_FILE = "predictions.json"


class PredictionsWriter(BasePredictionWriter):
    """Write all of ``trainer.predict``'s detections to `path` (COCO results format) at epoch end."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(write_interval="epoch")
        self.path = os.fspath(path)
        self.written: int | None = None  # detections written, once done

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions  # 1 or N loaders
        local = {image_id: records for batch in batches for image_id, records in batch.items()}
        per_image = gather_per_image(local)
        images = _image_table(trainer.datamodule)
        results = [{**r, "file_name": images[r["image_id"]]} if r["image_id"] in images else r for r in flatten(per_image)]
        if trainer.is_global_zero:
            write_json(self.path, results)
            self.written = len(results)
            print(f"predict: {len(results)} detections on {len(per_image)} images -> {self.path}", flush=True)


def _image_table(datamodule: Any) -> dict[int, str]:
    """``{image_id: file_name}`` of the datamodule's predict split (empty when it has none)."""
    split = getattr(datamodule, "predict_split", None)
    coco = getattr(getattr(datamodule, f"{split}_dataset", None), "coco", None) if split else None
    return {int(i): str(image.get("file_name", "")) for i, image in coco.imgs.items()} if coco is not None else {}
