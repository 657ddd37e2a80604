"""Label sets (multi-label data) in the fine-tuned encoder classifiers and distill: the losses
against hand computations, the sigmoid head and what ``classifier.json`` says about it, the
head's imprinting, and distill's refusal of a teacher of the other kind. The generic checks
(fit gives per-label probabilities, save → load the same) are in test_matrix.py."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.unit.strategies.conftest import TeacherFactory

from adaptlab.models.encoder import (
    CLASSIFIER_FILE,
    EncoderClassifier,
    SentenceClassifier,
    load_classifier,
    load_encoder,
    run_batched,
)
from adaptlab.runs import RunError
from adaptlab.strategies.base import ClassificationTask, RunContext, get_strategy
from adaptlab.strategies.distill import DistillStrategy
from adaptlab.strategies.full import (
    imprint_label_sets,
    label_smoothed_binary_cross_entropy,
    label_smoothed_cross_entropy,
)
from adaptlab.train.batching import pad_collate
from adaptlab.train.classifier import (
    binary_cross_entropy_sum,
    classification_examples,
    cross_entropy_sum,
)
from adaptlab.train.distillation import (
    binary_kd_loss,
    cached_teacher_loss,
    combined_binary_kd_loss,
)

RunFactory = Callable[..., RunContext]
FINE_TUNED = ("full", "partial", "lora", "scratch", "distill")

# Two records, three labels: the first carries labels 0 and 2, the second none.
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 0.0, 3.0]])
SETS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def fixed(logits: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def model(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return logits

    return model


def batch_of(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(labels), 1, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": ids, "labels": labels}


def by_hand(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """−Σ [t log σ(z) + (1 − t) log(1 − σ(z))], written out number by number."""
    total = 0.0
    for z, t in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-z))
        total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total


# --------------------------------------------------------------------------- the losses


def test_binary_cross_entropy_sums_every_label_of_every_example_and_counts_examples() -> None:
    loss, count = binary_cross_entropy_sum(fixed(LOGITS), batch_of(SETS))  # type: ignore[arg-type]

    assert count == 2  # the loop averages per example, not per (example, label)
    assert loss.item() == pytest.approx(by_hand(LOGITS, SETS), rel=1e-6)
    torch_mean = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, SETS)
    torch.testing.assert_close(loss, torch_mean * SETS.numel())


def test_binary_label_smoothing_targets_y_times_one_minus_e_plus_e_over_two() -> None:
    batch = batch_of(SETS)
    plain, count = label_smoothed_binary_cross_entropy(0.0)(fixed(LOGITS), batch)  # type: ignore[arg-type]
    smoothed, _ = label_smoothed_binary_cross_entropy(0.2)(fixed(LOGITS), batch)  # type: ignore[arg-type]

    reference, _ = binary_cross_entropy_sum(fixed(LOGITS), batch)  # type: ignore[arg-type]
    assert count == 2
    assert torch.equal(plain, reference)
    targets = torch.tensor([[0.9, 0.1, 0.9], [0.1, 0.1, 0.1]])  # 1 − ε/2 and ε/2 at ε = 0.2
    assert smoothed.item() == pytest.approx(by_hand(LOGITS, targets), rel=1e-6)


def test_single_label_losses_are_unchanged_by_label_sets() -> None:
    labels = torch.tensor([0, 2])
    plain, count = label_smoothed_cross_entropy(0.0)(fixed(LOGITS), batch_of(labels))  # type: ignore[arg-type]
    reference, _ = cross_entropy_sum(fixed(LOGITS), batch_of(labels))  # type: ignore[arg-type]

    assert count == 2
    assert torch.equal(plain, reference)


def test_label_sets_become_float_vectors_that_collate_into_a_matrix(tiny_encoder: Path) -> None:
    tokenizer, _ = load_encoder(str(tiny_encoder))
    sets = np.array([[1, 0, 1], [0, 0, 0]], dtype=np.int64)
    examples = classification_examples(tokenizer, ["a card", "hello"], sets, max_length=16)

    assert [example["labels"] for example in examples] == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    batch = pad_collate(examples, {"input_ids": 0, "attention_mask": 0})
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (2, 3)
    single = classification_examples(tokenizer, ["a card"], np.array([2]), max_length=16)
    assert single[0]["labels"] == 2


# --------------------------------------------------------------------------- distillation


def test_binary_kd_loss_is_zero_when_the_student_is_the_teacher() -> None:
    assert binary_kd_loss(LOGITS, LOGITS.clone(), temperature=4.0).item() == 0.0
    assert binary_kd_loss(LOGITS, -LOGITS, temperature=4.0).item() > 0


def test_binary_kd_loss_is_t_squared_bernoulli_kl_with_gradient_t_times_the_gap() -> None:
    temperature = 2.0
    student = LOGITS.clone().requires_grad_(True)
    teacher = torch.tensor([[0.0, 1.0, -2.0], [1.5, -0.5, 2.0]])
    loss = binary_kd_loss(student, teacher, temperature)
    loss.backward()

    p, q = torch.sigmoid(teacher / temperature), torch.sigmoid(LOGITS / temperature)
    kl = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(loss, kl.sum() * temperature**2)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, temperature * (q - p))


def test_combined_binary_kd_loss_mixes_hard_bce_and_the_soft_term_by_alpha() -> None:
    teacher = torch.tensor([[0.0, 1.0, -2.0], [1.5, -0.5, 2.0]])
    hard = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, SETS, reduction="sum")
    soft = binary_kd_loss(LOGITS, teacher, 4.0)

    def mixed(alpha: float) -> torch.Tensor:
        return combined_binary_kd_loss(LOGITS, teacher, SETS, temperature=4.0, alpha=alpha)

    torch.testing.assert_close(mixed(1.0), hard)
    torch.testing.assert_close(mixed(0.0), soft)
    torch.testing.assert_close(mixed(0.3), 0.3 * hard + 0.7 * soft)
    with pytest.raises(ValueError, match="alpha"):
        mixed(1.5)


def test_the_cached_teacher_loss_reads_label_sets_by_example_index() -> None:
    teacher = torch.tensor([[0.0, 1.0, -2.0], [1.5, -0.5, 2.0]])
    batch = {**batch_of(SETS.flip(0)), "index": torch.tensor([1, 0])}
    loss = cached_teacher_loss(teacher, temperature=4.0, alpha=0.1, multi_label=True)
    value, count = loss(fixed(LOGITS), batch)  # type: ignore[arg-type]

    expected = combined_binary_kd_loss(
        LOGITS, teacher.flip(0), SETS.flip(0), temperature=4.0, alpha=0.1
    )
    assert count == 2
    torch.testing.assert_close(value, expected)


# --------------------------------------------------------------------------- the classifier


def test_a_multi_label_classifier_gives_sigmoids_and_refuses_export(tiny_encoder: Path) -> None:
    tokenizer, encoder = load_encoder(str(tiny_encoder))
    torch.manual_seed(0)
    model = SentenceClassifier(encoder, 3).eval()
    texts = ["my card", "a refund please"]
    softmax = EncoderClassifier(model, tokenizer, ["a", "b", "c"], 16)
    sigmoid = EncoderClassifier(model, tokenizer, ["a", "b", "c"], 16, multi_label=True)

    logits = run_batched(model, tokenizer, texts, 16)
    np.testing.assert_allclose(sigmoid.predict_proba(texts), torch.sigmoid(logits).numpy())
    np.testing.assert_allclose(softmax.predict_proba(texts).sum(axis=1), 1.0, atol=1e-6)
    softmax.export_parts()
    with pytest.raises(ValueError, match="multi-label export is not supported yet"):
        sigmoid.export_parts()


@pytest.mark.parametrize("strategy", FINE_TUNED)
def test_the_five_fine_tuned_classifiers_say_they_handle_label_sets(strategy: str) -> None:
    assert get_strategy(strategy).profile.multi_label


def test_full_saves_its_sigmoid_head_in_classifier_json_and_single_label_files_say_nothing(
    make_run: RunFactory, tiny_multilabel_task: ClassificationTask, tmp_path: Path
) -> None:
    multi = dataclasses.replace(make_run("full"), task=tiny_multilabel_task)
    get_strategy("full").fit(multi)
    meta = json.loads((multi.folder / "model" / CLASSIFIER_FILE).read_text())
    assert meta["multi_label"] is True
    assert load_classifier(multi.folder / "model").multi_label

    (multi.folder / "model" / CLASSIFIER_FILE).write_text(json.dumps({**meta, "multi_label": 1}))
    with pytest.raises(ValueError, match="field 'multi_label' must be true or false"):
        load_classifier(multi.folder / "model")


def test_single_label_classifier_json_has_no_multi_label_flag(make_run: RunFactory) -> None:
    run = make_run("full")
    get_strategy("full").fit(run)
    meta = json.loads((run.folder / "model" / CLASSIFIER_FILE).read_text())
    assert "multi_label" not in meta
    assert not load_classifier(run.folder / "model").multi_label


def test_imprinted_label_sets_start_each_label_between_its_carriers_and_the_rest() -> None:
    class Stub(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(2, 3)

    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])  # label 2: carried by no record
    model = Stub()
    random_row = model.head.weight[2].detach().clone()
    imprint_label_sets(model, embeddings, sets)  # type: ignore[arg-type]

    centroid = torch.nn.functional.normalize(torch.tensor([0.9, 0.3]), dim=0)
    torch.testing.assert_close(model.head.weight[0].detach(), centroid)
    cosines = torch.from_numpy(embeddings) @ centroid
    midpoint = (cosines[:2].mean() + cosines[2]) / 2
    torch.testing.assert_close(model.head.bias[0].detach(), -midpoint)
    logits = model.head(torch.from_numpy(embeddings)).detach()
    assert (logits[:2, 0] > 0).all() and (logits[2, 0] < 0)  # carriers above 0.5, the rest below
    assert torch.equal(model.head.weight[2].detach(), random_row)
    assert model.head.bias[2].item() == 0


# --------------------------------------------------------------------------- distill


def multi_label_distill(make_run: RunFactory, task: ClassificationTask) -> RunContext:
    return dataclasses.replace(make_run("distill"), task=task)


def test_distill_learns_label_sets_from_a_multi_label_teacher_chosen_by_micro_f1(
    make_run: RunFactory,
    make_teacher: TeacherFactory,
    tiny_multilabel_task: ClassificationTask,
) -> None:
    run = multi_label_distill(make_run, tiny_multilabel_task)
    make_teacher(run.runs_root, "full", 0.7, multi_label=True)
    make_teacher(run.runs_root, "partial", 0.8, multi_label=True)
    classifier = DistillStrategy().fit(run)

    assert classifier.multi_label
    assert run.facts["teacher"] == "partial" and run.facts["teacher_micro_f1"] == 0.8
    assert "teacher_accuracy" not in run.facts
    assert load_classifier(run.folder / "model").multi_label


def test_distill_refuses_a_single_label_teacher_for_label_sets(
    make_run: RunFactory,
    make_teacher: TeacherFactory,
    tiny_multilabel_task: ClassificationTask,
) -> None:
    run = multi_label_distill(make_run, tiny_multilabel_task)
    make_teacher(run.runs_root, "full", 0.9)
    with pytest.raises(RunError, match=r"full is a single-label .* trains a multi-label"):
        DistillStrategy().fit(run)


def test_distill_refuses_a_multi_label_teacher_for_single_labels(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9, multi_label=True)
    with pytest.raises(RunError, match=r"full is a multi-label .* trains a single-label"):
        DistillStrategy().fit(run)


def test_distill_refuses_weights_of_the_other_kind_whatever_eval_json_says(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    """The teacher's own classifier.json is what decides: an eval.json without the
    multi-label section does not make a sigmoid head a softmax one."""
    run = make_run("distill")
    folder = make_teacher(run.runs_root, "full", 0.9, multi_label=True)
    evaluation = {"strategy": "full", "metrics": {"accuracy": 0.9}}  # no multi_label section
    (folder / "eval.json").write_text(json.dumps(evaluation))
    with pytest.raises(RunError, match=r"is a multi-label classifier .* trains a single-label"):
        DistillStrategy().fit(run)
