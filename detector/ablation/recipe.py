"""Which command trained a run: a run folder is found by name, its numbers count only for the recipe.

A run folder is named by variant, stride, grid values and seed (`RunSpec.name`), not by the
flags it was trained with. Rerun an ablation into the same ``--out`` with another
``--trainer.max_epochs`` or ``--model.lr`` and, without this check, the old runs were skipped
as complete (or resumed from the old checkpoint) and the table printed the new command above
the old numbers, exit 0.

The *recipe* of a run is the part of its train.py command that decides the result:
``[*--config files, *overrides, *axis flags, *variant flags, stride, seeds]``, i.e. everything
between ``fit`` and ``--trainer.default_root_dir`` (`recipe_of`). Every command a run recorded
(each training attempt in attempts.jsonl, train.json, run.json) is compared with the recipe of
the command at hand (`recipe_problem`), as settings: a flag's last value wins, as in train.py,
so the order of different flags does not matter, and a ``--config`` file is compared by name
(run folders keep absolute paths, which change when a checkout moves; an edited config file
with the same name is not detected).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT_FLAG = "--trainer.default_root_dir"


def recipe_of(command: Any) -> list[str] | None:
    """The recipe inside a recorded ``[..., "fit", *recipe, "--trainer.default_root_dir", DIR, ...]``
    command, or None for anything else (a record of another shape says nothing)."""
    if not isinstance(command, list) or not all(isinstance(t, str) for t in command):
        return None
    if "fit" not in command or ROOT_FLAG not in command:
        return None
    start, end = command.index("fit") + 1, command.index(ROOT_FLAG)
    return command[start:end] if start <= end else None


def settings(recipe: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(config file names, {flag: last value})`` of a recipe (``--f v`` and ``--f=v`` alike)."""
    configs: list[str] = []
    flags: dict[str, str] = {}
    key = None
    for tok in recipe:
        if tok.startswith("--"):
            name, eq, value = tok.partition("=")
            key = None if eq else name
            if eq:
                _assign(configs, flags, name, value)
            elif name != "--config":
                flags[name] = ""  # a flag given without a value keeps the empty string
        elif key is not None:
            _assign(configs, flags, key, tok)
            key = None
    return tuple(configs), flags


def _assign(configs: list[str], flags: dict[str, str], key: str, value: str) -> None:
    if key == "--config":
        configs.append(Path(value).name)
    else:
        flags[key] = value


def recipe_difference(recorded: list[str], wanted: list[str]) -> str | None:
    """None when both recipes train the same thing, else what differs, flag by flag."""
    (cfg_a, flags_a), (cfg_b, flags_b) = settings(recorded), settings(wanted)
    parts = []
    if cfg_a != cfg_b:
        parts.append(f"--config {list(cfg_a)} then, {list(cfg_b)} now")
    for key in sorted(set(flags_a) | set(flags_b)):
        a, b = flags_a.get(key), flags_b.get(key)
        if a != b:
            parts.append(f"{key} {_show(a)} then, {_show(b)} now")
    return "; ".join(parts) or None


def _show(value: str | None) -> str:
    return "(unset)" if value is None else repr(value)


def recorded_commands(run_path: Path) -> list[tuple[str, list[str]]]:
    """``(file, recipe)`` for every train command a run folder recorded (attempts.jsonl's
    starts, train.json, run.json); unreadable files and lines are left to their own checks."""
    found = []
    attempts = run_path / "attempts.jsonl"
    if attempts.is_file():
        for line in attempts.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == "start" and (r := recipe_of(ev.get("command"))) is not None:
                found.append((attempts.name, r))
    for name, key in (("train.json", "command"), ("run.json", "train_command")):
        try:
            doc = json.loads((run_path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and (r := recipe_of(doc.get(key))) is not None:
            found.append((name, r))
    return found


def recipe_problem(run_path: Path, wanted: list[str]) -> str | None:
    """Why the run folder's files are not a run of the recipe `wanted` (None: they are, or the
    folder recorded no command yet)."""
    for file, recorded in recorded_commands(run_path):
        diff = recipe_difference(recorded, wanted)
        if diff:
            return f"was trained by another command ({file}: {diff})"
    return None
