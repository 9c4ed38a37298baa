"""train.py's command line: `DetectorCLI`, a `LightningCLI` over `DetectorModule` + `DetectionDataModule`.

Every option is a YAML key and a flag (the detector's under ``model.detector.*``), ``--help``
lists them with their types, and a bad key or value is reported by jsonargparse with the
key's name and the accepted choices before anything is built. What the subclass adds:

- the class count comes from the data: ``data.num_classes -> model.detector.num_classes`` (linked
  at instantiation, so it is never written twice and never disagrees);
- every trainer writes checkpoints atomically (`AtomicCheckpointIO`, unless a config
  names another CheckpointIO plugin);
- train.py's runs live in ``trainer.default_root_dir`` (default
  ``runs/<backbone>_s<stride>/<roi_op>``, see `default_run_dir`):
  ``checkpoints/best.ckpt`` (best ``val/bbox_AP``) and ``checkpoints/last.ckpt`` (every
  epoch and on interruption; `detector.lit.checkpoints.default_checkpoint_callbacks`),
  ``tensorboard/`` and ``csv/`` logs and the learning rate, unless the config lists its
  own ModelCheckpoint / logger. One key therefore moves a whole run (the ablation sets
  ``--trainer.default_root_dir runs/<variant>``);
- a value that only the constructors can check (``DetectorConfig`` ranges, ...) ends the
  run like a parse error (``error: ...``, exit code 2) instead of a traceback; so does a
  dataset that fails its check (the checker's report alone, exit code 2);
- ``fit`` owns its run folder (`detector.lit.run_folder`): an unwritable folder, a folder
  in use by another training (lock ``ROOT/.fit.lock``) or one that holds an earlier run's
  checkpoints (without ``--ckpt_path last`` or ``--overwrite true``) is refused before any
  data is read, with one ``error:`` line (exit code 2);
- a fit stopped by a signal exits with ``128 + signum`` (143 for SIGTERM, 130 for Ctrl-C)
  after saving ``last.ckpt``, instead of Lightning's 0 / 1; every checkpoint says whether
  the schedule was complete (``checkpoint["detector_run"]``, read it with
  `detector.checkpointing.run_state`), and a resumed run repeats an uninterrupted one
  step for step (`detector.lit.run_state`, `detector.data.sampler`);
- ``test`` needs a test split (``--data.test_images``/``--data.test_annotations``, ``data.root``'s
  ``test[2017]`` or ``--data.synthetic_test N``): without one, or with a ``--ckpt_path`` whose
  category table is not the test file's, one ``error:`` line (exit code 2) before any image is
  read; it logs ``test/bbox_AP``... and prints pycocotools' table;
- ``predict`` runs on the test split, else val, and writes ``ROOT/predictions.json`` (COCO
  results + ``file_name``; an earlier one is refused without ``--overwrite true``);
- a ``--ckpt_path`` file's stored model arguments replace the config's ``model`` (Lightning's
  rule), read through `detector.checkpointing.module_hparams` so format-1 checkpoints work too;
- ``--model.init_from FILE`` (fine-tuning) must be an existing file unless ``--ckpt_path``
  resumes (which wins: init_from is then not applied); its errors are one ``error:`` line;
- the datamodule's init arguments are stored in every checkpoint (as Lightning's
  ``datamodule_hyper_parameters``), so evaluate.py can rebuild the same validation data
  from the checkpoint alone; ``--data.*`` flags override them.

Optimizers are plain `DetectorModule` arguments (``model.optimizer``, ``model.lr``,
``model.lr_schedule``, ``model.warmup_steps``, ...), so LightningCLI's own
``--optimizer``/``--lr_scheduler`` are turned off: one way to say it, not two.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from detector.checkpointing import DETECTOR_KEY, load_checkpoint, module_hparams
from detector.cli.parser import DetectorArgumentParser, plain
from detector.data import DatasetError, DetectionDataModule
from detector.data.datamodule import NO_TEST_SPLIT
from detector.evaluation.categories import check_categories
from detector.lit import DetectorModule
from detector.lit.checkpoints import AtomicCheckpointIO, default_checkpoint_callbacks
from detector.lit.init_from import KEY as INIT_FROM_KEY
from detector.lit.init_from import InitFromError
from detector.lit.predictions import PREDICTIONS_FILE, PredictionsWriter
from detector.lit.run_folder import RunFolderError, RunFolderLock, claim_run_folder
from detector.lit.run_state import RunStateCallback
from detector.ops import get_roi_op


def default_run_dir(model_config: Any) -> str:
    """``runs/<backbone>_s<stride>/<roi_op>[_<tag>...]``: where a run goes when the config names
    no ``trainer.default_root_dir``, so runs of different ROI variants never share checkpoints.

    The tags name the ROI options that differ from the op's defaults, as the variant table
    spells them (`detector.ops.RoiOption.tag`: ``_max``, ``_aligned``, ``_sr4``).
    """
    detector = model_config.get("detector") if model_config is not None else None
    get = (lambda k, d=None: detector.get(k, d)) if detector is not None else (lambda k, d=None: d)
    op = str(get("roi_op", "roi_align"))
    name = op
    try:
        spec = get_roi_op(op)
        options = spec.resolve_options(plain(get("roi_options")))
    except ValueError:  # reported with the key's name when the DetectorConfig is built
        options, spec = {}, None
    for option in spec.options if spec is not None else ():
        if option.tag is not None and options.get(option.name, option.default) != option.default:
            name += "_" + option.tag(options[option.name])
    return os.path.join("runs", f"{get('backbone', 'resnet18')}_s{get('stride', 32)}", name)


class DetectorCLI(LightningCLI):
    """LightningCLI for `DetectorModule` + `DetectionDataModule` (see the module doc).

    Example:
        python train.py fit --config configs/quickstart.yaml
        python train.py fit --config configs/quickstart.yaml --ckpt_path last   # resume
        python train.py fit --config configs/backbones/resnet18_s32.yaml --config configs/roi/roi_pool.yaml
        python train.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/best.ckpt --data.synthetic_test 200
        python train.py fit --config configs/quickstart.yaml --model.init_from runs/other/checkpoints/best.ckpt --trainer.default_root_dir runs/finetune
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        kwargs.setdefault("parser_class", DetectorArgumentParser)
        self.run_state_callback: RunStateCallback | None = None
        self._run_folder_lock: RunFolderLock | None = None
        try:
            super().__init__(DetectorModule, DetectionDataModule, args=args, run=run, **kwargs)
        except DatasetError as err:  # the checker's report is the whole message: no traceback above it
            print(str(err), file=sys.stderr)
            raise SystemExit(2) from None
        except InitFromError as err:  # model.init_from: another backbone, not a state dict, ...
            print(f"train.py: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except BaseException:
            self._exit_if_stopped_by_signal()
            raise
        finally:
            if self._run_folder_lock is not None:
                self._run_folder_lock.release()
        self._exit_if_stopped_by_signal()

    def _exit_if_stopped_by_signal(self) -> None:
        """Exit ``128 + signum`` when a signal stopped the fit (Lightning itself exits 0 on SIGTERM)."""
        signum = self.run_state_callback.stop_signal if self.run_state_callback is not None else None
        if signum is not None:
            print(f"train.py: stopped by signal {signum} ({signal.Signals(signum).name}); last.ckpt holds the "
                  "run so far: resume with --ckpt_path last", file=sys.stderr)
            raise SystemExit(128 + signum) from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.detector.num_classes", apply_on="instantiate")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: start a new run in a run folder that holds an earlier run's checkpoints, "
                                 "deleting them (by default refused; --ckpt_path last resumes instead)")

    def before_instantiate_classes(self) -> None:
        """Rules across config groups, checked once the config is parsed and before anything is
        built or read, so a wrong combination is one ``error:`` naming both keys (and the
        ablation, which parses the base config with the same parser, refuses it before its first
        run instead of launching runs that each fail).

        ``model.detector.mask: true`` trains and scores masks, so fit/validate/test need
        ``data.masks: true`` (predict reads no annotations and has no such need).
        """
        if self.subcommand not in ("fit", "validate", "test"):
            return
        detector = self._get(self.config, "model").get("detector") or {}
        data = self._get(self.config, "data")
        if detector.get("mask") and data is not None and data.get("masks") is False:
            self._parser(self.subcommand).error(
                "model.detector.mask=true (Mask R-CNN) needs instance masks from the data: add "
                "--data.masks true (or data: masks: true in the config), or drop model.detector.mask")

    def before_fit(self) -> None:
        """Claim the run folder (writable, locked, no earlier run replaced) before any data is read."""
        trainer = self.trainer
        if trainer.fast_dev_run or trainer.node_rank != 0 or trainer.local_rank != 0:
            return  # fast_dev_run writes nothing; DDP's other ranks run under rank 0's claim
        checkpoint_dirs = [str(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        try:
            self._run_folder_lock = claim_run_folder(trainer.default_root_dir, checkpoint_dirs,
                                                     self._get(self.config, "ckpt_path"),
                                                     bool(self._get(self.config, "overwrite", default=False)))
        except RunFolderError as err:
            print(f"train.py: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _parse_ckpt_path(self) -> None:
        """Lightning's: a ``ckpt_path`` file's stored model arguments become the config's ``model``;
        here read through `module_hparams`, so format-1 checkpoints (flat detector keys) test,
        predict and validate too, and a file that is not ours is one ``error:`` line."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not os.path.isfile(str(ckpt_path)):
            return
        try:
            stored = load_checkpoint(str(ckpt_path)).get("hyper_parameters") or {}
            hparams = module_hparams(stored, where=f"ckpt_path={str(ckpt_path)!r}") if stored else {}
        except ValueError as err:
            _input_error(str(err))
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_test(self) -> None:
        """A test split and a checkpoint of its categories, or one ``error:`` line (exit 2)."""
        if self.datamodule.split_paths("test") is None:
            _input_error(NO_TEST_SPLIT)
        self._check_checkpoint_categories("test")

    def before_predict(self) -> None:
        """Refuse to replace an earlier ``predictions.json`` (without ``--overwrite true``)."""
        path = os.path.join(self.trainer.default_root_dir, PREDICTIONS_FILE)
        if os.path.exists(path) and not self._get(self.config, "overwrite", default=False):
            _input_error(f"{path} holds earlier predictions: pass --overwrite true to replace it, or another "
                         "--trainer.default_root_dir")
        self._check_checkpoint_categories(self.datamodule.predict_split)

    def _check_checkpoint_categories(self, split: str) -> None:
        """The ``ckpt_path`` file's category table against `split`'s file, before Lightning loads it."""
        ckpt = self._get(self.config, "ckpt_path")
        if not ckpt or not os.path.isfile(str(ckpt)):
            return  # none, or "best"/"last": Lightning resolves it (and on_load_checkpoint checks)
        try:
            stored = load_checkpoint(str(ckpt)).get(DETECTOR_KEY) or {}
            if stored.get("category_ids") is not None:
                ids, names = self.datamodule.categories_of(split)
                check_categories(stored["category_ids"], stored.get("category_names") or [], ids, names,
                                 f"checkpoint {str(ckpt)!r}")
        except ValueError as err:
            _input_error(str(err))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # our constructors' messages name the value and the fix
            self._parser(self.subcommand).error(str(err))
        store_data_hparams(self.datamodule, self._get(self.config, "data"))
        init = getattr(self.model, "hparams", {}).get("init_from")
        if init is not None and not self._get(self.config, "ckpt_path") and not os.path.isfile(str(init)):
            _input_error(f"{INIT_FROM_KEY}={init!r}: no such file (a local .ckpt of train.py or a torchvision "
                         "detection state dict; nothing is downloaded)")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        kwargs.setdefault("plugins", with_atomic_checkpoints(trainer_config.get("plugins")))
        if self.subcommand is not None:  # train.py: our checkpoints and loggers unless the config has its own
            root = trainer_config.get("default_root_dir") or default_run_dir(self._get(self.config, "model"))
            kwargs.setdefault("default_root_dir", root)
            callbacks = list(trainer_config.get("callbacks") or [])
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                validates = trainer_config.get("limit_val_batches") not in (0, 0.0)
                callbacks += default_checkpoint_callbacks(root, best=validates)
            if trainer_config.get("logger") in (None, True):
                kwargs.setdefault("logger", default_loggers(root))
                callbacks.append(LearningRateMonitor(logging_interval="step"))
            if self.subcommand == "predict":  # Lightning returns predictions; this also writes them
                callbacks.append(PredictionsWriter(os.path.join(root, PREDICTIONS_FILE)))
            self.run_state_callback = RunStateCallback()  # RNG states in checkpoints, Ctrl-C, the exit code
            callbacks.append(self.run_state_callback)
            kwargs.setdefault("callbacks", callbacks)
        return super().instantiate_trainer(**kwargs)


def _input_error(message: str) -> None:
    """One ``train.py: error:`` line on stderr and exit code 2, like the CLI's other input errors."""
    print(f"train.py: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None


def default_loggers(root_dir: str) -> list[Logger]:
    """TensorBoard (``ROOT/tensorboard/version_N``) and CSV (``ROOT/csv/version_N/metrics.csv``)."""
    return [TensorBoardLogger(save_dir=root_dir, name="tensorboard"), CSVLogger(save_dir=root_dir, name="csv")]


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """`plugins` as a list, plus `AtomicCheckpointIO` unless it already has a CheckpointIO."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def store_data_hparams(datamodule: Any, data_config: Any) -> None:
    """Make Lightning store the datamodule's init args in checkpoints (if it does not already)."""
    if datamodule is None or data_config is None:
        return
    if not getattr(datamodule, "hparams", None):
        datamodule.save_hyperparameters(plain(data_config))


def main_train(args: Any = None) -> DetectorCLI:
    """Entry point of train.py."""
    return DetectorCLI(args=args)
