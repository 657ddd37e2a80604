"""Length-grouped batches and dynamic padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptlab.train.batching import (
    batch_count,
    epoch_batches,
    pad_collate,
    padding_fraction,
    shard,
)


def realistic_lengths(count: int = 4000, seed: int = 0) -> list[int]:
    """Token counts of short texts: log-normal (median ~24 tokens), capped at 128 as a
    tokenizer's truncation would, the shape of intent, review and support-ticket data."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(np.log(24), 0.6, size=count), 3, 128)]


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize(("count", "batch_size"), [(1000, 8), (1003, 8), (7, 8), (401, 1)])
def test_every_index_once_per_epoch(group_by_length: bool, count: int, batch_size: int) -> None:
    lengths = realistic_lengths(count)
    for epoch in range(3):
        batches = epoch_batches(
            lengths, batch_size, seed=1, epoch=epoch, group_by_length=group_by_length
        )
        flat = [index for batch in batches for index in batch]
        assert sorted(flat) == list(range(count))
        assert all(1 <= len(batch) <= batch_size for batch in batches)
        assert all(len(batch) == batch_size for batch in batches[:-1])
        assert len(batches) == batch_count(count, batch_size)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_short_last_batch_dropped_below_minimum(group_by_length: bool) -> None:
    lengths = realistic_lengths(1003)  # 125 batches of 8 and 3 left over
    batches = epoch_batches(
        lengths, 8, seed=1, epoch=0, group_by_length=group_by_length, min_last_batch=4
    )
    assert len(batches) == 125 == batch_count(1003, 8, min_last_batch=4)
    assert all(len(batch) == 8 for batch in batches)
    assert len({index for batch in batches for index in batch}) == 1000


@pytest.mark.parametrize("group_by_length", [True, False])
def test_deterministic_per_seed_and_epoch(group_by_length: bool) -> None:
    lengths = realistic_lengths(500)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        return epoch_batches(lengths, 16, seed=seed, epoch=epoch, group_by_length=group_by_length)

    assert batches(3, 2) == batches(3, 2)
    assert batches(3, 2) != batches(3, 1)
    assert batches(3, 2) != batches(4, 2)
    # seed and epoch are not simply added together
    assert batches(1, 0) != batches(0, 1)


def test_grouping_wastes_less_padding_than_random_batches() -> None:
    lengths = realistic_lengths()
    grouped = epoch_batches(lengths, 32, seed=0, epoch=0, group_by_length=True)
    random = epoch_batches(lengths, 32, seed=0, epoch=0, group_by_length=False)
    grouped_waste = padding_fraction(grouped, lengths)
    random_waste = padding_fraction(random, lengths)
    # Measured: 0.67 of the positions are padding in random batches, 0.05 in grouped ones.
    assert random_waste > 0.4
    assert grouped_waste < random_waste / 5


def test_grouped_batches_are_similar_in_length_and_longest_first() -> None:
    lengths = realistic_lengths(2000)
    batches = epoch_batches(lengths, 16, seed=5, epoch=0, group_by_length=True)
    longest = max(lengths)
    assert max(lengths[i] for i in batches[0]) == longest
    # batch order is shuffled, not sorted by length
    maxima = [max(lengths[i] for i in batch) for batch in batches[1:]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_padding_fraction_counts_padded_positions() -> None:
    assert padding_fraction([[0, 1]], [2, 4]) == pytest.approx(0.25)
    assert padding_fraction([[0], [1]], [2, 4]) == 0.0


@pytest.mark.parametrize(("size", "processes"), [(8, 2), (7, 2), (5, 3), (3, 3)])
def test_shard_splits_a_global_batch_between_processes(size: int, processes: int) -> None:
    batch = list(range(100, 100 + size))
    parts = [shard(batch, rank, processes) for rank in range(processes)]
    assert [index for part in parts for index in part] == batch
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(parts)


def test_pad_collate_pads_to_the_batch_maximum() -> None:
    examples = [
        {"input_ids": [5, 6, 7], "labels": [1, 2, 3], "label": 0},
        {"input_ids": [8], "labels": [4], "label": 2},
    ]
    batch = pad_collate(examples, {"input_ids": 0, "labels": -100})
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]
    assert batch["label"].tolist() == [0, 2]
    assert batch["input_ids"].dtype == torch.int64
    rounded = pad_collate(examples, {"input_ids": 0, "labels": -100}, pad_to_multiple_of=8)
    assert rounded["input_ids"].shape == (2, 8)


def test_pad_collate_names_a_ragged_field_without_pad_value() -> None:
    examples = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}]
    with pytest.raises(ValueError, match="'input_ids'"):
        pad_collate(examples, {})
