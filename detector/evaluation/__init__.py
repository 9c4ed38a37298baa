"""COCO evaluation with pycocotools, as a library: it imports nothing from `detector.lit` or the CLIs.

Public API:
    to_coco_results, evaluate_coco, load_coco, CocoEvalResult, STAT_NAMES   (coco_eval)
    detect, batch_results, resolve_device, PRECISIONS                      (inference)
    to_annotation_frame                                                    (frame)
    gather_per_image, merge_per_image, flatten                            (distributed)
    check_categories, check_against_annotations, check_against_data       (categories)
    evaluate_checkpoints                                                   (runner)
    format_table, metrics_document, unique_labels                          (report)
    check_output, clear_results, result_files, write_results, OutputError  (output)

Checkpoints are read by `detector.checkpointing.load_detector`.
"""

from .categories import check_against_annotations, check_against_data, check_categories
from .coco_eval import STAT_NAMES, CocoEvalResult, evaluate_coco, load_coco, to_coco_results
from .distributed import flatten, gather_per_image, merge_per_image
from .frame import to_annotation_frame
from .inference import PRECISIONS, batch_results, detect, resolve_device
from .output import OutputError, check_output, clear_results, result_files, write_results
from .report import format_table, metrics_document, unique_labels

__all__ = [
    "STAT_NAMES", "CocoEvalResult", "evaluate_coco", "load_coco", "to_coco_results",
    "PRECISIONS", "batch_results", "detect", "resolve_device", "to_annotation_frame",
    "flatten", "gather_per_image", "merge_per_image",
    "check_categories", "check_against_annotations", "check_against_data",
    "format_table", "metrics_document", "unique_labels",
    "OutputError", "check_output", "clear_results", "result_files", "write_results",
]
