"""The command lines' argument parser: jsonargparse's, with unknown keys answered by the keys it knows.

Every CLI of the project (train.py, evaluate.py, the ablation's config reading) parses with
`DetectorArgumentParser`, so a typo such as ``--model.detector.roi_opp`` gets the closest
known keys and the keys of its group, like a bad value gets its choices.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser


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
