"""Builders of tiny COCO folders for the data tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def write_coco(root: Path, data: dict, images: dict[str, np.ndarray | Image.Image]) -> tuple[Path, Path]:
    """Write ``images`` (file name -> array or PIL image) under root/images and ``data`` as JSON."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        path = images_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path)
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def messy_coco() -> tuple[dict, dict[str, np.ndarray]]:
    """Three images and category ids 7 and 42 (not contiguous), covering the loader's rules.

    image 10 (40x30 RGB): a polygon object (cat 7), an RLE object (cat 42), a crowd region,
        a box past the right border (clipped) and a box under 1 px after clipping (dropped).
    image 20 (20x16 gray): no annotations (a negative).
    image 30 (24x24 RGB): one box.
    """
    rng = np.random.default_rng(0)
    rle_mask = np.zeros((30, 40), dtype=np.uint8)
    rle_mask[5:15, 20:32] = 1
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 20, "file_name": "sub/b.png", "width": 20, "height": 16},
            {"id": 30, "file_name": "c.png", "width": 24, "height": 24},
        ],
        "categories": [{"id": 42, "name": "bolt"}, {"id": 7, "name": "nut"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
            {"id": 2, "image_id": 10, "category_id": 42, "bbox": [20, 5, 12, 10], "area": 120, "iscrowd": 0,
             "segmentation": _rle(rle_mask)},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 20, 10, 5], "area": 50, "iscrowd": 1,
             "segmentation": _rle(np.ones((30, 40), dtype=np.uint8))},
            {"id": 4, "image_id": 10, "category_id": 42, "bbox": [35, 20, 10, 6], "area": 60, "iscrowd": 0,
             "segmentation": [[35, 20, 40, 20, 40, 26, 35, 26]]},
            {"id": 5, "image_id": 10, "category_id": 7, "bbox": [39.5, 1, 3, 3], "area": 9, "iscrowd": 0},
            {"id": 6, "image_id": 30, "category_id": 42, "bbox": [1, 1, 5, 6], "area": 30, "iscrowd": 0,
             "segmentation": [[1, 1, 6, 1, 6, 7, 1, 7]]},
        ],
    }
    images = {
        "a.png": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
        "sub/b.png": rng.integers(0, 256, (16, 20), dtype=np.uint8),
        "c.png": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
    }
    return data, images


def png_rgb16(path: Path, rgb16: np.ndarray) -> None:
    """Write ``uint16[H, W, 3]`` as a 48-bit PNG (Pillow cannot write one itself)."""
    h, w, _ = rgb16.shape
    big_endian = rgb16.astype(">u2")
    raw = b"".join(b"\x00" + big_endian[y].tobytes() for y in range(h))  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# displayed = DISPLAYED_FROM_RAW[o](raw), written from the EXIF spec (independent of Pillow's exif_transpose).
DISPLAYED_FROM_RAW = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, 1),  # rotated 90 counter-clockwise
}
RAW_FROM_DISPLAYED = {**{o: DISPLAYED_FROM_RAW[o] for o in (1, 2, 3, 4, 5, 7)},  # involutions
                      6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}


def save_with_orientation(path: Path, displayed: np.ndarray, orientation: int, **save_kw) -> np.ndarray:
    """Store ``displayed`` (``uint8[H, W, 3]``, the upright picture) as raw pixels + EXIF ``orientation``,
    the way a phone does; returns the raw pixel array written."""
    raw = np.ascontiguousarray(RAW_FROM_DISPLAYED[orientation](displayed))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(raw).save(path, exif=exif.tobytes(), **save_kw)
    return raw


def truncate(path: Path, keep: float = 0.8) -> None:
    """Cut a file to ``keep`` of its bytes, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def move_png_exif_after_pixels(path: Path) -> None:
    """Move a PNG's ``eXIf`` chunk after its pixel data (legal, and what some tools write): a header
    read then sees no orientation, and only decoding the file finds it."""
    data = path.read_bytes()
    chunks, pos = [], 8  # after the signature
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos:pos + 12 + length])  # length, tag, data, CRC
        pos += 12 + length
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    assert len(exif) == 1, f"{path} has no single eXIf chunk"
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    path.write_bytes(data[:8] + b"".join(rest[:-1]) + exif[0] + rest[-1])  # ... IDAT, eXIf, IEND
