"""The checkpoint format: what train.py's checkpoints hold, and reading them back safely.

This module is the one place that knows the layout; the Lightning side
(`detector.lit.module`, `detector.lit.run_state`) writes its records through
`detector_record` / `run_record`, and everything that reads a checkpoint (evaluate.py,
the ablation, notebooks) goes through `load_checkpoint`, `load_detector` or `run_state`.

A checkpoint is Lightning's dict plus:

- ``hyper_parameters`` (format 2): ``{"detector": DetectorConfig.to_dict(), "optimizer": ...,
  "lr": ..., ..., "channels_last": ...}``, the `DetectorModule` init arguments. Format 1
  (before the detector settings were declared once) stored the `DetectorConfig` fields flat,
  next to ``roi_mode`` / ``sampling_ratio`` / ``aligned``; `module_hparams` upgrades it on
  read, so old checkpoints evaluate and resume unchanged.
- ``checkpoint["detector"] = {"format": 2, "category_ids": [...], "category_names": [...]}``:
  the training data's category table (label ``i`` is category ``category_ids[i - 1]``).
- ``checkpoint["detector_run"] = {"finished": bool, "global_step": int, "expected_steps": int | None}``:
  whether the schedule was complete. ``finished`` is True only in a checkpoint saved once
  ``global_step`` reached ``expected_steps`` (the optimizer steps that ``max_steps`` /
  ``max_epochs`` make), never in one saved because the run was stopped.
- ``datamodule_hyper_parameters``: the `DetectionDataModule` arguments, so the validation
  data can be rebuilt from the checkpoint alone (`LoadedDetector.datamodule`).

Reading is ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint from the internet cannot run code on load. Writing is atomic
(`detector.lit.checkpoints.AtomicCheckpointIO`, over `detector.io.atomic_write`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from detector.models import DetectorConfig, build_detector
from detector.ops import get_roi_op

if TYPE_CHECKING:
    from torch import nn

    from detector.data import DetectionDataModule

FORMAT = 2
DETECTOR_KEY = "detector"
RUN_STATE_KEY = "detector_run"
#: Format-1 hyperparameters that were the ROI op's options, spelled flat.
_FLAT_ROI_OPTIONS = {"roi_mode": "mode", "sampling_ratio": "sampling_ratio", "aligned": "aligned"}
#: DetectorConfig fields format 1 did not expose (derived from the flat options).
_FORMAT1_HIDDEN = ("roi_options", "mask_roi_op", "mask_roi_options")


def detector_record(category_ids: list[int] | None, category_names: list[str] | None) -> dict[str, Any]:
    """``checkpoint["detector"]``: the format version and the training data's category table."""
    return {"format": FORMAT, "category_ids": category_ids, "category_names": category_names}


def run_record(finished: bool, global_step: int, expected_steps: int | None) -> dict[str, Any]:
    """``checkpoint["detector_run"]``: whether the run's schedule was complete when saved."""
    return {"finished": bool(finished), "global_step": int(global_step),
            "expected_steps": None if expected_steps is None else int(expected_steps)}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong.

    Raises ValueError when the file does not exist, is not a torch file, holds anything but
    plain data (a pickled class: loading it would mean running its code), or is not a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... by file kind
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path!r} is not a checkpoint that loads safely (torch.load(weights_only=True) failed: "
            f"{first_line}). Give a .ckpt file written by train.py; files that need arbitrary "
            "pickle code are refused on purpose."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def run_state(path: str | os.PathLike) -> dict[str, Any]:
    """``{"finished": bool, "global_step": int, "expected_steps": int | None}`` of a checkpoint.

    A checkpoint from before this record existed reads as not finished (``expected_steps``
    None): resume it rather than trust it. Raises ValueError as `load_checkpoint` does.

    Example (what the ablation asks before recording a run):
        >>> state = run_state("runs/x/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> state["finished"] and state["global_step"] == state["expected_steps"]  # doctest: +SKIP
        True
    """
    checkpoint = load_checkpoint(path)
    stored = checkpoint.get(RUN_STATE_KEY)
    if not isinstance(stored, dict):
        return {"finished": False, "global_step": int(checkpoint.get("global_step", 0)), "expected_steps": None}
    return run_record(stored.get("finished") is True, stored.get("global_step", 0), stored.get("expected_steps"))


def module_hparams(hparams: dict[str, Any], where: str = "the checkpoint") -> dict[str, Any]:
    """`DetectorModule` init arguments of format 2 from stored hyperparameters of format 1 or 2.

    Lightning's private entries (``_instantiator``, ``_class_path``) are dropped. Format 1's
    flat ROI options become ``detector["roi_options"]`` for the ops that take them (RoIPool
    runs stored the unused defaults ``roi_mode: avg`` ...; they are dropped). Raises
    ValueError naming `where` when the dictionary is neither format.
    """
    hparams = {k: v for k, v in dict(hparams).items() if not str(k).startswith("_")}
    if isinstance(hparams.get("detector"), dict):
        return hparams
    fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    required = ("roi_op", "backbone", "stride", "num_classes")
    if any(k not in hparams for k in required):
        raise ValueError(
            f"{where} holds hyperparameters of another model ({sorted(hparams)[:10]}), not of "
            "detector.lit.DetectorModule (which stores a 'detector' dict, or in format 1 the keys "
            f"{required})"
        )
    detector = {k: v for k, v in hparams.items() if k in fields and k not in _FORMAT1_HIDDEN}
    rest = {k: v for k, v in hparams.items() if k not in fields and k not in _FLAT_ROI_OPTIONS}
    try:
        spec = get_roi_op(hparams["roi_op"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    takes = {option.name for option in spec.options}
    detector["roi_options"] = {new: hparams[old] for old, new in _FLAT_ROI_OPTIONS.items()
                               if new in takes and old in hparams}
    return {"detector": detector, **rest}


@dataclass
class LoadedDetector:
    """A checkpoint turned back into a network (eval mode, CPU), with what reports say about it."""

    path: str
    model: nn.Module
    config: DetectorConfig
    hparams: dict[str, Any]
    category_ids: list[int] | None
    category_names: list[str] | None
    global_step: int | None
    epoch: int | None
    data_hparams: dict[str, Any]

    def datamodule(self, **overrides: Any) -> DetectionDataModule:
        """The `DetectionDataModule` the run was trained with (its stored arguments), with
        `overrides` applied: e.g. ``loaded.datamodule(num_workers=0)``."""
        from detector.data import DetectionDataModule

        return DetectionDataModule(**{**self.data_hparams, **overrides})


def load_detector(path: str | os.PathLike) -> LoadedDetector:
    """Safely load `path` (format 1 or 2) and rebuild its detector from the stored settings alone.

    The weights load with ``strict=True``: a checkpoint whose weights do not fit the
    architecture its hyperparameters describe (another backbone or class count, an edited
    file) fails here with the differing names and shapes. Raises ValueError naming the file.
    """
    path = os.fspath(path)
    checkpoint = load_checkpoint(path)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(
            f"{path!r} is not a Lightning checkpoint of a detector (it has keys {sorted(checkpoint)[:8]}; a "
            "checkpoint from train.py has 'state_dict' and 'hyper_parameters')"
        )
    if DETECTOR_KEY not in checkpoint:
        raise ValueError(f"{path!r} is a Lightning checkpoint of another model: it has no {DETECTOR_KEY!r} entry "
                         "(the category table every train.py checkpoint carries)")
    hparams = module_hparams(checkpoint["hyper_parameters"], where=repr(path))
    try:
        config = DetectorConfig.of_trained(hparams["detector"])
        model = build_detector(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot rebuild the detector of {path!r} from its hyperparameters: {err}") from None
    _load_weights(path, model, config, checkpoint["state_dict"])
    if hparams.get("channels_last"):  # the layout the run used (DetectorModule's speed option): same rounding
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    stored = checkpoint[DETECTOR_KEY] or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    return LoadedDetector(
        path=path,
        model=model,
        config=config,
        hparams=hparams,
        category_ids=None if stored.get("category_ids") is None else [int(i) for i in stored["category_ids"]],
        category_names=None if stored.get("category_names") is None else [str(n) for n in stored["category_names"]],
        global_step=checkpoint.get("global_step"),
        epoch=checkpoint.get("epoch"),
        data_hparams={k: v for k, v in dict(data).items() if not str(k).startswith("_")},
    )


#: `DetectorModule` keeps the network as ``self.model``: its state-dict keys carry this prefix.
MODEL_PREFIX = "model."


def _load_weights(path: str, model: nn.Module, config: DetectorConfig, stored: dict[str, torch.Tensor]) -> None:
    state_dict = {k[len(MODEL_PREFIX):]: v for k, v in stored.items() if k.startswith(MODEL_PREFIX)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own)) + sorted(k for k in stored if not k.startswith(MODEL_PREFIX))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
        raise ValueError(
            f"the weights in {path!r} do not fit the architecture its hyperparameters describe "
            f"(backbone={config.backbone}, stride={config.stride}, num_classes={config.num_classes}): "
            + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)
