"""Image files: safe paths inside an image folder, and decoding anything to 8-bit RGB, upright.

User folders hold every kind of file COCO itself never had: grayscale scans, RGBA screenshots,
palette PNGs, 16-bit microscopy, phone photos stored sideways with an EXIF orientation tag.
The detector wants ``uint8`` RGB, so this module decides once how each mode becomes RGB (alpha
dropped, 16-bit scaled, not truncated) and in which frame pixels are read (see
:func:`load_rgb`). Everything that reads pixels or sizes (the dataset check, the dataset, any
drawing) goes through :func:`load_rgb` and :func:`read_header`, so they cannot disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: EXIF tag 0x0112: how the stored pixels must be turned to be seen upright (1 = as stored).
EXIF_ORIENTATION_TAG = 0x0112
#: Orientations 5-8 turn the image by 90 or 270 degrees, so width and height swap.
SWAPS_WIDTH_AND_HEIGHT = frozenset({5, 6, 7, 8})


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
    return Path(images_dir) / safe_relative_name(file_name)


def safe_relative_name(file_name: object) -> str:
    """The normalized relative path that :func:`safe_image_path` joins (same rules, same errors).

    A string, without building ``Path`` objects: the dataset check calls it once per image
    (118k times for COCO train2017), where ``pathlib`` costs more than the ``stat`` itself.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise UnsafePathError(f"file_name {file_name!r} is not a non-empty string")
    posix = file_name.replace("\\", "/")  # a Windows-made JSON must not smuggle "..\\.." through
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafePathError(f"file_name {file_name!r} is an absolute path; it must be relative to the image folder")
    norm = os.path.normpath(posix)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(f"file_name {file_name!r} resolves outside the image folder")
    return norm


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


def exif_orientation(im: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation of an opened image: 1..8, and 1 when the tag is absent or invalid.

    ``header_only`` never decodes pixels: a PNG whose ``eXIf`` chunk follows the pixel data
    (rare; Pillow and cameras write it first) then reads as 1, and only a decoding check
    (``--full``) sees its orientation.
    """
    if header_only and im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow's PNG getexif() would decode the whole image to look further
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block is no orientation (viewers ignore it too)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8[H, W, 3]``, **upright**: in the frame an image viewer shows.

    The rule: pixels are turned by the file's EXIF orientation tag (``PIL.ImageOps.exif_transpose``),
    so ``H, W`` and every pixel are those of the *displayed* image. Why this frame and not the
    raw pixel grid (which pycocotools, OpenCV without flags and torchvision's ``read_image`` use):
    annotation tools draw on what the browser shows, which is the displayed frame (CVAT, Label
    Studio, Roboflow, LabelMe export boxes there), and detectron2's ``read_image`` reads the same
    frame. A box annotated on the upright photo then lands on the same pixels here. Images
    without the tag (COCO's own, everything synthetic) are unaffected.

    Decoding is complete: a truncated file raises ``OSError`` here, never a half-grey image. See
    :func:`to_rgb_array` for how each pixel mode becomes RGB.
    """
    with Image.open(path) as im:
        im.load()  # decode first: a PNG's eXIf chunk may follow its pixels
        if exif_orientation(im) != 1:
            im = ImageOps.exif_transpose(im)  # a new, upright image; orientation-1 files skip the copy
        return to_rgb_array(im)


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, without decoding the pixels.

    Attributes:
        size: ``(width, height)`` as displayed, i.e. of the array :func:`load_rgb` returns.
        raw_size: ``(width, height)`` of the stored pixel grid (what EXIF-unaware readers see).
        orientation: the EXIF orientation, 1..8 (1: stored upright, or no tag).
    """

    size: tuple[int, int]
    raw_size: tuple[int, int]
    orientation: int


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The :class:`ImageHeader` of an image file (raises what PIL raises for a broken header)."""
    with Image.open(path) as im:
        w, h = im.size
        orientation = exif_orientation(im, header_only=True)
    return ImageHeader((h, w) if orientation in SWAPS_WIDTH_AND_HEIGHT else (w, h), (w, h), orientation)
