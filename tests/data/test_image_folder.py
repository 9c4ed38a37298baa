"""detector.data.image_folder: listing --images arguments, decoding every pixel mode upright, bad files as items."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import save_with_orientation, truncate
from PIL import Image

from detector.data.image_folder import (
    ImageFiles,
    ImageListingError,
    collate_image_files,
    is_image_file,
    list_images,
)


def _touch_image(path, size=(8, 6), color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def test_a_folder_is_listed_recursively_sorted_with_non_images_ignored(tmp_path):
    root = tmp_path / "photos"
    for name in ("b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.tif"):
        _touch_image(root / name)
    (root / "notes.txt").write_text("x")
    (root / "sub" / "labels.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "._a.JPG").write_bytes(b"\0\0")  # macOS AppleDouble twin: hidden, not a broken image
    _touch_image(root / ".thumbnails" / "t.png")
    listing = list_images([root])
    assert [f.file_name for f in listing.images] == ["a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.tif"]
    assert [f.image_id for f in listing.images] == [1, 2, 3, 4]
    assert [p.name for p in listing.ignored] == ["notes.txt", "labels.json"]
    assert is_image_file("X.WEBP") and not is_image_file("x.txt")


def test_files_and_folders_mix_named_relative_to_their_common_folder_without_duplicates(tmp_path):
    a, b = _touch_image(tmp_path / "day1" / "x.png"), _touch_image(tmp_path / "day2" / "x.png")
    odd = _touch_image(tmp_path / "day2" / "scan.dat")  # named explicitly: taken whatever its extension
    listing = list_images([tmp_path / "day1", b, tmp_path / "day2", odd, a])
    assert [f.file_name for f in listing.images] == ["day1/x.png", "day2/scan.dat", "day2/x.png"]
    assert len({f.path for f in listing.images}) == 3
    single = list_images([a])
    assert [f.file_name for f in single.images] == ["x.png"]


def test_missing_path_is_named_and_the_output_folder_is_excluded(tmp_path):
    _touch_image(tmp_path / "in" / "a.png")
    _touch_image(tmp_path / "in" / "out" / "images" / "a.png")  # an earlier run's drawing
    with pytest.raises(ImageListingError, match=r"--images .*nope\.png: no such file or folder"):
        list_images([tmp_path / "in", tmp_path / "nope.png"])
    listing = list_images([tmp_path / "in"], exclude=[tmp_path / "in" / "out"])
    assert [f.file_name for f in listing.images] == ["a.png"]
    assert [f.file_name for f in list_images([tmp_path / "in"]).images] == ["a.png", "out/images/a.png"]


def _modes(tmp_path):
    """(file, expected uint8 RGB of pixel (0, 0)) for each pixel mode a user folder holds."""
    cases = {}
    Image.new("L", (5, 4), 77).save(tmp_path / "gray.png")
    cases["gray.png"] = (77, 77, 77)
    Image.new("RGBA", (5, 4), (200, 100, 50, 0)).save(tmp_path / "rgba.png")  # alpha dropped, colour kept
    cases["rgba.png"] = (200, 100, 50)
    palette = Image.new("P", (5, 4), 1)
    palette.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    cases["palette.png"] = (12, 34, 56)
    sixteen = Image.fromarray(np.full((4, 5), 257 * 100, dtype=np.uint16))
    sixteen.save(tmp_path / "sixteen.png")
    cases["sixteen.png"] = (100, 100, 100)  # scaled by 255/65535, not truncated to 255
    Image.new("LA", (5, 4), (90, 10)).save(tmp_path / "gray_alpha.png")
    cases["gray_alpha.png"] = (90, 90, 90)
    Image.new("RGB", (5, 4), (1, 2, 3)).save(tmp_path / "rgb.png")
    cases["rgb.png"] = (1, 2, 3)
    return cases


def test_every_pixel_mode_becomes_float_rgb_in_the_evaluation_loaders_scale(tmp_path):
    cases = _modes(tmp_path)
    with Image.open(tmp_path / "sixteen.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    with Image.open(tmp_path / "palette.png") as im:
        assert im.mode == "P"
    dataset = ImageFiles(list_images([tmp_path]))
    assert len(dataset) == len(cases)
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert image.dtype == torch.float32 and image.shape == (3, 4, 5), target["file_name"]
        assert target["orig_size"] == (4, 5) and "error" not in target
        expected = torch.tensor(cases[target["file_name"]], dtype=torch.float32) / 255
        assert torch.equal(image[:, 0, 0], expected), target["file_name"]


def test_exif_rotated_photo_is_upright_and_a_truncated_one_is_an_error_item(tmp_path):
    displayed = np.zeros((30, 40, 3), dtype=np.uint8)
    displayed[2:8, 3:12] = 255  # a bright object in the top-left corner of the upright picture
    save_with_orientation(tmp_path / "portrait.png", displayed, 6)
    save_with_orientation(tmp_path / "broken.jpg", displayed, 1, quality=95)
    truncate(tmp_path / "broken.jpg", keep=0.5)
    dataset = ImageFiles(list_images([tmp_path]))
    broken, target = dataset[0]
    assert broken is None and target["file_name"] == "broken.jpg"
    assert target["error"].startswith("OSError") and "truncated" in target["error"].lower()
    image, target = dataset[1]
    assert image.shape == (3, 30, 40) and target["orig_size"] == (30, 40)  # the displayed frame, not the stored 40x30
    assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(displayed).permute(2, 0, 1))

    images, targets, failed = collate_image_files([dataset[0], dataset[1]])
    assert len(images) == 1 and [t["file_name"] for t in targets] == ["portrait.png"]
    assert [t["file_name"] for t in failed] == ["broken.jpg"]


def test_bad_files_travel_through_worker_processes(tmp_path):
    _touch_image(tmp_path / "good.png")
    (tmp_path / "fake.png").write_text("not a png")
    loader = torch.utils.data.DataLoader(ImageFiles(list_images([tmp_path])), batch_size=2, num_workers=1,
                                         collate_fn=collate_image_files)
    (images, targets, failed), = list(loader)
    assert [t["file_name"] for t in targets] == ["good.png"] and len(images) == 1
    assert failed[0]["file_name"] == "fake.png" and "UnidentifiedImageError" in failed[0]["error"]
