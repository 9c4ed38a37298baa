"""The one-command ROI-layer ablation (Mask R-CNN Table 2c/2d on your data).

``python -m detector.ablation --config BASE --out DIR`` trains and evaluates every variant
(:mod:`.variants`) x stride x seed through the project's own ``train.py`` / ``evaluate.py``
(:mod:`.runner`), keeps each run's progress in files so reruns skip and resume
(:mod:`.runs`), counts a run only once its final checkpoint reached the whole schedule
(:mod:`.progress`), holds one OS lock per folder (:mod:`.lock`), and writes the table and
plot (:mod:`.results`, :mod:`.plot`). See :mod:`.cli` for the options.
"""

from .results import METRICS, write_results
from .runs import RunDir, RunSpec
from .variants import Variant, default_variants, parse_variant

__all__ = ["METRICS", "RunDir", "RunSpec", "Variant", "default_variants", "main", "parse_variant", "write_results"]


def main(argv=None):
    """Entry point (see :mod:`.cli`)."""
    from .cli import main as cli_main

    return cli_main(argv)
