"""The distill strategy end to end on the tiny encoder, with teacher runs from ``make_teacher``
(conftest.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tests.unit.strategies.conftest import RunFactory, TeacherFactory, copy_run

from adaptlab.models.encoder import load_classifier, load_encoder
from adaptlab.profile import StrategyProfile
from adaptlab.runs import RunError, read_manifest
from adaptlab.strategies.base import (
    REGISTRY,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    get_strategy,
)
from adaptlab.strategies.distill import DistillConfig, DistillStrategy, find_teacher
from adaptlab.train import distillation


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "teacher_logits"


def fit(run: RunContext) -> Any:
    return DistillStrategy().fit(run)


def test_fit_predicts_probabilities_and_records_the_teacher(
    make_run: RunFactory, make_teacher: TeacherFactory, tiny_task: ClassificationTask
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9)
    classifier = fit(run)
    probabilities = classifier.predict_proba(tiny_task.eval_texts)
    assert probabilities.shape == (len(tiny_task.eval_texts), tiny_task.num_labels)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    facts = run.facts
    assert facts["teacher"] == "full" and facts["teacher_accuracy"] == 0.9
    assert (facts["teacher_layers"], facts["student_layers"], facts["kept_layers"]) == (2, 1, [0])
    assert 0 < facts["trainable_params"] < facts["total_params"]  # all but the unused pooler
    assert facts["needs_base_model"] is False
    assert facts["train_steps"] == 2
    assert (run.folder / "model" / "config.json").is_file()
    assert not (run.folder / ".model.tmp").exists()


def test_student_trains_from_the_copied_teacher_layer(
    make_run: RunFactory, make_teacher: TeacherFactory, teacher_model: Path
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9)
    student = fit(run).model
    _, teacher_encoder = load_encoder(str(teacher_model))
    assert len(student.encoder.encoder.layer) == 1
    trained = student.encoder.encoder.layer[0].attention.self.query.weight
    copied_from = teacher_encoder.encoder.layer[0].attention.self.query.weight
    assert trained.shape == copied_from.shape
    assert not torch.equal(trained, copied_from)
    assert (trained - copied_from).abs().max() < 0.1  # started from it: two small steps away


def test_save_then_load_gives_identical_outputs(
    make_run: RunFactory,
    make_teacher: TeacherFactory,
    tiny_task: ClassificationTask,
    tmp_path: Path,
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9)
    fitted = fit(run).predict_proba(tiny_task.eval_texts)
    loaded = DistillStrategy().load(copy_run(run, tmp_path / "copy"))
    np.testing.assert_allclose(loaded.predict_proba(tiny_task.eval_texts), fitted, atol=1e-6)
    assert list(loaded.label_names) == list(tiny_task.label_names)


def test_teacher_logits_are_computed_once_across_fits(
    make_run: RunFactory,
    make_teacher: TeacherFactory,
    monkeypatch: pytest.MonkeyPatch,
    _cache: Path,
) -> None:
    calls: list[int] = []
    compute = distillation.classifier_logits

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(distillation, "classifier_logits", counting)
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9)
    fit(run)
    [entry] = list(_cache.glob("*.safetensors"))
    written = entry.stat().st_mtime_ns
    fit(run)
    assert len(calls) == 1
    assert entry.stat().st_mtime_ns == written
    make_teacher(run.runs_root, "full", 0.9, created_at="later")  # redone: a new manifest
    fit(run)
    assert len(calls) == 2


def test_requires_the_fine_tuned_candidates() -> None:
    strategy = get_strategy("distill")
    assert strategy.requires(DistillConfig()) == ["full", "lora", "partial"]
    assert strategy.requires(DistillConfig(teacher="partial")) == ["partial"]


def test_best_teacher_is_the_finished_candidate_with_the_highest_accuracy(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.81)
    make_teacher(run.runs_root, "partial", 0.86)
    make_teacher(run.runs_root, "frozen", 0.99)  # not a fine-tuned candidate
    (run.runs_root / "lora").mkdir()  # started, never finished
    assert find_teacher(run.runs_root, "best").name == "partial"
    fit(run)
    assert run.facts["teacher"] == "partial" and run.facts["teacher_accuracy"] == 0.86


def test_a_named_teacher_is_used_even_when_another_is_better(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill", {"teacher": "full"})
    make_teacher(run.runs_root, "full", 0.7)
    make_teacher(run.runs_root, "partial", 0.9)
    fit(run)
    assert run.facts["teacher"] == "full"


def test_missing_teacher_says_what_to_run_first(make_run: RunFactory) -> None:
    run = make_run("distill")
    with pytest.raises(RunError, match=r"none of full, lora, partial.*-s full -s distill"):
        fit(run)
    named = make_run("distill", {"teacher": "partial"})
    with pytest.raises(RunError, match=r"teacher run 'partial' has not finished.*-s partial"):
        fit(named)


class AdapterStrategy:
    """A registered strategy whose runs keep their weights in ``adapter/``, as LoRA's do."""

    name = "adapted"
    config_type = StrategyConfig
    trains = True
    profile = StrategyProfile(role="tuned", method="adapter", teaches=True)
    loads: ClassVar[list[Path]] = []

    def load(self, run: RunContext) -> Any:
        self.loads.append(run.folder)
        return load_classifier(run.folder / "adapter")


class OpaqueStrategy(AdapterStrategy):
    name = "opaque"

    def load(self, run: RunContext) -> Any:
        return SimpleNamespace(label_names=["a"], predict_proba=lambda texts: None)


def test_a_teacher_without_model_is_rebuilt_by_its_own_strategy(
    make_run: RunFactory, make_teacher: TeacherFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, "adapted", AdapterStrategy)
    run = make_run("distill", {"teacher": "adapted"})
    folder = make_teacher(run.runs_root, "adapted", 0.9, weights="adapter")
    AdapterStrategy.loads.clear()
    fit(run)
    assert AdapterStrategy.loads == [folder]
    assert run.facts["teacher"] == "adapted" and run.facts["student_layers"] == 1


def test_a_teacher_run_named_otherwise_is_loaded_by_its_registered_strategy(
    make_run: RunFactory, make_teacher: TeacherFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lora_r8: {strategy: adapted}`` and ``distill: {teacher: lora_r8}``: the student finds
    the teacher's strategy in its manifest, not by taking the run name for a strategy name."""
    monkeypatch.setitem(REGISTRY, "adapted", AdapterStrategy)
    run = make_run("distill", {"teacher": "lora_r8"})
    folder = make_teacher(run.runs_root, "lora_r8", 0.9, weights="adapter", strategy="adapted")
    assert read_manifest(folder).run == "lora_r8"
    assert read_manifest(folder).strategy == "adapted"
    AdapterStrategy.loads.clear()
    fit(run)
    assert AdapterStrategy.loads == [folder]
    assert run.facts["teacher"] == "lora_r8"


def test_a_teacher_that_is_no_encoder_classifier_is_refused_clearly(
    make_run: RunFactory, make_teacher: TeacherFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, "opaque", OpaqueStrategy)
    run = make_run("distill", {"teacher": "opaque"})
    make_teacher(run.runs_root, "opaque", 0.9, weights="adapter")
    with pytest.raises(RunError, match=r"'opaque' \(opaque\) does not load as a sentence class"):
        fit(run)


def test_a_teacher_trained_on_other_data_is_refused(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9, train_sha256="another-train-set")
    with pytest.raises(RunError, match="other data"):
        fit(run)


def test_explicit_layers_and_depth(make_run: RunFactory, make_teacher: TeacherFactory) -> None:
    run = make_run("distill", {"keep": [1]})
    make_teacher(run.runs_root, "full", 0.9)
    fit(run)
    assert run.facts["kept_layers"] == [1] and run.facts["student_layers"] == 1


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"keep": [0, 1], "student_layers": 3}, "student_layers"),
        ({"temperature": 0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"keep": "middle"}, "keep"),
        ({"teacher": ""}, "teacher"),
        ({"teacher": "distill"}, "cannot teach itself"),
    ],
)
def test_config_errors_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        DistillConfig.model_validate(settings)
