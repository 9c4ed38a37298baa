"""DetectorModule: its arguments mirror DetectorConfig, ROI options map, non-finite losses stop the run."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import pytorch_lightning as pl
import torch
from lit_helpers import tiny_datamodule, tiny_module_kwargs

from detector.checkpointing import load_checkpoint
from detector.lit.module import HIDDEN_CONFIG_FIELDS, DetectorModule, detector_config_from_hparams
from detector.models import DetectorConfig


def test_module_arguments_mirror_detector_config():
    params = inspect.signature(DetectorModule.__init__).parameters
    for f in dataclasses.fields(DetectorConfig):
        if f.name in HIDDEN_CONFIG_FIELDS:
            continue
        assert f.name in params, f"DetectorConfig.{f.name} is not a DetectorModule argument"
        assert params[f.name].default == f.default, f.name
        assert str(params[f.name].annotation) == str(f.type), f.name


def _hparams(**kw):
    params = inspect.signature(DetectorModule.__init__).parameters
    hp = {k: p.default for k, p in params.items() if k != "self"}
    hp.update(kw)
    return hp


@pytest.mark.parametrize("op", ["roi_align", "roi_warp"])
def test_flat_roi_options_reach_the_config(op):
    cfg = detector_config_from_hparams(_hparams(roi_op=op, roi_mode="max", sampling_ratio=-1, aligned=True))
    assert cfg.roi_op == op and cfg.resolved_roi_options == {"mode": "max", "sampling_ratio": -1, "aligned": True}


@pytest.mark.parametrize("op", ["roi_pool", "prroi_pool"])
def test_ops_without_options(op):
    assert detector_config_from_hparams(_hparams(roi_op=op)).resolved_roi_options == {}
    with pytest.raises(ValueError, match="roi_mode='max' applies to roi_align and roi_warp only"):
        detector_config_from_hparams(_hparams(roi_op=op, roi_mode="max"))


def test_bad_optimizer_values_are_named():
    with pytest.raises(ValueError, match="lr=-1"):
        DetectorModule(**tiny_module_kwargs(lr=-1.0))


def test_non_finite_loss_saves_then_stops_naming_step_and_batch(tmp_path, data_root):
    module = DetectorModule(**tiny_module_kwargs())
    forward = module.model.forward

    def poisoned(images, targets=None):
        out = forward(images, targets)
        if module.training and module.global_step == 1:
            out = {k: v * math.nan for k, v in out.items()}
        return out

    module.model.forward = poisoned
    before = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            before.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                         callbacks=[Snapshot()])
    with pytest.raises(FloatingPointError) as exc:
        trainer.fit(module, datamodule=tiny_datamodule(data_root))
    msg = str(exc.value)
    assert "global step 1" in msg and "batch 1" in msg and "image ids [" in msg
    saved = tmp_path / "checkpoints" / "nonfinite-step=1.ckpt"
    assert str(saved) in msg
    state = load_checkpoint(saved)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # the weights are those from before the bad step: nothing was updated with NaN gradients
    assert all(torch.equal(state[k], before[k]) for k in before)


def test_channels_last_trains_the_same_network(data_root):
    dm = tiny_datamodule(data_root)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    losses = {}
    for cl in (False, True):
        torch.manual_seed(0)
        module = DetectorModule(**tiny_module_kwargs(channels_last=cl))
        convs = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(w.is_contiguous(memory_format=torch.channels_last) == cl for w in convs if w.shape[-1] > 1)
        torch.manual_seed(1)  # same proposal/ROI sampling
        losses[cl] = {k: float(v) for k, v in module(images, targets).items()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-4)
