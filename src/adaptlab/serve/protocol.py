"""What the model server reads and writes: OpenAI's and vLLM's shapes, and nothing looser.

Requests are typed models that refuse every field they do not know (422 naming it) and every
value adaptlab would not honour: a run answers greedily with the settings ``compare`` scored,
so ``temperature`` > 0, ``n`` > 1, stop sequences, penalties, log-probabilities and tools are
refused rather than silently ignored. ``seed`` and ``user`` are accepted (greedy decoding is
reproducible whatever the seed; ``user`` is only a label).

Responses:

- ``POST /v1/chat/completions`` and ``/v1/completions``: OpenAI's ``chat.completion`` and
  ``text_completion`` objects (``id``, ``object``, ``created``, ``model``, ``choices`` with
  ``index``, ``message`` or ``text``, ``finish_reason`` ``stop`` | ``length``, ``usage`` with
  ``prompt_tokens``, ``completion_tokens``, ``total_tokens``); streamed as
  ``chat.completion.chunk`` (or ``text_completion``) objects, the usage in a last chunk with no
  choices when ``stream_options.include_usage`` asks for it, as OpenAI does.
- ``POST /v1/classify``: vLLM's classification response (``id``, ``object: "list"``,
  ``created``, ``model``, ``data`` of ``index``, ``label``, ``probs``, ``num_classes``, and
  ``usage``). ``probs`` lists every class's probability in the model's label order, which each
  item also carries as ``labels`` (an adaptlab addition: vLLM clients know the order from the
  model's config, adaptlab's are told). ``usage`` is ``null``: not every adaptlab classifier
  reads tokens (TF-IDF, for one), so there is no token count to report.
- Errors, every one: OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from annotated_types import Ge
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from adaptlab.predict import Answer, LabelPrediction

# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An answer other than 2xx, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unknown_model(name: str, known: Sequence[str]) -> ApiError:
    shown = ", ".join(known) or "none"
    return ApiError(
        404,
        f"The model '{name}' does not exist on this server; it serves: {shown}",
        param="model",
        code="model_not_found",
    )


# --------------------------------------------------------------------------- requests


def _listed(value: Any) -> Any:
    """One string as a list of one: ``input`` and ``prompt`` take either."""
    return [value] if isinstance(value, str) else value


Texts = Annotated[list[str], BeforeValidator(_listed), Field(min_length=1)]

GREEDY = "adaptlab answers greedily with the run's decoding settings"
UNHONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "temperature": ((None, 0), f"{GREEDY}: leave temperature out or set it to 0"),
    "top_p": ((None, 1), f"{GREEDY}: leave top_p out or set it to 1"),
    "n": ((None, 1), "one answer per request: leave n out or set it to 1"),
    "best_of": ((None, 1), "one answer per request: leave best_of out or set it to 1"),
    "stop": ((None, []), "stop sequences are not supported: the run's stop tokens end answers"),
    "presence_penalty": ((None, 0), f"{GREEDY}: penalties are not supported"),
    "frequency_penalty": ((None, 0), f"{GREEDY}: penalties are not supported"),
    "logit_bias": ((None, {}), f"{GREEDY}: logit_bias is not supported"),
    "logprobs": ((None, False), "log-probabilities are not returned"),
    "top_logprobs": ((None, 0), "log-probabilities are not returned"),
    "echo": ((None, False), "the prompt is not echoed"),
    "suffix": ((None, ""), "a suffix (insertion) is not supported"),
}
"""Fields OpenAI defines that adaptlab cannot honour: the values it accepts (those that change
nothing) and why others are refused."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send the token counts in a last chunk (with no choices) before ``[DONE]``."""


class GenerationRequest(BaseModel):
    """The fields chat completions and completions share."""

    model_config = ConfigDict(extra="forbid")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Ge(1)] | None = None
    """At most the run's ``max_new_tokens``: it may lower the run's limit, not raise it."""
    seed: int | None = None
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None

    @field_validator(
        "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs",
    )  # fmt: skip
    @classmethod
    def _honoured(cls, value: Any, info: ValidationInfo) -> Any:
        return honoured(value, info)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def token_limit(self) -> tuple[str, int] | None:
        """The field that limits the answer's length and its value, if one was given."""
        return ("max_tokens", self.max_tokens) if self.max_tokens is not None else None


def honoured(value: Any, info: ValidationInfo) -> Any:
    """``value`` when adaptlab honours it for field ``info.field_name``; else ValueError."""
    allowed, why = UNHONOURED[str(info.field_name)]
    if value in allowed:
        return value
    raise ValueError(why)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(GenerationRequest):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Ge(1)] | None = None
    top_logprobs: int | None = None

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("must end with a user message: the model answers the last one")
        return messages

    @field_validator("top_logprobs")
    @classmethod
    def _honoured_here(cls, value: Any, info: ValidationInfo) -> Any:
        return honoured(value, info)

    def token_limit(self) -> tuple[str, int] | None:
        if self.max_completion_tokens is not None:
            return ("max_completion_tokens", self.max_completion_tokens)
        return super().token_limit()

    def conversation(self) -> list[dict[str, Any]]:
        return [message.model_dump() for message in self.messages]


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions``: each prompt is asked as one user turn (through the run's chat
    template, as ``adaptlab predict --text`` asks it)."""

    prompt: Texts
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("echo", "suffix", "best_of")
    @classmethod
    def _honoured_here(cls, value: Any, info: ValidationInfo) -> Any:
        return honoured(value, info)

    def conversations(self) -> list[list[dict[str, Any]]]:
        return [[{"role": "user", "content": prompt}] for prompt in self.prompt]


class ClassifyRequest(BaseModel):
    """``POST /v1/classify`` (vLLM's request: ``model`` and ``input``, a text or a list)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: Texts
    user: str | None = None


# --------------------------------------------------------------------------- responses


def finish_reason(answer: Answer) -> str:
    return "stop" if answer.finished else "length"


def usage(answers: Sequence[Answer]) -> dict[str, int]:
    prompt = sum(answer.prompt_tokens for answer in answers)
    completion = sum(answer.completion_tokens for answer in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_completion(ident: str, model: str, created: int, answer: Answer) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": answer.text},
        "logprobs": None,
        "finish_reason": finish_reason(answer),
    }
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage([answer]),
    }


def completion(ident: str, model: str, created: int, answers: Sequence[Answer]) -> dict[str, Any]:
    choices = [
        {"index": i, "text": a.text, "logprobs": None, "finish_reason": finish_reason(a)}
        for i, a in enumerate(answers)
    ]
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(answers),
    }


class Chunks:
    """The objects of one streamed answer, in order: :meth:`opening` (if any), one
    :meth:`text` per piece, :meth:`closing`, then :meth:`usage` when asked for."""

    def __init__(self, ident: str, model: str, created: int, *, chat: bool) -> None:
        self.head = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self.chat = chat

    def opening(self) -> dict[str, Any] | None:
        """Chat's first chunk names the role; a completion stream has none."""
        return self._choice({"role": "assistant", "content": ""}, None) if self.chat else None

    def text(self, piece: str) -> dict[str, Any]:
        return self._choice({"content": piece} if self.chat else piece, None)

    def closing(self, answer: Answer) -> dict[str, Any]:
        return self._choice({} if self.chat else "", finish_reason(answer))

    def usage(self, answer: Answer) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage([answer])}

    def _choice(self, content: Any, finish: str | None) -> dict[str, Any]:
        key = "delta" if self.chat else "text"
        choice = {"index": 0, key: content, "logprobs": None, "finish_reason": finish}
        return {**self.head, "choices": [choice]}


def classification(
    ident: str,
    model: str,
    created: int,
    predictions: Sequence[LabelPrediction],
    labels: Sequence[str],
) -> dict[str, Any]:
    data = [
        {
            "index": i,
            "label": prediction.label,
            "probs": [prediction.probabilities.get(name, 0.0) for name in labels],
            "num_classes": len(labels),
            "labels": list(labels),
            # adaptlab's additions: a rejected out-of-scope query; a multi-label run's label set
            **({"rejected": True} if prediction.rejected else {}),
            **(
                {"predicted_labels": list(prediction.labels)}
                if prediction.labels is not None
                else {}
            ),
        }
        for i, prediction in enumerate(predictions)
    ]
    return {
        "id": ident,
        "object": "list",
        "created": created,
        "model": model,
        "data": data,
        "usage": None,
    }
