"""evaluate.py's command line: checkpoints in, COCO tables and result files out.

``python evaluate.py CKPT [CKPT ...] --output DIR [--overwrite true] [--device auto] [--precision 32] [--data.* ...]``

A jsonargparse parser (no Lightning trainer: evaluation is one inference loop, see
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
"""

from __future__ import annotations

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
    parser = DetectorArgumentParser(description="Evaluate checkpoints with pycocotools COCOeval, side by side.",
                                    parser_mode="yaml")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument("checkpoints", type=str, nargs="+", help="checkpoint files (.ckpt) written by train.py")
    parser.add_argument("--output", type=str, required=True, help="folder for metrics.json and detections.json")
    parser.add_argument("--per_class", type=bool, default=True, help="print per-class AP rows")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="replace the results of an earlier evaluation in --output (by default a folder "
                             "holding metrics.json, detections.json or comparison.json is refused)")
    parser.add_argument("--device", type=str, default="auto", help="auto (a GPU when present), cpu, cuda or cuda:N")
    parser.add_argument("--precision", type=str, default="32", choices=list(PRECISIONS),
                        help="32 (float32), or autocast to bf16 / 16 (faster on GPUs; numbers may differ slightly)")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar per checkpoint")
    parser.add_class_arguments(DetectionDataModule, "data")
    return parser


def data_keys(parser: DetectorArgumentParser) -> set[str]:
    """The ``data.*`` keys that `parser` accepts, without the prefix."""
    prefix = "data."
    return {a.dest[len(prefix):] for a in parser._actions if getattr(a, "dest", "").startswith(prefix)}


class EvaluateCLI:
    """Parse, load and check everything (see the module doc); `run` evaluates and writes."""

    def __init__(self, args: Sequence[str] | None = None) -> None:
        from detector.data.check import load_coco_json
        from detector.evaluation.categories import check_against_annotations, check_against_data
        from detector.evaluation.output import check_output, clear_results

        args = list(sys.argv[1:] if args is None else args)
        self.parser = parser = evaluate_parser()
        self.config = parser.parse_args(args)  # first pass: finds the checkpoints (and rejects bad flags)
        try:
            self.loaded: list[LoadedDetector] = [load_detector(p) for p in self.config.checkpoints]
            self.device = resolve_device(self.config.device)
        except ValueError as err:
            parser.error(str(err))
        known = data_keys(parser)
        parser.set_defaults({f"data.{k}": v for k, v in self.loaded[0].data_hparams.items() if k in known})
        self.config = parser.parse_args(args)  # second pass: --data.* flags override the checkpoint's
        try:
            instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # (renamed in jsonargparse 4.49)
            self.datamodule = instantiate(self.config).data
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
        if self.config.overwrite:
            clear_results(self.config.output)

    def run(self) -> dict[str, Any]:
        """Evaluate every checkpoint, print the table, write the files; ``{label: metrics document}``."""
        from detector.evaluation.runner import evaluate_checkpoints

        return evaluate_checkpoints(self.loaded, self.datamodule, self.config.output, self.config.per_class,
                                    device=self.device, autocast_dtype=PRECISIONS[self.config.precision],
                                    progress=self.config.progress)


def main_evaluate(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of evaluate.py (console script ``detector-evaluate``)."""
    from detector.evaluation.output import OutputError

    cli = EvaluateCLI(args=args)
    try:
        return cli.run()
    except OutputError as err:  # disk full, read-only: what and where, one line on stderr, exit code 1
        raise SystemExit(f"evaluate.py: error: {err.strerror}") from None
