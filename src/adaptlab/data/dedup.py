"""Exact and near-duplicate detection over record texts.

Records reach this module as a list of strings (the "text key" of each record: the input text
for classification, the concatenated turns for chat data); every result refers to a record by
its index in that list, and the caller maps indices back to file lines.

Two passes:

1. **Exact**: texts equal after :func:`normalize` form one group; the first occurrence is kept.
2. **Near**: the survivors of pass 1 are compared with MinHash LSH over character n-gram
   shingles. LSH only *proposes* candidate pairs; every pair is verified with the exact Jaccard
   similarity of the two shingle sets before it may drop anything, so an LSH false positive can
   never remove data (LSH false negatives can still let a near-duplicate through, which is the
   safe direction).

The shingling / MinHash / verification machinery (:class:`NearIndex`) is shared with
:mod:`adaptlab.data.contamination`.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from datasketch import LeanMinHash, MinHash, MinHashLSH

# Near-duplicate threshold on the exact Jaccard similarity of character 5-gram sets. Measured on
# banking77 train (10,003 queries, 5 exact groups), near groups / dropped items / groups with
# conflicting labels:  0.80 -> 123 / 141 / 4,  0.85 -> 62 / 66 / 2,  0.90 -> 26 / 28 / 1.
# Read group by group: at >= 0.85 the pairs are the same request retyped (a typo, "yet" or
# "please" added, "top-up"/"top up", "How can I"/"Can I", "currency"/"currencies"); the
# conflicting ones are genuine label noise ("I transferred some money but it hasn't arrived
# [yet]" under two intents). Between 0.80 and 0.85 the meaning starts to change: "Can I get a
# card in the EU?"/"... US?", "How do I get my card PIN?"/"How do I get my card?" (different
# intents), "Why is my transfer pending?"/"Is my transfer pending?". 0.90 is safe but finds
# only 26 of the 62 groups of retyped copies, and those copies matter most for train/eval
# contamination (banking77 test: 10 exact and 44 near copies of train queries at 0.85).
DEFAULT_NEAR_THRESHOLD = 0.85
DEFAULT_NUM_PERM = 128
DEFAULT_NGRAM = 5

# Fixed seed for the MinHash permutations: the same input always yields the same groups.
MINHASH_SEED = 1

# MinHashLSH by default balances false positives and false negatives equally. Here every
# candidate is verified with the exact Jaccard, so a false positive only costs one set
# intersection while a false negative silently keeps a duplicate: weight recall heavily. On
# banking77 train at 0.85 the balanced default found 52 of the 68 verified pairs that a much
# looser LSH (threshold 0.5) finds; these weights find 67 for ~5x more candidates (542 in all).
_LSH_WEIGHTS = (0.05, 0.95)

# How often (in items) `progress` is called during the near pass: often enough for a smooth bar,
# rarely enough that the callback costs nothing.
_PROGRESS_EVERY = 500


def normalize(text: str) -> str:
    """Canonical form of ``text`` for exact-duplicate detection.

    Steps, in order:

    1. Unicode NFKC (full-width letters, ligatures, non-breaking spaces -> plain forms).
    2. ``str.casefold`` (stronger than ``lower``: "ß" -> "ss"), then NFKC again because case
       folding can produce non-normalized sequences; this makes the function idempotent.
    3. Every run of whitespace (anything ``str.isspace`` accepts, including newlines and tabs)
       becomes one ASCII space.
    4. Leading and trailing characters that are whitespace or Unicode punctuation (general
       category ``P*``: ``?!.,;:'"-()`` and their Unicode relatives) are removed. Punctuation
       *inside* the text is kept ("don't" != "dont"), and so are symbols such as ``$`` or ``€``
       (category ``S*``), which carry meaning.

    So ``"How do I top up?"`` and ``"  how do i\\ttop up"`` both become ``"how do i top up"``.
    A text made only of punctuation and whitespace normalizes to ``""``.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = " ".join(folded.split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_junk(collapsed[start]):
        start += 1
    while end > start and _is_edge_junk(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _is_edge_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


@dataclass(frozen=True)
class DuplicateGroup:
    """Records that are the same text (``exact``) or nearly the same (``near``).

    ``keep`` is the lowest index of the group (the first occurrence), ``drop`` the others in
    increasing order. ``similarity`` is 1.0 for exact groups; for near groups it is the lowest
    exact Jaccard similarity (of the shingle sets) between ``keep`` and a dropped member. Near
    groups are connected components of verified pairs, so a member joined through a chain can
    sit below the threshold relative to ``keep``; ``similarity`` makes that visible.
    ``conflicting_labels`` is True when members carry different (non-None) labels: the same
    question with two answers is a data-quality problem worth reporting, not just a duplicate.
    """

    kind: Literal["exact", "near"]
    keep: int
    drop: tuple[int, ...]
    similarity: float
    conflicting_labels: bool


def validate_params(near_threshold: float, num_perm: int, ngram: int) -> None:
    """Raise ``ValueError`` naming the parameter, its value and the allowed range."""
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold!r}")
    if num_perm < 16:
        raise ValueError(f"num_perm must be >= 16, got {num_perm!r}")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram!r}")


def shingles(normalized: str, ngram: int) -> set[str]:
    """Character ``ngram``-grams of ``normalized``.

    Character shingles rather than word shingles: a 12-word intent query has only a handful of
    word n-grams, too few for a stable Jaccard estimate, but ~60 character 5-grams. A text
    shorter than ``ngram`` characters becomes a single shingle (the whole string) so that it is
    still comparable (equal only to itself).
    """
    if len(normalized) < ngram:
        return {normalized}
    return {normalized[i : i + ngram] for i in range(len(normalized) - ngram + 1)}


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    """Exact Jaccard similarity of two shingle-id sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@functools.cache
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for the LSH; cached because datasketch integrates numerically (~30 ms)."""
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    except ValueError:
        # Close to 1.0 (e.g. 0.97 with 16 permutations, 1.0 always) the optimum is a single
        # band, which datasketch refuses. Two bands still return every pair whose signatures
        # are identical, which is all such a threshold can accept after verification.
        return 2, num_perm // 2
    return int(lsh.b), int(lsh.r)


def _hash32(shingle: str) -> int:
    # Same construction as datasketch.hashfunc.sha1_hash32; stable across processes (unlike
    # the builtin `hash`, which is salted per process).
    return int.from_bytes(hashlib.sha1(shingle.encode("utf-8")).digest()[:4], "little")


@dataclass(frozen=True)
class Sketch:
    """A normalized text ready for near-duplicate search: shingle ids plus their MinHash."""

    ids: frozenset[int]
    minhash: LeanMinHash


class NearIndex:
    """MinHash LSH index whose answers are verified with the exact Jaccard similarity.

    Each distinct shingle is hashed once (a vocabulary maps shingle -> id -> 32-bit hash, and
    MinHash receives the ready values through ``hashfunc=operator.index``), each MinHash is one
    vectorised ``update_batch``, and exact Jaccard runs on small integer sets.
    """

    def __init__(self, near_threshold: float, num_perm: int, ngram: int) -> None:
        validate_params(near_threshold, num_perm, ngram)
        self.threshold = near_threshold
        self._num_perm = num_perm
        self._ngram = ngram
        self._lsh = MinHashLSH(num_perm=num_perm, params=_lsh_params(near_threshold, num_perm))
        self._vocab: dict[str, int] = {}
        self._hashes: list[int] = []
        self._sets: dict[int, frozenset[int]] = {}

    def sketches(self, normalized_texts: Iterable[str]) -> Iterator[Sketch]:
        """Lazily sketch each text (already passed through :func:`normalize`)."""
        # One MinHash reused for every text: `update_batch` hashes all shingles of a text against
        # all permutations in one numpy min-reduction, and resetting its hash values is cheaper
        # than `MinHash.generator`'s copy (which re-validates the permutations) per text. The
        # result is frozen as a LeanMinHash (hash values only, no permutation arrays).
        hasher = MinHash(num_perm=self._num_perm, seed=MINHASH_SEED, hashfunc=operator.index)
        empty = hasher.hashvalues.copy()
        hashes = self._hashes
        for text in normalized_texts:
            ids = self._shingle_ids(text)
            hasher.hashvalues = empty.copy()
            hasher.update_batch([hashes[i] for i in ids])
            yield Sketch(ids, LeanMinHash(hasher))

    def add(self, key: int, sketch: Sketch) -> None:
        """Index ``sketch`` under ``key`` (keys must be unique)."""
        self._lsh.insert(key, sketch.minhash, check_duplication=False)
        self._sets[key] = sketch.ids

    def matches(self, sketch: Sketch) -> list[tuple[int, float]]:
        """Indexed keys whose exact Jaccard with ``sketch`` is >= the threshold, sorted by key.

        LSH candidates below the threshold (false positives) are discarded here.
        """
        found = []
        for key in sorted(self._lsh.query(sketch.minhash)):
            similarity = jaccard(sketch.ids, self._sets[key])
            if similarity >= self.threshold:
                found.append((key, similarity))
        return found

    def _shingle_ids(self, normalized: str) -> frozenset[int]:
        vocab = self._vocab
        ids = []
        for shingle in shingles(normalized, self._ngram):
            shingle_id = vocab.get(shingle)
            if shingle_id is None:
                shingle_id = vocab[shingle] = len(self._hashes)
                self._hashes.append(_hash32(shingle))
            ids.append(shingle_id)
        return frozenset(ids)


class _UnionFind:
    """Disjoint sets over ints (groups of verified near-duplicate pairs)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        parent = self._parent
        root = item
        while parent.get(root, root) != root:
            root = parent[root]
        while item != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[root_b] = root_a


def find_duplicates(
    texts: Sequence[str],
    labels: Sequence[str | None] | None = None,
    *,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    near: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[DuplicateGroup]:
    """Group duplicate texts; exact groups first, then near groups, each ordered by ``keep``.

    Exact duplicates are texts with the same :func:`normalize` form. Near duplicates (only when
    ``near``) are found among the texts that survived the exact pass: MinHash LSH with
    ``near_threshold`` over character ``ngram``-gram shingles proposes pairs, the exact Jaccard
    of the shingle sets (>= ``near_threshold``) confirms them, and confirmed pairs are joined
    into groups with union-find. Every group keeps its lowest index.

    ``labels`` (same length as ``texts``, ``None`` for unlabeled records) only feed
    ``conflicting_labels``. ``progress``, if given, is called with the cumulative number of
    items processed (non-decreasing, the last call is ``len(texts)``).
    """
    validate_params(near_threshold, num_perm, ngram)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(
            f"labels must have the same length as texts, got {len(labels)} labels "
            f"for {len(texts)} texts"
        )
    normalized = [normalize(text) for text in texts]
    groups, representatives = _exact_groups(normalized, labels)
    if near:
        index = NearIndex(near_threshold, num_perm, ngram)
        groups += _near_groups(index, representatives, normalized, labels, progress)
    if progress is not None:
        progress(len(texts))
    return groups


def _exact_groups(
    normalized: Sequence[str], labels: Sequence[str | None] | None
) -> tuple[list[DuplicateGroup], list[int]]:
    """Exact groups and the indices that survive them (first occurrences, increasing)."""
    members: dict[str, list[int]] = {}
    for index, text in enumerate(normalized):
        members.setdefault(text, []).append(index)
    # dicts keep insertion order, so groups come out ordered by their first occurrence.
    groups = [
        DuplicateGroup("exact", idx[0], tuple(idx[1:]), 1.0, _conflicting(idx, labels))
        for idx in members.values()
        if len(idx) > 1
    ]
    return groups, [idx[0] for idx in members.values()]


def _near_groups(
    index: NearIndex,
    candidates: Sequence[int],
    normalized: Sequence[str],
    labels: Sequence[str | None] | None,
    progress: Callable[[int], None] | None,
) -> list[DuplicateGroup]:
    """Near groups among ``candidates`` (increasing indices), each verified pair unioned."""
    components = _UnionFind()
    sketches = index.sketches(normalized[i] for i in candidates)
    id_sets: dict[int, frozenset[int]] = {}
    # Query before insert: each pair is found exactly once, from its later member.
    for count, (item, sketch) in enumerate(zip(candidates, sketches, strict=True), start=1):
        for other, _ in index.matches(sketch):
            components.union(item, other)
        index.add(item, sketch)
        id_sets[item] = sketch.ids
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(item + 1)  # every index <= item is now handled (exact drops included)
    members: dict[int, list[int]] = {}
    for item in candidates:
        members.setdefault(components.find(item), []).append(item)
    return [
        DuplicateGroup(
            "near",
            keep=idx[0],
            drop=tuple(idx[1:]),
            similarity=min(jaccard(id_sets[idx[0]], id_sets[other]) for other in idx[1:]),
            conflicting_labels=_conflicting(idx, labels),
        )
        for idx in sorted(members.values())
        if len(idx) > 1
    ]


def _conflicting(indices: Sequence[int], labels: Sequence[str | None] | None) -> bool:
    if labels is None:
        return False
    return len({labels[i] for i in indices if labels[i] is not None}) > 1


def keep_indices(n: int, groups: Sequence[DuplicateGroup]) -> list[int]:
    """Sorted indices in ``range(n)`` that are not dropped by any of ``groups``.

    Raises ``ValueError`` if a group refers to an index outside ``range(n)``, which means the
    groups were computed on a different list.
    """
    dropped: set[int] = set()
    for group in groups:
        for index in (group.keep, *group.drop):
            if not 0 <= index < n:
                raise ValueError(f"group index {index} is outside range(n) with n={n}")
        dropped.update(group.drop)
    return [i for i in range(n) if i not in dropped]
