"""Slot-filling metrics for generated JSON answers (restaurant8k: slot -> value).

The model's answer is read strictly: the whole text (surrounding whitespace allowed) must be
one JSON value (RFC 8259: no code fence, no text around it, no ``NaN``); an answer that is not a
JSON *object* predicts nothing. Each member of the object is one predicted (slot, value) pair,
scored against the gold frame:

- true positive: a known slot, a string value, equal to the gold value after
  :func:`normalise_value` (case folded, runs of whitespace made one space, ends stripped);
- false positive: any other member — a wrong value, a slot the gold frame lacks, a non-string
  value (``{"people": 4}``: the schema asks for the text), an unknown slot name (names are
  matched exactly, not normalised) or a repeated slot (the first occurrence is scored);
- false negative: a gold pair no member matched.

A wrong value for a gold slot is therefore both a false positive and a false negative, the
usual slot-F1 convention for a substitution. Micro precision, recall and F1 pool the counts
over all examples; a zero denominator gives 0 (scikit-learn's ``zero_division=0``). The frame
is an exact match when the answer is a JSON object with no false positive and no false negative,
so ``{}`` for gold ``{}`` is right and unparseable text never is. Per example the counts and the
exact-match flag are kept, for paired bootstrap intervals of the difference between two systems
(:func:`paired_slot_differences`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from adaptlab.data.convert import SLOT_ORDER
from adaptlab.evaluate.bootstrap import (
    DEFAULT_RESAMPLES,
    PairedDifference,
    paired_bootstrap,
    paired_bootstrap_micro_f1,
)

RESTAURANT8K_SLOTS = SLOT_ORDER
"""The slots an answer may name for restaurant8k."""


def normalise_value(value: str) -> str:
    """A slot value as compared: case folded, whitespace runs joined by one space, stripped.

    Nothing else is forgiven: "7pm" and "7 pm" differ, as do "4" and "four".
    """
    return " ".join(value.casefold().split())


@dataclass(frozen=True)
class ParsedAnswer:
    """A generated answer read as JSON."""

    json_valid: bool
    """The whole text is one strict JSON value."""
    is_object: bool
    members: tuple[tuple[str, Any], ...] = ()
    """The object's (key, value) members in order, repeated keys kept."""


def parse_answer(text: str) -> ParsedAnswer:
    """Read ``text`` as one strict JSON value; keep every member if it is an object."""
    try:
        value = json.loads(text, object_pairs_hook=_Members, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, _NonJsonConstant):
        return ParsedAnswer(json_valid=False, is_object=False)
    if not isinstance(value, _Members):
        return ParsedAnswer(json_valid=True, is_object=False)
    return ParsedAnswer(json_valid=True, is_object=True, members=tuple(value))


class _Members(list[tuple[str, Any]]):
    """A JSON object as its members, so repeated keys are not silently merged."""


class _NonJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _NonJsonConstant(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


@dataclass(frozen=True)
class SlotCounts:
    """True positives, false positives and false negatives, with the scores they give."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def f1(self) -> float:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return _ratio(2 * tp, 2 * tp + fp + fn)

    @property
    def support(self) -> int:
        """Gold pairs."""
        return self.true_positives + self.false_negatives

    def __add__(self, other: SlotCounts) -> SlotCounts:
        return SlotCounts(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "support": self.support,
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True)
class ExampleScore:
    """One answer scored against its gold frame."""

    json_valid: bool
    schema_valid: bool
    """A JSON object whose members all name known, distinct slots with string values."""
    exact: bool
    per_slot: dict[str, SlotCounts]
    """Known slot -> its counts in this example (slots with none are left out)."""
    unknown_slots: int = 0
    non_string_values: int = 0
    repeated_slots: int = 0

    @property
    def counts(self) -> SlotCounts:
        """All pairs of the example, unknown slots included as false positives."""
        total = sum(self.per_slot.values(), SlotCounts())
        return total + SlotCounts(false_positives=self.unknown_slots)


def score_answer(
    text: str, gold: Mapping[str, str], slots: Sequence[str] = RESTAURANT8K_SLOTS
) -> ExampleScore:
    """Score one generated ``text`` against its ``gold`` frame (see the module for the rules)."""
    parsed = parse_answer(text)
    gold_values = {slot: normalise_value(value) for slot, value in gold.items()}
    counts: dict[str, list[int]] = {}  # slot -> [tp, fp, fn]
    unknown = non_string = repeated = 0
    seen: set[str] = set()
    for slot, value in parsed.members:
        if slot not in slots:
            unknown += 1
            continue
        tally = counts.setdefault(slot, [0, 0, 0])
        if slot in seen or not isinstance(value, str):
            repeated += slot in seen
            non_string += not isinstance(value, str)
            tally[1] += 1
        elif gold_values.get(slot) == normalise_value(value):
            tally[0] += 1
        else:
            tally[1] += 1
        seen.add(slot)
    for slot in gold_values:
        tally = counts.setdefault(slot, [0, 0, 0])
        if tally[0] == 0:  # no member matched the gold value
            tally[2] += 1
    per_slot = {slot: SlotCounts(*counts[slot]) for slot in slots if slot in counts}
    errors = unknown + sum(c.false_positives + c.false_negatives for c in per_slot.values())
    return ExampleScore(
        json_valid=parsed.json_valid,
        schema_valid=parsed.is_object and unknown + non_string + repeated == 0,
        exact=parsed.is_object and errors == 0,
        per_slot=per_slot,
        unknown_slots=unknown,
        non_string_values=non_string,
        repeated_slots=repeated,
    )


@dataclass(frozen=True)
class SlotMetrics:
    """Slot extraction scores of one system on one eval set."""

    n: int
    json_valid_rate: float
    schema_valid_rate: float
    exact_match: float
    """Share of frames exactly right (``{}`` for gold ``{}`` included)."""
    micro: SlotCounts
    """Pooled over every (slot, value) pair of every example."""
    per_slot: dict[str, SlotCounts]
    unknown_slots: int
    """Members naming a slot outside the schema (counted as false positives in ``micro``)."""
    non_string_values: int
    repeated_slots: int
    examples: list[ExampleScore] = field(repr=False)

    @property
    def f1(self) -> float:
        return self.micro.f1

    def counts_per_example(self) -> npt.NDArray[np.int64]:
        """``(n, 3)``: true positives, false positives, false negatives of each example."""
        rows = [
            (c.true_positives, c.false_positives, c.false_negatives)
            for c in (example.counts for example in self.examples)
        ]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), 3)

    def exact_per_example(self) -> npt.NDArray[np.float64]:
        """``(n,)``: 1 where the frame is exactly right."""
        return np.asarray([example.exact for example in self.examples], dtype=np.float64)

    def json_valid_per_example(self) -> npt.NDArray[np.float64]:
        return np.asarray([example.json_valid for example in self.examples], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the per-example scores are left out)."""
        return {
            "n": self.n,
            "json_valid_rate": self.json_valid_rate,
            "schema_valid_rate": self.schema_valid_rate,
            "exact_match": self.exact_match,
            "slot_precision": self.micro.precision,
            "slot_recall": self.micro.recall,
            "slot_f1": self.micro.f1,
            "micro": self.micro.to_dict(),
            "per_slot": {slot: counts.to_dict() for slot, counts in self.per_slot.items()},
            "unknown_slots": self.unknown_slots,
            "non_string_values": self.non_string_values,
            "repeated_slots": self.repeated_slots,
        }


def slot_metrics(
    predictions: Sequence[str],
    gold: Sequence[Mapping[str, str]],
    slots: Sequence[str] = RESTAURANT8K_SLOTS,
) -> SlotMetrics:
    """Score generated answers against gold frames, example ``i`` against ``gold[i]``."""
    if len(predictions) != len(gold):
        raise ValueError(
            f"{len(predictions)} predictions for {len(gold)} gold frames: they must pair up"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    for index, frame in enumerate(gold):
        _check_gold(index, frame, slots)
    examples = [
        score_answer(text, frame, slots) for text, frame in zip(predictions, gold, strict=True)
    ]
    n = len(examples)
    return SlotMetrics(
        n=n,
        json_valid_rate=sum(e.json_valid for e in examples) / n,
        schema_valid_rate=sum(e.schema_valid for e in examples) / n,
        exact_match=sum(e.exact for e in examples) / n,
        micro=sum((e.counts for e in examples), SlotCounts()),
        per_slot={
            slot: sum((e.per_slot.get(slot, SlotCounts()) for e in examples), SlotCounts())
            for slot in slots
        },
        unknown_slots=sum(e.unknown_slots for e in examples),
        non_string_values=sum(e.non_string_values for e in examples),
        repeated_slots=sum(e.repeated_slots for e in examples),
        examples=examples,
    )


def _check_gold(index: int, frame: Mapping[str, str], slots: Sequence[str]) -> None:
    for slot, value in frame.items():
        if slot not in slots:
            raise ValueError(
                f"gold[{index}] names slot '{slot}', which is not one of {list(slots)}; "
                "pass the data's slots as slots="
            )
        if not isinstance(value, str) or not normalise_value(value):
            raise ValueError(f"gold[{index}]['{slot}'] = {value!r}: expected non-empty text")


def paired_slot_differences(
    a: SlotMetrics,
    b: SlotMetrics,
    *,
    names: tuple[str, str] = ("a", "b"),
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """Paired-bootstrap CIs of a - b for slot F1, exact match and JSON validity.

    ``a`` and ``b`` must score the same eval examples in the same order. Slot F1 is a ratio of
    pooled counts, so each resample pools the resampled examples' counts (not a mean of
    per-example F1s, which is undefined for ``{}`` frames).
    """
    settings: dict[str, Any] = {
        "names": names,
        "resamples": resamples,
        "confidence": confidence,
        "seed": seed,
    }
    return {
        "slot_f1": paired_bootstrap_micro_f1(
            a.counts_per_example(), b.counts_per_example(), metric="slot_f1", **settings
        ),
        "exact_match": paired_bootstrap(
            a.exact_per_example(), b.exact_per_example(), metric="exact_match", **settings
        ),
        "json_valid_rate": paired_bootstrap(
            a.json_valid_per_example(),
            b.json_valid_per_example(),
            metric="json_valid_rate",
            **settings,
        ),
    }
