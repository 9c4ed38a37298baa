"""Is this data scored with this checkpoint's classes? Category tables compared, before any image is read.

A detector predicts labels ``1..K``; label ``i`` means category id ``category_ids[i - 1]`` of
the table stored with its checkpoint (the training file's). Scoring it against data whose
table differs prints true numbers under wrong names, or scores detections as other classes,
with exit code 0. `check_against_annotations` compares the checkpoint's table with the
``"categories"`` of the annotation file to be scored (read from the JSON before the dataset
is built); `check_against_data` with the built datamodule's; `check_categories` is the plain
comparison (also used when a run resumes on other data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detector.checkpointing import LoadedDetector


def check_categories(expected_ids: list[int], expected_names: list[str], ids: list[int], names: list[str], what: str) -> None:
    """Raise ValueError, listing both tables, when the category ids or names differ."""
    if list(expected_ids) == list(ids) and (not expected_names or not names or list(expected_names) == list(names)):
        return
    raise ValueError(
        f"the dataset's categories do not match {what}'s: {what} has "
        f"{list(zip(expected_ids, expected_names or [''] * len(expected_ids)))}, the dataset has "
        f"{list(zip(ids, names or [''] * len(ids)))}. Labels would map to the wrong classes; evaluate on "
        "data with the same category table (same ids, same order)."
    )


def check_against_data(loaded: LoadedDetector, num_classes: int, category_ids: list[int], category_names: list[str]) -> None:
    """Raise ValueError when the data's class count or category table differs from the checkpoint's."""
    model_classes = int(loaded.config.num_classes)
    if model_classes != num_classes:
        raise ValueError(
            f"{loaded.path!r} was trained for num_classes={model_classes} (background included) but the "
            f"evaluation data has {num_classes} ({num_classes - 1} categories: {list(category_names)}). "
            "Evaluate on the dataset the checkpoint was trained for (see --data.* options)."
        )
    if loaded.category_ids is not None:
        check_categories(loaded.category_ids, loaded.category_names or [], list(category_ids), list(category_names),
                         f"checkpoint {loaded.path!r}")


def check_against_annotations(loaded: LoadedDetector, annotation_file: str, categories: list[dict[str, Any]]) -> None:
    """Raise ValueError, listing both tables, unless `categories` (the ``"categories"`` of the
    annotation file to be scored) are exactly the checkpoint's: same ids, same names.

    Why both: label ``i`` becomes category id ``category_ids[i - 1]`` of the checkpoint's table
    (the training file's), and COCOeval reports each id's AP under the *scored file's* name.
    Other ids score the detections as other classes; other names print true numbers under
    wrong names. Both used to pass silently when only the training file was compared.
    """
    in_file = {c.get("id"): str(c.get("name", c.get("id"))) for c in categories}
    ids, names = list(loaded.category_ids or []), list(loaded.category_names or [])
    in_checkpoint = dict(zip(ids, names if len(names) == len(ids) else [in_file.get(i) for i in ids]))
    tables = (f"the checkpoint has {list(in_checkpoint.items()) if loaded.category_ids is not None else '(no table)'}, "
              f"the file has {list(in_file.items())}")
    model_classes = int(loaded.config.num_classes)
    if len(in_file) + 1 != model_classes:
        raise ValueError(
            f"{loaded.path!r} was trained for num_classes={model_classes} (background included) but {annotation_file} "
            f"(the file evaluated) has {len(in_file)} categories ({len(in_file) + 1} classes): {tables}. Evaluate on "
            "data with the checkpoint's category table (see --data.* options)."
        )
    if loaded.category_ids is None or in_checkpoint == in_file:  # without a table only the count can be checked
        return
    differences = [f"only in the checkpoint: {sorted((i, n) for i, n in in_checkpoint.items() if i not in in_file)}",
                   f"only in the file: {sorted((i, n) for i, n in in_file.items() if i not in in_checkpoint)}",
                   "same id, other name: " + str([(i, in_checkpoint[i], in_file[i]) for i in in_checkpoint
                                                  if i in in_file and in_checkpoint[i] != in_file[i]])]
    raise ValueError(
        f"the categories of {annotation_file} (the file evaluated) do not match those of checkpoint {loaded.path!r} "
        f"({'; '.join(d for d in differences if not d.endswith('[]'))}): {tables}. Detections would be scored as "
        "other classes or printed under other names; evaluate on data with the checkpoint's category table "
        "(same ids, same names)."
    )
