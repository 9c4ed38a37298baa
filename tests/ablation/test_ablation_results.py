"""The ablation's summary rules: the n of the spread rule, Δ over matched seeds, how Δ prints,
and the plot and CSV of tables whose rows differ (detector/ablation/results.py, plot.py)."""

from __future__ import annotations

import csv
import math

from detector.ablation.columns import METRICS
from detector.ablation.plot import plot_ablation
from detector.ablation.results import markdown, summarize_variants
from detector.ablation.variants import Variant
from detector.analysis.tables import write_csv

POOL, ALIGN = Variant("roi_pool"), Variant("roi_align", "avg")


def _row(variant: Variant, seed: int, **metrics) -> dict:
    """One run's row as results.run_row makes it (percent); metrics not given are 40.0."""
    row = {"name": f"{variant.name}_s32_seed{seed}", "variant": variant.name, "label": variant.label,
           "stride": 32, "seed": seed, "train_time_min": 1.0, "infer_ms_per_image": 10.0, "roi_ms_per_image": 1.0}
    return {**row, **{m: 40.0 for m in METRICS}, **metrics}


def test_spread_rule_counts_only_the_seeds_that_measured_the_metric():
    # APl: RoIAlign measured it on 2 of 3 seeds (mean 59, sd 7.07), RoIPool on 3 (mean 50, sd 0.1).
    # Δ = 9; two standard errors are 10.0 with n = 2 but 8.2 if the missing seed were counted.
    rows = [_row(POOL, 0, APl=50.0), _row(POOL, 1, APl=50.1), _row(POOL, 2, APl=49.9),
            _row(ALIGN, 0, APl=54.0), _row(ALIGN, 1, APl=64.0), _row(ALIGN, 2, APl=math.nan)]
    align = summarize_variants(rows, [POOL, ALIGN], [32])[1]
    assert math.isclose(align["APl_delta"], 9.0)
    assert align["APl_beyond_spread"] is False
    assert align["n"] == 3 and align["seeds_match_reference"]


def test_delta_over_different_seeds_is_marked_and_explained():
    rows = [_row(POOL, 0, AP=30.0), _row(POOL, 1, AP=31.0),
            _row(ALIGN, 0, AP=35.0), _row(ALIGN, 1, AP=36.0), _row(ALIGN, 2, AP=37.0)]
    summary = summarize_variants(rows, [POOL, ALIGN], [32])
    assert summary[0]["seeds_match_reference"] and not summary[1]["seeds_match_reference"]
    text = markdown(summary, [])
    assert "+5.5 † (" in text
    assert "† Δ over different seeds" in text and "seeds 0 1 2, RoIPool seeds 0 1" in text
    matched = markdown(summarize_variants(rows[:4], [POOL, ALIGN], [32]), [])
    assert "†" not in matched


def test_a_delta_that_rounds_to_zero_prints_without_a_sign():
    rows = [_row(POOL, 0, AP=30.04), _row(ALIGN, 0, AP=30.0), _row(POOL, 1, AP=30.0), _row(ALIGN, 1, AP=30.0)]
    text = markdown(summarize_variants(rows, [POOL, ALIGN], [32]), [])
    assert "-0.0" not in text and "| 0.0 (no) |" in text


def test_plot_without_roipool_draws_no_difference_bars():
    rows = [_row(ALIGN, 0), _row(Variant("prroi_pool"), 0)]
    fig = plot_ablation(summarize_variants(rows, [ALIGN, Variant("prroi_pool")], [32]), rows)
    delta_ax = fig.axes[1]
    assert not delta_ax.axison and len(delta_ax.patches) == 0
    assert "no RoIPool" in delta_ax.texts[0].get_text()
    with_ref = [_row(POOL, 0), *rows]
    fig = plot_ablation(summarize_variants(with_ref, [POOL, ALIGN, Variant("prroi_pool")], [32]), with_ref)
    assert len(fig.axes[1].patches) == 2 * len(METRICS)


def test_csv_header_is_the_union_of_every_rows_columns(tmp_path):
    path = write_csv([{"name": "a", "AP": 1.0}, {"name": "b", "AP": 2.0, "mask_AP": 3.0}], tmp_path / "runs.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "AP", "mask_AP"] and rows[1]["mask_AP"] == "3.0" and rows[0]["mask_AP"] == ""
