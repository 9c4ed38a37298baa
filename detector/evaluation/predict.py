"""Predict mode of evaluate.py (``--images``): a checkpoint on any image files, no annotations.

What it writes in the output folder:

- ``predictions.json``: COCO results (``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]``,
  ``score``, and an RLE ``segmentation`` when the model has a mask head), each with the
  ``file_name`` of its image. **Every** detection the model returns is kept, as evaluate.py's
  ``detections.json`` keeps them (the model's own ``box_score_thresh`` is the only cut); the
  score threshold only decides what is drawn.
- ``images.json``: an images-only COCO file (``images`` with ``id``, ``file_name``, ``width``,
  ``height``, plus ``path`` and ``drawn``; ``annotations: []``; the checkpoint's
  ``categories``), so ``COCO("images.json").loadRes("predictions.json")`` works in pycocotools.
- ``images/<name>.jpg|.png``: each decoded image with its detections at or above the
  threshold drawn (`detector.evaluation.draw`); JPEG inputs are drawn as JPEG (quality 90),
  everything else as PNG, under the input's relative name with the new extension (the
  original extension is kept too, ``a.jpg.png``, when two inputs would share a name).

Coordinates: boxes and masks are in the pixels of the **displayed** image, i.e. the original
file's size after its EXIF orientation (`detector.data.images.load_rgb`), which is the
``width``/``height`` written to images.json. The images reach the detector at full size
(no data-pipeline resize); the detector's own transform resizes them and maps its
detections back to that frame, exactly as in scoring.

Inference is `detector.evaluation.inference.detect` (the one inference loop), called batch
by batch over a DataLoader of `detector.data.image_folder.ImageFiles` so that each batch is
drawn and released as soon as it is detected. A file that fails to decode is reported
(`PredictSummary.failed`, one warning line each) and skipped. Batch composition sets the
padding inside the detector's transform, so ``--batch_size`` can move scores in the last
digits, as it does in scoring.

The output folder is checked before any image is read (`check_prediction_output`): earlier
predictions are refused unless ``overwrite``, the folder must be writable, and the input
images must not lie in its ``images/`` folder (where drawings are written; a listing of the input
leaves that folder out, so an output folder inside the input folder is never read back). With
``overwrite``, `clear_predictions` removes exactly the files an earlier predict run wrote:
``predictions.json``, ``images.json`` and the drawings that images.json lists; any other
file stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from detector.data.image_folder import (
    ImageFile,
    ImageFiles,
    ImageListing,
    collate_image_files,
)
from detector.evaluation.draw import draw_detections
from detector.evaluation.inference import detect
from detector.evaluation.output import OutputError, probe_writable
from detector.io import atomic_write, write_json

if TYPE_CHECKING:
    from detector.checkpointing import LoadedDetector

PREDICTIONS = "predictions.json"
IMAGES_JSON = "images.json"
DRAWN = "images"
_JPEG = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


@dataclass
class PredictSummary:
    """What a predict run did: images decoded, files skipped (path, reason), records written."""

    images: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    drawn_detections: int = 0


def drawn_names(files: Sequence[ImageFile]) -> dict[int, str]:
    """``{image_id: path under images/}`` (see the module doc): ``x.jpg -> x.jpg``, ``x.tif -> x.png``,
    and ``x.jpg.png`` style names where two inputs would otherwise share one."""
    def extension(f: ImageFile) -> str:
        return ".jpg" if Path(f.file_name).suffix.lower() in _JPEG else ".png"

    plain = {f.image_id: str(Path(f.file_name).with_suffix(extension(f)).as_posix()) for f in files}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1  # (case-insensitive file systems too)
    return {f.image_id: plain[f.image_id] if counts[plain[f.image_id].lower()] == 1 else f.file_name + extension(f)
            for f in files}


def categories_of(loaded: LoadedDetector) -> list[dict[str, Any]]:
    """The checkpoint's COCO ``categories`` (ids and names; ``class_<i>`` where it stored no names)."""
    count = int(loaded.config.num_classes) - 1
    ids = loaded.category_ids if loaded.category_ids is not None else list(range(1, count + 1))
    names = loaded.category_names if loaded.category_names and len(loaded.category_names) == len(ids) else \
        [f"class_{i}" for i in ids]
    return [{"id": int(i), "name": str(n)} for i, n in zip(ids, names)]


def drawing_folder(output: str | os.PathLike) -> str:
    """``OUTPUT/images``: where the drawings go (and what a listing of the input leaves out)."""
    return os.path.join(os.fspath(output), DRAWN)


def existing_predictions(folder: str | os.PathLike) -> list[Path]:
    """An earlier predict run's files in `folder`: the two JSON files, their partial writes, a non-empty images/."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [root / name for name in (PREDICTIONS, IMAGES_JSON) if (root / name).is_file()]
    found += sorted(p for name in (PREDICTIONS, IMAGES_JSON) for p in root.glob(f".tmp-{name}-*.partial") if p.is_file())
    drawn = root / DRAWN
    if drawn.is_dir() and any(drawn.iterdir()):
        found.append(drawn)
    return found


def check_prediction_output(folder: str | os.PathLike, sources: Sequence[str | os.PathLike], overwrite: bool = False) -> None:
    """Raise ValueError (one line naming `folder` and the fix) unless predictions may be written there:
    no earlier predictions (unless `overwrite`), no input (`sources`, the ``--images`` paths) in its
    drawing folder, and writable."""
    folder = os.fspath(folder)
    drawn = Path(os.path.realpath(drawing_folder(folder)))
    for source in sources:
        real = Path(os.path.realpath(source))
        if real == drawn or drawn in real.parents:
            raise ValueError(f"--output {folder}: the input {os.fspath(source)} lies in {drawing_folder(folder)}, "
                             "where the drawn images are written; choose another --output")
    existing = existing_predictions(folder)
    if existing and not overwrite:
        shown = ", ".join(os.path.relpath(p, folder) + ("/" if p.is_dir() else "") for p in existing)
        raise ValueError(f"--output {folder} already holds predictions ({shown}); pass --overwrite true to replace "
                         "them (the earlier predict run's files there are removed first, nothing else), or choose "
                         "another --output")
    probe_writable(folder)


def clear_predictions(folder: str | os.PathLike) -> list[Path]:
    """Remove an earlier predict run's files from `folder` (see the module doc); return what was removed."""
    root = Path(folder)
    removed: list[Path] = []
    drawn_root = root / DRAWN
    listed: list[Path] = []
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):  # unreadable: its drawings stay
        document = json.loads((root / IMAGES_JSON).read_text())
        for image in document.get("images", []):
            name = image.get("drawn") if isinstance(image, dict) else None
            if isinstance(name, str) and name.startswith(DRAWN + "/") and ".." not in Path(name).parts:
                listed.append(root / name)
    candidates = [p for p in existing_predictions(root) if p.is_file()] + listed
    if drawn_root.is_dir():
        candidates += sorted(p for p in drawn_root.rglob(".tmp-*.partial") if p.is_file())
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if drawn_root.is_dir():  # folders left empty, deepest first; a folder holding the user's files stays
        for sub in sorted((p for p in drawn_root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            drawn_root.rmdir()
    return removed


def _save_drawing(path: str, picture: np.ndarray) -> None:
    from PIL import Image

    pil = Image.fromarray(picture)
    jpeg = path.lower().endswith(".jpg")
    try:
        atomic_write(path, lambda f: pil.save(f, format="JPEG" if jpeg else "PNG", **({"quality": 90} if jpeg else {})))
    except OSError as err:
        raise OutputError(err.errno, err.strerror or str(err)) from err


def predict_images(
    loaded: LoadedDetector,
    listing: ImageListing,
    output: str | os.PathLike,
    score_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    progress: bool = True,
) -> PredictSummary:
    """Detect, draw and write (see the module doc); the output folder was checked by the caller.

    Raises OutputError naming the file that could not be written, and ValueError when not one
    image of `listing` decodes (nothing is written then).
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    output = os.fspath(output)
    device = torch.device(device)
    names = {c["id"]: c["name"] for c in categories_of(loaded)}
    category_ids = [c["id"] for c in categories_of(loaded)]
    drawn = drawn_names(listing.images)
    loader = DataLoader(ImageFiles(listing), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_image_files, pin_memory=device.type == "cuda")
    summary = PredictSummary()
    bar = tqdm(total=len(listing), desc=f"predict {os.path.basename(loaded.path)}", unit="img",
               disable=None if progress else True, leave=False)  # None: off when not a terminal
    try:
        for images, targets, failed in loader:
            for target in failed:
                summary.failed.append((target["path"], target["error"]))
                tqdm.write(f"warning: skipped {target['path']}: cannot decode ({target['error']})", file=sys.stderr)
            if images:
                per_image = detect(loaded.model, [(images, targets)], category_ids, masks=loaded.config.mask,
                                   device=device, autocast_dtype=autocast_dtype)
                for image, target in zip(images, targets):
                    _finish_image(image, target, per_image[target["image_id"]], drawn[target["image_id"]], output,
                                  names, score_threshold, summary)
            bar.update(len(images) + len(failed))
    finally:
        bar.close()
    if not summary.images:
        raise ValueError(f"none of the {len(listing)} image files could be decoded "
                         f"(e.g. {summary.failed[0][0]}: {summary.failed[0][1]}); nothing was written")
    document = {"info": {"description": f"images predicted by evaluate.py --images with {os.path.abspath(loaded.path)}"},
                "images": summary.images, "annotations": [], "categories": categories_of(loaded)}
    try:  # images.json first: a predictions.json on disk always has its images file
        write_json(os.path.join(output, IMAGES_JSON), document)
        write_json(os.path.join(output, PREDICTIONS), summary.predictions)
    except OSError as err:
        raise OutputError(err.errno, err.strerror or str(err)) from err
    return summary


def _finish_image(image: torch.Tensor, target: dict[str, Any], records: list[dict[str, Any]], drawn: str,
                  output: str, names: dict[int, str], score_threshold: float, summary: PredictSummary) -> None:
    """Record one image's detections (with its file_name) and write its drawing."""
    height, width = target["orig_size"]
    for record in records:
        record["file_name"] = target["file_name"]
    summary.predictions.extend(records)
    summary.drawn_detections += sum(1 for r in records if r["score"] >= score_threshold)
    summary.images.append({"id": target["image_id"], "file_name": target["file_name"], "width": width,
                           "height": height, "path": target["path"], "drawn": f"{DRAWN}/{drawn}"})
    pixels = image.mul(255).round_().to(torch.uint8)  # the exact uint8 pixels: they were divided by 255
    picture = draw_detections(pixels, records, names, score_threshold)
    _save_drawing(os.path.join(output, DRAWN, drawn), picture)
