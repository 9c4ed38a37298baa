"""Where an analysis gets its boxes and its scale: a COCO file, a train config, or the built-in data.

An analysis of quantization is only meaningful at the scale the detector sees: a train
config (``configs/*.yaml``, the file ``train.py fit --config`` takes) says which data, which
stride and which resize (``model.detector.min_size`` / ``max_size``, applied inside the
detector). :func:`from_config` reads exactly those keys, through train.py's parser, so

    python -m detector.analysis.quantization --config configs/quickstart.yaml

analyses the boxes that run will train on, at the scale and stride it will use.
"""

from __future__ import annotations

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
    fpn: bool = False


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


def from_config(paths, split: str = "val", overrides=()) -> Source:
    """Data, stride and detector resize of train config(s) (YAML with ``data:`` / ``model:``).

    Read by train.py's own parser (`detector.cli.read_train_config`): layered configs,
    ``--x.y`` overrides and defaults exactly as in training. A list ``min_size`` (multi-scale training) is read as its last value, the one
    torchvision's transform uses at evaluation.
    """
    from detector.cli import read_train_config, section

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"--config {str(path)!r} does not exist")
    config = read_train_config([*(t for p in paths for t in ("--config", str(p))), *map(str, overrides)])
    data, detector = section(config, "data"), section(config.model, "detector")
    images, annotations = split_paths(data, split)
    min_size = detector["min_size"]
    if isinstance(min_size, (list, tuple)):
        min_size = min_size[-1]
    return Source(images, annotations, stride=int(detector["stride"]), min_size=float(min_size),
                  max_size=float(detector["max_size"]), fpn=bool(detector.get("fpn", False)))
