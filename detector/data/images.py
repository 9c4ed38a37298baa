"""Image files: safe paths inside an image folder, and decoding anything to 8-bit RGB.

User folders hold every kind of file COCO itself never had: grayscale scans, RGBA screenshots,
palette PNGs, 16-bit microscopy. The detector wants ``uint8`` RGB, so this module decides
once how each mode becomes RGB (alpha dropped, 16-bit scaled, not truncated).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image


class UnsafePathError(ValueError):
    """A ``file_name`` that is absolute or climbs out of the image folder."""


def safe_image_path(images_dir: str | os.PathLike, file_name: object) -> Path:
    """Join ``images_dir`` and a COCO ``file_name``, refusing anything that leaves the folder.

    The check is lexical (``..`` and absolute paths are refused), not ``resolve()``-based, so
    an image folder made of symlinks into a shared store still works while a JSON file cannot
    name ``../../etc/passwd``.

    Raises:
        UnsafePathError: ``file_name`` is empty, not a string, absolute, or escapes ``images_dir``.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise UnsafePathError(f"file_name {file_name!r} is not a non-empty string")
    posix = file_name.replace("\\", "/")  # a Windows-made JSON must not smuggle "..\\.." through
    if posix.startswith("/") or PurePosixPath(posix).is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafePathError(f"file_name {file_name!r} is an absolute path; it must be relative to the image folder")
    norm = os.path.normpath(posix)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(f"file_name {file_name!r} resolves outside the image folder")
    return Path(images_dir) / norm


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Decode an opened PIL image to ``uint8[H, W, 3]``.

    - 16-bit and 32-bit integer grayscale (``I;16*``, ``I``): scaled by 255/65535 (values
      above 255 in an ``I`` image mean it holds 16-bit data), then replicated to 3 channels.
    - float grayscale (``F``): taken as [0, 1] when its maximum is <= 1, else as [0, 255].
    - palette, RGBA, LA and transparency: alpha is dropped (as torchvision's ``read_image(mode=RGB)``).
    - everything else (``1``, ``L``, ``CMYK``, ``YCbCr``, ...): PIL's own conversion.
    """
    mode = im.mode
    if mode.startswith("I"):
        a = np.asarray(im).astype(np.int64)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        gray = np.clip(a, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0)
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.array(im)  # a writable copy: torch.from_numpy warns on read-only buffers
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
    return np.array(im.convert("RGB"))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8[H, W, 3]`` (see :func:`to_rgb_array` for the mode rules)."""
    with Image.open(path) as im:
        return to_rgb_array(im)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size
