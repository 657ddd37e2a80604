"""The well-prompted base: an instruction-tuned LLM is shown the label list and asked for one.

Nothing is trained. The system message holds an instruction and the label names as words; the
user message is the text; the answer is a label. Instead of generating an answer and parsing
it, every label is scored as the assistant's answer (by default: its probability when decoding
may only produce a label), so the prediction is always a valid label and every label gets a
probability, which the calibration metrics need. Scoring is in :mod:`adaptlab.models.causal_lm`:
the system message is encoded once, and each text costs one forward pass over its own tokens
plus a trie of the answers.

``few_shot_k`` > 0 adds the k training examples nearest to the text (by a sentence encoder) as
earlier user/assistant turns, so the model sees how similar texts were labelled.

On label sets (multi-label data: a text may carry none, one or several labels) the system
message asks for every category that applies, best fitting first, or ``none``; ``none`` joins the
answers scored, so a text that fits no label can say so instead of handing its probability to
some label. Scoring is unchanged: ``p`` is each answer's probability of being the model's first
answer, at the same cost as one label (ONE forward pass over the text's tokens plus the answer
trie's branch nodes). A label's own probability is that of being named in either of two
answers drawn from ``p`` (the union of two samples, as in self-consistency, Wang et al. 2023)::

    P(label i) = 1 - (1 - p_i)^2 = p_i * (2 - p_i)

Two draws are the fewest at which two labels that share a text can both pass the default
threshold 0.5 (p = 0.5 each gives 0.75 each); the transform is increasing in ``p_i``, so each
label ranks the texts as the model's first answer does, which is what the threshold tuned per
label on the validation split reads. Few-shot turns answer with the example's categories,
comma-separated, or ``none``.

Asking every label its own yes/no question ("<text> Category: <label>" -> P(yes) / (P(yes) +
P(no)), all labels in one pass over a trie of the questions) was built, measured and dropped:
on NLU++ hotels (its 40 intents; thresholds tuned on 50 training texts, 50 test texts)
SmolLM2-135M answered yes or no whatever the category: mean per-label AUROC 0.40 against 0.74
here, micro-F1 0.06 against 0.16, per-label ECE 0.71 against 0.06; and the pass fed 311 trie
tokens per text instead of 4, 1.43 s per text against 0.14 s on one CPU thread. On the whole
NLU++ hotels test set (200 texts; thresholds tuned on 150 training texts) this method scores
micro-F1 0.170, macro-F1 0.247, per-label ECE 0.052.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from annotated_types import Ge, Gt
from pydantic import Field

from adaptlab.models.bundled import MINILM, SMOLLM2
from adaptlab.models.causal_lm import CausalLM, PromptCache, TokenTree
from adaptlab.models.encoder import softmax
from adaptlab.models.retrieval import ExampleIndex
from adaptlab.paths import write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import ClassificationTask, RunContext, StrategyConfig, register
from adaptlab.strategies.zero_shot import label_text

PROMPT = "prompt.json"
EXAMPLES = "few_shot_examples.safetensors"
EXAMPLE_TEXTS = "few_shot_texts.json"
SENTINEL = "\x00adaptlab-text\x00"  # stands in for the text while the template is split
TOKEN_SAMPLE = 200  # training texts whose prompts are counted for the cost facts

Example = tuple[str, str]  # a labelled text shown as a few-shot turn: (text, answer)

DEFAULT_INSTRUCTION = (
    "You are a text classifier. Read the user's message and reply with the one category from "
    "the list below that fits it best. Reply with the category name only, exactly as written."
)
MULTI_LABEL_INSTRUCTION = (
    "You are a text classifier. Read the user's message and reply with the categories from the "
    "list below that apply to it, the best fitting first, separated by commas. A message may "
    "belong to several categories or to none of them: reply none if no category applies. Reply "
    "with category names only, exactly as written."
)
NO_LABEL = "none"  # label sets: the answer for a text that carries no label


class LlmPromptConfig(StrategyConfig):
    model: str = Field(
        SMOLLM2, description="Instruction-tuned causal LM (bundled name, local folder or hub)."
    )
    instruction: str = Field(
        DEFAULT_INSTRUCTION,
        description="Shown above the label list. On label sets the default is replaced by one "
        "asking for every category that applies, or none (several or none may apply).",
    )
    numbered: bool = Field(False, description="List labels as '1. name' instead of '- name'.")
    descriptions: dict[str, str] = Field(
        default_factory=dict,
        description="Optional words per label id, used instead of its name (list and answer).",
    )
    # "constrained" is the probability of the label when the model may only answer with a
    # label: its next-token probabilities renormalised over the allowed tokens at each branch
    # of the label trie. Tokens after the last branch are forced, so they cost nothing and a
    # long label gains nothing from its predictable tail. "sum" is log P(answer | prompt), the
    # model's unconstrained probability of the whole answer; "mean" divides by its length,
    # which lets a long label win once its first tokens fit. On 200 banking77 test texts
    # SmolLM2 scored 15.5% / 9.0% / 1.0% accuracy (ECE 0.21 / 0.31 / 0.86) with them, and
    # constrained runs ~3x less compute per text (it feeds the trie only up to its branches).
    scoring: Literal["constrained", "sum", "mean"] = Field(
        "constrained",
        description="Label score: log-probability under decoding constrained to the labels, "
        "the answer's summed log-likelihood, or its per-token mean (rescaled to the average "
        "answer length so the temperature means the same).",
    )
    temperature: Annotated[float, Gt(0)] = Field(
        1.0,
        description="Label scores are divided by this before the softmax (label sets: the "
        "softmax over the labels and 'none').",
    )
    max_text_tokens: Annotated[int, Ge(1)] = Field(
        256, description="Texts (and few-shot examples) are cut to this many tokens."
    )
    few_shot_k: Annotated[int, Ge(0)] = Field(
        0, description="Nearest labelled training examples shown as earlier chat turns."
    )
    retriever: str = Field(MINILM, description="Sentence encoder that picks few-shot examples.")
    eval_limit: Annotated[int, Ge(1)] | None = Field(
        300, description="Eval examples scored (a fixed seeded sample); null scores them all."
    )

    def other_models(self) -> list[str]:
        return [self.model] + ([self.retriever] if self.few_shot_k else [])


@dataclass(frozen=True)
class PromptSpec:
    """Everything that defines the classifier; saved as ``prompt.json``."""

    model: str
    system: str
    label_names: list[str]
    label_texts: list[str]
    scoring: str
    temperature: float
    max_text_tokens: int
    few_shot_k: int
    retriever: str
    multi_label: bool = False
    """Label sets: ``none`` is an answer too, and each label gets its own probability."""

    @classmethod
    def from_config(
        cls, config: LlmPromptConfig, label_names: Sequence[str], multi_label: bool = False
    ) -> PromptSpec:
        texts = [label_text(name, "{label}", config.descriptions) for name in label_names]
        answers = [*texts, NO_LABEL] if multi_label else texts
        duplicated = sorted({t for t in answers if answers.count(t) > 1})
        if duplicated:
            raise ValueError(
                f"llm_prompt: labels read the same as words: {duplicated}; "
                "tell them apart with `descriptions`"
                + (f" ('{NO_LABEL}' is the answer for no label)" if NO_LABEL in duplicated else "")
            )
        instruction = config.instruction
        if multi_label and instruction == DEFAULT_INSTRUCTION:
            instruction = MULTI_LABEL_INSTRUCTION
        return cls(
            config.model,
            system_message(instruction, texts, config.numbered),
            list(label_names),
            texts,
            config.scoring,
            config.temperature,
            config.max_text_tokens,
            config.few_shot_k,
            config.retriever,
            multi_label,
        )

    @property
    def answers(self) -> list[str]:
        """What the model may answer: the labels as words, and ``none`` on label sets."""
        return [*self.label_texts, NO_LABEL] if self.multi_label else list(self.label_texts)


def system_message(instruction: str, label_texts: Sequence[str], numbered: bool) -> str:
    bullets = [f"{i}." if numbered else "-" for i in range(1, len(label_texts) + 1)]
    lines = [f"{bullet} {text}" for bullet, text in zip(bullets, label_texts, strict=True)]
    return f"{instruction.strip()}\n\nCategories:\n" + "\n".join(lines)


@dataclass
class ExampleRetriever(ExampleIndex):
    """Labelled training examples and their embeddings; ``nearest`` finds the closest to a
    text (least similar first). ``labels``: label ids, or 0/1 rows for label sets."""

    texts: list[str]
    labels: np.ndarray


class PromptClassifier:
    """Scores every label as the LLM's answer to the prompt built around a text."""

    def __init__(
        self, spec: PromptSpec, lm: CausalLM, retriever: ExampleRetriever | None = None
    ) -> None:
        if spec.few_shot_k > 0 and retriever is None:
            raise ValueError("llm_prompt: few_shot_k > 0 needs labelled examples to retrieve")
        self.spec = spec
        self.lm = lm
        self.retriever = retriever
        self.label_names: Sequence[str] = spec.label_names
        self.prefix, answers = self._split_template()
        self.cache = PromptCache(lm, lm.encode(self.prefix))
        self.tree = TokenTree.build([lm.encode(answer) for answer in answers])
        lengths = torch.tensor(self.tree.lengths, dtype=torch.float64)
        self._length_scale = lengths.mean() / lengths

    def _split_template(self) -> tuple[str, list[str]]:
        """The prompt text before the first user message (cached once), and each label's
        answer as the template writes it (with its end-of-turn token, so that "card" does not
        win just by being a prefix of "card arrival")."""
        system = {"role": "system", "content": self.spec.system}
        user = {"role": "user", "content": SENTINEL}
        prompt = self.lm.chat([system, user], add_generation_prompt=True)
        answers = []
        for text in self.spec.answers:
            turn = {"role": "assistant", "content": text}
            full = self.lm.chat([system, user, turn], add_generation_prompt=False)
            if not full.startswith(prompt):
                raise ValueError(
                    f"llm_prompt: the chat template of '{self.spec.model}' rewrites earlier "
                    "turns when an answer is added; its answers cannot be scored"
                )
            answers.append(full[len(prompt) :].rstrip())
        return prompt.split(SENTINEL)[0], answers

    def messages(self, text: str, examples: Sequence[Example] = ()) -> list[dict[str, str]]:
        """System message, few-shot turns, then the text as the user's message."""
        turns = [{"role": "system", "content": self.spec.system}]
        for example_text, answer in examples:
            turns.append({"role": "user", "content": self._truncate(example_text)})
            turns.append({"role": "assistant", "content": answer})
        turns.append({"role": "user", "content": self._truncate(text)})
        return turns

    def _truncate(self, text: str) -> str:
        ids = self.lm.encode(text)
        if len(ids) <= self.spec.max_text_tokens:
            return text
        truncated: str = self.lm.tokenizer.decode(ids[: self.spec.max_text_tokens])
        return truncated

    def context_ids(self, text: str, examples: Sequence[Example] = ()) -> list[int]:
        """Token ids of the prompt after the cached prefix."""
        rendered = self.lm.chat(self.messages(text, examples), add_generation_prompt=True)
        if not rendered.startswith(self.prefix):
            raise ValueError(
                f"llm_prompt: the chat template of '{self.spec.model}' changes the "
                "system turn with the conversation; the prefix cannot be cached"
            )
        return self.lm.encode(rendered[len(self.prefix) :])

    def label_scores(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), num_labels)`` scores before the temperature and softmax (label sets:
        one more column, last, for ``none``)."""
        shots = self._examples(texts)
        rows = []
        for text, examples in zip(texts, shots, strict=True):
            rows.append(self._score(self.context_ids(text, examples)))
        if not rows:
            return np.zeros((0, len(self.spec.answers)))
        return torch.stack(rows).numpy()

    def _score(self, context_ids: list[int]) -> torch.Tensor:
        if self.spec.scoring == "constrained":
            return self.cache.constrained_log_probs(context_ids, self.tree)
        summed = self.cache.log_likelihoods(context_ids, self.tree)
        return summed * self._length_scale if self.spec.scoring == "mean" else summed

    def _examples(self, texts: Sequence[str]) -> list[list[Example]]:
        """The few-shot turns for each text (none when few-shot is off)."""
        if self.spec.few_shot_k == 0 or self.retriever is None or not texts:
            return [[] for _ in texts]
        retriever = self.retriever
        return [
            [(retriever.texts[i], self._answer(retriever.labels[i])) for i in row]
            for row in retriever.nearest(texts, self.spec.few_shot_k)
        ]

    def _answer(self, labels: np.ndarray) -> str:
        """A labelled example's answer: its label, or on label sets its labels (``none``)."""
        if not self.spec.multi_label:
            return self.spec.label_texts[int(labels)]
        named = [self.spec.label_texts[i] for i in np.flatnonzero(labels)]
        return ", ".join(named) or NO_LABEL

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probabilities = softmax(self.label_scores(texts) / self.spec.temperature)
        return named_in_two_answers(probabilities) if self.spec.multi_label else probabilities

    def request_tokens(self, texts: Sequence[str]) -> tuple[float, float]:
        """Mean prompt tokens per request (cached prefix included) and mean tokens a request
        actually runs through the model here (its own tokens plus the trie nodes fed)."""
        shots = self._examples(texts)
        own = [len(self.context_ids(t, e)) for t, e in zip(texts, shots, strict=True)]
        mean_own = float(np.mean(own)) if own else 0.0
        fed = self.tree.branching if self.spec.scoring == "constrained" else self.tree.inner
        return self.cache.prefix_length + mean_own, mean_own + len(fed)


def named_in_two_answers(first_answer: np.ndarray) -> np.ndarray:
    """Label sets: ``(n, labels + 1)`` first-answer probabilities (``none`` last) to each
    label's chance of being named in either of two answers drawn from them, 1 - (1 - p)^2."""
    labels = first_answer[:, :-1]
    # p (2 - p): the same, without the cancellation that would round every p below 1e-16 to 0
    # and tie those records.
    return np.asarray(labels * (2 - labels))


class LlmPromptStrategy:
    name: ClassVar[str] = "llm_prompt"
    config_type: ClassVar[type[StrategyConfig]] = LlmPromptConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="prompted",
        method="none",
        data_need=DataNeed(0, 0, "it uses an instruction and at most a few examples"),
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, LlmPromptConfig]) -> PromptClassifier:
        config = run.config
        spec = PromptSpec.from_config(config, run.task.label_names, run.task.multi_label)
        retriever = save_examples(run, spec) if spec.few_shot_k else None
        classifier = PromptClassifier(spec, CausalLM.load(spec.model), retriever)
        write_text_atomic(run.folder / PROMPT, json.dumps(asdict(spec), indent=2) + "\n")
        prompt_tokens, forward_tokens = classifier.request_tokens(
            run.task.train_texts[:TOKEN_SAMPLE]
        )
        run.record(
            trainable_params=0,
            total_params=classifier.lm.parameter_count(),
            needs_base_model=False,  # the encoder named as the base model is not used
            prompt_tokens_per_request=round(prompt_tokens, 1),
            cached_prompt_tokens=classifier.cache.prefix_length,
            forward_tokens_per_request=round(forward_tokens, 1),
            answer_tokens_scored=len(classifier.tree),
        )
        return classifier

    def load(self, run: RunContext) -> PromptClassifier:
        spec = PromptSpec(**json.loads((run.folder / PROMPT).read_text()))
        retriever = load_examples(run, spec) if spec.few_shot_k else None
        return PromptClassifier(spec, CausalLM.load(spec.model), retriever)


def save_examples(run: RunContext, spec: PromptSpec) -> ExampleRetriever:
    """Embed the training set for few-shot retrieval and keep it in the run folder."""
    texts = list(run.task.train_texts)
    index = ExampleIndex.build(spec.retriever, texts, run.max_length)
    labels = run.task.train_labels.astype(np.int64)  # label ids, or 0/1 rows for label sets
    index.save(run.folder / EXAMPLES, labels=labels)
    write_text_atomic(run.folder / EXAMPLE_TEXTS, json.dumps(texts) + "\n")
    return ExampleRetriever(index.encoder, index.vectors, texts, labels)


def load_examples(run: RunContext, spec: PromptSpec) -> ExampleRetriever:
    index, tensors = ExampleIndex.load(run.folder / EXAMPLES, spec.retriever, run.max_length)
    texts = json.loads((run.folder / EXAMPLE_TEXTS).read_text())
    return ExampleRetriever(index.encoder, index.vectors, texts, tensors["labels"])


register(LlmPromptStrategy)
