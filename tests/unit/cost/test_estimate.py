"""The estimate before training: token and parameter counts, calibration, memory arithmetic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import peft
import pytest
import torch

from adaptlab.config import ExperimentConfig, TrainConfig
from adaptlab.cost.hardware import BUILTIN_PROFILES, MEASURED_PROFILE
from adaptlab.cost.workload import (
    Architecture,
    Workload,
    activation_bytes,
    formula_bytes,
    meta_classifier,
    trained_workload,
    training_lengths,
)
from adaptlab.estimate import (
    RecordedRun,
    calibrated_baseline,
    calibrated_utilisation,
    estimate_workload,
    workload_for,
)
from adaptlab.models.encoder import SentenceClassifier, load_encoder
from adaptlab.strategies.base import ClassificationTask, RunContext, resolve_run
from adaptlab.strategies.lora import peft_config

TEXTS = ["hello", "hello world", "hello world again"]
"""[CLS] + one token per word + [SEP]: 3, 4 and 5 tokens with BERT's vocabulary."""


def task(texts: list[str] = TEXTS) -> ClassificationTask:
    labels = np.arange(len(texts)) % 2
    return ClassificationTask(("a", "b"), texts, labels, texts, labels, "t", "e")


def run_for(
    name: str,
    base_model: Path,
    tmp_path: Path,
    settings: dict[str, Any] | None = None,
    **train: Any,
) -> RunContext[Any]:
    experiment = ExperimentConfig.model_validate(
        {
            "model": {"base_model": str(base_model), "sequence_len": 32},
            "strategies": {name: settings or {}},
        }
    )
    _, config = resolve_run(name, settings)
    return RunContext(
        name, tmp_path / name, task(), experiment, config, TrainConfig(**train), tmp_path
    )


def test_tokens_are_counted_as_training_tokenises_and_batches(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    run = run_for("full", tiny_encoder, tmp_path, micro_batch_size=3, num_epochs=2)
    assert training_lengths(run) == [3, 4, 5]
    model = meta_classifier(str(tiny_encoder), 2)
    workload = trained_workload("full", model, training_lengths(run), run.train)
    # One batch of all three per epoch, padded to the longest (5), two epochs.
    assert (workload.tokens, workload.batch, workload.steps) == (2 * 3 * 5, (3, 5), 2)
    two = trained_workload("full", model, [3, 4, 5], TrainConfig(micro_batch_size=2, max_steps=1))
    assert two.tokens in (2 * 4, 2 * 5)  # one step of two examples, whichever came first


def test_truncation_at_sequence_len(tiny_encoder: Path, tmp_path: Path) -> None:
    run = run_for("full", tiny_encoder, tmp_path)
    long = RunContext(
        run.name, run.folder, task(["word " * 100]), run.experiment, run.config, run.train, tmp_path
    )
    assert training_lengths(long) == [32]


def test_meta_parameter_counts_match_the_materialised_model(tiny_encoder: Path) -> None:
    _, encoder = load_encoder(str(tiny_encoder))
    real = SentenceClassifier(encoder, 3)
    counted = meta_classifier(str(tiny_encoder), 3)
    assert all(p.is_meta for p in counted.parameters())
    assert sum(p.numel() for p in counted.parameters()) == sum(p.numel() for p in real.parameters())
    linear = sum(
        p.numel() for m in real.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()
    )
    workload = trained_workload("full", counted, [3], TrainConfig(micro_batch_size=1, max_steps=1))
    assert workload.model.matmul_params == linear
    assert workload.model.total_params > linear  # embedding tables are not multiplied


def test_lora_trainable_count_matches_peft(tiny_encoder: Path, tmp_path: Path) -> None:
    from adaptlab.config import LoraConfig

    _, encoder = load_encoder(str(tiny_encoder))
    real = SentenceClassifier(encoder, 2)
    real.encoder = peft.get_peft_model(
        real.encoder, peft_config(LoraConfig(lora_r=4), real.encoder)
    )
    expected = sum(p.numel() for p in real.parameters() if p.requires_grad)
    run = run_for("lora", tiny_encoder, tmp_path, {"lora": {"lora_r": 4}})
    workload = workload_for("lora", run.experiment, run.task)
    assert workload.method == "adapter"
    assert workload.model.trainable_params == expected
    assert workload.model.total_params == sum(p.numel() for p in real.parameters())


def test_distill_student_is_half_depth_and_teacher_pass_counted(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    run = run_for("distill", tiny_encoder, tmp_path)
    workload = workload_for("distill", run.experiment, run.task)
    full = workload_for("full", run.experiment, run.task)
    assert workload.model.layers == 1 and full.model.layers == 2
    assert workload.held_params == full.model.total_params
    assert workload.one_off_flops == pytest.approx(
        2.0 * full.model.matmul_params * sum(training_lengths(run))
    )


def test_prompting_trains_nothing(tiny_encoder: Path, tmp_path: Path) -> None:
    run = run_for("zero_shot", tiny_encoder, tmp_path)
    workload = workload_for("zero_shot", run.experiment, run.task)
    assert workload.method == "none" and workload.flops == 0


ARCH = Architecture(
    total_params=1000,
    matmul_params=800,
    trainable_params=100,
    layers=2,
    hidden=8,
    heads=2,
    vocabulary=0,
)


def test_activation_and_memory_arithmetic() -> None:
    # s=4, b=3, h=8, a=2: per layer 2 x 4·3·8·(34 + 5·2·4/8) = 2 x 96 x 39 bytes.
    assert activation_bytes(ARCH, 3, 4, training=True) == 2 * (2 * 96 * 39)
    assert activation_bytes(ARCH, 3, 4, training=False) == 2 * 96 * 39
    lm = Architecture(1000, 800, 100, 2, 8, 2, vocabulary=10)
    assert (
        activation_bytes(lm, 3, 4, training=True) - activation_bytes(ARCH, 3, 4, training=True)
        == 4 * 3 * 4 * 10 * 2
    )
    workload = Workload("full", ARCH, tokens=12, batch=(3, 4), held_params=50)
    assert formula_bytes(workload) == 4 * 1050 + 12 * 100 + 2 * (2 * 96 * 39)
    assert formula_bytes(Workload("none", ARCH, 0, held_params=50)) == 4 * 1050


def recorded(name: str, seconds: float, peak: int, folder: Path) -> RecordedRun:
    workload = Workload("full", ARCH, tokens=1_000_000, batch=(3, 4))
    return RecordedRun(folder / name, name, "full", "full", "m", workload, seconds, peak)


def test_a_run_never_calibrates_its_own_estimate(tmp_path: Path) -> None:
    slow = recorded("slow", 100.0, 10_000_000, tmp_path)
    fast = recorded("fast", 50.0, 20_000_000, tmp_path)
    pool = [slow, fast]
    profiles = dict(BUILTIN_PROFILES)
    measured = profiles[MEASURED_PROFILE]
    mine = calibrated_utilisation(
        "full", "full", "m", pool, MEASURED_PROFILE, profiles, exclude=slow.folder
    )
    assert mine.value == pytest.approx(fast.utilisation(measured) or 0) and mine.runs == ("fast",)
    estimate = estimate_workload(
        "slow",
        "full",
        "full",
        "m",
        slow.workload,
        pool,
        MEASURED_PROFILE,
        profiles,
        exclude=slow.folder,
    )
    assert estimate.seconds == pytest.approx(50.0)  # the other run's speed, not its own
    assert estimate.peak_bytes == pytest.approx(20_000_000)  # the other run's residual + formula
    baseline = calibrated_baseline(pool, exclude=fast.folder)
    assert baseline.value == pytest.approx(10_000_000 - formula_bytes(slow.workload))
    alone = calibrated_utilisation(
        "full", "full", "m", [slow], MEASURED_PROFILE, profiles, exclude=slow.folder
    )
    assert alone.value == measured.assumed_utilisation and "assumed" in alone.source


def test_a_fit_that_shared_the_machine_does_not_calibrate(tmp_path: Path) -> None:
    """The issue-19 case: the same run fitted in 520 s beside another job and in 275 s on a
    quiet machine. Calibrating on the busy one would estimate every later fit almost 2x slow."""
    quiet = recorded("quiet", 275.0, 1, tmp_path)
    busy = replace(recorded("busy", 520.0, 1, tmp_path), fit_contention=0.45)
    instant = replace(recorded("instant", 2.0, 1, tmp_path), fit_contention=0.6)
    assert busy.contended and not quiet.contended
    assert not instant.contended  # too short for a scheduling slice's share to mean anything
    profiles = dict(BUILTIN_PROFILES)
    measured = profiles[MEASURED_PROFILE]
    used = calibrated_utilisation("full", "full", "m", [quiet, busy], MEASURED_PROFILE, profiles)
    assert used.runs == ("quiet",)
    assert used.value == pytest.approx(quiet.utilisation(measured) or 0)
    assert used.source.endswith("left out, fitted under contention: busy (45%)")
    only_busy = calibrated_utilisation("full", "full", "m", [busy], MEASURED_PROFILE, profiles)
    assert only_busy.value == measured.assumed_utilisation
    assert "assumed" in only_busy.source and "busy (45%)" in only_busy.source
    unknown = replace(busy, fit_contention=None)  # runs recorded before contention was
    assert not unknown.contended


def test_other_profiles_use_their_assumed_utilisation(tmp_path: Path) -> None:
    run = recorded("a", 100.0, 1, tmp_path)
    profiles = dict(BUILTIN_PROFILES)
    used = calibrated_utilisation("full", "full", "m", [run], "h100", profiles)
    assert used.value == profiles["h100"].assumed_utilisation


def test_runs_on_record_are_read_with_their_declared_method(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    from tests.unit.strategies.test_compare import experiment

    from adaptlab.compare import compare
    from adaptlab.estimate import check_against_runs, recorded_runs

    config = experiment(
        tmp_path,
        tiny_encoder,
        strategies={"tuned": {"strategy": "full"}},
        train={"max_steps": 2},
    )
    result = compare(config, ["tuned", "frozen"], log=lambda _: None)
    assert result.failures == {}
    pool, problems = recorded_runs([result.folder])
    assert problems == {}
    runs = {run.name: run for run in pool}
    assert (runs["tuned"].strategy, runs["tuned"].method) == ("full", "full")
    assert (runs["frozen"].strategy, runs["frozen"].method) == ("frozen", "features")
    rows, _ = check_against_runs([result.folder])
    assert {row.run: row.method for row in rows} == {"tuned": "full", "frozen": "features"}
