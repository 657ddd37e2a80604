"""SetFit: k-shot sampling, balanced pairs, the cosine-similarity loss, and fit → save → load
on the tiny encoder and task."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from tests.unit.strategies.conftest import copy_run
from torch import nn

from adaptlab.models.encoder import load_encoder, pad_values, tokenize
from adaptlab.strategies.base import ClassificationTask, RunContext, get_strategy
from adaptlab.strategies.setfit import (
    Pairs,
    PooledEncoder,
    SetFitConfig,
    cosine_similarity_loss,
    generate_pairs,
    move_towards,
    pair_collate,
    pair_examples,
    sample_shots,
    shots_per_class,
)

RunFactory = Callable[..., RunContext]

LABELS = np.array([0] * 6 + [1] * 5 + [2] * 2 + [3] * 9)


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The hard-negative embeddings cached by one test must not answer for another."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- shots


def test_sample_shots_takes_k_per_class_and_all_of_a_smaller_class() -> None:
    shots = sample_shots(LABELS, 4, seed=0)

    assert np.bincount(LABELS[shots]).tolist() == [4, 4, 2, 4]
    assert len(set(shots.tolist())) == len(shots)


def test_sample_shots_is_deterministic_in_the_seed() -> None:
    first, again = sample_shots(LABELS, 3, seed=7), sample_shots(LABELS, 3, seed=7)
    others = [sample_shots(LABELS, 3, seed=seed) for seed in range(5)]

    np.testing.assert_array_equal(first, again)
    assert len({tuple(shots.tolist()) for shots in others}) > 1


def test_classes_short_of_k_are_reported_by_name_including_absent_ones() -> None:
    names = ("a", "b", "c", "d", "never_seen")

    assert shots_per_class(LABELS[sample_shots(LABELS, 5, seed=0)], 5, names) == {
        "c": 2,
        "never_seen": 0,
    }


def test_config_rejects_a_single_shot_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="shots"):
        SetFitConfig(shots=1)


# --------------------------------------------------------------------------- pairs


def test_pairs_are_balanced_and_labelled_by_class() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2])  # class 2 has one shot: no positive pair
    pairs = generate_pairs(labels, iterations=3, seed=0)

    same = labels[pairs.first] == labels[pairs.second]
    np.testing.assert_array_equal(pairs.targets, same.astype(np.float32))
    assert int(same.sum()) == int((~same).sum()) == 3 * 7  # rounds x anchors
    assert (pairs.first != pairs.second).all()
    assert 7 in pairs.second  # the lone shot still serves as a negative


def test_positive_partners_cycle_through_the_class_before_repeating() -> None:
    labels = np.repeat(np.arange(3), 4)
    pairs = generate_pairs(labels, iterations=3, seed=1)  # shots - 1 rounds

    positive = pairs.targets == 1
    for anchor in range(len(labels)):
        partners = pairs.second[positive & (pairs.first == anchor)]
        expected = {i for i in range(len(labels)) if labels[i] == labels[anchor]} - {anchor}
        assert sorted(partners.tolist()) == sorted(expected)


def test_pairs_are_deterministic_in_the_seed() -> None:
    first = generate_pairs(LABELS, 4, seed=3)
    again = generate_pairs(LABELS, 4, seed=3)
    other = generate_pairs(LABELS, 4, seed=4)

    for name in ("first", "second", "targets"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.second, other.second)


def test_hard_negatives_are_the_nearest_other_class_shots_in_order() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    points = np.array([0.0, 0.1, 5.0, 0.3, 9.0, 0.2])  # shot 0's nearest others: 5, 3, 2, 4
    similarity = -np.abs(points[:, None] - points[None, :])

    pairs = generate_pairs(labels, iterations=4, seed=0, similarity=similarity, hard_negatives=0.5)

    negatives = pairs.second[(pairs.targets == 0) & (pairs.first == 0)]
    assert negatives[:2].tolist() == [5, 3]  # two hard rounds, then random ones
    assert set(negatives[2:].tolist()) <= {2, 3, 4, 5}


def test_pairs_need_two_classes_and_a_class_with_two_shots() -> None:
    with pytest.raises(ValueError, match="two classes"):
        generate_pairs(np.zeros(4, dtype=np.int64), 1, seed=0)
    with pytest.raises(ValueError, match="at least two examples"):
        generate_pairs(np.arange(4), 1, seed=0)


# --------------------------------------------------------------------------- loss


class FixedEmbeddings(nn.Module):
    """Returns given unit vectors in place of an encoder: first sides, then second sides."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.vectors = nn.Parameter(vectors)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.vectors, dim=-1)


def test_loss_is_zero_when_similarities_equal_the_targets() -> None:
    u, v = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    model = FixedEmbeddings(torch.stack([u, u, u, v]))  # pairs (u, u) and (u, v)
    batch = {"input_ids": torch.zeros(4, 1), "attention_mask": torch.ones(4, 1)}

    loss, count = cosine_similarity_loss(model, {**batch, "targets": torch.tensor([1.0, 0.0])})
    wrong, _ = cosine_similarity_loss(model, {**batch, "targets": torch.tensor([0.0, 1.0])})

    assert count == 2
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert wrong.item() == pytest.approx(2.0)  # (1 - 0)^2 + (0 - 1)^2


def test_a_gradient_step_brings_a_same_class_pair_closer(tiny_encoder: Path) -> None:
    tokenizer, encoder = load_encoder(str(tiny_encoder))
    model = PooledEncoder(encoder).eval()  # no dropout: the step alone changes the similarity
    texts = ["my card pin please", "the wire transfer to my payee"]
    same_class = Pairs(np.array([0]), np.array([1]), np.array([1.0], dtype=np.float32))
    examples = pair_examples(tokenize(tokenizer, texts, 32), same_class)
    batch = pair_collate(examples, pad_values(tokenizer))

    def similarity() -> float:
        with torch.no_grad():
            first, second = model(batch["input_ids"], batch["attention_mask"]).chunk(2)
        return float((first * second).sum())

    before = similarity()
    loss, _ = cosine_similarity_loss(model, batch)
    torch.autograd.backward(loss)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.sub_(1e-3 * parameter.grad)

    assert before < 0.999
    assert similarity() > before


def test_collate_pads_both_sides_to_one_width() -> None:
    side = {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}
    short = {"input_ids": [8], "attention_mask": [1]}
    examples = [{"first": side, "second": short, "target": 1.0}]

    batch = pair_collate(examples, {"input_ids": 0, "attention_mask": 0})

    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["targets"].tolist() == [1.0]


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def fitted_run(make_run: RunFactory) -> tuple[RunContext, object]:
    run = make_run("setfit", {"shots": 4, "pair_iterations": 2}, max_steps=3)
    return run, get_strategy("setfit").fit(run)


def test_fit_gives_probabilities_for_every_label(
    fitted_run: tuple[RunContext, object], tiny_task: ClassificationTask
) -> None:
    _, classifier = fitted_run

    probabilities = classifier.predict_proba(tiny_task.eval_texts)  # type: ignore[attr-defined]

    assert probabilities.shape == (len(tiny_task.eval_texts), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_fit_trains_every_encoder_parameter_but_token_embeddings_and_pooler(
    fitted_run: tuple[RunContext, object], tiny_encoder: Path
) -> None:
    run, _ = fitted_run
    base = load_file(str(tiny_encoder / "model.safetensors"))
    tuned = load_file(str(run.folder / "model" / "model.safetensors"))

    assert sorted(tuned) == sorted(base)
    unchanged = sorted(name for name in base if torch.equal(base[name], tuned[name]))
    assert unchanged == [
        "embeddings.word_embeddings.weight",  # freeze_embeddings
        "pooler.dense.bias",  # mean pooling never reads the pooler
        "pooler.dense.weight",
    ]


def test_unfrozen_token_embeddings_train(make_run: RunFactory, tiny_encoder: Path) -> None:
    run = make_run("setfit", {"shots": 2, "pair_iterations": 1, "freeze_embeddings": False})
    get_strategy("setfit").fit(run)
    base = load_file(str(tiny_encoder / "model.safetensors"))
    tuned = load_file(str(run.folder / "model" / "model.safetensors"))

    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(base[name], tuned[name])
    assert run.facts["trainable_params"] > 30522 * 32


def test_move_towards_averages_only_the_named_weights() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[4.0, 8.0]]))
        model.bias.fill_(3.0)

    move_towards(model, {"weight": torch.zeros(1, 2)}, share=0.25)

    assert model.weight.tolist() == [[3.0, 6.0]]
    assert model.bias.item() == 3.0


def test_fit_records_shots_pairs_and_parameters(fitted_run: tuple[RunContext, object]) -> None:
    run, _ = fitted_run
    facts = run.facts

    assert facts["shots"] == 4 and facts["shot_examples"] == 12
    assert facts["pairs"] == 2 * 2 * 12 and facts["positive_pairs"] == facts["negative_pairs"]
    assert facts["classes_with_fewer_shots"] == {}
    assert facts["train_steps"] == 3
    frozen = 30522 * 32 + 32 * 32 + 32  # token embeddings, pooler
    assert 0 < facts["trainable_params"] == facts["total_params"] - frozen
    assert facts["needs_base_model"] is False


def test_save_then_load_gives_identical_probabilities(
    fitted_run: tuple[RunContext, object], tiny_task: ClassificationTask, tmp_path: Path
) -> None:
    run, classifier = fitted_run
    copy = copy_run(run, tmp_path / "copied")
    shutil.rmtree(run.folder)  # the copy alone must do

    loaded = get_strategy("setfit").load(copy)

    np.testing.assert_allclose(
        loaded.predict_proba(tiny_task.eval_texts),
        classifier.predict_proba(tiny_task.eval_texts),  # type: ignore[attr-defined]
        rtol=0,
        atol=1e-6,
    )


def test_run_folder_holds_only_safetensors_and_json(fitted_run: tuple[RunContext, object]) -> None:
    run, _ = fitted_run

    names = sorted(str(p.relative_to(run.folder)) for p in run.folder.rglob("*") if p.is_file())

    assert {"model/model.safetensors", "head.safetensors", "classifier.json"} <= set(names)
    assert [n for n in names if Path(n).suffix not in {".safetensors", ".json", ".jsonl"}] == []
    # the checkpoint (safetensors + JSON) stays until compare commits the run
    assert [p.name for p in run.folder.rglob(".*")] == []
