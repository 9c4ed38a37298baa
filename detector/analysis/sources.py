"""Where an analysis gets its boxes and its scale: a COCO file, a train config, or the built-in data.

An analysis of quantization is only meaningful at the scale the detector sees: a train
config (``configs/*.yaml``, the file ``train.py fit --config`` takes) says which data, which
stride and which resize (``model.min_size`` / ``model.max_size``, applied inside the
detector). :func:`from_config` reads exactly those keys, so

    python -m detector.analysis.quantization --config configs/quickstart.yaml

analyses the boxes that run will train on, at the scale and stride it will use.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Source:
    """Boxes to analyse and the detector settings they meet (None: not specified)."""

    images: Path | None
    annotations: Path
    stride: int | None = None
    min_size: float | None = None
    max_size: float | None = None


def _datamodule(data_args: dict):
    from detector.data.datamodule import DetectionDataModule

    try:
        return DetectionDataModule(**data_args)
    except TypeError as e:  # an unknown key in the config's data section
        raise ValueError(f"data section {data_args}: {e}") from None


def split_paths(data_args: dict, split: str) -> tuple[Path, Path]:
    """``(images, annotations)`` of ``split`` for DetectionDataModule arguments (generates
    the built-in data on first use, exactly as training would)."""
    paths = _datamodule(dict(data_args, num_workers=0)).split_paths(split)
    if paths is None:
        raise ValueError(f"the data has no {split!r} split; use --split train or val")
    return Path(paths[0]), Path(paths[1])


def default_dataset(split: str = "val", cache_dir=None) -> Source:
    """The built-in synthetic dataset with DetectionDataModule's defaults (the same cache
    folder training on the built-in data uses)."""
    images, annotations = split_paths({"dataset": "synthetic", "root": None if cache_dir is None else str(cache_dir)},
                                      split)
    return Source(images, annotations)


def _model_default(name: str):
    from detector.lit.module import DetectorModule

    return inspect.signature(DetectorModule.__init__).parameters[name].default


def _section(cfg: dict, key: str) -> dict:
    sec = dict(cfg.get(key) or {})
    return dict(sec.get("init_args") or {}) if "class_path" in sec else sec


def load_train_config(paths, overrides=()) -> tuple[dict, dict]:
    """The ``data`` and ``model`` sections of one or more train configs, later files winning,
    then ``--data.KEY VALUE`` / ``--model.KEY=VALUE`` overrides (values parsed as YAML, as
    the train CLI does). Returns ``(data, model)``."""
    import yaml

    data: dict = {}
    model: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else list(paths):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {str(path)!r} does not exist")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"--config {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"--config {str(path)!r} is not a train config (expected keys data:, model:)")
        data.update(_section(cfg, "data"))
        model.update(_section(cfg, "model"))
    groups: list[list[str]] = []  # [flag token, value tokens...]
    for tok in overrides:
        if tok.startswith("--"):
            groups.append([tok])
        elif groups:
            groups[-1].append(tok)
    for flag, *values in groups:
        flag, eq, value = flag.partition("=")
        value = value if eq else (" ".join(values) if values else "true")  # a bare flag means true
        for prefix, target in (("--data.", data), ("--model.", model)):
            if flag.startswith(prefix) and "." not in flag[len(prefix):]:
                target[flag[len(prefix):]] = yaml.safe_load(value)
    return data, model


def from_config(paths, split: str = "val", overrides=()) -> Source:
    """Data, stride and detector resize of train config(s) (YAML with ``data:`` / ``model:``).

    Keys the configs leave out take DetectorModule's / DetectionDataModule's defaults, as in
    training. A list ``min_size`` (multi-scale training) is read as its last value, the one
    torchvision's transform uses at evaluation.
    """
    data, model = load_train_config(paths, overrides)
    images, annotations = split_paths(data, split)
    min_size = model.get("min_size", _model_default("min_size"))
    if isinstance(min_size, (list, tuple)):
        min_size = min_size[-1]
    return Source(images, annotations, stride=int(model.get("stride", _model_default("stride"))),
                  min_size=float(min_size), max_size=float(model.get("max_size", _model_default("max_size"))))
