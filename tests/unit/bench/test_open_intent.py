"""bench/open_intent.py on a tiny banking77-shaped CSV: the open-intent split keeps unknown
intents out of train, labels them ``oos`` in eval, is fixed by its seed, and its counts and
config add up."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from adaptlab.config import DataConfig
from adaptlab.strategies.base import parse_experiment

INTENTS = [f"intent_{index:02d}" for index in range(12)]
TRAIN_PER_INTENT, TEST_PER_INTENT = 5, 2


def _load_script() -> ModuleType:
    # pytest runs with --import-mode=importlib and bench/ is no package: load the script by path.
    path = Path(__file__).resolve().parents[3] / "bench" / "open_intent.py"
    spec = importlib.util.spec_from_file_location("adaptlab_bench_open_intent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


open_intent = _load_script()


def _write_csv(path: Path, per_intent: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for intent in reversed(INTENTS):  # file order must not matter
            for index in range(per_intent):
                writer.writerow([f"{path.stem} query {index} about {intent}", intent])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "banking"
    folder.mkdir()
    _write_csv(folder / "train.csv", TRAIN_PER_INTENT)
    _write_csv(folder / "test.csv", TEST_PER_INTENT)
    return folder


def _jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _prepare(data: Path, out: Path, ratio: float = 0.5, seed: int = 0) -> dict[str, Any]:
    open_intent.main(
        [
            "prepare",
            "--known",
            str(ratio),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--data",
            str(data),
        ]
    )
    written: dict[str, Any] = json.loads((out / "known_intents.json").read_text())
    return written


def test_split_keeps_the_known_share_out_of_train_and_labels_the_rest_oos(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _prepare(data, tmp_path / "out", ratio=0.25)
    known = set(written["known_intents"])
    assert len(known) == round(0.25 * len(INTENTS)) == 3
    assert written["known_intents"] == sorted(known)
    assert set(written["unknown_intents"]) == set(INTENTS) - known
    train = _jsonl(tmp_path / "out" / "train.jsonl")
    assert {row["label"] for row in train} == known
    evaluation = _jsonl(tmp_path / "out" / "eval.jsonl")
    assert len(evaluation) == len(INTENTS) * TEST_PER_INTENT
    for row in evaluation:
        intent = row["text"].rsplit(" ", 1)[-1]
        assert row["label"] == (intent if intent in known else "oos")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["known_intents"] == 3 and summary["counts"] == written["counts"]


def test_counts_add_up(data: Path, tmp_path: Path) -> None:
    counts = _prepare(data, tmp_path / "out")["counts"]
    assert counts["known"] + counts["unknown"] == counts["intents"] == len(INTENTS)
    assert counts["train_kept"] + counts["train_dropped"] == len(INTENTS) * TRAIN_PER_INTENT
    assert counts["train_kept"] == counts["known"] * TRAIN_PER_INTENT
    assert counts["eval_in_scope"] == counts["known"] * TEST_PER_INTENT
    assert counts["eval_in_scope"] + counts["eval_out_of_scope"] == len(INTENTS) * TEST_PER_INTENT
    assert len(_jsonl(tmp_path / "out" / "train.jsonl")) == counts["train_kept"]


def test_the_seed_fixes_the_choice(data: Path, tmp_path: Path) -> None:
    first = _prepare(data, tmp_path / "a", seed=3)["known_intents"]
    assert _prepare(data, tmp_path / "b", seed=3)["known_intents"] == first
    others = {
        tuple(_prepare(data, tmp_path / f"s{seed}", seed=seed)["known_intents"])
        for seed in range(4, 8)
    }
    assert others - {tuple(first)}, "four other seeds all drew the same intents"


def test_the_rule_is_default_rng_over_sorted_intents() -> None:
    expected = np.random.default_rng(5).choice(sorted(INTENTS), size=6, replace=False)
    assert open_intent.choose_known(INTENTS[::-1], 0.5, 5) == sorted(expected)


@pytest.mark.parametrize("ratio", [0.0, 0.01, 1.0])
def test_a_ratio_leaving_no_known_or_no_unknown_intent_is_refused(ratio: float) -> None:
    with pytest.raises(SystemExit, match="at least one"):
        open_intent.choose_known(INTENTS, ratio, 0)


def test_experiment_config_is_valid(data: Path, tmp_path: Path) -> None:
    _prepare(data, tmp_path / "out", ratio=0.75)
    text = (tmp_path / "out" / "experiment.yaml").read_text()
    raw = yaml.safe_load(text)
    assert raw["name"] == "banking77_open_75"
    assert raw["data"]["out_of_scope_label"] == "oos"
    assert raw["data"]["train"] == str((tmp_path / "out" / "train.jsonl").resolve())
    if "out_of_scope_label" not in DataConfig.model_fields:  # the field is being added apart
        del raw["data"]["out_of_scope_label"]
    config = parse_experiment(yaml.safe_dump(raw), source="experiment.yaml")
    assert config.compare.strategies == ["frozen", "knn", "setfit", "full"]
    assert config.data.format == "classification" and config.data.label_field == "label"


def test_train_oos_keeps_a_seeded_share_of_unknown_intents_as_oos_examples(
    data: Path, tmp_path: Path
) -> None:
    plain = open_intent.prepare(data, tmp_path / "plain", 0.5, 3)
    seen = open_intent.prepare(data, tmp_path / "seen", 0.5, 3, train_oos=0.5)
    assert seen["known_intents"] == plain["known_intents"]
    trained = set(seen["trained_as_out_of_scope"])
    assert len(trained) == 3 and trained <= set(seen["unknown_intents"])
    rows = _jsonl(tmp_path / "seen" / "train.jsonl")
    oos = [row for row in rows if row["label"] == "oos"]
    assert len(oos) == 3 * TRAIN_PER_INTENT == seen["counts"]["train_out_of_scope"]
    assert all(any(intent in row["text"] for intent in trained) for row in oos)
    unseen = set(seen["unknown_intents"]) - trained
    assert not any(any(intent in row["text"] for intent in unseen) for row in rows)
    # the eval set is the protocol's, whatever train holds
    assert _jsonl(tmp_path / "seen" / "eval.jsonl") == _jsonl(tmp_path / "plain" / "eval.jsonl")
