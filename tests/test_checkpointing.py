"""The checkpoint format (detector.checkpointing): format-1 checkpoints still load and evaluate.

The fixture ``tests/fixtures/checkpoint_format1_quickstart.json`` is the quickstart checkpoint
written at commit 9eef09d (before the detector settings were declared once): every
non-tensor entry as it was written, the state dict as ``{key: [shape, dtype]}`` (the tensors
themselves would be 55 MB). The tests rebuild a real ``.ckpt`` from it with random tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detector.checkpointing import FORMAT, load_detector, module_hparams, run_state
from detector.models import DetectorConfig

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_format1_quickstart.json"


def format1_checkpoint(path: Path, **data_overrides) -> Path:
    """A format-1 checkpoint file with the fixture's entries and random weights of its shapes."""
    stored = json.loads(FIXTURE.read_text())
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, (shape, dtype) in stored.pop("state_dict").items():
        dtype = getattr(torch, dtype)
        if dtype.is_floating_point:
            tensor = torch.rand(shape, generator=generator, dtype=dtype) * 0.01
            if key.endswith("running_var"):
                tensor += 1.0
        else:
            tensor = torch.zeros(shape, dtype=dtype)
        state_dict[key] = tensor
    stored.pop("_about")
    stored["state_dict"] = state_dict
    stored["datamodule_hyper_parameters"].update(data_overrides)
    torch.save(stored, path)
    return path


def test_format1_hyperparameters_upgrade_to_the_quickstart_detector():
    stored = json.loads(FIXTURE.read_text())
    assert stored["detector"]["format"] == 1 and FORMAT == 2
    hparams = module_hparams(stored["hyper_parameters"])
    assert set(hparams) - {"detector"} == {"optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "warmup_steps",
                                           "warmup_factor", "lr_milestones", "lr_gamma", "min_lr_factor", "channels_last"}
    cfg = DetectorConfig.from_dict(hparams["detector"])
    assert (cfg.backbone, cfg.stride, cfg.roi_op, cfg.num_classes, cfg.norm) == ("resnet18", 16, "roi_align", 8, "bn")
    assert cfg.resolved_roi_options == {"mode": "avg", "sampling_ratio": 2, "aligned": False}
    assert module_hparams(hparams) == hparams  # format 2 passes through


@pytest.mark.parametrize("op, expected", [("roi_pool", {}), ("roi_warp", {"mode": "max", "sampling_ratio": 2, "aligned": False})])
def test_format1_flat_roi_options_go_only_to_ops_that_take_them(op, expected):
    flat = dict(json.loads(FIXTURE.read_text())["hyper_parameters"], roi_op=op, roi_mode="max" if expected else "avg")
    cfg = DetectorConfig.from_dict(module_hparams(flat)["detector"])
    assert cfg.resolved_roi_options == expected


def test_hyperparameters_of_another_model_are_named():
    with pytest.raises(ValueError, match="another model"):
        module_hparams({"hidden_dim": 3}, where="x.ckpt")


def test_format1_checkpoint_loads_and_evaluates(tmp_path, capsys):
    from detector.cli import main_evaluate

    path = format1_checkpoint(tmp_path / "old.ckpt", root=str(tmp_path / "data"), synthetic_train=2, synthetic_val=2,
                              num_workers=0)
    loaded = load_detector(path)
    assert loaded.config.roi_op == "roi_align" and loaded.category_names[0] == "circle"
    assert run_state(path) == {"finished": True, "global_step": 1500, "expected_steps": 1500}
    docs = main_evaluate([str(path), "--output", str(tmp_path / "eval"), "--progress", "false"])
    assert docs["model"]["num_images"] == 2 and (tmp_path / "eval" / "metrics.json").is_file()
    assert docs["model"]["model"]["roi_mode"] == "avg"  # metrics.json keeps its columns
