"""The dataset check's vocabulary: kinds of problems, issues, the report and its error.

Every kind has a severity, a headline and *one* fix, so that a report with 500 missing
files prints the fix once and a capped list of the files, instead of 500 tracebacks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

# kind -> (severity, headline, fix). Each issue names its file/id; the fix is printed once per kind.
KINDS: dict[str, tuple[str, str, str]] = {
    "annotation-file": ("error", "annotation file cannot be read",
                        "pass --annotations the path of an existing COCO instances JSON file"),
    "malformed-json": ("error", "annotation file is not valid JSON",
                       "fix the syntax at the given line and column (a trailing comma, a missing quote or "
                       "bracket are the usual causes), e.g. by opening the file in an editor that checks JSON"),
    "structure": ("error", "the JSON does not have the COCO instances structure",
                  "COCO needs a top-level object with lists 'images' (id, file_name, width, height), "
                  "'annotations' (id, image_id, category_id, bbox [x, y, w, h]) and 'categories' (id, name)"),
    "images-dir": ("error", "image folder missing", "pass --images the folder that holds the image files"),
    "duplicate-id": ("error", "ids are not unique",
                     "give every image, annotation and category its own id (renumber the duplicates)"),
    "unsafe-path": ("error", "file_name points outside the image folder (refused)",
                    "make file_name a path relative to the image folder, without '..' or a leading '/'"),
    "missing-image": ("error", "image file not found",
                      "put the file at that path, or remove the image and its annotations from the JSON; "
                      "or train without it: `--data.skip_bad_images true` leaves such images out with a warning"),
    "unreadable-image": ("error", "image file cannot be decoded",
                         "replace the file with a valid JPEG/PNG (a truncated download: fetch it again), or remove "
                         "the image from the JSON; or train without it: `--data.skip_bad_images true` leaves such "
                         "images out with a warning"),
    "size-mismatch": ("error", "stored width/height disagree with the image file",
                      "set the image's 'width' and 'height' in the JSON to the file's real size "
                      "(boxes are in the stored frame, so check them too)"),
    "exif-size-mismatch": ("error", "stored width/height are the raw size of an EXIF-rotated image",
                           "images are read upright (EXIF orientation applied, the frame annotation tools draw in). "
                           "If the boxes were drawn on the upright image (CVAT, Label Studio, Roboflow), swap the "
                           "image's 'width' and 'height' in the JSON; if they were drawn on the raw pixels (as "
                           "pycocotools/OpenCV see them), bake the raw frame in and drop the tag, e.g. "
                           "`exiftool -Orientation= -n FILE` (or re-save the pixels without EXIF)"),
    "unknown-image": ("error", "annotation refers to an image id that is not in 'images'",
                      "fix the annotation's image_id or delete the annotation; or train anyway with "
                      "`--data.check false` (the loader ignores such annotations)"),
    "unknown-category": ("error", "annotation refers to a category id that is not in 'categories'",
                         "add the category to 'categories' or fix the annotation's category_id; or train anyway "
                         "with `--data.check false` (the loader ignores such annotations)"),
    "bad-box": ("error", "box has NaN, infinite or malformed values, a negative size, or starts > 1 px outside",
                "boxes are [x, y, width, height] with finite x, y >= -1 and width, height >= 0; fix the box, or "
                "train anyway with `--data.check false` (the loader clips boxes to the image and drops those "
                "under 1 px, NaN included)"),
    "bad-polygon": ("error", "segmentation polygon has negative, NaN, infinite or malformed values",
                    "polygons are flat lists [x1, y1, x2, y2, ...] of at least 3 finite points with x, y >= -1; "
                    "fix or delete the polygon, or train without masks (`--data.masks false` ignores segmentations)"),
    "bad-segmentation": ("error", "segmentation cannot be decoded",
                         "use a list of polygons or an RLE {'size': [height, width], 'counts': ...} "
                         "whose size equals the image's, or train without masks (`--data.masks false`)"),
    "box-outside-image": ("warning", "box extends past the image border",
                          "nothing to do: the loader clips it to the image (fix the box if that is wrong)"),
    "tiny-box": ("warning", "box is under 1 px wide or high after clipping",
                 "nothing to do: the loader drops it from training targets (fix or delete it if it is an object)"),
    "duplicate-file-name": ("warning", "several images share a file_name",
                            "nothing to do if intended; otherwise give each image its own file"),
    "exif-orientation": ("warning", "image has an EXIF orientation tag; it is read turned upright",
                         "nothing to do if the boxes were drawn on the upright image (annotation tools do that); "
                         "if they were drawn on the raw pixels, drop the tag, e.g. `exiftool -Orientation= -n FILE`"),
}


@dataclass
class Issue:
    kind: str  # a key of KINDS
    where: str  # file and id, e.g. "instances_val.json: annotation id 17"
    message: str
    image_id: int | None = None  # the image the issue is about, when it is about one image's file

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]


@dataclass
class CheckReport:
    """Result of :func:`check_coco`; ``ok`` is False when any issue is an error."""

    images_dir: str
    annotation_file: str
    issues: list[Issue] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    num_empty_images: int = 0
    parsed: bool = False  # the JSON had the COCO structure, so the counts mean something

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, where: str, message: str) -> None:
        self.issues.append(Issue(kind, where, message))

    def format(self, max_per_kind: int = 10, kinds: set[str] | None = None) -> str:
        """Human-readable report: a summary line, then per kind its cases (capped) and the fix."""
        shown = [i for i in self.issues if kinds is None or i.kind in kinds]
        n_err = sum(i.severity == "error" for i in shown)
        n_warn = len(shown) - n_err
        summary = (
            f"Checked {self.annotation_file} against images in {self.images_dir}: {self.num_images} images "
            f"({self.num_empty_images} without annotations, kept as negatives), {self.num_annotations} "
            f"annotations, {self.num_categories} categories."
            if self.parsed else f"Could not read {self.annotation_file} as a COCO instances file."
        )
        lines = [summary, "No problems found." if not shown else f"{n_err} error(s), {n_warn} warning(s)."]
        by_kind: dict[str, list[Issue]] = defaultdict(list)
        for issue in shown:
            by_kind[issue.kind].append(issue)
        order = sorted(by_kind, key=lambda k: (KINDS[k][0] != "error", list(KINDS).index(k)))
        for kind in order:
            severity, headline, fix = KINDS[kind]
            cases = by_kind[kind]
            lines.append("")
            lines.append(f"{severity.upper()}: {headline} ({len(cases)})")
            for issue in cases[:max_per_kind]:
                lines.append(f"  {issue.where}: {issue.message}")
            if len(cases) > max_per_kind:
                lines.append(f"  ... and {len(cases) - max_per_kind} more")
            lines.append(f"  fix: {fix}")
        return "\n".join(lines)


class DatasetError(ValueError):
    """A dataset that cannot be used; ``str(error)`` is the full readable report."""

    def __init__(self, message: str, report: CheckReport | None = None):
        super().__init__(message)
        self.report = report
