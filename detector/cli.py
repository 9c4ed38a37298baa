"""The command lines: `DetectorCLI` (train.py) and `EvaluateCLI` (evaluate.py).

Both are `LightningCLI` subclasses over `DetectorModule` and `DetectionDataModule`, so every
option is a YAML key and a flag, ``--help`` lists them with their types, and a bad key or
value is reported by jsonargparse with the key's name and the accepted choices before
anything is built. What the subclasses add:

- the class count comes from the data: ``data.num_classes -> model.num_classes`` (linked
  at instantiation, so it is never written twice and never disagrees);
- every trainer writes checkpoints atomically (`AtomicCheckpointIO`, unless a config
  names another CheckpointIO plugin);
- train.py's runs live in ``trainer.default_root_dir`` (default
  ``runs/<backbone>_s<stride>/<roi_op>``, see `default_run_dir`):
  ``checkpoints/best.ckpt`` (best ``val/bbox_AP``) and ``checkpoints/last.ckpt`` (every
  epoch and on interruption; `detector.checkpointing.default_checkpoint_callbacks`),
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
- the datamodule's init arguments are stored in every checkpoint (as Lightning's
  ``datamodule_hyper_parameters``), so evaluate.py can rebuild the same validation data
  from the checkpoint alone; ``--data.*`` flags override them.

Optimizers are plain `DetectorModule` arguments (``model.optimizer``, ``model.lr``,
``model.lr_schedule``, ``model.warmup_steps``, ...), so LightningCLI's own
``--optimizer``/``--lr_scheduler`` are turned off: one way to say it, not two.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import sys
from typing import Any

from jsonargparse import Namespace
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from detector.checkpointing import AtomicCheckpointIO, default_checkpoint_callbacks
from detector.data import DetectionDataModule
from detector.data.report import DatasetError
from detector.lit import DetectorModule
from detector.lit.run_folder import RunFolderError, RunFolderLock, claim_run_folder
from detector.lit.run_state import RunStateCallback


def default_run_dir(model_config: Any) -> str:
    """``runs/<backbone>_s<stride>/<roi_op>[_max][_aligned][_srN]``: where a run goes when the config names
    no ``trainer.default_root_dir``, so runs of different ROI ops never share checkpoints."""
    get = (lambda k, d=None: model_config.get(k, d)) if model_config is not None else (lambda k, d=None: d)
    op = str(get("roi_op", "roi_align"))
    if op in ("roi_align", "roi_warp"):  # the options that ablations vary, in the name
        op += "_max" if get("roi_mode") == "max" else ""
        op += "_aligned" if get("aligned") else ""
        op += f"_sr{get('sampling_ratio')}" if get("sampling_ratio", 2) != 2 else ""
    return os.path.join("runs", f"{get('backbone', 'resnet18')}_s{get('stride', 32)}", op)


def plain(value: Any) -> Any:
    """`value` as JSON-compatible Python (paths -> str, tuples -> lists, Namespaces -> dicts):
    what can be stored in a checkpoint that loads with ``weights_only=True``."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=str))


class DetectorArgumentParser(LightningArgumentParser):
    """jsonargparse's parser, whose "unknown key" errors also list the keys it knows.

    jsonargparse names an unknown key (``unrecognized arguments: --model.roi_opp`` or
    ``Group 'model' does not accept option 'roi_opp'``) but not what was meant; this adds
    the closest known keys and every key of that group, like the choices of a bad value.
    """

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(message + unknown_key_hint(message, known_keys(self)), ex)


def known_keys(parser: Any) -> list[str]:
    """Every dotted key `parser` (and its subcommand parsers) accepts."""
    keys: set[str] = set()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):  # subcommands: {name: parser}
            for sub in choices.values():
                if hasattr(sub, "_actions"):
                    keys |= set(known_keys(sub))
        dest = getattr(action, "dest", None)
        if dest and dest not in ("help", "config") and not dest.startswith("=="):
            keys.add(dest)
    return sorted(keys)


def unknown_key_hint(message: str, keys: list[str]) -> str:
    """``"\n  did you mean ...; keys of 'model': ..."`` for the unknown keys in `message`, or ``""``."""
    unknown = re.findall(r"--([A-Za-z_][\w.]*)", message) if "unrecognized arguments" in message else []
    pattern = r"(Group|Subcommand) '([\w.]+)' does not accept (?:option|nested key) '([\w.]+)'"
    unknown += [k if kind == "Subcommand" else f"{g}.{k}" for kind, g, k in re.findall(pattern, message)]
    lines = []
    for key in unknown:
        group = key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == group]
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        if close:
            lines.append(f"  '{key}': did you mean {' or '.join(repr(c) for c in close)}?")
        if siblings:
            lines.append(f"  keys of '{group or '(top level)'}': {', '.join(k.rpartition('.')[2] for k in siblings)}")
    return ("\n" + "\n".join(lines)) if lines else ""


class DetectorCLI(LightningCLI):
    """LightningCLI for `DetectorModule` + `DetectionDataModule` (see the module doc).

    Example:
        python train.py fit --config configs/quickstart.yaml
        python train.py fit --config configs/quickstart.yaml --ckpt_path last   # resume
        python train.py fit --config configs/resnet18_s32.yaml --config configs/roi/roi_pool.yaml
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        kwargs.setdefault("parser_class", DetectorArgumentParser)
        # Lightning's automatic hparams logging merges model and data hparams into one dict
        # and fails on shared names with different values (model.min_size is the detector's
        # resize, data.min_size the loader's); DetectorModule logs both, prefixed, instead.
        kwargs.setdefault("trainer_defaults", {})
        kwargs["trainer_defaults"].setdefault("enable_autolog_hparams", False)
        self.run_state_callback: RunStateCallback | None = None
        self._run_folder_lock: RunFolderLock | None = None
        try:
            super().__init__(DetectorModule, DetectionDataModule, args=args, run=run, **kwargs)
        except DatasetError as err:  # the checker's report is the whole message: no traceback above it
            print(str(err), file=sys.stderr)
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
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: start a new run in a run folder that holds an earlier run's checkpoints, "
                                 "deleting them (by default refused; --ckpt_path last resumes instead)")

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

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # our constructors' messages name the value and the fix
            self._parser(self.subcommand).error(str(err))
        store_data_hparams(self.datamodule, self._get(self.config, "data"))

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
            self.run_state_callback = RunStateCallback()  # RNG states in checkpoints, Ctrl-C, the exit code
            callbacks.append(self.run_state_callback)
            kwargs.setdefault("callbacks", callbacks)
        return super().instantiate_trainer(**kwargs)


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


def data_defaults_from_checkpoint(checkpoint_hparams: dict[str, Any] | None) -> dict[str, Any]:
    """The datamodule arguments a checkpoint was trained with, minus Lightning's private keys."""
    return {k: v for k, v in (checkpoint_hparams or {}).items() if not k.startswith("_")}


def main_train(args: Any = None) -> DetectorCLI:
    """Entry point of train.py."""
    return DetectorCLI(args=args)


class EvaluateCLI(DetectorCLI):
    """``python evaluate.py CKPT [CKPT ...] --output DIR [--overwrite true] [--data.* ...] [--trainer.* ...]``.

    No model options: each model is rebuilt from its checkpoint's hyperparameters. The
    ``data.*`` defaults are the first checkpoint's datamodule arguments, so with no
    ``--data`` flag the checkpoint is scored on the validation split it was trained with;
    only the validation split is read (``--data.val_images``/``--data.val_annotations`` are
    enough: no training files needed). Before the first image is read, in this order, each
    ending the run like a parse error (``error: ...``, exit code 2):

    - every checkpoint is loaded and checked (`detector.evaluation.checkpoints`);
    - ``--output`` must not hold earlier results (unless ``--overwrite true``) and must be
      writable (`detector.evaluation.output.check_output`);
    - the categories (ids and names) of the annotation file to be scored must be each
      checkpoint's; then the dataset is built and checked.

    Only then are earlier results removed (``--overwrite true``). A write that fails at the
    end (disk full) ends with one line naming the file and exit code 1.
    """

    def __init__(self, args: Any = None) -> None:
        kwargs: dict[str, Any] = {
            "save_config_callback": None,
            "trainer_defaults": {"logger": False, "enable_checkpointing": False, "devices": 1},
            "load_from_checkpoint_support": False,
        }
        super().__init__(args=args, run=False, **kwargs)

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items()})
        parser.add_lightning_class_args(self._datamodule_class, "data")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("checkpoints", type=str, nargs="+", help="checkpoint files (.ckpt) written by train.py")
        parser.add_argument("--output", type=str, required=True, help="folder for metrics.json and detections.json")
        parser.add_argument("--per_class", type=bool, default=True, help="print per-class AP rows")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="replace the results of an earlier evaluation in --output (by default a folder "
                                 "holding metrics.json, detections.json or comparison.json is refused)")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        from detector.evaluation.checkpoints import load_detector

        super().parse_arguments(parser, args)  # first pass: finds the checkpoints (and rejects bad flags)
        try:
            self.loaded = [load_detector(p) for p in self.config.checkpoints]
        except ValueError as err:
            parser.error(str(err))
        defaults = data_defaults_from_checkpoint(self.loaded[0].data_hparams)
        known = data_keys(parser)
        parser.set_defaults({f"data.{k}": v for k, v in defaults.items() if k in known})
        super().parse_arguments(parser, args)  # second pass: --data.* flags override the checkpoint's

    def instantiate_classes(self) -> None:
        from detector.data.check import load_coco_json
        from detector.evaluation.checkpoints import check_against_annotations, check_against_data
        from detector.evaluation.output import check_output, clear_results

        try:
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule = self.config_init.data
            check_output(self.config.output, overwrite=self.config.overwrite)
            self.datamodule.prepare_data()
            annotation_file = self.datamodule.val_annotation_file
            categories = load_coco_json(annotation_file).get("categories")
            if isinstance(categories, list) and all(isinstance(c, dict) for c in categories):
                for loaded in self.loaded:  # (a malformed list is the dataset check's to report, next)
                    check_against_annotations(loaded, annotation_file, categories)
            self.datamodule.setup("validate")
            for loaded in self.loaded:
                check_against_data(loaded, int(self.datamodule.num_classes), list(self.datamodule.category_ids),
                                   list(self.datamodule.category_names))
        except ValueError as err:
            self.parser.error(str(err))
        self.model = self.loaded[0].module
        self.trainer = self.instantiate_trainer()
        if self.config.overwrite:
            clear_results(self.config.output)


def main_evaluate(args: Any = None) -> dict[str, Any]:
    """Entry point of evaluate.py: evaluate every checkpoint, print, write the files."""
    from detector.evaluation.output import OutputError
    from detector.evaluation.runner import evaluate_checkpoints

    cli = EvaluateCLI(args=args)
    try:
        return evaluate_checkpoints(cli.loaded, cli.datamodule, cli.trainer, cli.config.output, cli.config.per_class)
    except OutputError as err:  # disk full, read-only: what and where, one line on stderr, exit code 1
        raise SystemExit(f"evaluate.py: error: {err.strerror}") from None


def data_keys(parser: LightningArgumentParser) -> set[str]:
    """The ``data.*`` keys that `parser` accepts, without the prefix."""
    prefix = "data."
    return {a.dest[len(prefix):] for a in parser._actions if getattr(a, "dest", "").startswith(prefix)}
