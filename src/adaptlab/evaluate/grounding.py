"""What answering from retrieved passages adds to a free-text evaluation: how well retrieval
found the gold documents, whether the answer stays within the passages it was shown, and
whether it cites the right ones.

A generator that retrieves (:class:`RetrievalAugmented`: the ``rag`` and ``rag_sft``
strategies) shows the model its top ``k`` chunks numbered ``[1]`` … ``[k]`` and asks it to cite
the numbers it used. For such a run the evaluation adds, per eval request:

- **retrieval**: when eval records name their gold documents (``documents: [...]``), recall@k
  (a chunk of a gold document among the top k) and the mean reciprocal rank, for each
  retriever the run holds (dense, BM25 and their fusion) at k = 1, 3, 5, 10, 20: the effect of
  k, measured once per run rather than by one run per k;
- **groundedness**: the share of the answer's tokens (SQuAD normalisation: lower case, no
  punctuation or articles) that occur in the passages it was shown. A lexical measure: a
  paraphrase of the passage scores low, a copied wrong sentence high; it says whether the
  model used its context, not whether it was right;
- **citations**: ``citation_rate``, the share of answers citing at least one passage shown,
  and ``citation_accuracy``, the share whose cited passages include one of a gold document
  (an answer that cites nothing counts as wrong). Citation markers are taken out of the answer
  before it is scored against the references, which carry none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from adaptlab.evaluate.bootstrap import bootstrap_interval
from adaptlab.evaluate.free_text import answer_tokens
from adaptlab.models.document_retrieval import Hit, Retriever, score_retrieval

if TYPE_CHECKING:
    from adaptlab.models.causal_lm import CausalLM

Messages = list[dict[str, Any]]

RECALL_KS: tuple[int, ...] = (1, 3, 5, 10, 20)
"""The depths retrieval is scored at."""

_CITATION = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


@runtime_checkable
class RetrievalAugmented(Protocol):
    """A generator that answers from retrieved chunks (see the module docstring)."""

    k: int
    """Chunks shown per request."""
    retriever_kind: str
    """Which of :attr:`retrievers` picks the chunks shown."""

    @property
    def lm(self) -> CausalLM: ...

    @property
    def retrievers(self) -> dict[str, Retriever]:
        """Every retriever over the collection, by kind (dense, sparse, hybrid)."""
        ...

    @property
    def chunk_documents(self) -> Sequence[str]:
        """Chunk ``i``'s document id."""
        ...

    @property
    def chunk_texts(self) -> Sequence[str]: ...

    @property
    def chunk_ids(self) -> Sequence[str]:
        """Chunk ``i``'s id (``<document id>#<n>``)."""
        ...

    def query(self, request: Messages) -> str:
        """What a request is retrieved on."""
        ...

    def grounded_conversations(
        self, requests: Sequence[Messages], hits: Sequence[Sequence[Hit]]
    ) -> list[Messages]:
        """Each request with the chunks of its ``hits`` in the prompt, numbered from 1."""
        ...


def cited_numbers(answer: str) -> list[int]:
    """The passage numbers ``[n]`` / ``[n, m]`` an answer cites, in order, each once."""
    numbers = [
        int(n) for group in _CITATION.findall(answer) for n in re.split(r"\s*,\s*", group.strip())
    ]
    return list(dict.fromkeys(numbers))


def strip_citations(answer: str) -> str:
    """The answer without its citation markers (and the space before each)."""
    return re.sub(r"\s*" + _CITATION.pattern, "", answer).strip()


def groundedness(answer: str, passages: Sequence[str]) -> float:
    """The share of the answer's tokens that occur in ``passages`` (0 for an empty answer)."""
    tokens = answer_tokens(answer)
    if not tokens:
        return 0.0
    context = {token for passage in passages for token in answer_tokens(passage)}
    return sum(token in context for token in tokens) / len(tokens)


def citation_scores(
    answer: str, shown_documents: Sequence[str], gold: Sequence[str]
) -> tuple[float, float]:
    """``(cites a shown passage, cites a passage of a gold document)`` as 0/1."""
    cited = [n for n in cited_numbers(answer) if 1 <= n <= len(shown_documents)]
    wanted = set(gold)
    hit = any(shown_documents[n - 1] in wanted for n in cited)
    return float(bool(cited)), float(hit)


def retrieval_scores(
    generator: RetrievalAugmented, requests: Sequence[Messages], gold: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """recall@k and MRR of every retriever the generator holds, over the requests that name
    gold documents (``gold[i]`` empty: request ``i`` is left out, and counted)."""
    scored = [i for i, ids in enumerate(gold) if ids]
    queries = [generator.query(requests[i]) for i in scored]
    payload: dict[str, Any] = {
        "queries_with_gold": len(scored),
        "queries": len(requests),
        "used": generator.retriever_kind,
        "k": generator.k,
        "by_retriever": {},
    }
    if not scored:
        return payload
    depth = max(RECALL_KS)
    for kind, retriever in generator.retrievers.items():
        hits = retriever.retrieve(queries, depth)
        scores = score_retrieval(
            hits, generator.chunk_documents, [gold[i] for i in scored], RECALL_KS
        )
        payload["by_retriever"][kind] = scores.to_dict()
    return payload


def grounding_quality(
    answers: Sequence[str],
    shown: Sequence[Sequence[Hit]],
    generator: RetrievalAugmented,
    gold: Sequence[Sequence[str]] | None,
    *,
    resamples: int,
    confidence: float,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Groundedness and citation scores of each answer to the chunks it was shown: corpus
    means (with groundedness's bootstrap interval) and per-example arrays."""
    texts, documents = generator.chunk_texts, generator.chunk_documents
    grounded = np.array(
        [
            groundedness(strip_citations(a), [texts[i] for i, _ in hits])
            for a, hits in zip(answers, shown, strict=True)
        ]
    )
    cites, right = [], []
    for index, (answer, hits) in enumerate(zip(answers, shown, strict=True)):
        rate, hit = citation_scores(
            answer, [documents[i] for i, _ in hits], gold[index] if gold else []
        )
        cites.append(rate)
        right.append(hit)
    per_example = {"groundedness": grounded, "cites": np.array(cites)}
    low, high = bootstrap_interval(grounded, resamples=resamples, confidence=confidence)
    metrics: dict[str, Any] = {
        "groundedness": float(grounded.mean()),
        "groundedness_ci": [low, high],
        "citation_rate": float(np.mean(cites)),
    }
    with_gold = [i for i in range(len(answers)) if gold and gold[i]]
    if with_gold:
        correct = np.array([right[i] for i in with_gold])
        per_example["citation_correct"] = np.array(right)
        metrics["citation_accuracy"] = float(correct.mean())
        metrics["citation_scored"] = len(with_gold)
    return metrics, per_example
