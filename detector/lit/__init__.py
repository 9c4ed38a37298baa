"""Lightning side of the project: `DetectorModule` (training, COCO validation, optimizers).

Public API:
    DetectorModule                 the LightningModule (plain typed init args)
    detector_config_from_hparams   hyperparameters -> `detector.models.DetectorConfig`
    Evaluation                     one validation pass: COCO results + COCOeval outcome
"""

from .module import CHECKPOINT_KEY, DetectorModule, Evaluation, check_categories, detector_config_from_hparams

__all__ = ["DetectorModule", "Evaluation", "detector_config_from_hparams", "check_categories", "CHECKPOINT_KEY"]
