"""evaluate.py's command line: checkpoints in, COCO tables and result files out; or, with ``--images``, predictions on any images.

``python evaluate.py CKPT [CKPT ...] --output DIR [--overwrite true] [--device auto] [--precision 32] [--data.* ...]``
``python evaluate.py CKPT --images DIR_OR_FILE [...] [--images ...] --output DIR [--score_threshold 0.5] [--batch_size 4]
[--num_workers 2] [--overwrite true] [--device auto] [--precision 32]``  (predict mode, `PredictCLI`)

`main_evaluate` picks the mode: predict mode when ``--images`` is given (as a flag or in a
``--config`` file), scoring otherwise. The two share the checkpoint loading, ``--device``,
``--precision``, ``--overwrite`` and ``--progress``; options of one mode given to the other
are refused (exit code 2), never silently ignored. Predict mode is described in
`detector.evaluation.predict` (files written, coordinates) and `PredictCLI` (checks).

Scoring: a jsonargparse parser (no Lightning trainer: evaluation is one inference loop, see
`detector.evaluation.inference`). No model options: each detector is rebuilt from its
checkpoint (`detector.checkpointing.load_detector`). The ``data.*`` defaults are the first
checkpoint's datamodule arguments, so with no ``--data`` flag the checkpoint is scored on
the validation split it was trained with; only the validation split is read
(``--data.val_images``/``--data.val_annotations`` are enough). Before the first image is
read, in this order, each ending the run like a parse error (``error: ...``, exit code 2):

- every checkpoint is loaded and checked;
- ``--output`` must not hold earlier results (unless ``--overwrite true``) and must be
  writable (`detector.evaluation.output.check_output`);
- the categories (ids and names) of the annotation file to be scored must be each
  checkpoint's (`detector.evaluation.categories`); then the dataset is built and checked
  (a dataset that fails its check prints the checker's report alone, exit code 2).

Only then are earlier results removed (``--overwrite true``). A write that fails at the
end (disk full) ends with one line naming the file and exit code 1.

DDP: started by ``torchrun`` (or any launcher that sets ``WORLD_SIZE``, ``RANK`` and
``MASTER_ADDR``/``MASTER_PORT``), e.g. ``torchrun --nproc_per_node 2 evaluate.py CKPT --output DIR``,
each process detects on its shard of the validation images (`start_distributed`: gloo on
CPUs, NCCL with one GPU per process, ``cuda:LOCAL_RANK``); rank 0 gathers them (each image
once), scores, prints and writes the same files as one process would. The checks above run
on every rank; only rank 0 probes, clears and writes ``--output``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionConfigFile

from detector.checkpointing import LoadedDetector, load_detector
from detector.cli.parser import DetectorArgumentParser
from detector.data import DatasetError, DetectionDataModule
from detector.evaluation.inference import PRECISIONS, resolve_device


def evaluate_parser() -> DetectorArgumentParser:
    """The parser of evaluate.py (``--help`` lists every option)."""
    parser = DetectorArgumentParser(description="Evaluate checkpoints with pycocotools COCOeval, side by side; or, "
                                    "with --images, predict on any image files (no annotations needed).",
                                    parser_mode="yaml")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument("checkpoints", type=str, nargs="+", help="checkpoint files (.ckpt) written by train.py")
    parser.add_argument("--output", type=str, required=True, help="folder for metrics.json and detections.json (predict mode: predictions.json, images.json, images/)")
    parser.add_argument("--per_class", type=bool, default=True, help="print per-class AP rows")
    parser.add_argument("--analysis", type=bool, default=True,
                        help="also write the error analysis beside metrics.json: analysis.json (AP at each IoU "
                             ".50:.95, per-class AP/AP50/AP75/AR100 and PR curves, confusion matrix at IoU .5, COCO "
                             "error breakdown) and its plots; false skips it (it adds about 2-4 s for 200 images)")
    parser.add_argument("--confusion_score", type=float, default=0.5,
                        help="the confusion matrix counts detections with a score >= this (in [0, 1])")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="replace the results of an earlier evaluation in --output (by default a folder "
                             "holding metrics.json, detections.json or comparison.json is refused)")
    parser.add_argument("--device", type=str, default="auto", help="auto (a GPU when present), cpu, cuda or cuda:N")
    parser.add_argument("--precision", type=str, default="32", choices=list(PRECISIONS),
                        help="32 (float32), or autocast to bf16 / 16 (faster on GPUs; numbers may differ slightly)")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar per checkpoint")
    predict = parser.add_argument_group("predict mode (--images: any image files, no annotations, no scoring)")
    predict.add_argument("--images", type=str, nargs="+", action="extend", default=None,
                         help="image files and/or folders (listed recursively; non-image files in a folder are "
                              "ignored and counted; may be repeated). Writes OUTPUT/predictions.json (COCO results "
                              "with file_name: EVERY detection the model returns, as detections.json in scoring), "
                              "OUTPUT/images.json (images-only COCO file for pycocotools' loadRes) and OUTPUT/images/ "
                              "(each image drawn). Boxes are in the pixels of the image as displayed (EXIF applied)")
    predict.add_argument("--score_threshold", type=float | None, default=None,
                         help="draw detections with score >= this (unset: 0.5); predictions.json keeps them all")
    predict.add_argument("--batch_size", type=int | None, default=None, help="images per batch (unset: 4)")
    predict.add_argument("--num_workers", type=int | None, default=None,
                         help="DataLoader worker processes decoding images (unset: 2; 0: the main process)")
    parser.add_class_arguments(DetectionDataModule, "data")
    return parser


#: Predict-mode options (None when not given) and their defaults.
PREDICT_DEFAULTS = {"score_threshold": 0.5, "batch_size": 4, "num_workers": 2}


def data_keys(parser: DetectorArgumentParser) -> set[str]:
    """The ``data.*`` keys that `parser` accepts, without the prefix."""
    prefix = "data."
    return {a.dest[len(prefix):] for a in parser._actions if getattr(a, "dest", "").startswith(prefix)}


class EvaluateCLI:
    """Parse, load and check everything (see the module doc); `run` evaluates and writes."""

    def __init__(self, args: Sequence[str] | None = None) -> None:
        from detector.data.check import load_coco_json
        from detector.evaluation.categories import (
            check_against_annotations,
            check_against_data,
        )
        from detector.evaluation.output import check_output, clear_results

        args = list(sys.argv[1:] if args is None else args)
        self.parser = parser = evaluate_parser()
        self.config = parser.parse_args(args)  # first pass: finds the checkpoints (and rejects bad flags)
        if self.config.images is not None:
            parser.error("--images is predict mode, which PredictCLI runs (main_evaluate chooses it)")
        given = [k for k in PREDICT_DEFAULTS if self.config.get(k) is not None]
        if given:
            parser.error(f"--{given[0]} applies to predict mode only (with --images); drop it to score checkpoints")
        try:
            self.loaded: list[LoadedDetector] = [load_detector(p) for p in self.config.checkpoints]
            self.device = resolve_device(self.config.device)
        except ValueError as err:
            parser.error(str(err))
        self.rank, self.world_size, self.device = distributed_environment(self.device)
        known = data_keys(parser)
        parser.set_defaults({f"data.{k}": v for k, v in self.loaded[0].data_hparams.items() if k in known})
        self.config = parser.parse_args(args)  # second pass: --data.* flags override the checkpoint's
        try:
            instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # (renamed in jsonargparse 4.49)
            self.datamodule = instantiate(self.config).data
            from detector.evaluation.error_analysis import check_score_threshold

            check_score_threshold(self.config.confusion_score, "--confusion_score")
            if self.rank == 0:  # one prober: another rank's probe may remove the folder under it
                check_output(self.config.output, overwrite=self.config.overwrite)
            self.datamodule.prepare_data()
            annotation_file = self.datamodule.val_annotation_file
            categories = load_coco_json(annotation_file).get("categories")
            if isinstance(categories, list) and all(isinstance(c, dict) for c in categories):
                for loaded in self.loaded:  # (a malformed list is the dataset check's to report, next)
                    check_against_annotations(loaded, annotation_file, categories)
            self.datamodule.setup("validate")
            for loaded in self.loaded:
                check_against_data(loaded, int(self.datamodule.num_classes), list(self.datamodule.category_ids),
                                   list(self.datamodule.category_names))
        except DatasetError as err:  # the checker's report is the whole message
            print(str(err), file=sys.stderr)
            raise SystemExit(2) from None
        except ValueError as err:
            parser.error(str(err))
        if self.config.overwrite and self.rank == 0:
            clear_results(self.config.output)

    def run(self) -> dict[str, Any]:
        """Evaluate every checkpoint, print the table, write the files; ``{label: metrics document}``
        (under DDP: rank 0's; the other ranks return ``{}``)."""
        from detector.evaluation.runner import evaluate_checkpoints

        start_distributed(self.world_size, self.device)
        try:
            return evaluate_checkpoints(self.loaded, self.datamodule, self.config.output, self.config.per_class,
                                        device=self.device, autocast_dtype=PRECISIONS[self.config.precision],
                                        progress=self.config.progress, analysis=self.config.analysis,
                                        confusion_score_threshold=self.config.confusion_score)
        finally:
            stop_distributed()


def distributed_environment(device: Any) -> tuple[int, int, Any]:
    """``(rank, world size, device)`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); ``(0, 1, device)`` without one. A CUDA device becomes ``cuda:LOCAL_RANK``
    (one GPU per process, as Lightning's DDP places them)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, device
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(device).type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return rank, world, device


def start_distributed(world_size: int, device: Any) -> None:
    """Join the process group of torchrun's environment (gloo on CPUs, NCCL on GPUs); nothing alone.

    Called after every check passed: a rank that fails a check exits before it, and torchrun
    ends the others."""
    import torch
    import torch.distributed as dist

    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")


def stop_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class PredictCLI:
    """evaluate.py with ``--images``: parse and check everything before any image is decoded; `run` predicts.

    Checks, in order, each ending the run like a parse error (``error: ...``, exit code 2): one
    checkpoint, no scoring-only options (``--data.*``, ``--per_class``: predict mode reads no
    annotations, and silently ignoring them would hide a mistaken command), the option values,
    the checkpoint loads, the device exists, every ``--images`` path exists and at least one image
    file is found, and the output folder (`detector.evaluation.predict.check_prediction_output`).
    Only then are earlier predictions removed (``--overwrite true``).
    """

    def __init__(self, args: Sequence[str] | None = None) -> None:
        from detector.data.image_folder import ImageListingError, list_images
        from detector.evaluation.predict import (
            check_prediction_output,
            clear_predictions,
            drawing_folder,
        )

        args = list(sys.argv[1:] if args is None else args)
        self.parser = parser = evaluate_parser()
        self.config = config = parser.parse_args(args)
        if config.images is None:
            parser.error("predict mode needs --images (image files or folders)")
        if len(config.checkpoints) != 1:
            parser.error(f"--images predicts with one checkpoint; got {len(config.checkpoints)} "
                         f"({', '.join(config.checkpoints)}): run once per checkpoint, each with its own --output")
        defaults = parser.get_defaults()
        default_data = defaults.data.as_dict()
        scoring = [f"--data.{k}" for k, v in sorted(config.data.as_dict().items()) if default_data.get(k) != v]
        scoring += [f"--{k}" for k in ("per_class", "analysis", "confusion_score") if config[k] != defaults[k]]
        if scoring:
            parser.error(f"{', '.join(scoring)}: scoring options, which predict mode (--images) does not use (it reads "
                         "no annotations); drop them, or drop --images to score on annotated data")
        self.options = {k: PREDICT_DEFAULTS[k] if config.get(k) is None else config.get(k) for k in PREDICT_DEFAULTS}
        if not 0.0 <= self.options["score_threshold"] <= 1.0:
            parser.error(f"--score_threshold {self.options['score_threshold']} must lie in [0, 1]")
        if self.options["batch_size"] < 1 or self.options["num_workers"] < 0:
            parser.error(f"--batch_size {self.options['batch_size']} must be >= 1 and --num_workers "
                         f"{self.options['num_workers']} >= 0")
        try:
            self.loaded = load_detector(config.checkpoints[0])
            self.device = resolve_device(config.device)
            check_prediction_output(config.output, config.images, overwrite=config.overwrite)
            self.listing = list_images(config.images, exclude=[drawing_folder(config.output)])
            ignored = len(self.listing.ignored)
            if ignored:
                examples = ", ".join(p.name for p in self.listing.ignored[:3]) + (", ..." if ignored > 3 else "")
                print(f"ignored {ignored} non-image file{'s' if ignored != 1 else ''} ({examples})")
            if not self.listing.images:
                raise ImageListingError(
                    f"--images {' '.join(config.images)}: no image files found"
                    + (f" (only {ignored} non-image file{'s' if ignored != 1 else ''})" if ignored else " (empty)")
                    + f"; image extensions: {', '.join(sorted(e[1:] for e in _COMMON_EXTENSIONS))}, ...")
        except ValueError as err:
            parser.error(str(err))
        if config.overwrite:
            clear_predictions(config.output)

    def run(self) -> Any:
        """Predict, draw and write; print one line per skipped file and a summary. Returns the `PredictSummary`."""
        from detector.evaluation.predict import (
            DRAWN,
            IMAGES_JSON,
            PREDICTIONS,
            predict_images,
        )

        out = self.config.output
        try:
            summary = predict_images(self.loaded, self.listing, out, score_threshold=self.options["score_threshold"],
                                     device=self.device, autocast_dtype=PRECISIONS[self.config.precision],
                                     batch_size=self.options["batch_size"], num_workers=self.options["num_workers"],
                                     progress=self.config.progress)
        except ValueError as err:  # not one image decoded
            print(f"evaluate.py: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        skipped = f", skipped {len(summary.failed)} that did not decode" if summary.failed else ""
        n = len(summary.images)
        print(f"{n} image{'s' if n != 1 else ''}{skipped}: {len(summary.predictions)} detections, "
              f"{summary.drawn_detections} with score >= {self.options['score_threshold']} drawn")
        print(f"wrote {os.path.join(out, PREDICTIONS)}, {os.path.join(out, IMAGES_JSON)} and "
              f"{os.path.join(out, DRAWN)}/ ({n} drawing{'s' if n != 1 else ''})")
        return summary


#: Extensions named in the "no image files" error (the full list: detector.data.image_folder.IMAGE_EXTENSIONS).
_COMMON_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def predict_mode(args: Sequence[str]) -> bool:
    """Whether `args` ask for predict mode (``--images`` given, as a flag or in a ``--config`` file)."""
    return evaluate_parser().parse_args(list(args)).images is not None


def main_evaluate(args: Sequence[str] | None = None) -> Any:
    """Entry point of evaluate.py (console script ``detector-evaluate``): scoring, or predict mode with ``--images``.

    Scoring returns ``{label: metrics document}``; predict mode the `PredictSummary`.
    """
    from detector.evaluation.output import OutputError

    args = list(sys.argv[1:] if args is None else args)
    if predict_mode(args):
        cli: EvaluateCLI | PredictCLI = PredictCLI(args=args)
    else:
        cli = EvaluateCLI(args=args)
    try:
        return cli.run()
    except OutputError as err:  # disk full, read-only: what and where, one line on stderr, exit code 1
        raise SystemExit(f"evaluate.py: error: {err.strerror}") from None
