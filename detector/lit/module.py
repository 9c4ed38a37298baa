"""`DetectorModule`: the LightningModule that trains and evaluates one detector.

The detector is one argument, ``detector: DetectorConfig``, declared once in
`detector.models.config`; jsonargparse turns its fields into ``model.detector.<field>`` YAML
keys and ``--model.detector.<field>`` flags (``--model.detector.roi_options '{mode: max}'``).
The other arguments (optimizer, schedule, speed) are plain typed values. Checkpoints store
``hyper_parameters = {"detector": DetectorConfig.to_dict(), "lr": ..., ...}``: numbers and
strings only, loadable with ``weights_only=True`` (the format: `detector.checkpointing`).

What the module adds to the network:

- training: the sum of torchvision's loss dict; every term logged under ``train/``; a
  non-finite loss saves a checkpoint and stops the run with a message naming the step,
  epoch, batch and image ids (before the bad gradients reach the weights);
- validation: detections converted to COCO results with the dataset's original image and
  category ids, gathered from all ranks (each image once), scored by pycocotools COCOeval
  against the datamodule's own annotation file; logged as ``val/bbox_AP``,
  ``val/bbox_AP50``, ... (and ``val/segm_*`` with masks). evaluate.py scores checkpoints
  without Lightning, through the same per-batch conversion (`detector.evaluation.inference`);
- test: the same machinery against the datamodule's ``test_annotation_file``, logged as
  ``test/bbox_AP``... and pycocotools' summary table printed (``train.py test``);
- predict: ``{image_id: [COCO result, ...]}`` per batch (``train.py predict``; written to
  ``ROOT/predictions.json`` by `detector.lit.predictions.PredictionsWriter`);
- fine-tuning: ``init_from`` loads a checkpoint of ours or a torchvision detection state dict
  non-strictly at the start of the stage, unless a checkpoint was restored (`detector.lit.init_from`);
- optimization (`configure_optimizers`): SGD or AdamW, linear warm-up then cosine / step /
  constant, stepped per optimizer step (see `detector.lit.schedule`);
- the category table of the training data, stored in every checkpoint (under
  ``checkpoint["detector"]``) and checked against the data on resume and evaluation;
- whether the run's schedule was complete, in every checkpoint (``checkpoint["detector_run"]``,
  see `detector.lit.run_state`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import pytorch_lightning as pl
import torch

from detector.checkpointing import DETECTOR_KEY, RUN_STATE_KEY, detector_record
from detector.evaluation.categories import check_categories
from detector.evaluation.coco_eval import CocoEvalResult, evaluate_coco, load_coco
from detector.evaluation.distributed import flatten, gather_per_image
from detector.evaluation.inference import batch_results
from detector.lit.checkpoints import nonfinite_checkpoint_path
from detector.lit.init_from import InitFromWarning, init_from
from detector.lit.run_state import run_state_of
from detector.lit.schedule import make_lr_lambda
from detector.models import DetectorConfig, build_detector
from detector.models.transfer import TransferReport


class DetectorModule(pl.LightningModule):
    """Faster / Mask R-CNN with a chosen ROI layer, trained and scored the COCO way.

    Args:
        detector: the network (`DetectorConfig`; a dict of its fields is accepted too, as
            hyperparameters read back from a checkpoint are).
    Args (optimization):
        optimizer: "sgd" (momentum, the Faster R-CNN recipe) or "adamw".
        lr: peak learning rate, reached after `warmup_steps`.
        lr_schedule: "cosine", "step" (x `lr_gamma` at the fractions `lr_milestones` of
            training) or "constant", after a linear warm-up from `warmup_factor * lr`.
        min_lr_factor: the cosine schedule's floor, as a fraction of `lr`.
    Args (speed):
        channels_last: keep convolution weights (hence activations) in NHWC layout, the one
            oneDNN (CPU) and tensor cores (GPU) prefer under mixed precision. Same numbers
            up to rounding; checkpoints are interchangeable.
    Args (fine-tuning):
        init_from: a local file whose weights initialise the network before training: a
            train.py checkpoint or a torchvision detection state dict, loaded non-strictly
            (`detector.lit.init_from`; a table of what loaded is printed). Applied in `setup`,
            once, and only when the trainer resumes nothing: with ``ckpt_path`` the resumed
            weights win and init_from is not re-applied over them. Not read in ``__init__``, so
            a fine-tuned run's checkpoint loads after the file is gone.
    """

    def __init__(
        self,
        detector: DetectorConfig = DetectorConfig(),
        # --- optimization ---
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_schedule: Literal["cosine", "step", "constant"] = "cosine",
        warmup_steps: int = 500,
        warmup_factor: float = 0.001,
        lr_milestones: tuple[float, ...] = (0.67, 0.89),
        lr_gamma: float = 0.1,
        min_lr_factor: float = 0.0,
        # --- speed ---
        channels_last: bool = False,
        # --- fine-tuning ---
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(detector, Mapping):  # hyperparameters read back (load_from_checkpoint)
            detector = DetectorConfig.from_dict(detector)
        if not isinstance(detector, DetectorConfig):
            raise TypeError(f"detector must be a DetectorConfig, got {type(detector).__name__}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr} must be a positive number")
        if weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0 and momentum={momentum} in [0, 1)")
        # Stored as plain values (checkpoints load with weights_only=True); see detector.checkpointing.
        self.save_hyperparameters(ignore=["detector"])
        self.save_hyperparameters({"detector": detector.to_dict(), **self.hparams})
        self.detector_config = detector
        self.model = build_detector(detector)
        if channels_last:  # NHWC convolutions: ~7% faster CPU steps with bf16 autocast (oneDNN's layout)
            self.model = self.model.to(memory_format=torch.channels_last)
        # The data's category table (label i -> category_ids[i - 1]); taken from the
        # datamodule in `setup`, or from a checkpoint.
        self.category_ids: list[int] | None = None
        self.category_names: list[str] | None = None
        self._per_image: dict[int, list[dict[str, Any]]] = {}
        self._coco_gt_cache: tuple[str, Any] | None = None
        self.init_from_report: TransferReport | None = None  # what init_from loaded (None: not applied)
        self._init_from_done = init_from is None
        self._restored = False  # a checkpoint was loaded into this module (resume / evaluate a ckpt_path)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """torchvision detection I/O: losses with targets in train mode, detections in eval mode."""
        return self.model(images, targets)

    # ------------------------------------------------------------------ categories
    def setup(self, stage: str) -> None:
        self._setup_categories()

    def _setup_categories(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or getattr(datamodule, "category_ids", None) is None:
            return
        if self.detector_config.mask and getattr(datamodule, "masks", True) is False:
            raise ValueError("model.mask=true (Mask R-CNN) needs instance masks from the data: set data.masks: true")
        ids = [int(i) for i in datamodule.category_ids]
        names = [str(n) for n in getattr(datamodule, "category_names", [str(i) for i in ids])]
        if len(ids) + 1 != self.detector_config.num_classes:
            raise ValueError(
                f"the data has {len(ids)} categories (+ background = {len(ids) + 1} classes) but the model "
                f"was built with num_classes={self.detector_config.num_classes}"
            )
        if self.category_ids is not None:
            check_categories(self.category_ids, self.category_names or [], ids, names, "the model")
        self.category_ids, self.category_names = ids, names

    # ------------------------------------------------------------------ fine-tuning
    # init_from is applied at the start of the stage, after Lightning restored ``ckpt_path`` (if any):
    # `on_load_checkpoint` has run by then, so a resumed fine-tune keeps its resumed weights.
    def on_fit_start(self) -> None:
        self._apply_init_from()

    def on_validation_start(self) -> None:
        self._apply_init_from()

    def on_test_start(self) -> None:
        self._apply_init_from()

    def on_predict_start(self) -> None:
        self._apply_init_from()

    def _apply_init_from(self) -> None:
        """Load ``init_from`` once, unless the trainer restored a checkpoint (which wins)."""
        if self._init_from_done:
            return
        self._init_from_done = True
        if self._restored:
            resumed = self.trainer.ckpt_path if self._trainer is not None else None
            text = (f"model.init_from={self.hparams.init_from!r} not applied: the weights come from "
                    f"ckpt_path={resumed!r}")
        else:
            with warnings.catch_warnings():
                if not self._is_rank_zero():  # every rank loads; one says so (N copies of a warning read as N problems)
                    warnings.simplefilter("ignore", InitFromWarning)
                self.init_from_report, text = init_from(self.model, self.detector_config, self.hparams.init_from,
                                                        category_ids=self.category_ids,
                                                        category_names=self.category_names)
        if self._is_rank_zero():
            print(text, flush=True)

    def _is_rank_zero(self) -> bool:
        return self._trainer is None or self.trainer.is_global_zero

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[DETECTOR_KEY] = detector_record(self.category_ids, self.category_names)
        if self._trainer is not None:  # here, not in a callback: also in weights-only checkpoints
            checkpoint[RUN_STATE_KEY] = run_state_of(self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = True
        stored = checkpoint.get(DETECTOR_KEY) or {}
        ids, names = stored.get("category_ids"), stored.get("category_names")
        if ids is None:
            return
        if self.category_ids is not None:  # set from the data in `setup`, which runs first
            check_categories(ids, names or [], self.category_ids, self.category_names or [], "the checkpoint")
        self.category_ids, self.category_names = list(ids), list(names or [])

    # ------------------------------------------------------------------ training
    def training_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self._stop_if_not_finite(loss, losses, targets, batch_idx)
        batch_size = len(images)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    def _stop_if_not_finite(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], targets: list[dict[str, Any]], batch_idx: int) -> None:
        finite = bool(torch.isfinite(loss.detach()).item())
        if self.trainer.world_size > 1:  # every rank must take the same branch (the save below is collective)
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        path = nonfinite_checkpoint_path(self.trainer)
        self.trainer.save_checkpoint(path)
        image_ids = [int(t["image_id"]) for t in targets if "image_id" in t]
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        raise FloatingPointError(
            f"non-finite loss {float(loss.detach())} ({terms}) at global step {self.global_step}, epoch "
            f"{self.current_epoch}, batch {batch_idx} (image ids {image_ids}, rank {self.global_rank}). "
            f"Saved the weights before this step to {path}. Try a lower model.lr, a longer "
            "model.warmup_steps or trainer.gradient_clip_val."
        )

    # ------------------------------------------------------------------ validation, test, predict
    # Validation and test are one machinery (`_detect_batch`, `_score`) over different splits: the
    # datamodule's ``val_annotation_file`` / ``test_annotation_file`` is COCOeval's ground truth.
    def on_validation_epoch_start(self) -> None:
        self._per_image = {}

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        self._per_image.update(self._detect_batch(batch))

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_start(self) -> None:
        self._per_image = {}

    def test_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        self._per_image.update(self._detect_batch(batch))

    def on_test_epoch_end(self) -> None:
        self._score("test", print_summary=True)

    def predict_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> dict[int, list[dict[str, Any]]]:
        """``{image_id: [COCO result, ...]}`` for the batch (the datamodule's predict split)."""
        return self._detect_batch(batch)

    def _detect_batch(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
        images, targets = batch
        return batch_results(images, targets, self.model(images), self._require_categories(), self.detector_config.mask)

    def _score(self, split: str, print_summary: bool = False) -> None:
        """COCOeval of the epoch's detections (all ranks, each image once) against `split`'s
        annotation file; logged as ``{split}/bbox_AP``... by every rank (rank 0 computes)."""
        per_image = gather_per_image(self._per_image)
        self._per_image = {}
        metrics: dict[str, CocoEvalResult] = {}
        if self.trainer.is_global_zero:
            iou_types = ("bbox", "segm") if self.detector_config.mask else ("bbox",)
            metrics = evaluate_coco(self._coco_gt(split), flatten(per_image), per_image.keys(), iou_types)
            if print_summary:
                for iou, res in metrics.items():
                    print(f"{split} {iou} ({len(per_image)} images):\n{res.summary}", flush=True)
        numbers = {f"{split}/{iou}_{name}": value for iou, res in metrics.items() for name, value in res.stats.items()}
        numbers = self.trainer.strategy.broadcast(numbers, src=0)  # every rank logs (and checkpoints on) the same values
        self.log_dict(numbers, sync_dist=False)

    def _require_categories(self) -> list[int]:
        if self.category_ids is None:
            raise ValueError(
                "the model has no category table (label -> COCO category id): validate with a datamodule "
                "that exposes `category_ids`, or load a checkpoint written by this project"
            )
        return self.category_ids

    def _coco_gt(self, split: str) -> Any:
        attribute = f"{split}_annotation_file"
        path = getattr(self.trainer.datamodule, attribute, None)
        if path is None:
            raise ValueError(f"the datamodule has no `{attribute}`: COCO evaluation needs the annotation JSON")
        path = str(path)
        if self._coco_gt_cache is None or self._coco_gt_cache[0] != path:
            self._coco_gt_cache = (path, load_coco(path))
        return self._coco_gt_cache[1]

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        lr_lambda = make_lr_lambda(
            total_steps=self.trainer.estimated_stepping_batches,
            schedule=hp.lr_schedule,
            warmup_steps=hp.warmup_steps,
            warmup_factor=hp.warmup_factor,
            milestones=hp.lr_milestones,
            gamma=hp.lr_gamma,
            min_factor=hp.min_lr_factor,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
