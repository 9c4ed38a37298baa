"""COCO evaluation with pycocotools: results conversion, COCOeval, DDP gathering, reports.

Public API:
    to_coco_results, evaluate_coco, load_coco, CocoEvalResult, STAT_NAMES   (coco_eval)
    gather_per_image, merge_per_image                                     (distributed)
    load_detector, check_against_annotations, check_against_data, LoadedDetector  (checkpoints)
    format_table, metrics_document, write_json, unique_labels             (report)
    check_output, clear_results, result_files, write_results, OutputError  (output)
"""

from .coco_eval import STAT_NAMES, CocoEvalResult, evaluate_coco, load_coco, to_coco_results
from .distributed import flatten, gather_per_image, merge_per_image
from .output import OutputError, check_output, clear_results, result_files, write_results
from .report import format_table, metrics_document, unique_labels, write_json

__all__ = [
    "STAT_NAMES", "CocoEvalResult", "evaluate_coco", "load_coco", "to_coco_results",
    "flatten", "gather_per_image", "merge_per_image",
    "format_table", "metrics_document", "unique_labels", "write_json",
    "OutputError", "check_output", "clear_results", "result_files", "write_results",
]
