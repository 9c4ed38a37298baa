"""Every YAML in configs/ parses and describes a valid detector; bad keys and values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detector.cli import DetectorCLI, EvaluateCLI, default_run_dir
from detector.models import DetectorConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
BASES = [c for c in CONFIGS if c.parent.name in ("configs", "backbones")]
ROI_OVERRIDES = [c for c in CONFIGS if c.parent.name == "roi"]
QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def _parse(args: list[str], capsys) -> dict:
    """Parse through the real CLI (``fit ... --print_config``) and return the resolved config."""
    with pytest.raises(SystemExit) as exc:
        DetectorCLI(args=["fit", *args, "--print_config"])
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out.err[-2000:]
    return yaml.safe_load(out.out)


def test_there_are_configs_for_each_backbone_stride_and_roi_op():
    names = {c.stem for c in CONFIGS}
    assert "quickstart" in names
    assert {"roi_pool", "roi_warp", "roi_align", "roi_align_max", "prroi_pool"} <= {c.stem for c in ROI_OVERRIDES}
    for backbone in ("vgg16", "resnet18", "resnet50"):
        assert {f"{backbone}_s16", f"{backbone}_s32"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses_and_builds_a_valid_detector_config(config, capsys):
    args = ["--config", str(config)]
    if config in ROI_OVERRIDES:  # an override goes on top of a base
        args = ["--config", str(BASES[-1]), *args]
    resolved = _parse(args, capsys)
    cfg = DetectorConfig.from_dict(dict(resolved["model"]["detector"], num_classes=8))  # its own range checks
    if config in ROI_OVERRIDES:
        raw = yaml.safe_load(config.read_text())
        assert cfg.roi_op == raw["model"]["detector"]["roi_op"]


@pytest.mark.parametrize("override", ROI_OVERRIDES, ids=lambda p: p.stem)
def test_roi_override_changes_only_the_roi_layer(override, capsys):
    base_file = next(c for c in BASES if c.stem == "resnet18_s32")
    base = _parse(["--config", str(base_file)], capsys)
    over = _parse(["--config", str(base_file), "--config", str(override)], capsys)
    changed = {k for k in base["model"] if base["model"][k] != over["model"][k]}
    assert changed <= {"detector"}
    detector = base["model"]["detector"]
    assert {k for k in detector if detector[k] != over["model"]["detector"][k]} <= {"roi_op", "roi_options"}
    assert base["trainer"]["default_root_dir"] is None  # so runs go to runs/<backbone>_s<stride>/<op>
    if override.stem != "roi_align":
        assert default_run_dir(base["model"]) != default_run_dir(over["model"])  # runs do not collide


def test_unknown_key_is_named_with_suggestions(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        DetectorCLI(args=["fit", "--model.roi_opp", "roi_pool"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "model.roi_opp" in err and "did you mean 'model.detector.roi_op'" in err and "keys of 'model'" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(SystemExit):
        DetectorCLI(args=["fit", "--config", str(bad)])
    err = capsys.readouterr().err
    assert "backbon" in err and "did you mean 'model.detector.backbone'" in err


@pytest.mark.parametrize("flag, value, choices", [
    ("--model.detector.roi_op", "roi_foo", ["roi_pool", "roi_warp", "roi_align", "prroi_pool"]),
    ("--model.detector.stride", "8", ["16", "32"]),
    ("--data.dataset", "voc", ["synthetic", "coco"]),
])
def test_bad_value_names_the_key_and_lists_the_choices(flag, value, choices, capsys):
    with pytest.raises(SystemExit) as exc:
        DetectorCLI(args=["fit", flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert flag[2:] in err and value in err
    assert all(c in err for c in choices)


def test_value_checked_by_a_constructor_is_a_clean_error(capsys, tmp_path):
    # In range for its type, rejected by DetectorConfig: an "error:" line and exit 2, no traceback.
    with pytest.raises(SystemExit) as exc:
        DetectorCLI(args=["fit", "--model.detector.rpn_nms_thresh", "1.5", "--data.root", str(tmp_path),
                          "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "rpn_nms_thresh" in err and "Traceback" not in err


def test_num_classes_comes_from_the_data(capsys):
    with pytest.raises(SystemExit):
        DetectorCLI(args=["fit", "--model.detector.num_classes", "5"])
    assert "num_classes" in capsys.readouterr().err  # a link target, not a user key


def test_evaluate_cli_help_has_no_model_options(capsys):
    with pytest.raises(SystemExit) as exc:
        EvaluateCLI(args=["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "--output" in out and "--data.val_annotations" in out and "--model." not in out


def test_read_train_config_is_safe_from_threads(tmp_path, monkeypatch):
    """jsonargparse enters a config's folder while it resolves ``config: base.yaml`` inside it;
    the ablation's ``--jobs N`` slots read configs from threads. Without one parse at a time,
    a thread reads ``configs/configs/quickstart.yaml`` (found by the first ``--jobs 2`` FPN table)."""
    import threading

    from detector.cli import read_train_config

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    errors, strides = [], []

    def parse(k):
        try:
            for _ in range(3):
                cfg = read_train_config(["--config", "configs/quickstart.yaml", "--model.detector.stride", str(16 * (1 + k % 2))])
                strides.append((k, cfg.model.detector.stride))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=parse, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(strides) == sorted((k, 16 * (1 + k % 2)) for k in range(4) for _ in range(3))


def test_mask_model_without_mask_data_is_refused_at_parse_time(capsys, tmp_path):
    """A config rule across groups: checked when the options are parsed (before data is read,
    and in every tool reading train.py's options), one ``error:`` naming both keys."""
    with pytest.raises(SystemExit) as exc:
        DetectorCLI(args=["fit", "--config", str(QUICKSTART), "--model.detector.mask", "true",
                          "--trainer.default_root_dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "model.detector.mask=true" in capsys.readouterr().err and not any(tmp_path.iterdir())
    _parse(["--config", str(QUICKSTART), "--model.detector.mask", "true",
            "--data.masks", "true"], capsys)  # with mask data: parses


def test_read_train_config_error_is_the_message_not_the_usage():
    from detector.cli import read_train_config

    quickstart = str(QUICKSTART)
    with pytest.raises(ValueError, match=r"does not parse: model.detector.mask=true .*--data.masks true") as err:
        read_train_config(["--config", quickstart, "--model.detector.mask", "true"])
    assert "usage:" not in str(err.value) and len(str(err.value)) < 400
    with pytest.raises(ValueError, match=r'does not parse: Parser key "model.detector.stride"'):
        read_train_config(["--config", quickstart, "--model.detector.stride", "8"])
