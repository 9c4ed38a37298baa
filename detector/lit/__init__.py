"""Lightning side of the project: `DetectorModule` (training, COCO validation, optimizers).

Public API:
    DetectorModule    the LightningModule: ``DetectorModule(detector=DetectorConfig(...), lr=...)``

train.py's run bookkeeping (imported by `detector.cli`): `detector.lit.run_state` (the
``detector_run`` record, RNG states, stopping on signals), `detector.lit.run_folder`
(the run folder's lock and the refusal to replace an earlier run) and
`detector.lit.checkpoints` (atomic checkpoint files, ``best.ckpt`` / ``last.ckpt``).
What a checkpoint holds: `detector.checkpointing`. Fine-tuning (``model.init_from``):
`detector.lit.init_from` (the key mapping and the table: `detector.models.transfer`);
``train.py predict``'s file: `detector.lit.predictions`.
"""

from .module import DetectorModule

__all__ = ["DetectorModule"]
