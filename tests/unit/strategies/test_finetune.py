"""What is special to each fine-tuning strategy (the generic checks are in test_matrix.py):
which parameters train, where the weights start, the loss, the adapter, the defaults."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

import adaptlab.models.encoder
import adaptlab.strategies.partial
from adaptlab.config import ExperimentConfig, LoraConfig, TrainConfig
from adaptlab.models.encoder import EncoderClassifier, SentenceClassifier, embed_texts
from adaptlab.strategies.base import (
    RunContext,
    get_strategy,
    merged_train_config,
    strategy_config,
)
from adaptlab.strategies.full import FullConfig, label_smoothed_cross_entropy, pretrained_classifier
from adaptlab.strategies.lora import ADAPTER_DIR, LoraStrategy
from adaptlab.strategies.scratch import ScratchConfig, random_classifier
from adaptlab.train.classifier import cross_entropy_sum

RunFactory = Callable[..., RunContext]
HEAD = {"head.weight", "head.bias", "scale"}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def fit(run: RunContext) -> EncoderClassifier:
    classifier = get_strategy(run.name).fit(run)
    assert isinstance(classifier, EncoderClassifier)
    return classifier


def base_weights(tiny_encoder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_encoder / "model.safetensors"))


# --------------------------------------------------------------------------- full


def test_full_trains_every_parameter_but_the_pooler_mean_pooling_never_uses(
    make_run: RunFactory,
) -> None:
    model = fit(make_run("full")).model

    frozen = {name for name, _ in model.named_parameters()} - trainable_names(model)
    assert frozen == {"encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}


def test_the_head_starts_at_the_normalised_class_means(
    make_run: RunFactory, tiny_task: Any
) -> None:
    run = make_run("full")
    model, _ = pretrained_classifier(run, FullConfig())
    embeddings = torch.from_numpy(
        embed_texts(run.base_model, tiny_task.train_texts, run.max_length)
    )

    for label in range(3):
        centroid = embeddings[torch.from_numpy(tiny_task.train_labels == label)].mean(0)
        expected = torch.nn.functional.normalize(centroid, dim=0)
        torch.testing.assert_close(model.head.weight[label].detach(), expected)
    assert model.head.bias.detach().abs().max() == 0


def test_a_random_head_is_not_the_class_means(make_run: RunFactory) -> None:
    run = make_run("full", {"head_init": "random"})
    imprinted, _ = pretrained_classifier(run, FullConfig())
    random, _ = pretrained_classifier(run, FullConfig(head_init="random"))

    assert not torch.allclose(imprinted.head.weight, random.head.weight)


def test_dropout_setting_reaches_every_dropout_layer(make_run: RunFactory) -> None:
    model, _ = pretrained_classifier(make_run("full"), FullConfig(dropout=0.0))

    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.0}


def test_label_smoothing_zero_is_plain_cross_entropy_and_above_zero_the_paper_formula() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 1])

    def model(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return logits

    batch = {"input_ids": labels, "attention_mask": labels, "labels": labels}
    plain, count = label_smoothed_cross_entropy(0.0)(model, batch)  # type: ignore[arg-type]
    reference, _ = cross_entropy_sum(model, batch)  # type: ignore[arg-type]
    smoothed, _ = label_smoothed_cross_entropy(0.2)(model, batch)  # type: ignore[arg-type]

    targets = 0.8 * torch.nn.functional.one_hot(labels, 4) + 0.2 / 4
    expected = -(targets * torch.log_softmax(logits, dim=-1)).sum()
    assert count == 5
    torch.testing.assert_close(plain, reference)
    torch.testing.assert_close(smoothed, expected)


def weights_after(make_run: RunFactory, micro: int, accumulation: int) -> dict[str, torch.Tensor]:
    """``full`` without dropout (it draws different masks for different batch shapes), at a
    small step size: Adam's first steps are ~lr·sign(gradient), so float noise in near-zero
    gradients shows up in proportion to the learning rate."""
    run = make_run(
        "full",
        {"dropout": 0.0},
        micro_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-4,
        group_by_length=False,
        max_grad_norm=None,
        weight_decay=0.0,
    )
    return {name: p.detach().clone() for name, p in fit(run).model.named_parameters()}


def largest_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    return max((first[name] - value).abs().max().item() for name, value in second.items())


def test_batch_4_x_accumulation_1_equals_batch_1_x_accumulation_4(make_run: RunFactory) -> None:
    """The loop's invariance, end to end: padding a batch must not change any example's
    sentence vector, so four examples in one batch train like four alone."""
    whole = weights_after(make_run, micro=4, accumulation=1)
    accumulated = weights_after(make_run, micro=1, accumulation=4)

    # Summation order differs between the two (one batch vs four), so float noise remains: up
    # to 1.5e-6 on one element of 1,024 on an AMD EPYC CPU. Padding that leaked into the mean
    # moves weights by more than 1e-5 (the test below), so the bound still separates the two.
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, atol=4e-6, rtol=1e-5, msg=name)


def test_padding_that_leaked_into_the_mean_would_break_the_equality(
    make_run: RunFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mean_with_padding(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return hidden.mean(1)

    monkeypatch.setattr(adaptlab.models.encoder, "mean_pool", mean_with_padding)
    whole = weights_after(make_run, micro=4, accumulation=1)
    accumulated = weights_after(make_run, micro=1, accumulation=4)

    assert largest_difference(whole, accumulated) > 1e-5


# --------------------------------------------------------------------------- partial


@pytest.mark.parametrize("unfreeze_layers, trained_layers", [(0, []), (1, [1]), (2, [0, 1])])
def test_partial_trains_exactly_the_top_layers_and_the_head(
    make_run: RunFactory, tiny_encoder: Path, unfreeze_layers: int, trained_layers: list[int]
) -> None:
    run = make_run("partial", {"unfreeze_layers": unfreeze_layers})
    model = fit(run).model

    trained = {f"encoder.layer.{index}." for index in trained_layers}
    expected = HEAD | {
        f"encoder.{name}" for name in base_weights(tiny_encoder) if name.startswith(tuple(trained))
    }
    assert trainable_names(model) == expected
    saved = load_file(str(run.folder / "model" / "model.safetensors"))
    for name, before in base_weights(tiny_encoder).items():
        assert torch.equal(saved[name], before) != name.startswith(tuple(trained)), name


def test_partial_refuses_more_layers_than_the_encoder_has(make_run: RunFactory) -> None:
    with pytest.raises(ValueError, match=r"unfreeze_layers = 3: the encoder has 2 .*0 to 2"):
        fit(make_run("partial", {"unfreeze_layers": 3}))


# --------------------------------------------------------------------------- lora


def with_lora(run: RunContext, **settings: Any) -> RunContext:
    experiment = run.experiment.model_copy(update={"lora": LoraConfig(**settings)})
    return replace(run, experiment=experiment)


def adapter_tensors(run: RunContext) -> dict[str, torch.Tensor]:
    return load_file(str(run.folder / ADAPTER_DIR / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    "use_dora, where",
    [(True, "experiment"), (True, "run"), (False, "experiment"), (False, "run")],
)
def test_lora_uses_dora_when_use_dora(make_run: RunFactory, use_dora: bool, where: str) -> None:
    """``use_dora`` from the experiment's lora section, or from the run's own changes to it."""
    if where == "experiment":
        run = with_lora(make_run("lora"), use_dora=use_dora)
    else:
        run = with_lora(make_run("lora", {"lora": {"use_dora": use_dora}}), use_dora=not use_dora)
    fit(run)

    config = json.loads((run.folder / ADAPTER_DIR / "adapter_config.json").read_text())
    magnitudes = [name for name in adapter_tensors(run) if "lora_magnitude_vector" in name]
    assert config["use_dora"] is use_dora
    assert bool(magnitudes) is use_dora
    unmerged = LoraStrategy().load(run, merge=False).model
    loaded = {name for name, _ in unmerged.named_parameters()}
    assert any("lora_magnitude_vector" in name for name in loaded) is use_dora


def test_a_runs_lora_changes_are_validated_like_the_lora_section() -> None:
    with pytest.raises(ValidationError, match="lora_rank"):
        strategy_config("lora", {"lora": {"lora_rank": 4}})
    with pytest.raises(ValidationError, match="lora_r"):
        strategy_config("lora", {"lora": {"lora_r": 0}})


@pytest.mark.parametrize(
    "targets, adapted",
    [
        ("all-linear", {"query", "key", "value", "attention.output.dense", "intermediate.dense"}),
        (["query", "value"], {"query", "value"}),
    ],
)
def test_lora_adapts_the_target_modules_and_never_the_unused_pooler(
    make_run: RunFactory, targets: Any, adapted: set[str]
) -> None:
    run = with_lora(make_run("lora"), lora_target_modules=targets, lora_r=4)
    fit(run)

    names = {name.split(".lora_A")[0] for name in adapter_tensors(run) if ".lora_A" in name}
    for layer in range(2):
        for module in adapted:
            found = [n for n in names if f"layer.{layer}." in n and n.endswith(f".{module}")]
            assert found, (layer, module)
    assert not any("pooler" in n for n in names)
    if targets != "all-linear":
        assert not any(n.endswith(("key", "dense")) for n in names)
    shapes = {tuple(t.shape) for n, t in adapter_tensors(run).items() if ".lora_A" in n}
    assert {shape[0] for shape in shapes} == {4}  # lora_r reached PEFT


def test_lora_saves_an_adapter_and_the_head_not_the_encoder(make_run: RunFactory) -> None:
    run = make_run("lora")
    fit(run)

    saved = {path.name for path in (run.folder / ADAPTER_DIR).iterdir()}
    assert saved == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "head.safetensors",
        "classifier.json",
    }
    assert not (run.folder / "model").exists()
    assert run.facts["needs_base_model"] is True


# --------------------------------------------------------------------------- scratch


def test_scratch_has_the_base_architecture_with_fresh_random_weights(
    make_run: RunFactory, tiny_encoder: Path
) -> None:
    model, _ = random_classifier(make_run("scratch"), ScratchConfig())

    pretrained = base_weights(tiny_encoder)
    initial = model.encoder.state_dict()
    assert {name: tuple(t.shape) for name, t in pretrained.items()} == {
        name: tuple(initial[name].shape) for name in pretrained
    }
    matrices = [name for name, tensor in pretrained.items() if tensor.dim() >= 2]
    assert matrices
    assert [name for name in matrices if torch.equal(initial[name], pretrained[name])] == []


def test_scratch_initialisation_is_seeded(make_run: RunFactory) -> None:
    run = make_run("scratch")
    first, _ = random_classifier(run, ScratchConfig())
    second, _ = random_classifier(run, ScratchConfig())
    other, _ = random_classifier(
        replace(run, train=run.train.model_copy(update={"seed": 7})), ScratchConfig()
    )

    embeddings = "embeddings.word_embeddings.weight"
    assert torch.equal(
        first.encoder.state_dict()[embeddings], second.encoder.state_dict()[embeddings]
    )
    assert not torch.equal(
        first.encoder.state_dict()[embeddings], other.encoder.state_dict()[embeddings]
    )


@pytest.mark.parametrize(
    "strategy, needs_base_model", [("full", False), ("partial", False), ("scratch", False)]
)
def test_whole_model_strategies_save_every_weight(
    make_run: RunFactory, strategy: str, needs_base_model: bool
) -> None:
    run = make_run(strategy)
    fit(run)

    assert run.facts["needs_base_model"] is needs_base_model
    assert (run.folder / "model" / "model.safetensors").is_file()


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("strategy", ["full", "partial", "lora", "scratch"])
def test_default_train_precedence(strategy: str) -> None:
    """Loop defaults < the strategy's defaults < the experiment's train section <
    strategies.<name>.train."""
    defaults = strategy_config(strategy, {}).default_train()
    assert {"learning_rate", "num_epochs"} <= set(defaults)

    def merged(raw: dict[str, Any]) -> TrainConfig:
        experiment = ExperimentConfig.model_validate(raw)
        config = strategy_config(strategy, raw.get("strategies", {}).get(strategy))
        return merged_train_config(experiment.train, experiment.train.model_fields_set, config)

    plain = merged({})
    assert plain.learning_rate == defaults["learning_rate"]
    assert plain.num_epochs == defaults["num_epochs"]
    assert plain.seed == TrainConfig().seed  # not a strategy default: the loop's

    user = merged({"train": {"learning_rate": 0.002}})
    assert user.learning_rate == 0.002
    assert user.num_epochs == defaults["num_epochs"]

    own = merged(
        {
            "train": {"learning_rate": 0.002},
            "strategies": {strategy: {"train": {"learning_rate": 0.003}}},
        }
    )
    assert own.learning_rate == 0.003


def test_pretrained_strategies_start_from_the_pretrained_encoder(
    make_run: RunFactory, tiny_encoder: Path
) -> None:
    model, _ = pretrained_classifier(make_run("full"), FullConfig())

    assert isinstance(model, SentenceClassifier)
    initial = model.encoder.state_dict()
    for name, tensor in base_weights(tiny_encoder).items():
        assert torch.equal(initial[name], tensor), name
    assert float(model.scale.detach()) == 20.0
