"""`DetectorModule`: the LightningModule that trains and evaluates one detector.

Every init argument is a plain typed value (str, int, float, bool, tuples, `Literal`), so
each is a YAML key and a ``--model.<name>`` flag of the CLI, appears in ``--help``, is
stored by `save_hyperparameters()` and rebuilds the same network from a checkpoint with
nothing pickled but numbers and strings. The detector's own arguments mirror
`detector.models.DetectorConfig` field for field (same names, same defaults; a test keeps
them in step), except that the ROI op's options are spelled out flat
(`roi_mode`, `sampling_ratio`, `aligned`) because those are what an ablation varies.

What the module adds to the network:

- training: the sum of torchvision's loss dict; every term logged under ``train/``; a
  non-finite loss saves a checkpoint and stops the run with a message naming the step,
  epoch, batch and image ids (before the bad gradients reach the weights);
- validation: detections converted to COCO results with the dataset's original image and
  category ids, gathered from all ranks (each image once), scored by pycocotools COCOeval
  against the datamodule's own annotation file; logged as ``val/bbox_AP``,
  ``val/bbox_AP50``, ... (and ``val/segm_*`` with masks). The last evaluation stays in
  `last_evaluation` for `evaluate.py`;
- optimization (`configure_optimizers`): SGD or AdamW, linear warm-up then cosine / step /
  constant, stepped per optimizer step (see `detector.lit.schedule`);
- the category table of the training data, stored in every checkpoint (under
  ``checkpoint["detector"]``) and checked against the data on resume and evaluation;
- whether the run's schedule was complete, in every checkpoint (``checkpoint["detector_run"]``,
  see `detector.lit.run_state`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
import torch

from detector.checkpointing import RUN_STATE_KEY, nonfinite_checkpoint_path
from detector.evaluation.coco_eval import CocoEvalResult, evaluate_coco, load_coco, to_coco_results
from detector.evaluation.distributed import flatten, gather_per_image
from detector.lit.run_state import run_state_of
from detector.lit.schedule import make_lr_lambda
from detector.models import DetectorConfig, build_detector

CHECKPOINT_KEY = "detector"
CHECKPOINT_FORMAT = 1
# DetectorModule arguments that are not DetectorConfig fields.
ROI_FLAT_OPTIONS = ("roi_mode", "sampling_ratio", "aligned")
OPTIM_ARGS = ("optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "warmup_steps",
              "warmup_factor", "lr_milestones", "lr_gamma", "min_lr_factor")
# DetectorConfig fields that DetectorModule does not expose: the flat roi_mode /
# sampling_ratio / aligned become roi_options, and the mask branch uses the box branch's op.
HIDDEN_CONFIG_FIELDS = ("roi_options", "mask_roi_op", "mask_roi_options")
# ROI ops whose options include sampling_ratio / aligned / mode (shared/ROI_OPS.md).
_OPS_WITH_OPTIONS = ("roi_align", "roi_warp")


@dataclass
class Evaluation:
    """One validation pass: the COCO results per image id, and the COCOeval outcome per
    IoU type (``{}`` on ranks other than 0, which do not run COCOeval)."""

    per_image: dict[int, list[dict[str, Any]]]
    metrics: dict[str, CocoEvalResult]

    @property
    def results(self) -> list[dict[str, Any]]:
        return flatten(self.per_image)


def _D(name: str) -> Any:
    """DetectorConfig's default for field `name`: one source of truth for both signatures."""
    return DetectorConfig.__dataclass_fields__[name].default


class DetectorModule(pl.LightningModule):
    """Faster / Mask R-CNN with a chosen ROI layer, trained and scored the COCO way.

    Args (detector): as `DetectorConfig` (see there for each one's meaning), plus
        roi_mode: "avg" or "max" sampling-point reduction (roi_align / roi_warp only).
        sampling_ratio: sampling points per bin side, -1 = adaptive (roi_align / roi_warp).
        aligned: half-pixel offset (Detectron2's ROIAlignV2) (roi_align / roi_warp).
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
    """

    def __init__(
        self,
        # --- detector: backbone ---
        backbone: Literal["vgg16", "resnet18", "resnet34", "resnet50"] = _D("backbone"),
        stride: Literal[16, 32] = _D("stride"),
        weights: str | None = _D("weights"),
        norm: Literal["frozen_bn", "bn", "gn"] | None = _D("norm"),
        trainable_layers: int | None = _D("trainable_layers"),
        out_channels: int | None = _D("out_channels"),
        # --- detector: classes and resize ---
        num_classes: int = _D("num_classes"),
        min_size: int | tuple[int, ...] = _D("min_size"),
        max_size: int = _D("max_size"),
        # --- detector: anchors and RPN ---
        anchor_sizes: tuple[int, ...] | None = _D("anchor_sizes"),
        aspect_ratios: tuple[float, ...] = _D("aspect_ratios"),
        rpn_pre_nms_top_n_train: int = _D("rpn_pre_nms_top_n_train"),
        rpn_pre_nms_top_n_test: int = _D("rpn_pre_nms_top_n_test"),
        rpn_post_nms_top_n_train: int = _D("rpn_post_nms_top_n_train"),
        rpn_post_nms_top_n_test: int = _D("rpn_post_nms_top_n_test"),
        rpn_nms_thresh: float = _D("rpn_nms_thresh"),
        rpn_fg_iou_thresh: float = _D("rpn_fg_iou_thresh"),
        rpn_bg_iou_thresh: float = _D("rpn_bg_iou_thresh"),
        rpn_batch_size_per_image: int = _D("rpn_batch_size_per_image"),
        rpn_positive_fraction: float = _D("rpn_positive_fraction"),
        rpn_score_thresh: float = _D("rpn_score_thresh"),
        # --- detector: the ROI layer (the ablated part) ---
        roi_op: Literal["roi_pool", "roi_warp", "roi_align", "prroi_pool"] = _D("roi_op"),
        roi_mode: Literal["avg", "max"] = "avg",
        sampling_ratio: int = 2,
        aligned: bool = False,
        roi_output_size: int | None = _D("roi_output_size"),
        # --- detector: box head ---
        box_head: Literal["mlp", "res5"] | None = _D("box_head"),
        representation_size: int = _D("representation_size"),
        box_fg_iou_thresh: float = _D("box_fg_iou_thresh"),
        box_bg_iou_thresh: float = _D("box_bg_iou_thresh"),
        box_batch_size_per_image: int = _D("box_batch_size_per_image"),
        box_positive_fraction: float = _D("box_positive_fraction"),
        box_score_thresh: float = _D("box_score_thresh"),
        box_nms_thresh: float = _D("box_nms_thresh"),
        box_detections_per_img: int = _D("box_detections_per_img"),
        # --- detector: mask branch ---
        mask: bool = _D("mask"),
        mask_roi_output_size: int = _D("mask_roi_output_size"),
        mask_head_layers: tuple[int, ...] = _D("mask_head_layers"),
        mask_dim_reduced: int = _D("mask_dim_reduced"),
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr} must be a positive number")
        if weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0 and momentum={momentum} in [0, 1)")
        self.detector_config = detector_config_from_hparams(dict(self.hparams))
        self.model = build_detector(self.detector_config)
        if channels_last:  # NHWC convolutions: ~7% faster CPU steps with bf16 autocast (oneDNN's layout)
            self.model = self.model.to(memory_format=torch.channels_last)
        # The data's category table (label i -> category_ids[i - 1]); taken from the
        # datamodule in `setup`, or from a checkpoint.
        self.category_ids: list[int] | None = None
        self.category_names: list[str] | None = None
        self.last_evaluation: Evaluation | None = None
        self._val_per_image: dict[int, list[dict[str, Any]]] = {}
        self._coco_gt_cache: tuple[str, Any] | None = None

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """torchvision detection I/O: losses with targets in train mode, detections in eval mode."""
        return self.model(images, targets)

    # ------------------------------------------------------------------ categories
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or getattr(datamodule, "category_ids", None) is None:
            return
        if self.hparams.mask and getattr(datamodule, "masks", True) is False:
            raise ValueError("model.mask=true (Mask R-CNN) needs instance masks from the data: set data.masks: true")
        ids = [int(i) for i in datamodule.category_ids]
        names = [str(n) for n in getattr(datamodule, "category_names", [str(i) for i in ids])]
        if len(ids) + 1 != self.hparams.num_classes:
            raise ValueError(
                f"the data has {len(ids)} categories (+ background = {len(ids) + 1} classes) but the model "
                f"was built with num_classes={self.hparams.num_classes}"
            )
        if self.category_ids is not None:
            check_categories(self.category_ids, self.category_names or [], ids, names, "the model")
        self.category_ids, self.category_names = ids, names

    def on_fit_start(self) -> None:
        # Logged here, prefixed, because Lightning's own merge refuses equal names with
        # different values (see detector.cli).
        datamodule = getattr(self.trainer, "datamodule", None)
        params = {f"model/{k}": v for k, v in self.hparams.items() if not k.startswith("_")}
        params.update({f"data/{k}": v for k, v in (getattr(datamodule, "hparams", None) or {}).items() if not k.startswith("_")})
        for logger in self.loggers:
            logger.log_hyperparams(params)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "category_ids": self.category_ids,
            "category_names": self.category_names,
        }
        if self._trainer is not None:  # here, not in a callback: also in weights-only checkpoints
            checkpoint[RUN_STATE_KEY] = run_state_of(self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY) or {}
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

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_per_image = {}

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(images)
        category_ids = self._require_categories()
        for target, output in zip(targets, outputs):
            image_id = int(target["image_id"])
            self._val_per_image[image_id] = to_coco_results(image_id, output, category_ids, masks=self.hparams.mask)

    def on_validation_epoch_end(self) -> None:
        per_image = gather_per_image(self._val_per_image)
        self._val_per_image = {}
        metrics: dict[str, CocoEvalResult] = {}
        if self.trainer.is_global_zero:
            iou_types = ("bbox", "segm") if self.hparams.mask else ("bbox",)
            metrics = evaluate_coco(self._coco_gt(), flatten(per_image), per_image.keys(), iou_types)
        numbers = {f"val/{iou}_{name}": value for iou, res in metrics.items() for name, value in res.stats.items()}
        numbers = self.trainer.strategy.broadcast(numbers, src=0)  # every rank logs (and checkpoints on) the same values
        self.log_dict(numbers, sync_dist=False)
        self.last_evaluation = Evaluation(per_image, metrics)

    def _require_categories(self) -> list[int]:
        if self.category_ids is None:
            raise ValueError(
                "the model has no category table (label -> COCO category id): validate with a datamodule "
                "that exposes `category_ids`, or load a checkpoint written by this project"
            )
        return self.category_ids

    def _coco_gt(self) -> Any:
        datamodule = self.trainer.datamodule
        path = getattr(datamodule, "val_annotation_file", None)
        if path is None:
            raise ValueError("the datamodule has no `val_annotation_file`: COCO evaluation needs the annotation JSON")
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


def detector_config_from_hparams(hparams: dict[str, Any]) -> DetectorConfig:
    """The `DetectorConfig` that a `DetectorModule` with these hyperparameters builds.

    The flat ROI options become `roi_options` for the ops that take them; asking for
    ``roi_mode="max"`` with an op that has no modes is an error rather than a silent no-op
    (an ablation row would otherwise be mislabeled).
    """
    op = hparams["roi_op"]
    if op in _OPS_WITH_OPTIONS:
        roi_options = {"mode": hparams["roi_mode"], "sampling_ratio": hparams["sampling_ratio"], "aligned": hparams["aligned"]}
    else:
        if hparams["roi_mode"] != "avg":
            raise ValueError(
                f"roi_mode={hparams['roi_mode']!r} applies to roi_align and roi_warp only, not roi_op={op!r}; "
                "leave roi_mode at 'avg' (or choose roi_op roi_align / roi_warp)"
            )
        roi_options = {}
    skip = set(ROI_FLAT_OPTIONS) | set(OPTIM_ARGS)
    fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    kwargs = {k: v for k, v in hparams.items() if k not in skip and k in fields}
    for key in ("min_size", "anchor_sizes", "aspect_ratios", "mask_head_layers"):
        if isinstance(kwargs.get(key), list):  # YAML gives lists
            kwargs[key] = tuple(kwargs[key])
    return DetectorConfig(**kwargs, roi_options=roi_options)


def check_categories(expected_ids: list[int], expected_names: list[str], ids: list[int], names: list[str], what: str) -> None:
    """Raise ValueError, listing both tables, when the category ids or names differ."""
    if list(expected_ids) == list(ids) and (not expected_names or not names or list(expected_names) == list(names)):
        return
    raise ValueError(
        f"the dataset's categories do not match {what}'s: {what} has "
        f"{list(zip(expected_ids, expected_names or [''] * len(expected_ids)))}, the dataset has "
        f"{list(zip(ids, names or [''] * len(ids)))}. Labels would map to the wrong classes; evaluate on "
        "data with the same category table (same ids, same order)."
    )
