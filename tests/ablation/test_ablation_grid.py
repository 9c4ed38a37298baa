"""Grid axes of the ablation (detector/ablation/grid.py): key forms, the checks that run before
anything trains, the runs a grid plans (shared where an axis does not change a variant), the
flags each run gets, and the table's per-axis columns with differences within each combination.
Uses the stand-in commands of ablation_stand_ins.py (the evaluate stand-in adds 2 AP points for
``aligned: true``)."""

import csv
import json

import pytest

from detector.ablation.cli import main
from detector.ablation.grid import canonical_key, split_values

QUIET = {"echo": lambda *a: None}


@pytest.mark.parametrize("key, canonical", [
    ("model.aligned", "model.detector.roi_options.aligned"),
    ("model.roi_options.sampling_ratio", "model.detector.roi_options.sampling_ratio"),
    ("model.detector.roi_options.aligned", "model.detector.roi_options.aligned"),
    ("model.fpn", "model.detector.fpn"),
    ("--model.lr", "model.lr"),
    ("trainer.max_epochs", "trainer.max_epochs"),
    ("data.batch_size", "data.batch_size"),
])
def test_key_forms(key, canonical):
    assert canonical_key(key) == canonical


@pytest.mark.parametrize("key, flag", [
    ("model.detector.stride", "--strides"), ("model.stride", "--strides"), ("model.roi_op", "--variants"),
    ("model.mode", "--variants"), ("data.seed", "--seeds"), ("trainer.default_root_dir", "--out"),
])
def test_keys_the_ablation_sets_are_refused_with_the_flag_to_use(key, flag):
    with pytest.raises(ValueError, match=f"sets it for every run; use {flag}"):
        canonical_key(key)


def test_values_split_on_commas_outside_brackets():
    assert split_values("1,2,-1") == ["1", "2", "-1"]
    assert split_values("[16,32],[32, 64]") == ["[16,32]", "[32, 64]"]


def _base(fake, *extra):
    commands, config, out, calls = fake
    return commands, ["--config", str(config), "--out", str(out), "--no-analysis", *extra], out, calls


@pytest.mark.parametrize("grid, message", [
    (["seed_everything=1,2"], "under model., data. or trainer."),
    (["model.aligned"], "write KEY=V1,V2"),
    (["model.aligned=true,"], "an empty value"),
    (["model.aligned=true,true"], "listed twice"),
    (["trainer.max_epochs=a b,a_b"], "would share run folders"),
    (["model.sampling_ratio=1,65"], r"--grid model.sampling_ratio: value '65': .*int <= 64"),
    (["model.aligned=maybe"], "--grid model.aligned: value 'maybe'"),
    (["model.roi_options.sharpness=1,2"], "no ROI op has an option 'sharpness'"),
    (["trainer.max_epochz=1,2"], "--grid trainer.max_epochz: value '1' is refused by train.py"),
    (["model.sharpness=1,2"], "--grid model.sharpness: value .1. is refused by train.py"),
    (["model.aligned=false,true", "model.detector.roi_options.aligned=true"], "already an axis"),
    (["trainer.max_epochs=1,2", "model.max_epochs=1"], "would both be called 'max_epochs'"),
])
def test_bad_grids_are_refused_before_anything_runs(fake, grid, message):
    commands, argv, out, calls = _base(fake, "--variants", "roi_pool", "roi_align_avg", "--grid", *grid)
    with pytest.raises(ValueError, match=message):
        main(argv, commands=commands, **QUIET)
    assert calls() == [] and not (out / "runs").exists()


def test_an_axis_no_variant_takes_and_an_axis_also_overridden_are_refused(fake):
    commands, argv, _, calls = _base(fake, "--variants", "roi_pool", "prroi_pool", "--grid", "model.aligned=false,true")
    with pytest.raises(ValueError, match="none of --variants takes 'aligned'"):
        main(argv, commands=commands, **QUIET)
    commands, argv, _, calls = _base(fake, "--grid", "trainer.max_epochs=1,2", "--trainer.max_epochs", "3")
    with pytest.raises(ValueError, match="--trainer.max_epochs is also given as an override"):
        main(argv, commands=commands, **QUIET)
    commands, argv, _, calls = _base(fake, "--grid", "model.aligned=false,true", "--model.detector.roi_options",
                                     '{"aligned": true}')
    with pytest.raises(ValueError, match="--model.detector.roi_options is also given"):
        main(argv, commands=commands, **QUIET)
    assert calls() == []


def test_grid_runs_flags_and_table(fake):
    commands, argv, out, calls = _base(fake, "--variants", "roi_pool", "roi_align_avg", "--seeds", "2",
                                       "--grid", "model.aligned=false,true", "trainer.max_epochs=1,2")
    plan = main([*argv, "--dry-run"], commands=commands, **QUIET)["plan"]
    # roi_pool takes no 'aligned': one run per max_epochs, shared by both aligned values
    assert plan[:6] == ["roi_pool_s32_max_epochs-1_seed0", "roi_align_avg_s32_aligned-false_max_epochs-1_seed0",
                        "roi_pool_s32_max_epochs-2_seed0", "roi_align_avg_s32_aligned-false_max_epochs-2_seed0",
                        "roi_align_avg_s32_aligned-true_max_epochs-1_seed0",
                        "roi_align_avg_s32_aligned-true_max_epochs-2_seed0"]
    assert len(plan) == 12 and len(set(plan)) == 12

    doc = main(argv, commands=commands, **QUIET)
    trains = {c[c.index("--trainer.default_root_dir") + 1].split("/runs/")[1].split("/")[0]: c
              for c in calls() if c[0] == "train"}
    assert sorted(trains) == sorted(plan)
    for name, c in trains.items():
        epochs = c[len(c) - 1 - c[::-1].index("--trainer.max_epochs") + 1]  # the last one given wins
        assert epochs == name.split("max_epochs-")[1][0]
        options = json.loads(c[c.index("--model.detector.roi_options") + 1])
        if name.startswith("roi_pool"):
            assert options == {}
        else:
            assert options == {"mode": "avg", "aligned": "aligned-true" in name}
    for name in plan:  # the training really ran its max_epochs (global step = epochs in the stand-in)
        rec = json.loads((out / "runs" / name / "run.json").read_text())
        assert rec["global_step"] == int(name.split("max_epochs-")[1][0])
        assert rec["axes"]["trainer.max_epochs"] == name.split("max_epochs-")[1][0]

    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert {r["aligned"] for r in runs if r["variant"] == "roi_pool"} == {""}
    summary = doc["summary"]
    assert len(summary) == 8  # 2 aligned x 2 max_epochs combinations x 2 variants
    for s in summary:
        assert s["n"] == 2 and (s["aligned"] == "") == (s["variant"] == "roi_pool")
    align = {(s["aligned"], s["max_epochs"]): s for s in summary if s["variant"] == "roi_align_avg"}
    # within each combination: RoIAlign (0.30 + 0.01 seed [+ 0.02 aligned]) vs the shared RoIPool run (0.20 + 0.01 seed)
    assert align[("false", "1")]["AP_delta"] == pytest.approx(10.0)
    assert align[("true", "2")]["AP_delta"] == pytest.approx(12.0)
    pool = [s for s in summary if s["variant"] == "roi_pool"]
    assert [s["block"] for s in pool] == ["stride 32, aligned=false, max_epochs=1", "stride 32, aligned=false, max_epochs=2",
                                          "stride 32, aligned=true, max_epochs=1", "stride 32, aligned=true, max_epochs=2"]
    assert pool[0]["runs"] == pool[2]["runs"]  # the same RoIPool runs stand in both aligned values
    md = (out / "results.md").read_text()
    assert "| stride | aligned | max_epochs | variant |" in md
    assert "| 32 | true | 2 | RoIAlign avg | 2 |" in md and "| 32 | - | 2 | RoIPool | 2 |" in md
    assert "same stride and the same aligned, max_epochs" in md
    assert doc["settings"]["grid"] == {"model.detector.roi_options.aligned": ["false", "true"],
                                       "trainer.max_epochs": ["1", "2"]}
    assert (out / "ablation.png").is_file()

    n = len(calls())
    main(argv, commands=commands, **QUIET)  # a rerun skips every run of the grid
    assert len(calls()) == n


def test_a_data_axis_reaches_the_evaluation_too(fake):
    commands, argv, _, calls = _base(fake, "--variants", "roi_pool", "--seeds", "1",
                                       "--grid", "data.min_size=96,128")
    main(argv, commands=commands, **QUIET)
    evals = [c for c in calls() if c[0] == "evaluate"]
    assert sorted(c[c.index("--data.min_size") + 1] for c in evals) == ["128", "96"]
