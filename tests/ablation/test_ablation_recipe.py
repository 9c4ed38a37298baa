"""A run folder counts only for the command that trained it (detector/ablation/recipe.py).

The regression: rerunning into the same --out with other flags skipped the old runs as
complete, or resumed the old checkpoint, and printed the new command above the old numbers.
"""

import json
import warnings

import pytest

from detector.ablation.cli import main
from detector.ablation.recipe import recipe_difference, recipe_of
from detector.ablation.runner import RunFailed
from detector.ablation.runs import RunDir, RunFileWarning, RunSpec
from detector.ablation.variants import Variant


def test_recipe_is_the_part_between_fit_and_the_run_folder():
    cmd = ["python", "train.py", "fit", "--config", "/a/b.yaml", "--model.lr", "0.1",
           "--trainer.default_root_dir", "/runs/x/train", "--ckpt_path", "/runs/x/train/last.ckpt"]
    assert recipe_of(cmd) == ["--config", "/a/b.yaml", "--model.lr", "0.1"]
    assert recipe_of(["python", "evaluate.py", "x.ckpt"]) is None and recipe_of("fit") is None


def test_recipes_compare_as_settings():
    a = ["--config", "/old/checkout/configs/ablation.yaml", "--model.lr", "0.1", "--data.masks", "true"]
    same = ["--config", "/new/checkout/configs/ablation.yaml", "--data.masks=true", "--model.lr", "0.5",
            "--model.lr", "0.1"]  # moved checkout, other order, --f=v, a value given twice (the last wins)
    assert recipe_difference(a, same) is None
    assert recipe_difference(a, [*a, "--trainer.max_epochs", "6"]) == "--trainer.max_epochs (unset) then, '6' now"
    assert "--model.lr '0.1' then, '0.2' now" in recipe_difference(a, [*a, "--model.lr", "0.2"])
    assert "--config" in recipe_difference(a, ["--config", "/x/quickstart.yaml", "--model.lr", "0.1", "--data.masks", "true"])


def _argv(config, out, *extra):
    return ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1",
            "--timing-images", "0", *extra]


def test_a_complete_run_of_other_flags_is_refused_not_reported(fake):
    commands, config, out, calls = fake
    main(_argv(config, out, "--trainer.max_epochs", "1"), commands=commands, echo=lambda *a: None)
    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    n_calls = len(calls())

    with pytest.raises(RunFailed, match=r"roi_pool_s32_seed0 .* was trained by another command .*--model\.lr "
                                        r"\(unset\) then, '0\.5' now.*another --out, or delete"):
        main(_argv(config, out, "--trainer.max_epochs", "1", "--model.lr", "0.5"), commands=commands,
             echo=lambda *a: None)
    assert len(calls()) == n_calls, "nothing trained, evaluated or timed"
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before, "the old run is intact"
    # the table written on the way out does not carry the old numbers under the new command
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs"] == [] and doc["missing"] == ["roi_pool_s32_seed0"]

    # --report-only with other flags: not counted, with a warning that says why
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = main(_argv(config, out, "--trainer.max_epochs", "2", "--report-only"), commands=commands,
                   echo=lambda *a: None)
    assert doc["missing"] == ["roi_pool_s32_seed0"]
    assert any(issubclass(w.category, RunFileWarning) and "--trainer.max_epochs '1' then, '2' now" in str(w.message)
               for w in caught)
    # the same flags (in another order) still find it
    doc = main(_argv(config, out, "--report-only", "--trainer.max_epochs=1"), commands=commands, echo=lambda *a: None)
    assert [r["name"] for r in doc["runs"]] == ["roi_pool_s32_seed0"]


def test_an_interrupted_run_is_not_resumed_with_other_flags(fake, monkeypatch):
    commands, config, out, calls = fake
    monkeypatch.setenv("FAKE_DIE_AT_EPOCH", "2")
    with pytest.raises(RunFailed, match="training exited"):
        main(_argv(config, out, "--model.lr", "0.01"), commands=commands, echo=lambda *a: None)
    monkeypatch.delenv("FAKE_DIE_AT_EPOCH")
    n_train = sum(c[0] == "train" for c in calls())
    with pytest.raises(RunFailed, match=r"was trained by another command \(attempts\.jsonl: --model\.lr '0\.01' then, "
                                        r"'0\.5' now\)"):
        main(_argv(config, out, "--model.lr", "0.5"), commands=commands, echo=lambda *a: None)
    assert sum(c[0] == "train" for c in calls()) == n_train, "the lr 0.01 checkpoint was not resumed at lr 0.5"
    said = []
    main(_argv(config, out, "--model.lr", "0.5", "--dry-run"), commands=commands, echo=said.append)
    assert said == ["roi_pool_s32_seed0: not this command's run: it was trained by another command "
                    "(attempts.jsonl: --model.lr '0.01' then, '0.5' now)"]
    main(_argv(config, out, "--model.lr", "0.01"), commands=commands, echo=lambda *a: None)  # its own command resumes it
    assert RunDir(out, RunSpec(Variant("roi_pool"), 32, 0)).record()["train_attempts"] == 2
