"""Lightning side of the project: `DetectorModule` (training, COCO validation, optimizers).

Public API:
    DetectorModule                 the LightningModule (plain typed init args)
    detector_config_from_hparams   hyperparameters -> `detector.models.DetectorConfig`
    Evaluation                     one validation pass: COCO results + COCOeval outcome

train.py's run bookkeeping (imported by `detector.cli`): `detector.lit.run_state` (the
``detector_run`` record, RNG states, stopping on signals) and `detector.lit.run_folder`
(the run folder's lock and the refusal to replace an earlier run).
"""

from .module import CHECKPOINT_KEY, DetectorModule, Evaluation, check_categories, detector_config_from_hparams

__all__ = ["DetectorModule", "Evaluation", "detector_config_from_hparams", "check_categories", "CHECKPOINT_KEY"]
