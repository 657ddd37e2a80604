"""Batching for the training loop: length-grouped batch order and dynamic padding.

Padding every batch to the longest example in the data set wastes most of the compute on short
texts; padding to the longest example *in the batch* (dynamic padding) wastes less, and batching
examples of similar length together wastes almost nothing. The grouping follows Hugging Face's
``LengthGroupedSampler``: shuffle, cut into mega-batches, sort each by length, cut into batches,
shuffle the batch order — random enough for SGD, sorted enough for padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

MEGA_BATCH_FACTOR = 50
"""Batches per mega-batch: large enough to find similar lengths, small enough to stay random."""


def batch_count(num_examples: int, batch_size: int, *, min_last_batch: int = 1) -> int:
    """How many batches :func:`epoch_batches` returns for every epoch."""
    full, rest = divmod(num_examples, batch_size)
    return full + (1 if rest and rest >= min_last_batch else 0)


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    group_by_length: bool,
    min_last_batch: int = 1,
) -> list[list[int]]:
    """The batches of example indices for one epoch, deterministic from ``(seed, epoch)``.

    Every index appears exactly once, except that a last batch smaller than ``min_last_batch``
    is dropped (the loop passes the number of processes, so that each gets at least one
    example). With ``group_by_length`` the batch holding the longest example comes first, so a
    batch that does not fit in memory fails in the first step rather than hours in.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    # A SeedSequence of (seed, epoch) keeps (seed=1, epoch=0) and (seed=0, epoch=1) apart.
    rng = np.random.default_rng([seed % 2**64, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        batches = _grouped(order, lengths, batch_size, rng)
    else:
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < min_last_batch:
        batches.pop()
    return [[int(index) for index in batch] for batch in batches]


def _grouped(
    order: np.ndarray[Any, Any],
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray[Any, Any]]:
    """Sort mega-batches by length, cut them into batches, shuffle the batches."""
    if len(order) == 0:
        return []
    all_lengths = np.asarray(lengths)
    mega_size = batch_size * MEGA_BATCH_FACTOR
    batches: list[np.ndarray[Any, Any]] = []
    for start in range(0, len(order), mega_size):
        mega = order[start : start + mega_size]
        # A stable sort keeps equal lengths in their shuffled order, so ties stay random.
        mega = mega[np.argsort(-all_lengths[mega], kind="stable")]
        batches.extend(
            mega[offset : offset + batch_size] for offset in range(0, len(mega), batch_size)
        )
    # The last batch may be short; keep it last so that only it can be dropped.
    full, last = (batches[:-1], batches[-1:]) if len(batches[-1]) < batch_size else (batches, [])
    shuffled = [full[position] for position in rng.permutation(len(full))]
    if shuffled:
        longest = max(range(len(shuffled)), key=lambda i: int(all_lengths[shuffled[i]].max()))
        shuffled.insert(0, shuffled.pop(longest))
    return shuffled + last


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The contiguous part of a global batch that process ``rank`` trains on.

    Sizes differ by at most one, which the loop's item-count normalisation makes exact.
    """
    bounds = np.linspace(0, len(batch), world_size + 1).round().astype(int)
    return list(batch[bounds[rank] : bounds[rank + 1]])


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """The fraction of padded positions when each batch is padded to its longest example."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 1.0 - real / padded if padded else 0.0


def pad_collate(
    examples: Sequence[Mapping[str, Any]],
    pad_values: Mapping[str, int],
    *,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Stack tokenised examples into tensors, padding list fields to the batch's longest.

    ``pad_values`` names the pad value of every list field (``input_ids``: the tokenizer's pad
    id, ``attention_mask``: 0, ``labels``: -100, the value cross-entropy ignores); other fields
    (a class label) are stacked as they are. ``pad_to_multiple_of=8`` suits tensor cores.
    """
    batch: dict[str, torch.Tensor] = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        if key not in pad_values:
            if isinstance(values[0], Sequence) and len({len(value) for value in values}) > 1:
                raise ValueError(
                    f"field {key!r} has lists of different lengths but no pad value; "
                    f"add it to pad_values (known: {sorted(pad_values)})"
                )
            batch[key] = torch.tensor(values)
            continue
        width = max(len(value) for value in values)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        pad = pad_values[key]
        batch[key] = torch.tensor([list(value) + [pad] * (width - len(value)) for value in values])
    return batch
