"""Checkpoints in, ready-to-evaluate `DetectorModule`s out, every mismatch caught first.

`load_detector` reads a ``.ckpt`` with ``weights_only=True`` (see
`detector.checkpointing.load_checkpoint`), checks that it is a checkpoint of this project's
`DetectorModule` (not another LightningModule, not a bare state dict), rebuilds the network
from the saved hyperparameters alone and loads the weights with ``strict=True``: a
checkpoint whose weights do not fit the architecture its hyperparameters describe (another
backbone, another class count, an edited file) fails here, with the differing parameter
names and shapes in the message, before any image is read.

`check_against_annotations` then compares the checkpoint's category table (ids *and* names)
with the categories of the annotation file that will be scored, read from the JSON before
the dataset is built; `check_against_data` compares class count and table with the built
datamodule's. evaluate.py runs these checks for *every* checkpoint before it evaluates the
first one, so a typo in the fourth of four paths costs seconds, not an evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from detector.checkpointing import load_checkpoint
from detector.lit.module import CHECKPOINT_KEY, DetectorModule, check_categories
from detector.models import DetectorConfig


@dataclass
class LoadedDetector:
    """A checkpoint turned back into a module, with what evaluate.py reports about it."""

    path: str
    module: DetectorModule
    hparams: dict[str, Any]
    category_ids: list[int] | None
    category_names: list[str] | None
    global_step: int | None
    epoch: int | None
    data_hparams: dict[str, Any] | None


def load_detector(path: str | os.PathLike) -> LoadedDetector:
    """Safely load `path` and rebuild its `DetectorModule` (eval mode, CPU).

    Raises ValueError naming the file and what is wrong with it.
    """
    path = os.fspath(path)
    checkpoint = load_checkpoint(path)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        keys = sorted(checkpoint)[:8]
        raise ValueError(
            f"{path!r} is not a Lightning checkpoint of a detector (it has keys {keys}; a checkpoint "
            "from train.py has 'state_dict' and 'hyper_parameters')"
        )
    # Lightning's private entries (`_instantiator`, `_class_path`) are not init arguments.
    hparams = {k: v for k, v in dict(checkpoint["hyper_parameters"]).items() if not k.startswith("_")}
    required = ("roi_op", "backbone", "stride", "num_classes")
    if CHECKPOINT_KEY not in checkpoint or any(k not in hparams for k in required):
        raise ValueError(
            f"{path!r} is a Lightning checkpoint of another model (hyperparameters {sorted(hparams)[:10]}), "
            f"not of detector.lit.DetectorModule (which stores {required} and a {CHECKPOINT_KEY!r} entry)"
        )
    # The checkpoint's state_dict replaces the initial weights, so never re-read the backbone
    # weights the run started from: that file may not exist here, and a weights *name* would
    # try to download. Defaults that depend on `weights` (norm: frozen_bn with weights, gn
    # without) are pinned first, with DetectorConfig's own rules, so the architecture stays.
    started = SimpleNamespace(**{k: hparams.get(k) for k in ("weights", "norm", "trainable_layers")})
    hparams["norm"] = DetectorConfig.resolved_norm.fget(started)
    hparams["trainable_layers"] = DetectorConfig.resolved_trainable_layers.fget(started)
    hparams["weights"] = None
    try:
        module = DetectorModule(**hparams)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot rebuild the detector of {path!r} from its hyperparameters: {err}") from None
    _load_weights(path, module, checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)  # restores the category table
    module.eval()
    stored = checkpoint[CHECKPOINT_KEY] or {}
    return LoadedDetector(
        path=path,
        module=module,
        hparams=hparams,
        category_ids=stored.get("category_ids"),
        category_names=stored.get("category_names"),
        global_step=checkpoint.get("global_step"),
        epoch=checkpoint.get("epoch"),
        data_hparams=checkpoint.get("datamodule_hyper_parameters"),
    )


def _load_weights(path: str, module: DetectorModule, state_dict: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
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
            f"(backbone={module.hparams.backbone}, stride={module.hparams.stride}, "
            f"num_classes={module.hparams.num_classes}): " + "; ".join(parts)
        )
    module.load_state_dict(state_dict, strict=True)


def check_against_data(loaded: LoadedDetector, num_classes: int, category_ids: list[int], category_names: list[str]) -> None:
    """Raise ValueError when the data's class count or category table differs from the checkpoint's."""
    model_classes = int(loaded.hparams["num_classes"])
    if model_classes != num_classes:
        raise ValueError(
            f"{loaded.path!r} was trained for num_classes={model_classes} (background included) but the "
            f"evaluation data has {num_classes} ({num_classes - 1} categories: {list(category_names)}). "
            "Evaluate on the dataset the checkpoint was trained for (see --data.* options)."
        )
    if loaded.category_ids is not None:
        check_categories(loaded.category_ids, loaded.category_names or [], list(category_ids), list(category_names),
                         f"checkpoint {loaded.path!r}")



def check_against_annotations(loaded: LoadedDetector, annotation_file: str, categories: list[dict[str, Any]]) -> None:
    """Raise ValueError, listing both tables, unless `categories` (the ``"categories"`` of the
    annotation file to be scored) are exactly the checkpoint's: same ids, same names.

    Why both: label ``i`` becomes category id ``category_ids[i - 1]`` of the checkpoint's table
    (the training file's), and COCOeval reports each id's AP under the *scored file's* name.
    Other ids score the detections as other classes; other names print true numbers under
    wrong names. Both used to pass silently when only the training file was compared.
    """
    in_file = {c.get("id"): str(c.get("name", c.get("id"))) for c in categories}
    ids, names = list(loaded.category_ids or []), list(loaded.category_names or [])
    in_checkpoint = dict(zip(ids, names if len(names) == len(ids) else [in_file.get(i) for i in ids]))
    tables = (f"the checkpoint has {list(in_checkpoint.items()) if loaded.category_ids is not None else '(no table)'}, "
              f"the file has {list(in_file.items())}")
    model_classes = int(loaded.hparams["num_classes"])
    if len(in_file) + 1 != model_classes:
        raise ValueError(
            f"{loaded.path!r} was trained for num_classes={model_classes} (background included) but {annotation_file} "
            f"(the file evaluated) has {len(in_file)} categories ({len(in_file) + 1} classes): {tables}. Evaluate on "
            "data with the checkpoint's category table (see --data.* options)."
        )
    if loaded.category_ids is None or in_checkpoint == in_file:  # without a table only the count can be checked
        return
    differences = [f"only in the checkpoint: {sorted((i, n) for i, n in in_checkpoint.items() if i not in in_file)}",
                   f"only in the file: {sorted((i, n) for i, n in in_file.items() if i not in in_checkpoint)}",
                   "same id, other name: " + str([(i, in_checkpoint[i], in_file[i]) for i in in_checkpoint
                                                  if i in in_file and in_checkpoint[i] != in_file[i]])]
    raise ValueError(
        f"the categories of {annotation_file} (the file evaluated) do not match those of checkpoint {loaded.path!r} "
        f"({'; '.join(d for d in differences if not d.endswith('[]'))}): {tables}. Detections would be scored as "
        "other classes or printed under other names; evaluate on data with the checkpoint's category table "
        "(same ids, same names)."
    )
