"""Paired-bootstrap differences between every two runs, for the decision rules.

``comparison.json`` holds each run's difference to the best run only; the rules also compare
a run with every cheaper one, and a tuned run with the base and the prompted baseline. Without
a paired difference they fall back on overlapping intervals, which call many real differences
ties. So the report pairs every two runs on the eval items both scored, with the comparison's
own paired bootstrap (:func:`adaptlab.comparison.pairwise_differences`).
"""

from __future__ import annotations

from collections.abc import Iterable

from adaptlab.comparison import Difference, pairwise_differences
from adaptlab.config import CompareConfig
from adaptlab.runs import RunRecord


def paired_differences(
    runs: Iterable[RunRecord], settings: CompareConfig
) -> dict[tuple[str, str], Difference]:
    """``(a, b) -> a - b`` for every two runs that share eval items (each pair once); a run
    whose per-item predictions cannot be read is left out of the pairs (the rules then use its
    difference to the best, or the intervals)."""
    return pairwise_differences(list(runs), settings)
