"""Train/eval contamination: eval items that also appear, exactly or nearly, in the training data.

A model evaluated on items it was trained on scores too well, and the comparison between
adaptation strategies becomes meaningless. This module finds such items with the same
normalization, shingling, MinHash LSH and exact-Jaccard verification as
:mod:`adaptlab.data.dedup`, refuses to go on unless the user says so (:func:`require_clean`),
and offers the remedy of dropping the matched items from train (:func:`decontaminate_train`);
the locked eval set itself is never edited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from adaptlab.data.dedup import (
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_NGRAM,
    DEFAULT_NUM_PERM,
    NearIndex,
    normalize,
    validate_params,
)

# How many eval positions the error message lists before "... and N more".
_SHOWN_IN_MESSAGE = 5


@dataclass(frozen=True)
class Overlap:
    """One eval item found in the training data.

    ``train_indices`` lists every train item it matches, exactly or nearly, in increasing
    order. ``kind`` is ``"exact"`` when at least one of them has the same :func:`normalize` form
    (``similarity`` is then 1.0), else ``"near"`` with ``similarity`` the highest exact Jaccard
    similarity of the shingle sets among the matched train items.
    """

    eval_index: int
    train_indices: tuple[int, ...]
    kind: Literal["exact", "near"]
    similarity: float


class ContaminationError(Exception):
    """Eval items also occur in train and the user did not allow it."""


def find_contamination(
    train_texts: Sequence[str],
    eval_texts: Sequence[str],
    *,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    near: bool = True,
) -> list[Overlap]:
    """Eval items that occur in train, sorted by ``eval_index``; ``[]`` when the sets are clean.

    Exact: same :func:`~adaptlab.data.dedup.normalize` form. Near (when ``near``): an LSH index
    over train is queried with each eval item and the candidates are kept only if the exact
    Jaccard of the character ``ngram``-gram sets is >= ``near_threshold``, so an LSH false
    positive never reports (or, via :func:`decontaminate_train`, removes) anything.
    """
    validate_params(near_threshold, num_perm, ngram)
    # Train items with the same normalized form share one LSH entry: duplicates in train are
    # common, and one entry per form keeps the index small while still reporting every index.
    train_by_form: dict[str, list[int]] = {}
    for index, text in enumerate(train_texts):
        train_by_form.setdefault(normalize(text), []).append(index)
    eval_forms = [normalize(text) for text in eval_texts]
    if not near:
        return [
            Overlap(e, tuple(train_by_form[form]), "exact", 1.0)
            for e, form in enumerate(eval_forms)
            if form in train_by_form
        ]
    return _near_overlaps(train_by_form, eval_forms, NearIndex(near_threshold, num_perm, ngram))


def _near_overlaps(
    train_by_form: dict[str, list[int]], eval_forms: Sequence[str], train_index: NearIndex
) -> list[Overlap]:
    """Exact and near overlaps through ``train_index`` (empty; filled here with the train forms)."""
    forms = list(train_by_form)
    for key, sketch in enumerate(train_index.sketches(forms)):
        train_index.add(key, sketch)
    overlaps = []
    for eval_index, sketch in enumerate(train_index.sketches(eval_forms)):
        matches = train_index.matches(sketch)
        if matches:
            train_indices = {i for key, _ in matches for i in train_by_form[forms[key]]}
            overlaps.append(
                _overlap(
                    eval_index, train_indices, train_by_form.get(eval_forms[eval_index]), matches
                )
            )
    return overlaps


def _overlap(
    eval_index: int,
    train_indices: set[int],
    exact: list[int] | None,
    matches: Sequence[tuple[int, float]],
) -> Overlap:
    if exact is not None:
        # Already among `matches` (identical forms shingle identically); added explicitly so
        # that an exact match never depends on LSH.
        return Overlap(eval_index, tuple(sorted(train_indices.union(exact))), "exact", 1.0)
    best = max(sim for _, sim in matches)
    return Overlap(eval_index, tuple(sorted(train_indices)), "near", best)


def require_clean(
    overlaps: Sequence[Overlap],
    *,
    allow_contaminated: bool,
    source: str,
    line_of: Callable[[int], int] | None = None,
) -> None:
    """Raise :class:`ContaminationError` if there are overlaps and they are not allowed.

    ``source`` names the eval data in the message (a path). The message lists the first few
    eval items by index, or by ``line_of(index)`` when given (the caller knows the file lines),
    and says how to proceed. With ``allow_contaminated`` nothing is raised; recording that the
    run went ahead contaminated is the caller's job.
    """
    if not overlaps or allow_contaminated:
        return
    exact = sum(1 for overlap in overlaps if overlap.kind == "exact")
    where = line_of if line_of is not None else _same
    positions = sorted(where(overlap.eval_index) for overlap in overlaps)
    shown = ", ".join(str(p) for p in positions[:_SHOWN_IN_MESSAGE])
    if len(positions) > _SHOWN_IN_MESSAGE:
        shown += f" ... and {len(positions) - _SHOWN_IN_MESSAGE} more"
    raise ContaminationError(
        f"{source}: {len(overlaps)} eval items also appear in the training data "
        f"({exact} exact, {len(overlaps) - exact} near); first few eval lines: {shown}; "
        "pass --allow-contaminated to proceed anyway (recorded), "
        "or --decontaminate to drop them from train"
    )


def _same(index: int) -> int:
    return index


def decontaminate_train(n_train: int, overlaps: Sequence[Overlap]) -> list[int]:
    """Sorted train indices in ``range(n_train)`` that match no eval item.

    Raises ``ValueError`` when an overlap names a train index outside ``range(n_train)``
    (the overlaps were computed on another train list).
    """
    contaminated: set[int] = set()
    for overlap in overlaps:
        for index in overlap.train_indices:
            if not 0 <= index < n_train:
                raise ValueError(
                    f"overlap train index {index} is outside range(n_train) with n_train={n_train}"
                )
        contaminated.update(overlap.train_indices)
    return [i for i in range(n_train) if i not in contaminated]
