"""DetectorModule: its arguments mirror DetectorConfig, ROI options map, non-finite losses stop the run."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from tiny_run import tiny_datamodule, tiny_module_kwargs

from detector.checkpointing import load_checkpoint
from detector.lit.module import DetectorModule
from detector.models import DetectorConfig


def test_the_detector_is_one_argument_stored_as_plain_values():
    cfg = DetectorConfig.small(num_classes=8, roi_op="roi_align", roi_options={"mode": "max"})
    module = DetectorModule(detector=cfg, lr=0.01)
    assert module.detector_config is cfg
    assert module.hparams["detector"] == cfg.to_dict() and module.hparams["lr"] == 0.01
    assert all(isinstance(v, (str, int, float, bool, list, dict, type(None))) for v in module.hparams["detector"].values())
    again = DetectorModule(**dict(module.hparams))  # a dict of the fields is accepted, as hparams read back are
    assert again.detector_config == cfg


@pytest.mark.parametrize("op", ["roi_align", "roi_warp"])
def test_roi_options_complete_with_the_tables_defaults(op):
    cfg = DetectorConfig(roi_op=op, roi_options={"mode": "max", "sampling_ratio": -1, "aligned": True})
    assert cfg.resolved_roi_options == {"mode": "max", "sampling_ratio": -1, "aligned": True}
    assert DetectorConfig(roi_op=op, roi_options={"mode": "max"}).resolved_roi_options == {
        "mode": "max", "sampling_ratio": 2, "aligned": False}


@pytest.mark.parametrize("op", ["roi_pool", "prroi_pool"])
def test_ops_without_options(op):
    assert DetectorConfig(roi_op=op).resolved_roi_options == {}
    with pytest.raises(ValueError, match="roi_options"):
        DetectorConfig(roi_op=op, roi_options={"mode": "max"})


def test_detector_must_be_a_detector_config():
    with pytest.raises(TypeError, match="DetectorConfig"):
        DetectorModule(detector="resnet18")


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
