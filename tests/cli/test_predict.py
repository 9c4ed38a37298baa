"""evaluate.py --images (predict mode): any image files in, COCO results + drawings out, bad input refused early."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from tiny_run import run_script, tiny_module_kwargs
from torch import nn

from detector.checkpointing import load_checkpoint, load_detector
from detector.cli import main_evaluate

ORIENTATION = 0x0112


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_rotated(path, displayed, **kw):
    """Store `displayed` as a phone stores a portrait photo: raw pixels turned, EXIF orientation 6
    ("rotate 90 clockwise to view"); returns the raw (stored) array."""
    raw = np.ascontiguousarray(np.rot90(displayed, 1))  # the inverse of the 90-degree clockwise turn
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(raw).save(path, exif=exif.tobytes(), **kw)
    return raw


@pytest.fixture
def mixed_folder(tmp_path):
    """Real files of every kind a user folder holds; {file_name: displayed (width, height)} of the decodable ones."""
    folder = tmp_path / "photos"
    (folder / "scans").mkdir(parents=True)
    Image.fromarray(_noise(64, 96)[:, :, 0], mode="L").save(folder / "gray.png")
    Image.fromarray(np.dstack([_noise(60, 80, 1), np.full((60, 80), 128, np.uint8)]), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(_noise(48, 64, 2)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(_noise(50, 70, 3)[:, :, 0].astype(np.uint16) * 257).save(folder / "scans" / "sixteen.png")
    _save_rotated(folder / "portrait.jpg", _noise(72, 48, 4), quality=90)  # displayed 48 wide, 72 high
    Image.fromarray(_noise(64, 96, 5)).save(folder / "broken.jpg", quality=90)
    data = (folder / "broken.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])  # an interrupted download
    (folder / "notes.txt").write_text("not an image")
    for name, mode in [("gray.png", "L"), ("rgba.png", "RGBA"), ("palette.png", "P"), ("portrait.jpg", "RGB")]:
        with Image.open(folder / name) as im:
            assert im.mode == mode
    with Image.open(folder / "scans" / "sixteen.png") as im:
        assert im.mode == "I;16"
    sizes = {"gray.png": (96, 64), "rgba.png": (80, 60), "palette.png": (64, 48), "scans/sixteen.png": (70, 50),
             "portrait.jpg": (48, 72)}
    return folder, sizes


def _ckpt(trained_run):
    return str(trained_run / "checkpoints" / "last.ckpt")


def _predict(args, capsys):
    summary = main_evaluate(args=[*args, "--num_workers", "0", "--progress", "false"])
    captured = capsys.readouterr()
    return summary, captured.out, captured.err


def _load_results(out_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out_dir / "images.json"))
        dt = gt.loadRes(str(out_dir / "predictions.json"))
    return gt, dt


def test_mixed_folder_one_drawing_per_image_boxes_inside_results_load_in_pycocotools(trained_run, mixed_folder,
                                                                                      tmp_path, capsys):
    folder, sizes = mixed_folder
    out_dir = tmp_path / "pred"
    summary, out, err = _predict([_ckpt(trained_run), "--images", str(folder), "--output", str(out_dir),
                                  "--score_threshold", "0.0"], capsys)
    assert "ignored 1 non-image file (notes.txt)" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(folder / "broken.jpg") in warnings[0] and "cannot decode (OSError" in warnings[0]
    assert "5 images, skipped 1 that did not decode" in out

    images = json.loads((out_dir / "images.json").read_text())
    assert {i["file_name"]: (i["width"], i["height"]) for i in images["images"]} == sizes
    loaded = load_detector(_ckpt(trained_run))
    assert images["categories"] == [{"id": i, "name": n} for i, n in zip(loaded.category_ids, loaded.category_names)]
    drawn = sorted(p.relative_to(out_dir / "images").as_posix() for p in (out_dir / "images").rglob("*") if p.is_file())
    assert drawn == ["gray.png", "palette.png", "portrait.jpg", "rgba.png", "scans/sixteen.png"]
    for image in images["images"]:
        with Image.open(out_dir / image["drawn"]) as im:
            assert im.size == (image["width"], image["height"]) and im.mode == "RGB"

    predictions = json.loads((out_dir / "predictions.json").read_text())
    by_id = {i["id"]: i for i in images["images"]}
    assert len(predictions) == len(summary.predictions) > 0
    assert {p["image_id"] for p in predictions} == set(by_id)  # the tiny model keeps every box: each image has some
    for p in predictions:
        image = by_id[p["image_id"]]
        x, y, w, h = p["bbox"]
        assert p["file_name"] == image["file_name"] and set(p) == {"image_id", "file_name", "category_id", "bbox", "score"}
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3, (p, image)
    _, dt = _load_results(out_dir)
    assert len(dt.getAnnIds()) == len(predictions) and sorted(dt.getImgIds()) == sorted(by_id)
    # every detection is kept; the threshold decides only what is drawn
    assert summary.drawn_detections == len(predictions)


class BrightObjectDetector(nn.Module):
    """A stand-in detector that sees what the real one sees: it runs the checkpoint's own
    ``GeneralizedRCNNTransform`` (resize to 64 px + normalisation), boxes the bright pixels of the
    *resized* image, and maps the box back with ``transform.postprocess``, as torchvision's
    ``GeneralizedRCNN.forward`` does. So its box is right in the frame of the image it was given
    only if that frame is the displayed original (not the resized, not the stored raw one)."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, images):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, _ = self.transform(images)
        detections = []
        for k, (h, w) in enumerate(batch.image_sizes):
            bright = batch.tensors[k, :, :h, :w].mean(0) > 0  # normalised: white ~ +2, dark ~ -1.5
            ys, xs = torch.nonzero(bright, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            detections.append({"boxes": box, "labels": torch.tensor([2]), "scores": torch.tensor([0.99])})
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def test_a_box_found_in_the_resized_image_lands_on_the_object_in_each_files_displayed_pixels(trained_run, tmp_path,
                                                                                             capsys, monkeypatch):
    """One picture (a white object on dark noise), saved as is, upscaled 2x, and upscaled 2x + stored
    sideways with EXIF orientation 6. The detector sees every file at 64 px; predictions.json must hold
    the object's box in each file's displayed pixels: boxes left in the resized frame are off by half
    for the 2x files, boxes in the stored frame of the rotated file are on the wrong side."""
    import detector.cli.evaluate as evaluate_cli

    base = (np.random.default_rng(0).integers(0, 40, (64, 96, 3))).astype(np.uint8)  # (H, W) = (64, 96)
    base[20:44, 10:40] = 255  # the object: x 10..40, y 20..44
    big = np.kron(base, np.ones((2, 2, 1), dtype=np.uint8))  # 192 x 128, object x 20..80, y 40..88
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(base).save(folder / "a_base.png")
    Image.fromarray(big).save(folder / "b_big.png")
    _save_rotated(folder / "c_big_rotated.jpg", big, quality=95)
    expected = {"a_base.png": [10, 20, 30, 24], "b_big.png": [20, 40, 60, 48], "c_big_rotated.jpg": [20, 40, 60, 48]}

    def load_stand_in(path):
        loaded = load_detector(path)
        return dataclasses.replace(loaded, model=BrightObjectDetector(loaded.model.transform))

    monkeypatch.setattr(evaluate_cli, "load_detector", load_stand_in)
    out_dir = tmp_path / "pred"
    _predict([_ckpt(trained_run), "--images", str(folder), "--output", str(out_dir), "--batch_size", "3"], capsys)
    predictions = {p["file_name"]: p for p in json.loads((out_dir / "predictions.json").read_text())}
    assert sorted(predictions) == sorted(expected)
    for name, box in expected.items():
        assert predictions[name]["bbox"] == pytest.approx(box, abs=2.5), name  # bilinear edges: within ~1 px at 64 px
    images = {i["file_name"]: (i["width"], i["height"]) for i in json.loads((out_dir / "images.json").read_text())["images"]}
    assert images == {"a_base.png": (96, 64), "b_big.png": (192, 128), "c_big_rotated.jpg": (192, 128)}
    from detector.evaluation.draw import category_color

    drawing = np.asarray(Image.open(out_dir / "images" / "b_big.png"))  # PNG: exact colours
    x1 = int(predictions["b_big.png"]["bbox"][0])
    assert drawing.shape == (128, 192, 3)
    assert (drawing[60:85, x1] == category_color(predictions["b_big.png"]["category_id"])).all()  # left edge, below the label
    with Image.open(out_dir / "images" / "c_big_rotated.jpg") as im:
        assert im.size == (192, 128)  # drawn upright


def test_mask_model_writes_rle_in_the_displayed_frame(trained_run, mixed_folder, tmp_path, capsys):
    from detector.lit.module import DetectorModule

    ckpt = load_checkpoint(_ckpt(trained_run))
    ckpt["state_dict"] = DetectorModule(**tiny_module_kwargs(mask=True)).state_dict()
    ckpt["hyper_parameters"]["detector"]["mask"] = True
    path = tmp_path / "mask.ckpt"
    torch.save(ckpt, path)
    folder, sizes = mixed_folder
    out_dir = tmp_path / "pred"
    _predict([str(path), "--images", str(folder / "portrait.jpg"), str(folder / "gray.png"), "--output", str(out_dir),
              "--score_threshold", "0"], capsys)
    predictions = json.loads((out_dir / "predictions.json").read_text())
    assert predictions and all("segmentation" in p for p in predictions)
    for p in predictions:
        assert p["segmentation"]["size"] == list(reversed(sizes[p["file_name"]]))  # [height, width], displayed
    _, dt = _load_results(out_dir)
    assert len(dt.getAnnIds()) == len(predictions)
    assert sorted(p.name for p in (out_dir / "images").iterdir()) == ["gray.png", "portrait.jpg"]


# ---------------------------------------------------------------------------------------------- bad input

def _refused(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[*args, "--num_workers", "0", "--progress", "false"])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_empty_folder_is_a_clear_error(trained_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out_dir = tmp_path / "pred"
    code, _, err = _refused([_ckpt(trained_run), "--images", str(tmp_path / "empty"), "--output", str(out_dir)], capsys)
    assert code == 2 and f"--images {tmp_path / 'empty'}: no image files found (empty)" in err
    assert not out_dir.exists()


def test_only_non_image_files_are_counted_then_refused(trained_run, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.json", "c.csv"):
        (folder / name).write_text("x")
    code, out, err = _refused([_ckpt(trained_run), "--images", str(folder), "--output", str(tmp_path / "pred")], capsys)
    assert code == 2 and "ignored 3 non-image files (a.txt, b.json, c.csv)" in out
    assert "no image files found (only 3 non-image files)" in err


def test_missing_path_is_named(trained_run, mixed_folder, tmp_path, capsys):
    folder, _ = mixed_folder
    missing = tmp_path / "typo" / "photo.jpg"
    code, _, err = _refused([_ckpt(trained_run), "--images", str(folder), "--images", str(missing),
                             "--output", str(tmp_path / "pred")], capsys)
    assert code == 2 and f"--images {missing}: no such file or folder" in err


def test_no_decodable_image_is_an_error_and_writes_nothing(trained_run, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out_dir = tmp_path / "pred"
    code, _, err = _refused([_ckpt(trained_run), "--images", str(folder), "--output", str(out_dir)], capsys)
    assert code == 2 and f"warning: skipped {folder / 'x.png'}: cannot decode" in err
    assert "none of the 1 image files could be decoded" in err
    assert not (out_dir / "predictions.json").exists() and not (out_dir / "images.json").exists()


def test_output_holding_predictions_is_refused_unless_overwrite(trained_run, mixed_folder, tmp_path, capsys):
    folder, _ = mixed_folder
    out_dir = tmp_path / "pred"
    ckpt = _ckpt(trained_run)
    _predict([ckpt, "--images", str(folder / "gray.png"), str(folder / "rgba.png"), "--output", str(out_dir)], capsys)
    first = (out_dir / "predictions.json").read_bytes()
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / "images" / "mine.txt").write_text("mine too")

    code, _, err = _refused([ckpt, "--images", str(folder / "gray.png"), "--output", str(out_dir)], capsys)
    assert code == 2 and f"--output {out_dir} already holds predictions" in err and "--overwrite true" in err
    assert (out_dir / "predictions.json").read_bytes() == first

    _predict([ckpt, "--images", str(folder / "gray.png"), "--output", str(out_dir), "--overwrite", "true"], capsys)
    assert sorted(p.name for p in (out_dir / "images").iterdir()) == ["gray.png", "mine.txt"]  # rgba.png: stale, gone
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert [p["file_name"] for p in json.loads((out_dir / "predictions.json").read_text())] == \
        ["gray.png"] * len(json.loads((out_dir / "predictions.json").read_text()))


def test_inputs_inside_the_drawing_folder_are_refused_and_the_output_is_not_read_as_input(trained_run, tmp_path,
                                                                                           capsys):
    ckpt = _ckpt(trained_run)
    photos = tmp_path / "out" / "images"  # the user's photos where predict would draw
    photos.mkdir(parents=True)
    Image.fromarray(_noise(64, 96)).save(photos / "a.png")
    code, _, err = _refused([ckpt, "--images", str(photos), "--output", str(tmp_path / "out"), "--overwrite", "true"],
                            capsys)
    assert code == 2 and f"the input {photos} lies in" in err and "choose another --output" in err
    assert (photos / "a.png").is_file()

    out_dir = photos / "pred"  # an output folder inside the input folder: its drawings are never input
    _predict([ckpt, "--images", str(photos), "--output", str(out_dir)], capsys)
    summary, _, _ = _predict([ckpt, "--images", str(photos), "--output", str(out_dir), "--overwrite", "true"], capsys)
    assert [i["file_name"] for i in summary.images] == ["a.png"]


@pytest.mark.parametrize("extra, message", [
    (["--data.val_images", "somewhere"], "--data.val_images: scoring options, which predict mode (--images) does not use"),
    (["--per_class", "false"], "--per_class: scoring options"),
    (["--score_threshold", "1.5"], "--score_threshold 1.5 must lie in [0, 1]"),
    (["--batch_size", "0"], "--batch_size 0 must be >= 1"),
])
def test_options_that_do_not_fit_predict_mode_are_refused(extra, message, trained_run, mixed_folder, tmp_path, capsys):
    folder, _ = mixed_folder
    code, _, err = _refused([_ckpt(trained_run), "--images", str(folder), "--output", str(tmp_path / "pred"), *extra],
                            capsys)
    assert code == 2 and message in err


def test_predict_options_without_images_and_several_checkpoints_with_images_are_refused(trained_run, mixed_folder,
                                                                                       tmp_path, capsys):
    folder, _ = mixed_folder
    ckpt = _ckpt(trained_run)
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[ckpt, "--output", str(tmp_path / "eval"), "--score_threshold", "0.3"])
    assert exc.value.code == 2 and "--score_threshold applies to predict mode only" in capsys.readouterr().err
    code, _, err = _refused([ckpt, ckpt, "--images", str(folder), "--output", str(tmp_path / "pred")], capsys)
    assert code == 2 and "--images predicts with one checkpoint; got 2" in err


def test_real_process_exit_codes(trained_run, mixed_folder, tmp_path):
    folder, _ = mixed_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script("evaluate.py", [_ckpt(trained_run), "--images", str(empty), "--output", str(tmp_path / "x")],
                      check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --images {empty}: no image files found")
    out_dir = tmp_path / "pred"
    proc = run_script("evaluate.py", [_ckpt(trained_run), "--images", str(folder), "--output", str(out_dir),
                                      "--num_workers", "1"], timeout=180)
    assert "5 images, skipped 1 that did not decode" in proc.stdout and "ignored 1 non-image file" in proc.stdout
    assert len(list((out_dir / "images").rglob("*.*"))) == 5
