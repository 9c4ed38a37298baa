"""From completed runs to the ablation table: per-run rows, mean +- std per variant, and
the difference to RoIPool judged against the seed-to-seed spread.

Metric scale: COCO AP in **percent** (COCOeval's fraction x 100), as the papers print it.

"Beyond the spread" rule, per metric and variant v against RoIPool (r) at the same stride:
``|mean_v - mean_r| > 2 * sqrt(std_v^2 / n_v + std_r^2 / n_r)``, i.e. the difference is more
than two standard errors of a difference of means (sample std over seeds). It is a rough
two-sigma screen, not a significance test: with 3 seeds the std itself is uncertain (a
t-test would ask for about 2.8 standard errors). With one seed there is no spread to judge
against, and the column says ``n/a``. With grid axes (:mod:`.grid`) the rule compares runs of
the same combination of axis values only.

Error analysis (`.columns.ANALYSIS_COLUMNS`): each run's ``eval/analysis.json`` adds box AP at
IoU .50 ... .95 and the localization error / share (mean +- std per variant, after the other
columns; a run without the file, or whose file is about another step, leaves them empty), the
share's difference to RoIPool with the same spread rule (``loc_share_delta``,
``loc_share_beyond_spread``, last), a second table in results.md and ``ap_vs_iou.png`` (one
curve per variant, mean +- std band).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from detector.analysis.tables import markdown_table, write_csv
from detector.io import atomic_write_text, write_json

from .columns import (
    ANALYSIS_COLUMNS,
    IOU_COLUMNS,
    IOU_THRESHOLDS,
    LOC_FIELDS,
    MASK_PREFIX,
    METRICS,
    TIME_FIELDS,
)
from .grid import Axis, combinations, describe, for_variant
from .recipe import recipe_problem
from .runs import RunDir, RunSpec, read_json, warn_file
from .variants import REFERENCE, Variant

__all__ = ["ANALYSIS_COLUMNS", "MASK_PREFIX", "METRICS", "TIME_FIELDS", "analysis_columns", "beyond_spread", "collect",
           "markdown", "mean_std", "run_row", "summarize_variants", "write_results"]


def _pct(v):
    return math.nan if v is None else 100.0 * float(v)


def run_row(rec: dict, analysis: dict | None = None) -> dict:
    """One completed run (its run.json, and its analysis.json's `analysis_columns`) as a flat row."""
    row = {"name": rec["name"], "variant": rec["variant"],
           "label": Variant(rec["op"], rec.get("mode")).label, "stride": rec["stride"], "seed": rec["seed"]}
    for m in METRICS:
        row[m] = _pct((rec.get("bbox") or {}).get(m))
    if rec.get("segm"):
        for m in METRICS:
            row[MASK_PREFIX + m] = _pct(rec["segm"].get(m))
    row["train_time_min"] = rec["train_time_s"] / 60.0
    row["infer_ms_per_image"] = math.nan if rec.get("infer_ms_per_image") is None else rec["infer_ms_per_image"]
    row["roi_ms_per_image"] = math.nan if rec.get("roi_ms_per_image") is None else rec["roi_ms_per_image"]
    row["global_step"] = rec.get("global_step")
    row["train_attempts"] = rec.get("train_attempts")
    row.update(analysis or {c: math.nan for c in ANALYSIS_COLUMNS})
    return row


def analysis_columns(path: Path, global_step: int | None = None) -> dict | None:
    """`ANALYSIS_COLUMNS` (percent) from evaluate.py's ``analysis.json`` at `path`; None when the
    file is missing (an older evaluation), or, with a `RunFileWarning`, when it is broken or
    about another training step than `global_step`."""
    path = Path(path)
    if not path.exists():
        return None
    doc = read_json(path)
    bbox = doc.get("bbox") if isinstance(doc, dict) else None
    try:
        if not isinstance(bbox, dict):
            raise TypeError("no 'bbox' analysis")
        if global_step is not None and doc.get("global_step") not in (None, global_step):
            warn_file(path, f"is about step {doc.get('global_step')}, the run evaluated step {global_step}",
                      "its columns stay empty")
            return None
        by_iou = dict(zip((round(float(t), 2) for t in bbox["ap_per_iou"]["iou_thresholds"]), bbox["ap_per_iou"]["AP"]))
        cols = {c: _pct(by_iou.get(t)) for c, t in zip(IOU_COLUMNS, IOU_THRESHOLDS)}
        breakdown = bbox.get("breakdown") or {}
        cols.update({f: _pct(breakdown.get(f)) for f in LOC_FIELDS})
        return cols
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        warn_file(path, f"is not an analysis.json evaluate.py wrote ({err})", "its columns stay empty")
        return None


def collect(out: Path, specs: list[RunSpec], axes: Sequence[Axis] = (),
            recipe_for: Callable[[RunSpec], list[str]] | None = None) -> tuple[list[dict], list[str]]:
    """Rows of the completed runs among ``specs`` and the names of the missing ones. With grid
    axes each row has a column per axis (`Axis.short`): the run's value, or ``""`` where the
    axis does not change the variant (its run is shared by every value).

    recipe_for: the train recipe of a spec under the command at hand (`runner.train_recipe`);
    a run trained by another command is then missing, with a `RunFileWarning` saying what differs.
    """
    rows, missing = [], []
    for spec in specs:
        run = RunDir(out, spec)
        problem = recipe_problem(run.path, recipe_for(spec)) if recipe_for is not None else None
        if problem:
            warn_file(run.path, problem, "the run is not counted in this command's table")
        rec = None if problem else run.record()
        if rec is None:
            missing.append(spec.name)
        else:
            row = run_row(rec, analysis_columns(run.eval_dir / "analysis.json", rec.get("global_step")))
            values = dict(spec.axes)
            rows.append({**{a.short: values.get(a.key, "") for a in axes}, **row})
    return rows, missing


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; std is NaN for fewer than two."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan
    mu = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return mu, sd


def _n_finite(rows: list[dict], metric: str) -> int:
    """How many of ``rows`` measured ``metric`` (a finite value): the n that `mean_std` averaged."""
    return sum(1 for r in rows if r.get(metric) is not None and math.isfinite(float(r[metric])))


def beyond_spread(delta: float, sd_a: float, n_a: int, sd_b: float, n_b: int):
    """The module doc's rule: True / False, or None when there is no spread to judge against."""
    if n_a < 2 or n_b < 2 or not all(math.isfinite(x) for x in (delta, sd_a, sd_b)):
        return None
    se = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    return abs(delta) > 2 * se


def _in_combo(row: dict, combo, axes: Sequence[Axis]) -> bool:
    """Whether a run belongs to a combination of grid values (a shared run, ``""``, belongs to all)."""
    values = dict(combo)
    return all(row.get(a.short, "") in ("", values[a.key]) for a in axes)


def summarize_variants(rows: list[dict], variants: list[Variant], strides: list[int],
                       axes: Sequence[Axis] = ()) -> list[dict]:
    """One row per (stride, grid combination, variant) present: n, mean/std per metric and time,
    deltas to RoIPool of the same stride and combination. ``block`` names the stride and the
    combination (``"stride 32, aligned=true"``), ``runs`` the runs averaged; with axes, a column
    per axis holds the combination's value (``""`` for a variant the axis does not change)."""
    metrics = list(METRICS) + [MASK_PREFIX + m for m in METRICS if any(MASK_PREFIX + m in r for r in rows)]
    summary = []
    for stride, combo in ((st, c) for st in strides for c in combinations(axes)):
        block = ", ".join([f"stride {stride}", *([describe(combo)] if combo else [])])
        groups = {v.name: [r for r in rows if r["variant"] == v.name and r["stride"] == stride
                           and _in_combo(r, combo, axes)] for v in variants}
        ref = groups.get(REFERENCE) or []
        for v in variants:
            g = groups[v.name]
            if not g:
                continue
            mine = dict(for_variant(combo, axes, v))
            s = {"stride": stride, **{a.short: mine.get(a.key, "") for a in axes}, "variant": v.name,
                 "label": v.label, "n": len(g), "seeds": " ".join(str(r["seed"]) for r in g), "block": block,
                 "runs": " ".join(r["name"] for r in g)}
            for m in metrics + list(TIME_FIELDS):
                s[f"{m}_mean"], s[f"{m}_std"] = mean_std(r.get(m) for r in g)
            # Δ is a difference of means; it compares like with like only when both sides averaged
            # the same seeds (a missing run, or a metric COCOeval could not compute, breaks that)
            s["seeds_match_reference"] = (v.name == REFERENCE or not ref
                                          or sorted(r["seed"] for r in g) == sorted(r["seed"] for r in ref))
            for m in metrics:
                if ref and v.name != REFERENCE:
                    ref_mean, ref_std = mean_std(r.get(m) for r in ref)
                    s[f"{m}_delta"] = s[f"{m}_mean"] - ref_mean
                    # n of the rule = the seeds that measured the metric, as mean_std averaged them
                    s[f"{m}_beyond_spread"] = beyond_spread(s[f"{m}_delta"], s[f"{m}_std"], _n_finite(g, m),
                                                            ref_std, _n_finite(ref, m))
                else:
                    s[f"{m}_delta"], s[f"{m}_beyond_spread"] = (0.0 if v.name == REFERENCE else math.nan), None
            for c in ANALYSIS_COLUMNS:  # appended after today's columns
                s[f"{c}_mean"], s[f"{c}_std"] = mean_std(r.get(c) for r in g)
            # the localization share against RoIPool's, judged by the same spread rule (over the runs with analysis)
            share = [r["loc_share"] for r in g if math.isfinite(r.get("loc_share", math.nan))]
            ref_share = [r["loc_share"] for r in ref if math.isfinite(r.get("loc_share", math.nan))]
            if v.name == REFERENCE:
                s["loc_share_delta"], s["loc_share_beyond_spread"] = (0.0 if share else math.nan), None
            elif share and ref_share:
                (mu, sd), (ref_mu, ref_sd) = mean_std(share), mean_std(ref_share)
                s["loc_share_delta"] = mu - ref_mu
                s["loc_share_beyond_spread"] = beyond_spread(mu - ref_mu, sd, len(share), ref_sd, len(ref_share))
            else:
                s["loc_share_delta"], s["loc_share_beyond_spread"] = math.nan, None
            summary.append(s)
    return summary


def _pm(mean: float, std: float, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _delta(s: dict, m: str) -> str:
    d, beyond = s[f"{m}_delta"], s[f"{m}_beyond_spread"]
    if s["variant"] == REFERENCE:
        return "ref"
    if not math.isfinite(d):
        return "-"
    verdict = {True: "yes", False: "no", None: "n/a"}[beyond]
    shown = "0.0" if round(d, 1) == 0 else f"{d:+.1f}"  # never "-0.0" or "+0.0"
    return f"{shown}{'' if s.get('seeds_match_reference', True) else ' †'} ({verdict})"


def markdown(summary: list[dict], missing: list[str], command: str | None = None, machine: str | None = None,
             at_stake: str | None = None, axes: Sequence[Axis] = ()) -> str:
    """The readable table: mean ± std over seeds, Δ to RoIPool with the spread verdict; a column
    per grid axis (``-``: the variant does not take it; its one run stands in every combination)."""
    mask = any("mask_AP_mean" in s for s in summary)
    display = []
    for s in summary:
        row = {"stride": s["stride"], **{a.short: s.get(a.short) or "-" for a in axes}, "variant": s["label"],
               "seeds": s["n"]}
        for m in METRICS:
            row[m] = _pm(s[f"{m}_mean"], s[f"{m}_std"])
        row["ΔAP vs RoIPool (beyond spread?)"] = _delta(s, "AP")
        row["ΔAP75"] = _delta(s, "AP75")
        if mask:
            row["mask AP"] = _pm(s.get("mask_AP_mean", math.nan), s.get("mask_AP_std", math.nan))
            row["Δmask AP"] = _delta(s, "mask_AP")
        row["train min"] = _pm(s["train_time_min_mean"], s["train_time_min_std"])
        row["infer ms/img"] = _pm(s["infer_ms_per_image_mean"], s["infer_ms_per_image_std"])
        row["ROI ms/img"] = _pm(s["roi_ms_per_image_mean"], s["roi_ms_per_image_std"], 2)
        display.append(row)
    text = ("COCO AP in percent, mean ± sample std over seeds. Δ = variant mean - RoIPool mean at the same "
            "stride" + (f" and the same {', '.join(a.short for a in axes)}" if axes else "")
            + "; 'beyond spread' = |Δ| > 2 standard errors of the difference (n/a with one seed).\n\n")
    text += markdown_table(display) if display else "(no completed runs)\n"
    if mask:
        text += mask_table(summary, axes)
    analysed = [s for s in summary if math.isfinite(s.get("AP_IoU50_mean", math.nan))]
    if analysed:
        text += ("\nBox AP (percent) at each IoU threshold, mean ± std over seeds, from each run's eval/analysis.json (over the runs that have one); "
                 "Loc−C75 = AP points regained when boxes need IoU .1 instead of .75 (COCO error breakdown), "
                 "loc share = (Loc−C75) / (100 − C75): the share of all AP75 lost that is localization.\n\n")
        iou_rows = []
        for s in analysed:
            row = {"stride": s["stride"], **{a.short: s.get(a.short) or "-" for a in axes}, "variant": s["label"]}
            for c, t in zip(IOU_COLUMNS, IOU_THRESHOLDS):
                row[f"{t:.2f}"] = _pm(s[f"{c}_mean"], s[f"{c}_std"])
            row["Loc−C75"] = _pm(s["loc_error_mean"], s["loc_error_std"])
            row["loc share %"] = _pm(s["loc_share_mean"], s["loc_share_std"])
            row["Δ loc share vs RoIPool (beyond spread?)"] = _delta(s, "loc_share")
            iou_rows.append(row)
        text += markdown_table(iou_rows)
    unmatched = [s for s in summary if not s.get("seeds_match_reference", True)]
    if unmatched:
        ref_seeds = {(s["stride"], s["block"]): s["seeds"] for s in summary if s["variant"] == REFERENCE}
        text += ("\n† Δ over different seeds (a run missing on one side): "
                 + "; ".join(f"{s['label']} ({s['block']}) seeds {s['seeds']}, RoIPool seeds "
                             f"{ref_seeds.get((s['stride'], s['block']), '-')}" for s in unmatched)
                 + ". Seed-to-seed differences are then part of Δ; complete the missing runs for a matched Δ.\n")
    if missing:
        text += f"\nMissing (not completed): {', '.join(missing)}\n"
    if at_stake:
        text += f"\n{at_stake}\n"
    if command:
        text += f"\nCommand: `{command}`\n"
    if machine:
        text += f"\nMachine: {machine}\n"
    return text


def mask_table(summary: list[dict], axes: Sequence[Axis] = ()) -> str:
    """The mask metrics as a table of their own, the form of Mask R-CNN's Table 2c (mask AP,
    AP50, AP75, and by size), with Δ to RoIPool and the spread verdict like the box table."""
    rows = []
    for s in summary:
        row = {"stride": s["stride"], **{a.short: s.get(a.short) or "-" for a in axes}, "variant": s["label"],
               "seeds": s["n"]}
        for m in METRICS:
            row[f"mask {m}"] = _pm(s.get(f"{MASK_PREFIX}{m}_mean", math.nan), s.get(f"{MASK_PREFIX}{m}_std", math.nan))
        row["Δmask AP vs RoIPool (beyond spread?)"] = _delta(s, f"{MASK_PREFIX}AP")
        row["Δmask AP75"] = _delta(s, f"{MASK_PREFIX}AP75")
        rows.append(row)
    return ("\nMask AP (percent; the metric of Mask R-CNN's Table 2c), mean ± std over seeds, Δ and spread "
            "rule as above.\n\n" + markdown_table(rows))


def write_results(out: Path, specs: list[RunSpec], variants: list[Variant], strides: list[int],
                  settings: dict | None = None, plot: bool = True, axes: Sequence[Axis] = (),
                  recipe_for: Callable[[RunSpec], list[str]] | None = None) -> dict:
    """Write results.csv (summary), runs.csv (per run), results.json, results.md, ablation.png
    (``axes``: the grid's, :mod:`.grid`; ``recipe_for``: see `collect`)."""
    rows, missing = collect(out, specs, axes, recipe_for)
    summary = summarize_variants(rows, variants, strides, axes)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(summary, out / "results.csv")
    write_csv(rows, out / "runs.csv")
    doc = {"metric_scale": "percent", "reference": REFERENCE, "settings": settings or {},
           "summary": summary, "runs": rows, "missing": missing}
    write_json(out / "results.json", doc, indent=2)
    settings = settings or {}
    atomic_write_text(out / "results.md", markdown(summary, missing, settings.get("command"), settings.get("machine"),
                                                   settings.get("at_stake"), axes))
    if plot and rows:
        from detector.analysis.plots import save_figure

        from .plot import plot_ablation
        save_figure(plot_ablation(summary, rows), out / "ablation.png")
        if any(math.isfinite(s.get("AP_IoU50_mean", math.nan)) for s in summary):
            from .plot import plot_ap_vs_iou_variants
            save_figure(plot_ap_vs_iou_variants(summary), out / "ap_vs_iou.png")
    return doc
