"""Category tables of a detector and how two of them correspond, label by label.

Label ``i`` of a detector's class-specific predictor means the ``i``-th category of its table
(``category_ids[i - 1]``, as `detector.lit.module.DetectorModule` keeps it; 0 is background).
Loading class rows from a file trained on another table (`detector.lit.init_from`) needs, for
each label of the model, the file's label of the same category: `class_order` when the tables
hold the same categories, `shared_rows` when they share some. A category is known by its name:
ids are a dataset's numbering, and a renumbered copy of a dataset is still the same categories.
"""

from __future__ import annotations

from collections.abc import Sequence

#: A category table in label order: ``[(category id, name or None), ...]`` (label ``i`` is entry ``i - 1``).
Table = list[tuple[int, str | None]]


def make_table(ids: Sequence[int] | None, names: Sequence[str] | None) -> Table | None:
    """The `Table` of a checkpoint's or a datamodule's ``category_ids`` / ``category_names`` (None
    when the ids are unknown; names left None when missing or of another length)."""
    if ids is None:
        return None
    ids = [int(i) for i in ids]
    named = names is not None and len(names) == len(ids)
    return list(zip(ids, [str(n) for n in names] if named else [None] * len(ids)))


def class_order(source: Table, model: Table) -> list[int] | None:
    """The file's label for each of the model's labels (``[0, ...]``, background first), or None
    when the two tables hold other categories.

    A category is known by its name where both tables name every category, uniquely: the same
    names in another order, or under other ids (a renumbered copy of a dataset), still match.
    Where a side has no names, the ids must be equal, in order; where names repeat, the whole
    tables must be (ids and names).

    Example:
        >>> class_order([(1, "cat"), (2, "dog")], [(1, "dog"), (2, "cat")])
        [0, 2, 1]
        >>> class_order([(1, "cat"), (2, "dog")], [(1, "car"), (2, "bus")]) is None
        True
    """
    if len(source) != len(model):
        return None
    same = list(range(len(model) + 1))
    source_names, model_names = [n for _, n in source], [n for _, n in model]
    if None in source_names + model_names:
        return same if [i for i, _ in source] == [i for i, _ in model] else None
    if len(set(source_names)) == len(source_names):
        if sorted(source_names) != sorted(model_names):
            return None
        return [0] + [source_names.index(name) + 1 for name in model_names]
    return same if source == model else None


def shared_rows(source: Table, model: Table) -> list[int | None] | None:
    """The file's label for each of the model's labels where the category is in both tables, by
    name (None where it is only in this run; background ``0 -> 0``), or None when no category is
    shared or a table lacks names or repeats one (then a name says nothing about a category).

    Example:
        >>> shared_rows([(1, "person"), (2, "bicycle"), (3, "car")], [(1, "car"), (2, "kite")])
        [0, 3, None]
    """
    source_names, model_names = [n for _, n in source], [n for _, n in model]
    if None in source_names + model_names or len(set(source_names)) < len(source_names) \
            or len(set(model_names)) < len(model_names):
        return None
    rows = [0] + [source_names.index(n) + 1 if n in source_names else None for n in model_names]
    return rows if any(r is not None for r in rows[1:]) else None


def shared_clause(rows: list[int | None], model: Table) -> str:
    kept = [model[j - 1][1] for j in range(1, len(rows)) if rows[j] is not None]
    fresh = [model[j - 1][1] for j in range(1, len(rows)) if rows[j] is None]
    text = (f"the class rows of {len(kept)} shared categor{'y' if len(kept) == 1 else 'ies'} loaded by name "
            f"({', '.join(map(repr, kept[:3]))}{', ...' if len(kept) > 3 else ''})")
    if fresh:
        text += (f", {len(fresh)} other{'s' if len(fresh) > 1 else ''} re-initialised "
                 f"({', '.join(map(repr, fresh[:3]))}{', ...' if len(fresh) > 3 else ''})")
    return text


def examples(table: Table, limit: int = 3) -> str:
    """The first `limit` entries for a message: ``1 'cat', 2 'dog', ... (80 in all)``."""
    shown = ", ".join(f"{i} {n!r}" if n is not None else str(i) for i, n in table[:limit])
    return shown + (f", ... ({len(table)} in all)" if len(table) > limit else "")


def differences(source: Table, model: Table) -> str:
    """The first few differences, e.g. ``same id, other name: 1 'cat' -> 'car', 2 'dog' -> 'bus'``."""
    ours, theirs = dict(source), dict(model)
    renamed = [(i, n) for i, n in source if i in theirs and None not in (n, theirs[i]) and theirs[i] != n]
    parts = [
        ("only in the file", [(i, n) for i, n in source if i not in theirs]),
        ("only in this run", [(i, n) for i, n in model if i not in ours]),
    ]
    text = [f"{label}: {examples(rows)}" for label, rows in parts if rows]
    if renamed:
        shown = ", ".join(f"{i} {n!r} -> {theirs[i]!r}" for i, n in renamed[:3])
        text.append(f"same id, other name: {shown}{', ...' if len(renamed) > 3 else ''}")
    return "; ".join(text) or f"the same categories in another order: file {examples(source)}; this run {examples(model)}"
