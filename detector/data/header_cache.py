"""Image headers read in parallel and remembered per file size + modification time.

Why: the dataset check opens every image header when a dataset is built (existence, size,
EXIF orientation; see :mod:`detector.data.check`). Pillow's header parsing is Python code, about
0.1 ms a file: 12 s for COCO train2017's 118k files, paid again by every run, every DDP rank.
The files rarely change, so what a header said is stored under the file's ``(size,
mtime_ns)`` and read back while both are unchanged; a changed file (new size or new mtime) is
read again. Files not in the cache are read by a pool of processes (Pillow holds the GIL
while it parses, so threads do not help), in chunks.

The cache file (JSON, one per image folder, under ``$DETECTOR_CACHE/headers`` or a folder
given) is written atomically (:func:`detector.io.atomic_write_bytes`): concurrent writers
(DDP ranks building at once) each replace it whole, the last one wins, and a reader sees an
old or a new complete file, never a mix. A file that does not parse or holds the wrong
structure is ignored with a warning and rewritten; an entry of the wrong shape is a miss. Only
successful reads are stored, so a broken file is reported on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from detector.data.images import ImageHeader, load_rgb, read_header
from detector.io import atomic_write_bytes

#: Below this many images the default is no cache (reading the headers costs milliseconds).
HEADER_CACHE_MIN_IMAGES = 1000
#: Bump when the meaning of an entry changes: older cache files are then ignored.
CACHE_VERSION = 1
#: Files read per process task (large enough that pickling a chunk costs little).
CHUNK = 500

# One read: (header, decoded (width, height) or None, error message or None).
ReadResult = tuple["ImageHeader | None", "tuple[int, int] | None", "str | None"]


def read_file(path: str, decode: bool) -> ReadResult:
    """Read one file's header, and decode it completely when ``decode``; errors become messages."""
    try:
        header = read_header(path)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        return None, None, f"{path}: {type(e).__name__}: {e}"
    if not decode:
        return header, None, None
    try:
        h, w = load_rgb(path).shape[:2]  # exactly what the loader will do
    except Exception as e:  # noqa: BLE001
        return header, None, f"{path}: decoding failed: {type(e).__name__}: {e}"
    return header, (w, h), None


def _read_chunk(paths: list[str], decode: bool) -> list[ReadResult]:
    return [read_file(p, decode) for p in paths]


def read_files(paths: list[str], decode: bool, workers: int | None = None) -> list[ReadResult]:
    """:func:`read_file` of every path, in order: processes for many files, threads for few.

    Processes (forked, ``CHUNK`` files per task) where there are more files than one chunk and
    more than one CPU; where processes cannot start (a daemonic DataLoader worker, a sandbox),
    threads, as for small lists (I/O latency of network file systems still overlaps there).
    """
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    if len(chunks) > 1 and workers > 1:
        try:
            with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
                return [r for part in pool.map(_read_chunk, chunks, [decode] * len(chunks)) for r in part]
        except (OSError, RuntimeError, AssertionError, ImportError):
            pass
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(read_file, paths, [decode] * len(paths)))


def cache_path(images_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of an image folder: ``CACHE_DIR/<hash of the folder's absolute path>.json``."""
    if cache_dir is None:
        from detector.data.synthetic import (
            cache_root,  # the project's one cache root ($DETECTOR_CACHE)
        )

        cache_dir = cache_root() / "headers"
    digest = hashlib.sha1(str(Path(images_dir).resolve()).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{digest}.json"


class HeaderCache:
    """``{file key: (size, mtime_ns) -> what the header said}`` of one image folder (see module doc).

    Entries: ``key -> [size, mtime_ns, width, height, raw_width, raw_height, orientation,
    decoded_width, decoded_height]`` (decoded -1 when the file was not decoded).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict = {}
        self.changed = False
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            warnings.warn(f"header cache {self.path} cannot be read ({e}); reading every image header", stacklevel=3)
            return
        try:
            doc = json.loads(text)
            if not (isinstance(doc, dict) and doc.get("version") == CACHE_VERSION and isinstance(doc.get("entries"), dict)):
                raise ValueError("not a header cache of this version")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            warnings.warn(f"header cache {self.path} is corrupt or of another version ({e}); ignoring it (it is "
                          "rebuilt from the image files)", stacklevel=3)
            self.changed = True  # replace it with a good one
            return
        self.entries = doc["entries"]

    def get(self, key: str, stat: os.stat_result, decode: bool) -> ReadResult | None:
        """The stored read of ``key`` if its size and mtime are ``stat``'s (and it was decoded, if ``decode``)."""
        e = self.entries.get(key)
        if not (type(e) is list and len(e) == 9 and set(map(type, e)) <= {int}):
            return None
        if e[0] != stat.st_size or e[1] != stat.st_mtime_ns or (decode and e[7] < 0):
            return None
        header = ImageHeader((e[2], e[3]), (e[4], e[5]), e[6])
        return header, ((e[7], e[8]) if decode else None), None

    def put(self, key: str, stat: os.stat_result, result: ReadResult) -> None:
        """Remember a successful read (failures are not stored)."""
        header, decoded, error = result
        if error is not None or header is None:
            return
        old = self.entries.get(key)
        if decoded is None and type(old) is list and len(old) == 9 and old[:2] == [stat.st_size, stat.st_mtime_ns]:
            decoded = (old[7], old[8])  # keep what a decoding check found
        dw, dh = decoded if decoded is not None else (-1, -1)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, *header.size, *header.raw_size, header.orientation, dw, dh]
        self.changed = True

    def save(self) -> None:
        """Write atomically when something changed; a failure to write is a warning, never an error."""
        if not self.changed:
            return
        text = json.dumps({"version": CACHE_VERSION, "entries": self.entries}, separators=(",", ":")).encode()
        try:
            atomic_write_bytes(self.path, text)
        except OSError as e:
            warnings.warn(f"header cache not saved ({e}); the next run reads the headers again", stacklevel=3)
        self.changed = False
