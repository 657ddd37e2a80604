"""The shared distillation pieces: soft-target losses, the half-depth student, cached logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

from adaptlab.models.bundled import MINILM, resolve_model
from adaptlab.models.encoder import EncoderClassifier, SentenceClassifier, pad_values
from adaptlab.train import distillation
from adaptlab.train.batching import pad_collate
from adaptlab.train.classifier import classification_examples
from adaptlab.train.distillation import (
    cached_teacher_loss,
    combined_kd_loss,
    find_layer_list,
    forward_kl,
    generalized_jsd,
    half_depth_student,
    kd_loss,
    layers_to_keep,
    reverse_kl,
    soft_target_loss,
    teacher_logits,
)

TEXTS = [
    "my card has not arrived yet",
    "how do I transfer money to a friend",
    "the merchant refused my refund",
    "why was my top up declined",
    "can I change my pin at an atm please",
    "a payment I do not recognise",
]


def logits(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * 3).to(dtype)


def softened_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T ‖ student_T) per row, written out independently of the module."""
    p = torch.softmax(teacher.double() / temperature, -1)
    q = torch.softmax(student.double() / temperature, -1)
    return (p * (p.log() - q.log())).sum(-1)


# --------------------------------------------------------------------------- KD loss


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kd_loss_is_zero_when_the_student_equals_the_teacher(temperature: float) -> None:
    same = logits(8, 77)
    assert abs(kd_loss(same, same.clone(), temperature).item()) < 1e-6


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_is_t_squared_times_the_kl_of_the_softened_distributions(
    temperature: float,
) -> None:
    student, teacher = logits(8, 77, seed=1), logits(8, 77, seed=2)
    expected = temperature**2 * softened_kl(student, teacher, temperature).sum()
    loss = kd_loss(student, teacher, temperature)
    assert loss.item() > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_gradient_is_t_times_the_difference_of_softened_probabilities() -> None:
    """Hinton et al. 2015 eq. (2): ∂C/∂z_i = (q_i − p_i)/T; the T² factor makes it T(q − p)."""
    temperature = 3.0
    student = logits(4, 10, seed=3).requires_grad_()
    teacher = logits(4, 10, seed=4)
    kd_loss(student, teacher, temperature).backward()
    q = torch.softmax(student.detach() / temperature, -1)
    p = torch.softmax(teacher / temperature, -1)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, temperature * (q - p), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_soft_target_gradients_match_finite_differences(divergence: Any) -> None:
    student = logits(3, 5, seed=5, dtype=torch.float64).requires_grad_()
    teacher = logits(3, 5, seed=6, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda s: soft_target_loss(s, teacher, temperature=2.0, divergence=divergence, beta=0.3),
        (student,),
    )


def test_the_teacher_gets_no_gradient() -> None:
    student, teacher = logits(2, 6).requires_grad_(), logits(2, 6, seed=1).requires_grad_()
    kd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad is not None


# --------------------------------------------------------------------------- other divergences


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_divergences_are_zero_at_equality_and_positive_otherwise(divergence: Any) -> None:
    same = logits(2, 7, 50)
    assert abs(soft_target_loss(same, same, divergence=divergence).item()) < 1e-6
    other = logits(2, 7, 50, seed=1)
    assert soft_target_loss(other, same, divergence=divergence).item() > 0


def test_reverse_kl_is_forward_kl_with_the_roles_swapped() -> None:
    student, teacher = logits(4, 9, seed=1), logits(4, 9, seed=2)
    reverse = soft_target_loss(student, teacher, temperature=2.0, divergence="reverse_kl")
    swapped = soft_target_loss(teacher, student, temperature=2.0, divergence="forward_kl")
    assert reverse.item() == pytest.approx(swapped.item(), rel=1e-6)
    assert reverse.item() != pytest.approx(kd_loss(student, teacher, 2.0).item(), rel=1e-3)


def test_jsd_at_half_is_symmetric_and_bounded_by_log_two() -> None:
    student, teacher = logits(6, 20, seed=1), logits(6, 20, seed=2)
    forward = soft_target_loss(student, teacher, divergence="jsd", beta=0.5)
    backward = soft_target_loss(teacher, student, divergence="jsd", beta=0.5)
    assert forward.item() == pytest.approx(backward.item(), rel=1e-6)
    extreme = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    per_position = soft_target_loss(extreme, extreme.flip(-1), divergence="jsd", beta=0.5) / 2
    assert per_position.item() == pytest.approx(np.log(2), rel=1e-4)


def test_jsd_matches_the_gkd_definition_and_is_not_symmetric_away_from_half() -> None:
    """Agarwal et al. 2024 eq. (1): β KL(P‖M) + (1−β) KL(Q‖M), M = βP + (1−β)Q, P = teacher."""
    beta = 0.3
    student, teacher = logits(5, 11, seed=1), logits(5, 11, seed=2)
    p = torch.softmax(teacher.double(), -1)
    q = torch.softmax(student.double(), -1)
    m = beta * p + (1 - beta) * q
    expected = beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
    loss = soft_target_loss(student, teacher, divergence="jsd", beta=beta)
    assert loss.item() == pytest.approx(expected.sum().item(), rel=1e-5)
    swapped = soft_target_loss(teacher, student, divergence="jsd", beta=beta)
    assert loss.item() != pytest.approx(swapped.item(), rel=1e-3)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_masked_positions_are_ignored(divergence: Any) -> None:
    student, teacher = logits(2, 6, 30, seed=1), logits(2, 6, 30, seed=2)
    mask = torch.tensor([[True, True, True, False, False, False], [True] * 5 + [False]])
    loss = soft_target_loss(student, teacher, temperature=2.0, divergence=divergence, mask=mask)
    changed = student.clone()
    changed[~mask] = logits(int((~mask).sum()), 30, seed=9)
    again = soft_target_loss(changed, teacher, temperature=2.0, divergence=divergence, mask=mask)
    assert loss.item() == pytest.approx(again.item(), rel=1e-6)
    kept = soft_target_loss(student[mask], teacher[mask], temperature=2.0, divergence=divergence)
    assert loss.item() == pytest.approx(kept.item(), rel=1e-5)


def test_per_position_divergences_keep_the_leading_shape() -> None:
    student = F.log_softmax(logits(2, 3, 8, seed=1), -1)
    teacher = F.log_softmax(logits(2, 3, 8, seed=2), -1)
    for values in (
        forward_kl(student, teacher),
        reverse_kl(student, teacher),
        generalized_jsd(student, teacher, 0.5),
    ):
        assert values.shape == (2, 3)
        assert bool((values >= -1e-6).all())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"student_logits": logits(2, 5), "teacher_logits": logits(2, 6)}, "same shape"),
        ({"temperature": 0.0}, "temperature = 0.0"),
        ({"divergence": "jsd", "beta": 1.0}, "0 < β < 1"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, "mask"),
        ({"divergence": "tvd"}, "divergence = 'tvd'"),
    ],
)
def test_bad_arguments_are_named(arguments: dict[str, Any], message: str) -> None:
    call = {"student_logits": logits(2, 5), "teacher_logits": logits(2, 5, seed=1), **arguments}
    with pytest.raises(ValueError, match=message):
        soft_target_loss(**call)


# --------------------------------------------------------------------------- combined loss


def test_combined_loss_weighs_hard_labels_by_alpha_and_the_teacher_by_one_minus_alpha() -> None:
    student, teacher = logits(6, 4, seed=1), logits(6, 4, seed=2)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    hard = F.cross_entropy(student, labels, reduction="sum")
    soft = kd_loss(student, teacher, 3.0)
    for alpha in (0.0, 0.1, 1.0):
        loss = combined_kd_loss(student, teacher, labels, temperature=3.0, alpha=alpha)
        assert loss.item() == pytest.approx((alpha * hard + (1 - alpha) * soft).item(), rel=1e-6)
    with pytest.raises(ValueError, match="alpha = 1.5"):
        combined_kd_loss(student, teacher, labels, temperature=3.0, alpha=1.5)


def test_combined_loss_skips_ignored_token_positions() -> None:
    student, teacher = logits(2, 5, 12, seed=1), logits(2, 5, 12, seed=2)
    labels = torch.tensor([[1, 2, -100, -100, -100], [3, 4, 5, 6, -100]])
    loss = combined_kd_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    keep = labels != -100
    flat = combined_kd_loss(student[keep], teacher[keep], labels[keep], temperature=2.0, alpha=0.5)
    assert loss.item() == pytest.approx(flat.item(), rel=1e-5)


# --------------------------------------------------------------------------- the student


def tiny_bert(layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


@pytest.mark.parametrize(
    ("total", "count", "keep", "expected"),
    [
        (12, 6, "alternate", [0, 2, 4, 7, 9, 11]),  # DistilBERT's own choice
        (6, 3, "alternate", [0, 2, 5]),
        (4, 2, "alternate", [0, 3]),
        (6, 3, "first", [0, 1, 2]),
        (6, 3, "last", [3, 4, 5]),
        (6, 2, [1, 4], [1, 4]),
        (2, 1, "alternate", [0]),
    ],
)
def test_layers_to_keep(total: int, count: int, keep: Any, expected: list[int]) -> None:
    assert layers_to_keep(total, count, keep) == expected


@pytest.mark.parametrize(
    ("count", "keep"), [(2, [3, 1]), (2, [1, 1]), (2, [0, 6]), (3, [0, 1]), (7, "first")]
)
def test_impossible_layer_choices_are_refused(count: int, keep: Any) -> None:
    with pytest.raises(ValueError, match="keep|layers"):
        layers_to_keep(6, count, keep)


@pytest.mark.parametrize(
    ("keep", "chosen"),
    [("alternate", [0, 3]), ("first", [0, 1]), ("last", [2, 3]), ([1, 2], [1, 2])],
)
def test_student_copies_the_chosen_teacher_layers_and_the_embeddings(
    keep: Any, chosen: list[int]
) -> None:
    teacher = tiny_bert(4)
    student = half_depth_student(teacher, keep)
    assert student.config.num_hidden_layers == 2
    assert len(student.encoder.layer) == 2
    assert len(teacher.encoder.layer) == 4 and teacher.config.num_hidden_layers == 4
    for position, index in enumerate(chosen):
        copied = student.encoder.layer[position].state_dict()
        for name, tensor in teacher.encoder.layer[index].state_dict().items():
            assert torch.equal(copied[name], tensor), (position, index, name)
    teacher_embeddings = teacher.embeddings.state_dict()
    for name, tensor in student.embeddings.state_dict().items():
        assert torch.equal(tensor, teacher_embeddings[name]), name


def test_student_is_an_independent_copy_that_runs() -> None:
    teacher = tiny_bert(4)
    student = half_depth_student(teacher)
    with torch.no_grad():
        student.encoder.layer[0].output.dense.weight.add_(1.0)
        student.embeddings.word_embeddings.weight.add_(1.0)
    assert not torch.equal(
        student.encoder.layer[0].output.dense.weight, teacher.encoder.layer[0].output.dense.weight
    )
    assert not torch.equal(
        student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight
    )
    ids = torch.tensor([[101, 2026, 4003, 102]])
    hidden = student(input_ids=ids, attention_mask=torch.ones_like(ids))[0]
    assert hidden.shape == (1, 4, 32)


def test_a_single_layer_student_of_a_single_layer_teacher_is_its_copy() -> None:
    teacher = tiny_bert(1)
    student = half_depth_student(teacher)
    ids = torch.tensor([[101, 2026, 102]])
    mask = torch.ones_like(ids)
    torch.testing.assert_close(student(input_ids=ids, attention_mask=mask)[0], teacher(ids)[0])


def test_decoder_students_find_their_layers_and_renumber_the_cache_index() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    teacher = LlamaModel(config)
    student = half_depth_student(teacher, "last")
    name, layers = find_layer_list(student)
    assert name == "layers" and len(layers) == 2
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1]
    assert torch.equal(layers[1].mlp.up_proj.weight, teacher.layers[3].mlp.up_proj.weight)
    output = student(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    assert output.last_hidden_state.shape == (1, 3, 16)


def test_models_without_a_layer_count_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        half_depth_student(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# --------------------------------------------------------------------------- teacher logits


@pytest.fixture
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model(MINILM))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "teacher_logits"


def classifier(seed: int, layers: int = 2) -> SentenceClassifier:
    encoder = tiny_bert(layers)
    torch.manual_seed(seed)
    return SentenceClassifier(encoder, num_labels=4).eval()


def test_teacher_logits_are_computed_once_and_then_read_from_the_cache(
    tokenizer: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = EncoderClassifier(classifier(1), tokenizer, ["a", "b", "c", "d"], max_length=32)
    first = teacher_logits(teacher, TEXTS, teacher_key="run-1")
    assert first.shape == (len(TEXTS), 4) and first.dtype == np.float32
    assert len(list(cache.glob("*.safetensors"))) == 1

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(distillation, "classifier_logits", refuse)
    np.testing.assert_array_equal(teacher_logits(teacher, TEXTS, teacher_key="run-1"), first)
    with pytest.raises(AssertionError, match="ran again"):
        teacher_logits(teacher, TEXTS, teacher_key="run-2")  # another teacher: another entry
    with pytest.raises(AssertionError, match="ran again"):
        teacher_logits(teacher, TEXTS[:3], teacher_key="run-1")  # other texts: another entry


def test_cached_teacher_loss_equals_the_loss_with_the_teacher_run_on_the_batch(
    tokenizer: Any, cache: Path
) -> None:
    teacher = classifier(1)
    student = classifier(2, layers=1)
    labels = np.array([0, 1, 2, 3, 0, 1])
    cached = teacher_logits(
        EncoderClassifier(teacher, tokenizer, list("abcd"), max_length=32),
        TEXTS,
        teacher_key="k",
    )
    examples = classification_examples(tokenizer, TEXTS, labels, max_length=32)
    batch = pad_collate([examples[i] for i in (4, 1, 5)], pad_values(tokenizer))
    loss = cached_teacher_loss(torch.from_numpy(cached), temperature=4.0, alpha=0.1)
    value, items = loss(student, batch)
    with torch.no_grad():
        on_the_fly = teacher(batch["input_ids"], batch["attention_mask"])
    expected = combined_kd_loss(
        student(batch["input_ids"], batch["attention_mask"]),
        on_the_fly,
        batch["labels"],
        temperature=4.0,
        alpha=0.1,
    )
    assert items == 3
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.item() > 0
