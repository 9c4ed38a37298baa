"""The command lines: train.py (`DetectorCLI`), evaluate.py (`EvaluateCLI`) and the config reader.

Public API:
    main_train, DetectorCLI, default_run_dir          train.py (a LightningCLI; `detector.cli.train`)
    main_evaluate, EvaluateCLI                        evaluate.py (jsonargparse; `detector.cli.evaluate`)
    read_train_config, section                        train.py's options, parsed, nothing built (`detector.cli.config`)
    DetectorArgumentParser                            the parser every CLI uses (`detector.cli.parser`)
"""

from .config import read_train_config, section
from .evaluate import EvaluateCLI, main_evaluate
from .parser import DetectorArgumentParser
from .train import DetectorCLI, default_run_dir, main_train

__all__ = ["main_train", "DetectorCLI", "default_run_dir", "main_evaluate", "EvaluateCLI",
           "read_train_config", "section", "DetectorArgumentParser"]
