"""The header cache: hits while size and mtime hold, re-reads on change, survives corruption and races."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from data_helpers import messy_coco, write_coco
from PIL import Image

import detector.data.check as check_module
from detector.data import header_cache as hc
from detector.data.check import check_coco, check_image_files


@pytest.fixture
def counted(monkeypatch):
    """Counts the files the check reads (cache misses)."""
    seen: list[str] = []
    real = check_module.read_files

    def spy(paths, decode, workers=None):
        seen.extend(paths)
        return real(paths, decode, workers)

    monkeypatch.setattr(check_module, "read_files", spy)
    return seen


def folder(tmp_path):
    data, images = messy_coco()
    images_dir, ann_file = write_coco(tmp_path, data, images)
    return images_dir, ann_file, data


def test_second_check_reads_no_file(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    first = check_coco(images_dir, ann_file, header_cache=cache)
    assert len(counted) == 3 and len(list(cache.glob("*.json"))) == 1
    counted.clear()
    second = check_coco(images_dir, ann_file, header_cache=cache)
    assert counted == [] and second.format() == first.format()


def test_decoding_results_are_cached_too(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    check_coco(images_dir, ann_file, header_cache=cache)  # headers only
    counted.clear()
    check_coco(images_dir, ann_file, header_cache=cache, decode=True)
    assert len(counted) == 3  # a header hit is no proof the file decodes
    counted.clear()
    check_coco(images_dir, ann_file, header_cache=cache, decode=True)
    check_coco(images_dir, ann_file, header_cache=cache)
    assert counted == []


def test_a_file_of_another_size_is_read_again_and_its_new_size_reported(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    check_coco(images_dir, ann_file, header_cache=cache)
    counted.clear()
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(images_dir / "c.png")  # other size, other bytes
    report = check_coco(images_dir, ann_file, header_cache=cache)
    assert [os.path.basename(p) for p in counted] == ["c.png"]
    (issue,) = report.errors
    assert issue.kind == "size-mismatch" and "c.png is 12x10" in issue.message


def test_a_file_with_the_same_size_but_a_new_mtime_is_read_again(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    check_coco(images_dir, ann_file, header_cache=cache)
    counted.clear()
    st = os.stat(images_dir / "a.png")
    os.utime(images_dir / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    check_coco(images_dir, ann_file, header_cache=cache)
    assert [os.path.basename(p) for p in counted] == ["a.png"]


def test_an_entry_is_trusted_while_size_and_mtime_hold_and_only_then(tmp_path):
    """The contract, shown with an entry edited by hand: what it says counts until the file's stamp changes."""
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    check_coco(images_dir, ann_file, header_cache=cache)
    path = hc.cache_path(images_dir, cache)
    doc = json.loads(path.read_text())
    doc["entries"]["a.png"][2:4] = [1, 1]  # a lie, but size and mtime still match: it is what the cache said
    path.write_text(json.dumps(doc))
    report = check_coco(images_dir, ann_file, header_cache=cache)
    assert any("a.png is 1x1" in i.message for i in report.errors)  # trusted while size+mtime hold (documented)
    os.utime(images_dir / "a.png", ns=(0, 10**18))
    assert check_coco(images_dir, ann_file, header_cache=cache).ok


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[]", b'{"version": 99, "entries": {}}'])
def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(tmp_path, counted, content):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    path = hc.cache_path(images_dir, cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(UserWarning, match=r"header cache .* corrupt or of another version.*ignoring it"):
        report = check_coco(images_dir, ann_file, header_cache=cache)
    assert len(counted) == 3 and not any(i.kind == "size-mismatch" for i in report.issues)
    assert json.loads(path.read_text())["version"] == hc.CACHE_VERSION


def test_a_malformed_entry_is_a_miss(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    cache = tmp_path / "cache"
    check_coco(images_dir, ann_file, header_cache=cache)
    path = hc.cache_path(images_dir, cache)
    doc = json.loads(path.read_text())
    doc["entries"]["a.png"] = ["x"]
    doc["entries"]["c.png"] = [1, 2, 3]
    path.write_text(json.dumps(doc))
    counted.clear()
    assert check_coco(images_dir, ann_file, header_cache=cache).ok
    assert sorted(os.path.basename(p) for p in counted) == ["a.png", "c.png"]


def test_broken_files_are_never_cached(tmp_path, counted):
    images_dir, ann_file, _ = folder(tmp_path)
    (images_dir / "c.png").write_bytes(b"broken")
    cache = tmp_path / "cache"
    for _ in range(2):
        report = check_coco(images_dir, ann_file, header_cache=cache)
        assert [i.kind for i in report.errors] == ["unreadable-image"]
    assert [os.path.basename(p) for p in counted].count("c.png") == 2


def test_small_folders_use_no_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "home-cache"))
    images_dir, ann_file, _ = folder(tmp_path)
    check_coco(images_dir, ann_file)
    assert not (tmp_path / "home-cache").exists()
    monkeypatch.setattr(check_module, "HEADER_CACHE_MIN_IMAGES", 3)
    check_coco(images_dir, ann_file)
    assert len(list((tmp_path / "home-cache" / "headers").glob("*.json"))) == 1
    check_coco(images_dir, ann_file, header_cache=False)  # never


def test_an_unwritable_cache_folder_is_a_warning(tmp_path):
    images_dir, ann_file, _ = folder(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="header cache not saved"):
        assert check_coco(images_dir, ann_file, header_cache=blocker / "sub").ok


def test_concurrent_writers_leave_a_complete_file(tmp_path):
    """Writers replace the file whole (atomic): a reader always parses it."""
    path = tmp_path / "c.json"
    stop, bad = threading.Event(), []

    def writer(seed):
        for i in range(30):
            cache = hc.HeaderCache(path)
            cache.entries = {f"{seed}-{k}": [k, k, 1, 1, 1, 1, 1, -1, -1] for k in range(2000 + i)}
            cache.changed = True
            cache.save()

    def reader():
        while not stop.is_set():
            if path.exists():
                try:
                    json.loads(path.read_bytes())
                except ValueError as e:
                    bad.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not bad and len(hc.HeaderCache(path).entries) == 2029
    assert not list(tmp_path.glob(".tmp-*"))


def test_process_pool_reads_equal_serial_reads(tmp_path, monkeypatch):
    images_dir, _, data = folder(tmp_path)
    (images_dir / "bad.png").write_bytes(b"broken")
    paths = [str(images_dir / img["file_name"]) for img in data["images"]] * 3 + [str(images_dir / "bad.png")]
    monkeypatch.setattr(hc, "CHUNK", 2)  # several chunks: the process pool runs
    pooled = hc.read_files(paths, decode=True, workers=2)
    serial = [hc.read_file(p, True) for p in paths]
    assert pooled == serial and pooled[-1][2].startswith(str(images_dir / "bad.png"))


def test_missing_and_unsafe_files_are_found_without_reading(tmp_path, counted):
    images_dir, _, data = folder(tmp_path)
    (images_dir / "sub" / "b.png").unlink()
    data["images"][2]["file_name"] = "../c.png"
    issues = check_image_files(images_dir, "x.json", data["images"], header_cache=tmp_path / "cache")
    assert [i.kind for i in issues] == ["missing-image", "unsafe-path"]
    assert [os.path.basename(p) for p in counted] == ["a.png"]
