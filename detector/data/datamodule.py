"""LightningDataModule: train/val(/test) COCO splits or the built-in synthetic dataset.

``trainer.test`` scores the test split (``test_images``/``test_annotations``, ``root``'s
``test[2017]``, or ``synthetic_test`` > 0); ``trainer.predict`` runs on the test split when
there is one, else on val (`DetectionDataModule.predict_split`).

Every ``__init__`` argument is a plain typed value, so LightningCLI turns them into YAML
keys (``data.batch_size: 8``) and ``--help`` lists them. Nothing heavy happens in
``__init__``: the synthetic folder is generated in ``prepare_data`` (once per node), the
datasets are built and checked in ``setup``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from detector.data.check import DatasetError, load_coco_json
from detector.data.coco import CocoDetection
from detector.data.sampler import EpochSampler, ResumableDataLoader, SeededSamples
from detector.data.shapes import SHAPES
from detector.data.synthetic import ensure_synthetic_coco
from detector.data.transforms import TransformConfig, build_transforms

#: The datamodule's answer to a test without a test split (train.py prints it as one error line).
NO_TEST_SPLIT = ("no test split: set data.test_images and data.test_annotations (a COCO folder's images and "
                 "JSON), or data.root holding test[2017]/ and annotations/instances_test[2017].json, or "
                 "data.synthetic_test > 0 for the synthetic dataset")


def detection_collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists: detection images differ in size and box count."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


class DetectionDataModule(pl.LightningDataModule):
    """Detection data for Lightning.

    Args:
        dataset: ``"synthetic"`` (the built-in shapes, generated on first use) or ``"coco"``.
        root: for ``"coco"``, a folder with ``{train,val[,test]}[2017]/`` images and
            ``annotations/instances_{split}[2017].json``; for ``"synthetic"``, the cache folder
            (default ``$DETECTOR_CACHE`` or ``~/.cache/detector``).
        train_images, train_annotations, val_images, val_annotations, test_images,
            test_annotations: explicit paths; they override what ``root`` would give.
        batch_size: training images per batch; ``val_batch_size`` defaults to it.
        num_workers, pin_memory: DataLoader settings (workers stay alive between epochs).
        masks: also yield instance masks (Mask R-CNN).
        drop_empty: leave images without annotations out of *training* (evaluation keeps all).
        check: run the dataset check in ``setup`` and stop with a readable report on errors.
        full_check: with ``check``, decode every image in ``setup`` (finds truncated files before
            the first step). None (default): for each split of at most
            :data:`~detector.data.check.FULL_CHECK_MAX_IMAGES` (2000) images; larger ones are
            checked from headers (a file that fails to decode later stops with its path and id).
        skip_bad_images: leave out images whose file is missing or cannot be decoded, with one
            warning listing them, instead of stopping (decodes every image in ``setup``).
        hflip_prob, jitter, hue: training augmentation (``jitter`` is brightness, contrast and
            saturation strength); min_size, max_size: optional resize (default none, see
            :mod:`detector.data.transforms`).
        seed: fixes the training order and augmentation: both are functions of (seed, epoch, index),
            the same with any number of workers and after a resume (see :mod:`detector.data.sampler`).
        synthetic_*: size of the synthetic splits, image size, generator seed, smallest object
            (pixels) and most objects per image (see :class:`~detector.data.render.RenderConfig`).
    """

    def __init__(
        self,
        dataset: Literal["synthetic", "coco"] = "synthetic",
        root: str | None = None,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        masks: bool = False,
        drop_empty: bool = False,
        check: bool = True,
        full_check: bool | None = None,
        skip_bad_images: bool = False,
        hflip_prob: float = 0.5,
        jitter: float = 0.2,
        hue: float = 0.0,
        min_size: int | None = None,
        max_size: int | None = None,
        seed: int = 0,
        synthetic_train: int = 1000,
        synthetic_val: int = 200,
        synthetic_test: int = 0,
        synthetic_width: int = 400,
        synthetic_height: int = 288,
        synthetic_seed: int = 0,
        synthetic_min_object_size: float = 12.0,
        synthetic_max_objects: int = 8,
    ) -> None:
        super().__init__()
        if dataset not in ("synthetic", "coco"):
            raise ValueError(f"dataset={dataset!r}: use 'synthetic' or 'coco'")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch_size={batch_size}, val_batch_size={val_batch_size} must be >= 1")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0 (0 loads in the main process)")
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.masks = masks
        self.drop_empty = drop_empty
        self.check = check
        self.full_check = full_check
        self.skip_bad_images = skip_bad_images
        self.seed = seed
        self.transform_config = TransformConfig(
            hflip_prob=hflip_prob, brightness=jitter, contrast=jitter, saturation=jitter, hue=hue,
            min_size=min_size, max_size=max_size,
        )
        self._explicit = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                          "test": (test_images, test_annotations)}
        for split, (images, annotation_file) in self._explicit.items():
            if (images is None) != (annotation_file is None):
                raise ValueError(f"give both {split}_images and {split}_annotations, or neither "
                                 f"(got {split}_images={images!r}, {split}_annotations={annotation_file!r})")
        if dataset == "coco" and root is None and all(a is None for _, a in self._explicit.values()):
            raise ValueError("dataset='coco' needs root (a COCO folder) or explicit splits: train_images/"
                             "train_annotations and val_images/val_annotations to train, val_images/"
                             "val_annotations alone to evaluate")
        self.synthetic_options = dict(num_train=synthetic_train, num_val=synthetic_val, num_test=synthetic_test,
                                      width=synthetic_width, height=synthetic_height, seed=synthetic_seed,
                                      min_object_size=synthetic_min_object_size, max_objects=synthetic_max_objects)
        self._categories: tuple[list, list[str]] | None = None
        self.train_dataset = self.val_dataset = self.test_dataset = None

    # ----------------------------------------------------------------------------- paths
    def _synthetic_root(self) -> Path:
        return ensure_synthetic_coco(**self.synthetic_options, cache_dir=self.root)

    def split_paths(self, split: str) -> tuple[Path, Path] | None:
        """``(images_dir, annotation_file)`` of a split, or None for an absent optional test split."""
        images, annotations = self._explicit[split]
        if images is not None:
            return Path(images), Path(annotations)
        if self.dataset == "synthetic":
            if split == "test" and self.synthetic_options["num_test"] == 0:
                return None
            root = self._synthetic_root()
            return root / split, root / "annotations" / f"instances_{split}.json"
        if self.root is None:
            if split == "test":
                return None
            raise ValueError(f"no {split} split: set {split}_images and {split}_annotations, or root")
        root = Path(self.root)
        image_candidates = [root / s for s in (split, f"{split}2017", f"images/{split}", f"images/{split}2017")]
        ann_candidates = [root / "annotations" / f"instances_{s}.json" for s in (split, f"{split}2017")]
        images_dir, ann = _first_existing(image_candidates), _first_existing(ann_candidates)
        if images_dir is None or ann is None:
            if split == "test":
                return None
            raise ValueError(
                f"{root}: no {split} split found; looked for images in "
                f"{', '.join(str(c) for c in image_candidates)} and annotations in "
                f"{', '.join(str(c) for c in ann_candidates)}. Fix: use that layout or set "
                f"{split}_images and {split}_annotations"
            )
        return images_dir, ann

    @property
    def val_annotation_file(self) -> str:
        """The untouched val annotation file, the evaluator's ground truth."""
        return str(self.split_paths("val")[1])

    @property
    def test_annotation_file(self) -> str | None:
        paths = self.split_paths("test")
        return None if paths is None else str(paths[1])

    # ----------------------------------------------------------------------- categories
    def _load_categories(self) -> tuple[list, list[str]]:
        if self._categories is None:
            if self.train_dataset is not None:
                self._categories = (self.train_dataset.category_ids, self.train_dataset.category_names)
            elif self.dataset == "synthetic" and self._explicit["train"][0] is None:
                self._categories = (list(range(1, len(SHAPES) + 1)), list(SHAPES))  # known without generating
            else:
                self._categories = self.categories_of(self._table_split())
        return self._categories

    def _table_split(self) -> str:
        """The split whose file gives the category table: train, else (evaluation only) val, else test."""
        for split in ("train", "val", "test"):
            try:
                if self.split_paths(split) is not None:
                    return split
            except ValueError:
                continue
        return "train"  # none found: split_paths("train") raises the message that says what to set

    def categories_of(self, split: str) -> tuple[list, list[str]]:
        """``(category ids sorted, names)`` of `split`'s annotation file, read without building the dataset."""
        data = load_coco_json(self.split_paths(split)[1])
        cats = sorted((c["id"], str(c.get("name", c["id"]))) for c in data.get("categories", []))
        return [c for c, _ in cats], [n for _, n in cats]

    @property
    def num_classes(self) -> int:
        """Categories + 1 (background), torchvision's convention; known before ``setup``."""
        return len(self._load_categories()[0]) + 1

    @property
    def category_ids(self) -> list:
        return self._load_categories()[0]

    @property
    def category_names(self) -> list[str]:
        return self._load_categories()[1]

    # --------------------------------------------------------------------------- stages
    def prepare_data(self) -> None:
        if self.dataset == "synthetic" and any(v[0] is None for v in self._explicit.values()):
            self._synthetic_root()

    def _build(self, split: str, train: bool) -> CocoDetection:
        images_dir, ann = self.split_paths(split)
        ds = CocoDetection(images_dir, ann, transforms=build_transforms(train, self.transform_config),
                           masks=self.masks, drop_empty=self.drop_empty and train, check=self.check,
                           full_check=self.full_check, skip_bad_images=self.skip_bad_images)
        known = self._categories  # the training file's table (or the synthetic one), when already read
        if known is not None and (list(ds.category_ids), list(ds.category_names)) != (list(known[0]), list(known[1])):
            raise DatasetError(
                f"{ann}: categories {dict(zip(ds.category_ids, ds.category_names))} differ from the training "
                f"file's {dict(zip(*known))}; fix: give every split the same 'categories' list"
            )
        if self._categories is None:  # no training split read (evaluation): the table of the file evaluated
            self._categories = (ds.category_ids, ds.category_names)
        return ds

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build("train", train=True)
            self._categories = (self.train_dataset.category_ids, self.train_dataset.category_names)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._build("val", train=False)
        if stage in (None, "test") and self.test_dataset is None:
            if self.split_paths("test") is None:
                if stage == "test":
                    raise ValueError(NO_TEST_SPLIT)
            else:
                self.test_dataset = self._build("test", train=False)
        if stage == "predict":
            split = self.predict_split
            if getattr(self, f"{split}_dataset") is None:
                setattr(self, f"{split}_dataset", self._build(split, train=False))

    @property
    def predict_split(self) -> str:
        """What ``trainer.predict`` runs on: the test split when there is one, else val."""
        return "val" if self.split_paths("test") is None else "test"

    # ---------------------------------------------------------------------- dataloaders
    def _loader(self, dataset: CocoDetection, batch_size: int, shuffle: bool) -> DataLoader:
        # Training: order and augmentation are functions of (seed, epoch, index), and the loader's
        # position goes into checkpoints, so a resumed run sees what an uninterrupted one would
        # (detector.data.sampler). A generator of its own also keeps every loader off the global RNG.
        kwargs = dict(batch_size=batch_size, generator=torch.Generator().manual_seed(self.seed),
                      num_workers=self.num_workers, collate_fn=detection_collate, pin_memory=self.pin_memory,
                      persistent_workers=self.num_workers > 0)
        if not shuffle:
            return DataLoader(dataset, shuffle=False, **kwargs)
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(len(dataset), seed=self.seed, num_replicas=replicas, rank=rank)
        return ResumableDataLoader(SeededSamples(dataset), sampler=sampler, **kwargs)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        return self._loader(self.test_dataset, self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The `predict_split`'s images in order (val's transforms: none but the tensor conversion)."""
        dataset = getattr(self, f"{self.predict_split}_dataset")
        if dataset is None:
            self.setup("predict")
            dataset = getattr(self, f"{self.predict_split}_dataset")
        return self._loader(dataset, self.val_batch_size, shuffle=False)

    def describe(self) -> str:
        """One line per built split, for logs."""
        parts = [repr(d) for d in (self.train_dataset, self.val_dataset, self.test_dataset) if d is not None]
        return "\n".join(parts) if parts else json.dumps(self.hparams, default=str)
