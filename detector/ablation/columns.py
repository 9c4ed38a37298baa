"""The columns of the ablation's tables, named once for :mod:`.results` (which fills them) and
:mod:`.plot` (which draws them), so that neither has to import the other.

Per run (``runs.csv``, ``results.json["runs"]``): ``AP``, ``AP50``, ... in **percent** (COCOeval's
fraction x 100), ``mask_AP``, ... when the runs trained masks, and the `TIME_FIELDS`. Per variant
and stride (``results.csv``, ``results.json["summary"]``): ``<column>_mean`` and ``<column>_std``
of each, and ``<metric>_delta`` / ``<metric>_beyond_spread`` against the reference.

From each run's ``eval/analysis.json`` (evaluate.py's error analysis; empty for runs evaluated
without it), appended after the columns above: `IOU_COLUMNS`, box AP at IoU .50, .55, ..., .95
in percent, and `LOC_FIELDS`: ``loc_error`` = Loc - C75 of the COCO error breakdown in AP
points (the AP regained when a box needs IoU .1 instead of .75: what misplaced boxes cost) and
``loc_share`` = (Loc - C75) / (1 - C75) in percent (that gain as a share of all AP75 lost):
RoIPool's quantization should raise both.
"""

from __future__ import annotations

#: Box metrics, in the order of the table and the plot's difference panel.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Prefix of the mask metrics' columns (``mask_AP``, ...).
MASK_PREFIX = "mask_"
#: Cost columns: minutes of training, milliseconds of inference and of the ROI layer per image.
TIME_FIELDS = ("train_time_min", "infer_ms_per_image", "roi_ms_per_image")
#: Box AP at each COCO IoU threshold (percent), from eval/analysis.json.
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
IOU_COLUMNS = tuple(f"AP_IoU{round(t * 100)}" for t in IOU_THRESHOLDS)
#: Localization error of the COCO error breakdown (see the module doc).
LOC_FIELDS = ("loc_error", "loc_share")
ANALYSIS_COLUMNS = IOU_COLUMNS + LOC_FIELDS
