"""Partial fine-tuning: the top ``unfreeze_layers`` transformer blocks and the head train.

Embeddings and the lower blocks keep their pretrained weights bit for bit. Lower layers hold
general features that transfer as they are, higher ones the task-specific ones (Yosinski et
al. 2014); Lee et al. 2019 ("What would Elsa do?") keep ~90% of full fine-tuning's quality on
GLUE tuning only BERT's top quarter of layers. Backpropagation
stops at the lowest trained block, so a step costs less than a full one, and the whole model
is still saved as ``model/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from annotated_types import Ge
from pydantic import Field
from torch import nn

from adaptlab.cost.workload import Workload, meta_classifier, trained_workload, training_lengths
from adaptlab.models.encoder import EncoderClassifier, load_classifier
from adaptlab.profile import StrategyProfile
from adaptlab.strategies.base import (
    FINE_TUNING_NEED,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.full import (
    MODEL_DIR,
    FullConfig,
    fit_and_save,
    is_head,
    is_pooler,
    layer_index,
    pretrained_classifier,
)
from adaptlab.train.classifier import freeze


class PartialConfig(FullConfig):
    """Full fine-tuning's head and loss, with only the top blocks trainable.

    ``learning_rate: 1e-4`` (twice full's): with the embeddings and lower blocks fixed the
    frozen features cannot drift, so larger steps are safe, and the few trained blocks must
    move further to adapt the same task.
    """

    unfreeze_layers: Annotated[int, Ge(0)] = Field(
        2,
        description="Transformer blocks, counted from the top, that train; 0 trains the head "
        "alone (on the frozen encoder, end to end).",
    )

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "learning_rate": 1e-4}


def layer_count(encoder: nn.Module) -> int:
    """The number of transformer blocks, read from the parameter names."""
    indices = [layer_index(name) for name, _ in encoder.named_parameters()]
    return max((index for index in indices if index is not None), default=-1) + 1


def trains_top_layers(
    run: RunContext[ClassificationTask, PartialConfig], encoder: nn.Module
) -> Callable[[str], bool]:
    """Whether a ``SentenceClassifier`` parameter trains: the head and the top blocks do."""
    config = run.config
    layers, unfreeze_layers = layer_count(encoder), config.unfreeze_layers
    if unfreeze_layers > layers:
        raise ValueError(
            f"strategies.{run.name}.unfreeze_layers = {unfreeze_layers}: the encoder has "
            f"{layers} transformer blocks; allowed 0 to {layers}"
        )
    first = layers - unfreeze_layers

    def trains(name: str) -> bool:
        index = layer_index(name)
        in_top = index is not None and index >= first and not is_pooler(name)
        return is_head(name) or in_top

    return trains


class PartialStrategy:
    name: ClassVar[str] = "partial"
    config_type: ClassVar[type[StrategyConfig]] = PartialConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="top_blocks",
        data_need=FINE_TUNING_NEED,
        teaches=True,
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, PartialConfig]) -> EncoderClassifier:
        config = run.config
        model, tokenizer = pretrained_classifier(run, config)
        freeze(model, except_=trains_top_layers(run, model.encoder))
        return fit_and_save(run, model, tokenizer, config)

    def workload(self, run: RunContext[ClassificationTask, PartialConfig]) -> Workload:
        model = meta_classifier(run.base_model, run.task.num_labels, run.experiment.model.revision)
        freeze(model, except_=trains_top_layers(run, model.encoder))
        return trained_workload("top_blocks", model, training_lengths(run), run.train)

    def load(self, run: RunContext) -> EncoderClassifier:
        return load_classifier(run.folder / MODEL_DIR)


register(PartialStrategy)
