"""--records DIR: finished runs survive the loss of --out through their small record files
(detector/ablation/archive.py).

The regression: a new machine lost runs/ with every finished run of a half-done table, and a
table's remaining seeds could only be added by training the finished ones again.
"""

import json

import pytest

from detector.ablation.archive import record_files, restore_records
from detector.ablation.cli import main
from detector.ablation.lock import RunLock
from detector.ablation.runner import train_recipe
from detector.ablation.runs import RunDir, RunSpec
from detector.ablation.variants import Variant


def _argv(config, out, records, *extra, seeds=1):
    return ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "roi_align_avg",
            "--seeds", str(seeds), "--trainer.max_epochs", "1", "--records", str(records), *extra]


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_records_restore_a_lost_out_without_training(fake, tmp_path):
    commands, config, out, calls = fake
    records = tmp_path / "records"
    lines = []
    doc = main(_argv(config, out, records), commands=commands, echo=lines.append)
    assert sum(c[0] == "train" for c in calls()) == 2
    assert any("archived" in line and "roi_align_avg_s32_seed0" in line for line in lines)
    for name in ("roi_pool_s32_seed0", "roi_align_avg_s32_seed0"):
        kept = records / "runs" / name
        assert {"run.json", "train.json", "attempts.jsonl", "timing.json", "eval/metrics.json"} <= {
            str(p) for p in record_files(kept)}
        assert not list(kept.rglob("*.ckpt")), "records never hold weights"

    fresh, lines = tmp_path / "fresh", []  # the machine is gone: a new --out, the records only
    n_calls = len(calls())
    main(_argv(config, fresh, records, "--dry-run"), commands=commands, echo=lines.append)
    assert "roi_pool_s32_seed0: complete (restored from --records" in "\n".join(lines)
    assert not fresh.exists(), "--dry-run copies nothing"
    doc2 = main(_argv(config, fresh, records), commands=commands, echo=lines.append)
    assert len(calls()) == n_calls, "nothing trained, evaluated or timed again"
    assert doc2["summary"] == doc["summary"] and doc2["missing"] == []
    assert (fresh / "runs" / "roi_pool_s32_seed0" / "run.json").read_bytes() == \
        (records / "runs" / "roi_pool_s32_seed0" / "run.json").read_bytes()

    # more seeds: only the new ones train; the records gain them and keep the old ones unchanged
    before = _files(records)
    main(_argv(config, fresh, records, seeds=2), commands=commands, echo=lambda *a: None)
    assert sum(c[0] == "train" for c in calls()) == 4
    after = _files(records)
    assert all(after[k] == v for k, v in before.items())
    assert any(str(k).startswith("runs/roi_pool_s32_seed1/") for k in after)


def test_restore_keeps_a_run_folder_that_holds_files(fake, tmp_path):
    commands, config, out, calls = fake
    records = tmp_path / "records"
    main(_argv(config, out, records), commands=commands, echo=lambda *a: None)
    fresh = tmp_path / "fresh"
    spec = RunSpec(Variant("roi_pool"), 32, 0)
    partial = RunDir(fresh, spec).path
    partial.mkdir(parents=True)
    (partial / "train.log").write_text("an interrupted training of this machine\n")
    lines = []
    restored = restore_records(records, fresh, [spec, RunSpec(Variant("roi_align", "avg"), 32, 0)],
                               lambda s: train_recipe(s, ["--config", str(config)], ["--trainer.max_epochs", "1"]),
                               echo=lines.append)
    assert restored == ["roi_align_avg_s32_seed0"]
    assert _files(partial) == {partial.relative_to(partial) / "train.log": b"an interrupted training of this machine\n"}
    assert any("roi_pool_s32_seed0" in line and "already holds files" in line and "(kept as it is)" in line for line in lines)

    busy = RunDir(tmp_path / "busy", spec).path  # another launcher has just started this run: only its lock exists
    busy.mkdir(parents=True)
    with RunLock(busy):
        assert restore_records(records, tmp_path / "busy", [spec], lambda s: train_recipe(
            s, ["--config", str(config)], ["--trainer.max_epochs", "1"]), echo=lines.append) == []
    assert [p.name for p in busy.iterdir()] == [".run.lock"]


def test_a_record_of_another_command_is_neither_restored_nor_overwritten(fake, tmp_path):
    commands, config, out, calls = fake
    records = tmp_path / "records"
    main(_argv(config, out, records), commands=commands, echo=lambda *a: None)
    before = _files(records)
    lines = []
    n_train = sum(c[0] == "train" for c in calls())
    main(_argv(config, tmp_path / "other", records, "--model.lr", "0.5"), commands=commands, echo=lines.append)
    text = "\n".join(lines)
    assert "not restored: it was trained by another command" in text and "--model.lr (unset) then, '0.5' now" in text
    assert sum(c[0] == "train" for c in calls()) == n_train + 2, "the new recipe trains its own runs"
    assert "not archived" in text and "holds another record of this run" in text
    assert _files(records) == before, "the archived records of the first command are intact"


def test_a_record_that_does_not_verify_is_not_restored(fake, tmp_path):
    commands, config, out, calls = fake
    records = tmp_path / "records"
    main(_argv(config, out, records), commands=commands, echo=lambda *a: None)
    marker = records / "runs" / "roi_pool_s32_seed0" / "run.json"
    rec = json.loads(marker.read_text())
    marker.write_text(json.dumps({k: v for k, v in rec.items() if k != "verified"}))  # a pre-stamp run.json
    other = records / "runs" / "roi_align_avg_s32_seed0" / "run.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "seed": 5}))  # describes another run
    lines = []
    restored = restore_records(records, tmp_path / "fresh", [RunSpec(Variant("roi_pool"), 32, 0),
                                                             RunSpec(Variant("roi_align", "avg"), 32, 0)],
                               lambda s: train_recipe(s, ["--config", str(config)], ["--trainer.max_epochs", "1"]),
                               echo=lines.append)
    assert restored == []
    assert any("roi_pool_s32_seed0" in line and "no 'verified' stamp" in line for line in lines)
    assert any("roi_align_avg_s32_seed0" in line and "describes another run" in line for line in lines)
    assert not (tmp_path / "fresh").exists()


def test_records_must_be_a_folder(fake, tmp_path):
    commands, config, out, calls = fake
    not_a_folder = tmp_path / "records.txt"
    not_a_folder.write_text("")
    with pytest.raises(ValueError, match=r"--records .*records\.txt.* is not a folder"):
        main(_argv(config, out, not_a_folder), commands=commands, echo=lambda *a: None)
    assert calls() == []
