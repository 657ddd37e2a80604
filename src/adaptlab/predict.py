"""Prediction with a finished run or a registered version: the one load-and-predict path.

``adaptlab predict``, ``adaptlab export`` and the server (``adaptlab serve``) load a model only
through :func:`open_model`, and predict only through :func:`classify` and :func:`answer` (or
:func:`answer_streaming`, the same decoding for one request, its text handed over piece by
piece), so what the command line prints is what the server answers.

A run is loaded from its folder alone: :func:`load_run` reads it through
:func:`adaptlab.runs.read_run`, rebuilds the settings it ran with from its ``config.yaml``, and
hands the folder to its registered strategy's ``load`` — the strategy is the one place that
knows what it saved. The training and eval data are not read: a run's task is rebuilt without
its examples (its label names come from the manifest). A registered version (``NAME@ALIAS``,
``NAME:VERSION``) is first written out of the registry into a temporary folder, every file
checked against its sha256 as it is copied (a flipped byte is refused, naming the file).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from adaptlab.config import ExperimentConfig, TrainConfig
from adaptlab.data.formats import read_rows
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.evaluate import open_set
from adaptlab.evaluate.generation import (
    DecodingConfig,
    _generation,
    _greedy_settings,
    generate_chat,
    stop_token_ids,
)
from adaptlab.evaluate.grounding import RetrievalAugmented
from adaptlab.models.shared_base import SharedBases, weights_lock
from adaptlab.paths import cache_dir
from adaptlab.registry import Registry
from adaptlab.registry.catalog import registry_root
from adaptlab.registry.names import parse_reference
from adaptlab.runs import CONFIG, RunError, RunRecord, read_run
from adaptlab.strategies.base import (
    ClassificationTask,
    Classifier,
    GenerativeTask,
    Generator,
    Messages,
    RunContext,
    Task,
    resolve_run,
)
from adaptlab.train.chat import encode_prompt

Model = Classifier | Generator


@dataclass(frozen=True)
class LoadedModel:
    """A run's model, loaded and ready to predict."""

    record: RunRecord
    model: Model
    source: str
    """What was opened: the run folder, or the registered version (``intent:3``)."""
    lock: threading.RLock = field(default_factory=threading.RLock, compare=False)
    """Held for one prediction at a time on these weights (a fast tokenizer shared between
    threads fails): the model's own, or the one of the base it shares with other runs."""

    @property
    def is_classifier(self) -> bool:
        return not isinstance(self.model, Generator)

    @property
    def label_names(self) -> tuple[str, ...]:
        """A classifier's labels, in the order of its probability columns; empty otherwise."""
        return tuple(getattr(self.model, "label_names", ()))

    @property
    def max_new_tokens(self) -> int | None:
        """A generator's longest answer in tokens (its run's decoding setting); None for a
        classifier."""
        model = self.model
        return model.decoding.max_new_tokens if isinstance(model, Generator) else None


@dataclass(frozen=True)
class LabelPrediction:
    """A classifier's answer to one text."""

    label: str
    probability: float
    """The label's probability; for a rejected query, its score (the largest in-scope
    probability), which fell under the run's threshold."""
    probabilities: dict[str, float]
    """The ``top_k`` most probable labels with their probabilities, most probable first."""
    rejected: bool = False
    """Out of scope: the run rejects it (``label`` is the out-of-scope label)."""
    labels: tuple[str, ...] | None = None
    """A multi-label run's answer: every label whose probability reaches its threshold (tuned
    on the validation split), most probable first; empty for "no intent". None for a
    single-label run (``label`` is its answer)."""

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "label": self.label,
            "probability": self.probability,
            "probabilities": self.probabilities,
        }
        if self.rejected:
            row["rejected"] = True
        if self.labels is not None:
            row["labels"] = list(self.labels)
        return row


@dataclass(frozen=True)
class Answer:
    """A generator's answer to one request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finished: bool
    """True when the model stopped by itself; False when ``max_new_tokens`` cut it."""
    context: list[str] = field(default_factory=list)
    """The ids of the chunks shown with the request (retrieval runs), best first."""

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "answer": self.text,
            "finished": self.finished,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.context:
            row["context"] = self.context
        return row


# --------------------------------------------------------------------------- loading


def load_run(
    folder: Path, source: str | None = None, bases: SharedBases | None = None
) -> LoadedModel:
    """The model of the finished run in ``folder``; :class:`RunError` naming the file at fault
    (an unfinished run, a config that no longer validates, an unknown strategy).

    ``bases``: base models loaded for other runs; an adapter run of one of them is added to it,
    unmerged, instead of loading the base again (its :attr:`LoadedModel.lock` is then the
    base's)."""
    record = read_run(folder, predictions=False)
    try:
        strategy, _ = resolve_run(record.name, {"strategy": record.strategy})
    except KeyError as exc:
        raise RunError(f"{folder / 'manifest.json'}: field 'strategy': {exc.args[0]}") from None
    model = strategy.load(loading_context(record, bases))
    shared = weights_lock(model.lm) if isinstance(model, Generator) else None
    source = source or str(folder)
    return LoadedModel(record, model, source, shared or threading.RLock())


def loading_context(record: RunRecord, bases: SharedBases | None = None) -> RunContext[Any]:
    """The :class:`RunContext` a strategy's ``load`` reads: the run's folder and the settings
    of its ``config.yaml``, with a task that carries no examples."""
    path = record.folder / CONFIG
    try:
        resolved = yaml.safe_load(record.config_yaml) if record.config_yaml else None
    except yaml.YAMLError as exc:
        raise RunError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(resolved, dict):
        raise RunError(f"{path}: missing or not a mapping; the run cannot be loaded without it")
    sections = {key: resolved.get(key) or {} for key in ("model", "lora", "data", "train")}
    settings = {**(resolved.get("strategy_config") or {}), "strategy": record.strategy}
    try:
        experiment = ExperimentConfig.model_validate(sections)
        _, config = resolve_run(record.name, settings)
        train = TrainConfig.model_validate(sections["train"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RunError(f"{path}: field '{where}': {first['msg']}") from None
    return RunContext(
        record.name,
        record.folder,
        _task_without_examples(record),
        experiment,
        config,
        train,
        record.folder.parent,
        bases=bases,
    )


def _task_without_examples(record: RunRecord) -> Task:
    manifest = record.manifest
    if record.kind == "classification":
        names = record.manifest.raw.get("label_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RunError(
                f"{record.folder / 'manifest.json'}: field 'label_names' is missing: the run "
                "was written before adaptlab recorded its labels; run compare again to load it"
            )
        empty = np.zeros(0, dtype=np.int64)
        return ClassificationTask(
            tuple(names), [], empty, [], empty, manifest.train_sha256, manifest.eval_sha256
        )
    return GenerativeTask(
        (), [], [], [], manifest.train_sha256, manifest.eval_sha256,
        eval_references=None if record.kind == "generative" else [],
    )  # fmt: skip


@contextmanager
def open_model(
    target: str | Path, registry: Path | None = None, bases: SharedBases | None = None
) -> Iterator[LoadedModel]:
    """The model of ``target``: a finished run folder, or a registered version
    (``NAME``, ``NAME@ALIAS``, ``NAME:VERSION``) in the registry at ``registry`` (else
    ``$ADAPTLAB_REGISTRY``, else the cache's). A version is written into a temporary folder,
    each file checked against its sha256, and the folder is removed when the block ends.
    ``bases``: as for :func:`load_run`."""
    folder = Path(target)
    if folder.is_dir():
        yield load_run(folder, bases=bases)
        return
    if "/" in str(target) or "\\" in str(target) or folder.exists():  # names hold no separator
        raise RunError(f"{target}: no such run folder")
    reference = parse_reference(str(target))
    catalog = Registry(registry_root(registry))
    version = catalog.version(reference)
    scratch = cache_dir() / "checkouts"
    scratch.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f"{version.name}-{version.version}-", dir=scratch))
    try:
        # By number: an alias moved meanwhile does not swap the files under the loaded model.
        opened = catalog.open_version(str(version), holder / "run")
        yield load_run(opened, source=str(version), bases=bases)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


# --------------------------------------------------------------------------- predicting


def classify(loaded: LoadedModel, texts: Sequence[str], top_k: int = 5) -> list[LabelPrediction]:
    """Each text's most probable label and the ``top_k`` most probable with their
    probabilities."""
    model = loaded.model
    if isinstance(model, Generator):
        raise ValueError(f"{loaded.source} is a generator ({loaded.record.strategy}): it answers")
    if not texts:
        return []
    probabilities = np.asarray(model.predict_proba(list(texts)), dtype=np.float64)
    names = list(model.label_names)
    shown = max(1, min(top_k, len(names)))
    if loaded.record.eval.multi_label is not None:
        return _label_sets(loaded.record.eval.multi_label, names, probabilities, shown)
    section = loaded.record.eval.out_of_scope
    rejected = np.zeros(len(probabilities), dtype=bool)
    if section is not None:  # the run's rejection rule: its threshold, its out-of-scope column
        rejected = open_set.predictions(probabilities, open_set.Rejection.from_dict(section)) < 0
    predictions = []
    for row, refused in zip(probabilities, rejected, strict=True):
        order = np.argsort(-row, kind="stable")[:shown]
        ranked = {names[i]: float(row[i]) for i in order}
        best = int(order[0])
        if refused:
            assert section is not None
            score = open_set.in_scope_scores(row[None, :], section["out_of_scope_column"])[0]
            predictions.append(LabelPrediction(section["label"], float(score), ranked, True))
        else:
            predictions.append(LabelPrediction(names[best], float(row[best]), ranked))
    return predictions


def _label_sets(
    section: Mapping[str, Any], names: Sequence[str], probabilities: np.ndarray, shown: int
) -> list[LabelPrediction]:
    """A multi-label run's answers: the labels reaching their thresholds (``eval.json``'s
    ``multi_label.thresholds``), the most probable label and the ``shown`` most probable."""
    thresholds = np.array([float(section["thresholds"][name]) for name in names])
    predictions = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")
        chosen = tuple(names[i] for i in order if row[i] >= thresholds[i])
        ranked = {names[i]: float(row[i]) for i in order[:shown]}
        best = int(order[0])
        predictions.append(LabelPrediction(names[best], float(row[best]), ranked, labels=chosen))
    return predictions


def answer(
    loaded: LoadedModel, requests: Sequence[Messages], *, max_new_tokens: int | None = None
) -> list[Answer]:
    """The generator's answer to each chat request (greedy, with the run's decoding settings:
    the answers ``compare`` scored). ``max_new_tokens`` may lower the run's limit, never raise
    it."""
    model = _generator(loaded)
    if not requests:
        return []
    conversations, contexts = _conversations(model, requests)
    generations = generate_chat(model.lm, conversations, _decoding(model, max_new_tokens))
    tokenizer = model.lm.tokenizer
    return [
        Answer(
            _plain(tokenizer, generation.token_ids, generation.finished),
            generation.prompt_tokens,
            generation.generated_tokens,
            generation.finished,
            shown,
        )
        for generation, shown in zip(generations, contexts, strict=True)
    ]


def answer_streaming(
    loaded: LoadedModel,
    request: Messages,
    on_text: Callable[[str], None],
    *,
    max_new_tokens: int | None = None,
    stop: threading.Event | None = None,
) -> Answer:
    """:func:`answer` for one request, calling ``on_text`` with each new piece of the answer's
    text as it is decoded (in this thread), and returning the same :class:`Answer`.

    The pieces add up to ``Answer.text`` (the tokenizer's decoding of every token so far is
    compared with what was already sent, so a piece never splits a multi-byte character).
    Decoding is :func:`answer`'s for a batch of one: the prompt unpadded, the run's greedy
    settings. Setting ``stop`` ends decoding after the current token (a client went away, a
    time limit passed): the answer is then unfinished.
    """
    from transformers import StoppingCriteriaList

    model = _generator(loaded)
    conversations, contexts = _conversations(model, [request])
    lm = model.lm
    prompt = encode_prompt(lm.tokenizer, conversations[0])
    if not prompt:
        raise ValueError("the request encodes to no tokens: a prompt needs at least one")
    stops = stop_token_ids(lm)
    settings = _greedy_settings(lm, _decoding(model, max_new_tokens), stops)
    pieces = _TextPieces(lm.tokenizer, stops, on_text)
    network: Any = lm.model
    device = next(network.parameters()).device
    with torch.inference_mode():
        output = network.generate(
            input_ids=torch.tensor([prompt], device=device),
            attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=device),
            generation_config=settings,
            streamer=pieces,
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop or threading.Event())]),
        )
    generation = _generation(lm, prompt, output[0, len(prompt) :].tolist(), stops)
    text = _plain(lm.tokenizer, generation.token_ids, generation.finished)
    pieces.finish(text)
    return Answer(
        text, generation.prompt_tokens, generation.generated_tokens, generation.finished,
        contexts[0],
    )  # fmt: skip


def _generator(loaded: LoadedModel) -> Generator:
    model = loaded.model
    if not isinstance(model, Generator):
        raise ValueError(f"{loaded.source} is a classifier ({loaded.record.strategy}): it labels")
    return model


def _decoding(model: Generator, max_new_tokens: int | None) -> DecodingConfig:
    """The run's decoding settings, with at most ``max_new_tokens`` tokens per answer."""
    decoding = model.decoding
    if max_new_tokens is None:
        return decoding
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens}: must be >= 1")
    limit = min(max_new_tokens, decoding.max_new_tokens)
    return decoding.model_copy(update={"max_new_tokens": limit})


def _conversations(
    model: Generator, requests: Sequence[Messages]
) -> tuple[list[Messages], list[list[str]]]:
    """What the model continues for each request, and the ids of the chunks each was shown
    (retrieval runs; empty lists otherwise)."""
    if isinstance(model, RetrievalAugmented):
        retriever = model.retrievers[model.retriever_kind]
        hits = retriever.retrieve([model.query(r) for r in requests], model.k)
        conversations = model.grounded_conversations(requests, hits)
        return conversations, [[model.chunk_ids[i] for i, _ in shown] for shown in hits]
    return model.conversations(requests), [[] for _ in requests]


class _TextPieces:
    """A ``generate`` streamer (transformers' ``BaseStreamer`` protocol: ``put``, ``end``) that
    hands each new piece of the answer's plain text to ``on_text``.

    Each piece is the growth of the stripped decoding of the tokens so far (stop tokens left
    out), sent only while it extends what was sent: a partly decoded character (``\ufffd``) or
    a tokenizer clean-up that rewrites earlier text waits for :meth:`finish`."""

    def __init__(self, tokenizer: Any, stops: Sequence[int], on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.stops = set(stops)
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate's first call hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        kept = [token for token in self.ids if token not in self.stops]
        text = str(self.tokenizer.decode(kept, skip_special_tokens=True)).strip()
        if not text.endswith("\ufffd"):
            self._send(text)

    def end(self) -> None:
        pass

    def finish(self, text: str) -> None:
        """Send what is left of the final ``text``."""
        self._send(text)

    def _send(self, text: str) -> None:
        if not text.startswith(self.sent) or text == self.sent:
            return
        piece, self.sent = text[len(self.sent) :], text
        self.on_text(piece)


class _StopWhenSet:
    """A stopping criterion: stop every row once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        stopped = self.event.is_set()
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool, device=input_ids.device)


def _plain(tokenizer: Any, token_ids: Sequence[int], finished: bool) -> str:
    """The answer's text without special tokens (the stop token is the last id when it
    finished)."""
    ids = list(token_ids[:-1] if finished else token_ids)
    return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()


# --------------------------------------------------------------------------- inputs


def read_inputs(path: Path, loaded: LoadedModel) -> list[str] | list[Messages]:
    """The texts (classifier) or chat requests (generator) of a JSONL/CSV/JSON file.

    A classifier reads each row's ``text`` (or the run's ``data.text_field``); a generator
    reads ``messages`` (the conversation so far; a trailing assistant turn is the reference
    and is dropped) or a ``text`` asked as one user turn. Every bad row is named, with its
    file and line, in one :class:`DataError`; nothing is predicted then.
    """
    field_name = _text_field(loaded)
    values: list[Any] = []
    problems: list[DataIssue] = []
    for line, row in read_rows(path):
        if isinstance(row, DataIssue):
            problems.append(row)
            continue
        try:
            values.append(_input(row, field_name, chat=not loaded.is_classifier))
        except _BadInput as exc:
            problems.append(DataIssue(str(path), line, "bad_input", str(exc), field=exc.field))
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{path}: {len(problems)} rows cannot be predicted:\n{shown}{more}")
    if not values:
        raise DataError(f"{path}: no rows to predict")
    return values


def _text_field(loaded: LoadedModel) -> str:
    try:
        resolved = yaml.safe_load(loaded.record.config_yaml) or {}
    except yaml.YAMLError:
        resolved = {}
    configured = (resolved.get("data") or {}).get("text_field") if loaded.is_classifier else None
    return str(configured or "text")


class _BadInput(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _input(row: Mapping[str, Any], field_name: str, *, chat: bool) -> Any:
    """The row's text (classifier) or request (generator); :class:`_BadInput` when it has
    none."""
    if chat and "messages" in row:
        return _request(row["messages"])
    text = row.get(field_name)
    if not isinstance(text, str) or not text.strip():
        wanted = "'messages' or 'text'" if chat else f"'{field_name}'"
        raise _BadInput(f"expected {wanted}: a non-empty string", field_name)
    return [{"role": "user", "content": text}] if chat else text


def _request(messages: Any) -> Messages:
    if not isinstance(messages, list) or not messages:
        raise _BadInput("expected a non-empty list of {role, content} objects", "messages")
    turns: Messages = []
    for position, message in enumerate(messages):
        if (
            not isinstance(message, Mapping)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise _BadInput(
                "expected {role: system|user|assistant, content: string}", f"messages[{position}]"
            )
        turns.append({"role": message["role"], "content": message["content"]})
    if turns[-1]["role"] == "assistant":
        turns = turns[:-1]  # a reference answer: what the model is asked is what precedes it
    if not turns or turns[-1]["role"] != "user":
        raise _BadInput("must end with a user turn (or a user turn and its answer)", "messages")
    return turns


def as_input_list(texts: Sequence[str], loaded: LoadedModel) -> list[str] | list[Messages]:
    """``--text`` values as the model's inputs: texts, or one user turn each."""
    if loaded.is_classifier:
        return list(texts)
    return [[{"role": "user", "content": text}] for text in texts]


def predict(loaded: LoadedModel, inputs: Sequence[Any], top_k: int = 5) -> list[dict[str, Any]]:
    """One JSON-ready row per input: the labels (classifier) or answer (generator)."""
    if loaded.is_classifier:
        return [p.to_dict() for p in classify(loaded, inputs, top_k)]
    return [a.to_dict() for a in answer(loaded, inputs)]
