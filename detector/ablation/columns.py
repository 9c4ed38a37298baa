"""The columns of the ablation's tables, named once for :mod:`.results` (which fills them) and
:mod:`.plot` (which draws them), so that neither has to import the other.

Per run (``runs.csv``, ``results.json["runs"]``): ``AP``, ``AP50``, ... in **percent** (COCOeval's
fraction x 100), ``mask_AP``, ... when the runs trained masks, and the `TIME_FIELDS`. Per variant
and stride (``results.csv``, ``results.json["summary"]``): ``<column>_mean`` and ``<column>_std``
of each, and ``<metric>_delta`` / ``<metric>_beyond_spread`` against the reference.
"""

from __future__ import annotations

#: Box metrics, in the order of the table and the plot's difference panel.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Prefix of the mask metrics' columns (``mask_AP``, ...).
MASK_PREFIX = "mask_"
#: Cost columns: minutes of training, milliseconds of inference and of the ROI layer per image.
TIME_FIELDS = ("train_time_min", "infer_ms_per_image", "roi_ms_per_image")
