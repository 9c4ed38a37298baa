"""Plain image files as a dataset: what evaluate.py's predict mode (``--images``) reads, no annotations.

`list_images` turns the user's ``--images`` arguments (folders and files, any mix) into one
sorted, de-duplicated `ImageListing`:

- a **folder** is listed recursively and sorted; a file in it counts as an image by its
  extension (`IMAGE_EXTENSIONS`, case-insensitive); any other file is *ignored* and counted
  (`ImageListing.ignored`), so a ``notes.txt`` or ``.json`` beside the photos is no error.
  Hidden entries (a name starting with ``.``: ``.DS_Store``, macOS ``._photo.jpg`` twins,
  ``.git/``) are skipped like ``ls`` skips them, and so is everything under `exclude`
  (evaluate.py passes ``OUTPUT/images``, so its drawings are never read back as input);
- a **file** named explicitly is always taken, whatever its extension (the user asked for it:
  if it does not decode it is reported, not silently ignored);
- a path that does not exist raises `ImageListingError` naming it.

Each image gets a ``file_name``: its path relative to the common folder of the arguments
(the folder itself for one folder; the files' folder for files), in POSIX form, unique by
construction; and an ``image_id``: 1, 2, ... in listing order. Both depend on the listing
alone, not on which files later fail to decode.

`ImageFiles` is the `torch.utils.data.Dataset` over a listing: item ``i`` is
``(Tensor[3, H, W] float32 in [0, 1], target)`` with ``target = {"image_id", "file_name",
"path", "orig_size": (H, W)}``, pixels decoded by `detector.data.images.load_rgb` (every mode:
RGB, L, LA, RGBA, P, I;16, I, F, CMYK... -> ``uint8`` RGB, turned upright by the EXIF rule,
so ``H, W`` are the displayed frame), then scaled to float as the evaluation loader does
(``CocoDetection`` without a resize). A file that fails to decode does **not** raise (one bad
photo must not end a run over thousands): its item is ``(None, target)`` with
``target["error"]`` = ``"OSError: image file is truncated ..."``; `collate_image_files`
separates those from the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from detector.data.images import load_rgb

#: Extensions (lower case) of the files a folder's listing takes as images: what Pillow decodes
#: among the common photo, scan and microscopy formats.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".jpx", ".ico", ".pcx", ".sgi",
})


class ImageListingError(ValueError):
    """A path given as ``--images`` does not exist, or the arguments hold no image at all."""


@dataclass(frozen=True)
class ImageFile:
    """One listed image: where it is, the name it is reported under, and its id."""

    path: Path
    file_name: str
    image_id: int


@dataclass
class ImageListing:
    """The images found (sorted, ids 1..N) and the non-image files skipped in the folders."""

    images: list[ImageFile] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a folder's listing takes `path` as an image (by its extension, any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def list_images(sources: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> ImageListing:
    """The images of `sources` (folders and files; see the module doc), sorted and de-duplicated.

    Raises:
        ImageListingError: a source does not exist (its path is named), or no source was given.
    """
    if not sources:
        raise ImageListingError("no --images given: name image files or folders of images")
    excluded = [Path(os.path.realpath(e)) for e in exclude]
    found: list[tuple[Path, Path]] = []  # (absolute path, root its name is relative to)
    ignored: list[Path] = []
    roots: list[Path] = []
    for source in sources:
        path = Path(os.path.abspath(os.fspath(source)))
        if not path.exists():
            raise ImageListingError(f"--images {os.fspath(source)}: no such file or folder")
        if path.is_dir():
            roots.append(path)
            for dirpath, dirnames, filenames in os.walk(path):  # (symlinked folders are not followed: no loops)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                here = Path(dirpath)
                if _inside(Path(os.path.realpath(here)), excluded):
                    dirnames[:] = []
                    continue
                for name in sorted(filenames):
                    file = here / name
                    if name.startswith(".") or not (file.is_file()):
                        continue
                    if is_image_file(file):
                        found.append((file, path))
                    else:
                        ignored.append(file)
        else:
            roots.append(path.parent)
            found.append((path, path.parent))
    common = Path(os.path.commonpath([str(r) for r in roots]))
    seen: set[str] = set()
    images: list[ImageFile] = []
    for file in sorted({f for f, _ in found}, key=lambda p: p.relative_to(common).as_posix()):
        real = os.path.realpath(file)
        if real in seen:  # the same file twice (a folder and a file in it, or a symlink): once
            continue
        seen.add(real)
        images.append(ImageFile(file, file.relative_to(common).as_posix(), len(images) + 1))
    return ImageListing(images, sorted(set(ignored)))


class ImageFiles(Dataset):
    """The images of an `ImageListing`, decoded upright to float RGB (see the module doc)."""

    def __init__(self, listing: ImageListing | Sequence[ImageFile]) -> None:
        self.files = list(listing.images if isinstance(listing, ImageListing) else listing)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
        item = self.files[index]
        target: dict[str, Any] = {"image_id": item.image_id, "file_name": item.file_name, "path": str(item.path)}
        try:
            array = load_rgb(item.path)  # (H, W, 3) uint8, upright
        except Exception as err:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            target["error"] = f"{type(err).__name__}: {first}" if first else type(err).__name__
            return None, target
        target["orig_size"] = (int(array.shape[0]), int(array.shape[1]))
        image = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).div_(255)  # (H, W, 3) -> (3, H, W)
        return image.contiguous(), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


def collate_image_files(batch: list[tuple[torch.Tensor | None, dict[str, Any]]]
                        ) -> tuple[list[torch.Tensor], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(images, targets, failed)``: the decoded items as lists, and the targets of those that failed."""
    images = [image for image, _ in batch if image is not None]
    targets = [target for image, target in batch if image is not None]
    failed = [target for image, target in batch if image is None]
    return images, targets, failed
