"""The models a server holds, and which one answers a request.

A request names a model (its ``model`` field); a :class:`Router` turns that name and the
request's routing key into the :class:`ServedModel` that answers. :class:`DirectRouter`
answers with the model named. :class:`adaptlab.serve.canary.CanaryRouter` (a weighted, sticky
split between a champion and a candidate, by a hash of the key) implements the same
:class:`Router` over the same :class:`ModelTable`; the server state builds it when it starts
with a canary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from adaptlab.predict import LoadedModel
from adaptlab.serve.protocol import ApiError, unknown_model

T = TypeVar("T")

KEY_HEADER = "x-adaptlab-route-key"
"""The header a client sets to be routed by a key of its own (a user or session id) rather
than by the request's body."""


@dataclass(eq=False)
class ServedModel:
    """One loaded model and the names clients reach it by."""

    name: str
    """What clients send as ``model``: the registered reference as given (``intent@champion``)
    or the run's name."""
    loaded: LoadedModel
    aliases: tuple[str, ...] = ()
    """Other names it answers to: the registered version it resolved to (``intent:3``)."""
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def is_classifier(self) -> bool:
        return self.loaded.is_classifier

    @property
    def parent(self) -> str:
        """The base model the run adapted."""
        return self.loaded.record.manifest.base_model

    def call(self, predict: Callable[[LoadedModel], T]) -> T:
        """``predict(loaded)`` while holding the lock of its weights (in a worker thread): one
        prediction at a time per model, or per base for adapters sharing one (a Hugging Face
        fast tokenizer shared between threads fails, "Already borrowed", and a CPU's cores are
        better spent on one batch than split)."""
        with self.loaded.lock:
            return predict(self.loaded)


def served_model(target: str, loaded: LoadedModel) -> ServedModel:
    """``loaded`` under the name a client sends: a run folder's run name, or a registered
    reference as given (also answering to the version it resolved to)."""
    if Path(target).is_dir():  # as predict.open_model tells a folder from a reference
        return ServedModel(loaded.record.name, loaded)
    aliases = (loaded.source,) if loaded.source != target else ()
    return ServedModel(target, loaded, aliases)


class ModelTable:
    """The models a server holds, by every name they answer to."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        self.models = tuple(models)
        self._by_name: dict[str, ServedModel] = {}
        for model in self.models:
            for name in (model.name, *model.aliases):
                other = self._by_name.get(name)
                if other is not None and other is not model:
                    raise ValueError(
                        f"two models are named '{name}' ({other.loaded.source} and "
                        f"{model.loaded.source}): serve them by registered names instead"
                    )
                self._by_name[name] = model

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> ServedModel:
        """The model named ``name``; a 404 in OpenAI's shape when there is none."""
        model = self._by_name.get(name)
        if model is None:
            raise unknown_model(name, [m.name for m in self.models])
        return model


class Router(Protocol):
    """Picks the model that answers a request."""

    def pick(self, requested: str, key: bytes) -> ServedModel:
        """The model that answers a request for ``requested``; ``key`` (the routing header's
        value, else the body) keeps a client on the same side of a split."""
        ...


class DirectRouter:
    """The model named, always."""

    def __init__(self, table: ModelTable) -> None:
        self.table = table

    def pick(self, requested: str, key: bytes) -> ServedModel:
        return self.table.get(requested)


def require_kind(model: ServedModel, *, classifier: bool, route: str) -> ServedModel:
    """``model`` when it answers ``route``; a 422 naming ``model`` otherwise."""
    if model.is_classifier == classifier:
        return model
    if model.is_classifier:
        kind, use = "a classifier", "/v1/classify"
    else:
        kind, use = "a generator", "/v1/chat/completions or /v1/completions"
    raise ApiError(
        422,
        f"model '{model.name}' is {kind} ({model.loaded.record.strategy}): {route} does not "
        f"serve it; use {use}",
        param="model",
        code="wrong_model_kind",
    )
