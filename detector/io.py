"""Files that are never half-written, and the one way this project writes JSON.

Atomic writes
-------------
`atomic_write` writes to a temporary file *in the destination folder* (``.tmp-<name>-*.partial``),
fsyncs it, ``os.replace``-s it over the destination and fsyncs the folder. A process killed at
any moment (SIGKILL, power loss after the fsync) leaves either the old complete file or the
new complete file under the final name, never a truncated one; at worst a stray
``.tmp-*.partial`` file, which no reader's pattern matches (``last*.ckpt``, ``metrics.json``,
``run.json``). Same folder because ``os.replace`` is atomic only within one file system. A
failed write removes its temp file and leaves the old file untouched. The new file gets the
mode a plain ``open(path, "w")`` would give it (``0o666 & ~umask``), not ``mkstemp``'s 0600.

JSON: one NaN rule
------------------
Strict JSON has no NaN or infinity, and a file holding ``NaN`` breaks every non-Python reader
(``jq``, JavaScript, strict parsers). So `write_json` / `to_json_text` write **every non-finite
float (NaN, +inf, -inf) as ``null``**, and convert numpy / torch scalars (anything with
``.item()`` that gives a plain number) to plain numbers. ``null`` means "undefined or not
measured", which is what every reader of the project's files already does with it:

- ``metrics.json``: pycocotools' -1 ("no such objects") is ``null``;
- ``results.json``, ``quantization.json``, ``regions.json``: the std of one seed, a delta with no
  reference, an empty size bin are ``null`` (notebook 02 reads ``null`` back as NaN);
- the ablation's run files: a field declared ``("num", None)`` reads ``null`` as "not measured";
  a field declared ``"num"`` rejects it (and the NaN it was) so that stage is redone.

Anything else JSON cannot hold (a Path, a dtype, a set) is a ``TypeError``, as in ``json.dumps``:
callers convert on purpose. Files end with a newline. The fast path is ``json.dumps(...,
allow_nan=False)`` on the object as given, so a 2 GB ``detections.json`` (all finite) costs no
extra pass; only an object that holds a non-finite float or a scalar type is copied and cleaned.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "to_json_text", "write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace `path` atomically with what `write(file)` writes (see module doc).

    Creates missing parent folders. Raises OSError with the original errno (so
    ``PermissionError`` stays ``PermissionError``) and a message that names the destination,
    ``cannot write PATH: No space left on device``: the OS's own message for ENOSPC, EROFS,
    EDQUOT... names no file, or only the temp file. Any error (also one raised by `write`)
    removes the temp file and leaves an existing `path` as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.path.basename(path)}-", suffix=".partial")
    except OSError as err:
        raise _naming(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _naming(path, err) from err
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """`atomic_write` of a bytes-like object."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write` of a string, encoded with `encoding` (UTF-8 unless told)."""
    atomic_write_bytes(path, text.encode(encoding))


def to_json_text(obj: Any, indent: int | None = 1) -> str:
    """`obj` as JSON text under the module's NaN rule (non-finite -> ``null``), newline-terminated.

    >>> to_json_text({"AP": float("nan"), "n": 2, "std": [1.5, float("inf")]}, indent=None)
    '{"AP": null, "n": 2, "std": [1.5, null]}\\n'
    """
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except (ValueError, TypeError):  # a non-finite float or a numpy scalar somewhere: clean a copy
        text = json.dumps(_clean(obj), indent=indent, allow_nan=False)
    return text + "\n"


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """`to_json_text` of `obj`, written atomically to `path` (see the module doc for both rules)."""
    atomic_write_text(path, to_json_text(obj, indent=indent))


def _clean(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps(allow_nan=False)` accepts: non-finite floats -> None,
    scalar types with ``.item()`` -> plain numbers; other types are left for json to refuse."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    item = getattr(obj, "item", None)  # numpy / torch scalar
    if callable(item):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):  # an array of several values: json refuses it
            return _clean(item())
    return obj


def _naming(path: str, err: OSError) -> OSError:
    """`err` as a new OSError of the same errno whose message names `path` (one line)."""
    reason = err.strerror or str(err) or type(err).__name__
    message = f"cannot write {path}: {reason}"
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
