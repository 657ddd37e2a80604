"""Knowledge distillation: a half-depth student learns from a fine-tuned teacher run.

The teacher is a finished fine-tuned run of this experiment (``full``, ``lora`` or ``partial``,
or the best of them by eval accuracy), loaded from its ``model/`` or, for an adapter, by its own
strategy's ``load`` (merged into a plain encoder). Its logits on the training texts are computed
once and cached; the student, a copy of the teacher with every other transformer layer
(DistilBERT's initialisation) and the teacher's head, trains with the shared loop on
``alpha × cross-entropy + (1 − alpha) × T² KL(teacher_T ‖ student_T)`` (Hinton et al. 2015).
Half the layers is about half the encoder's compute per text, which is where CPU inference
time goes.

Label sets (multi-label data) need a multi-label teacher, chosen by eval micro-F1: each label's
soft target is the teacher's sigmoid at temperature T, and the loss is ``alpha × Σ_l BCE(z_l,
y_l) + (1 − alpha) × T² Σ_l KL(Bern(σ(v_l/T)) ‖ Bern(σ(z_l/T)))``
(:func:`~adaptlab.train.distillation.combined_binary_kd_loss`). A teacher of the other kind
(softmax for label sets, or the reverse) is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from annotated_types import Ge, Gt, Le
from pydantic import Field, model_validator

from adaptlab.cost.workload import (
    Workload,
    distilled_workload,
    meta_classifier,
    training_lengths,
)
from adaptlab.models.encoder import (
    EncoderClassifier,
    SentenceClassifier,
    load_classifier,
    model_fingerprint,
    output_meta,
    save_classifier,
)
from adaptlab.paths import write_folder
from adaptlab.profile import StrategyProfile
from adaptlab.runs import EVAL, MANIFEST, RunError, RunFolder, read_manifest
from adaptlab.safeload import check_before_load
from adaptlab.strategies.base import (
    FINE_TUNING_NEED,
    REGISTRY,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    Task,
    get_strategy,
    register,
    strategy_config,
    teachers_for,
    unavailable_here,
)
from adaptlab.train.classifier import fit_classifier, freeze
from adaptlab.train.distillation import (
    cached_teacher_loss,
    find_layer_list,
    half_depth_student,
    layers_to_keep,
    teacher_logits,
)

MODEL_DIR = "model"


class DistillConfig(StrategyConfig):
    teacher: str = Field(
        "best",
        min_length=1,
        description=(
            "Teacher run: a run name (full, lora, partial) or best, the finished one of those "
            "with the highest eval accuracy (micro-F1 for multi-label data). Choosing by eval "
            "score is model selection on the locked eval set, done at the comparison level: the "
            "student's own eval score is then slightly optimistic as an estimate of the whole "
            "pipeline."
        ),
    )
    temperature: Annotated[float, Gt(0), Le(20)] = Field(
        4.0,
        description=(
            "Softmax temperature of the soft targets (sigmoid, per label, for multi-label data). "
            "A fine-tuned teacher is nearly one-hot at T=1; T=4 exposes which intents it finds "
            "similar (Hinton et al. 2015, §2)."
        ),
    )
    alpha: Annotated[float, Ge(0), Le(1)] = Field(
        0.1,
        description=(
            "Weight of the hard-label cross-entropy (binary, per label, for multi-label data); "
            "1 - alpha weighs the teacher's soft targets (0 = pure distillation, 1 = plain "
            "fine-tuning)."
        ),
    )
    student_layers: Literal["half"] | Annotated[int, Ge(1)] = Field(
        "half",
        description=(
            "Transformer layers of the student: half the teacher's (MiniLM-L6: 3), or a number."
        ),
    )
    keep: Literal["alternate", "first", "last"] | list[Annotated[int, Ge(0)]] = Field(
        "alternate",
        description=(
            "Teacher layers the student starts from: alternate (evenly spaced, first and last "
            "included, as DistilBERT), first, last, or a list of layer indices (which then "
            "also sets the number of layers)."
        ),
    )

    @model_validator(mode="after")
    def _teacher_and_layers_agree(self) -> DistillConfig:
        if self.teacher == "distill":
            raise ValueError("teacher = 'distill': a student cannot teach itself")
        counted = isinstance(self.keep, list) and isinstance(self.student_layers, int)
        if counted and len(self.keep) != self.student_layers:
            raise ValueError(
                f"keep lists {len(self.keep)} layers but student_layers is "
                f"{self.student_layers}; give one of them"
            )
        return self

    def default_train(self) -> dict[str, Any]:
        # The student starts from the teacher's weights but has lost half its layers: it needs
        # as many passes as a fine-tune to re-fit, and a smaller model tolerates a higher rate;
        # the warmup keeps the first, noisiest steps from wrecking the copied layers.
        return {"learning_rate": 1e-4, "num_epochs": 5.0, "warmup_ratio": 0.1}


@dataclass(frozen=True)
class TeacherRun:
    """A finished fine-tuned run a student can learn from, and its eval score."""

    name: str
    folder: Path
    score: float
    manifest: dict[str, Any]

    @property
    def strategy(self) -> str:
        """The registered strategy the teacher run ran (its run may be named otherwise)."""
        return read_manifest(self.folder).strategy

    def fingerprint(self) -> str:
        """Changes when the run is redone (its manifest) or its weights change."""
        digest = hashlib.sha256((self.folder / MANIFEST).read_bytes())
        for weights in (self.folder / MODEL_DIR, self.folder / "adapter"):
            if weights.is_dir():
                digest.update(model_fingerprint(str(weights)).encode())
        return digest.hexdigest()


def candidate_teachers(config: DistillConfig) -> list[str]:
    return list(teachers_for("classification")) if config.teacher == "best" else [config.teacher]


def find_teacher(
    runs_root: Path,
    teacher: str,
    *,
    candidates: tuple[str, ...] | None = None,
    metric: str = "accuracy",
    student: str = "distill",
    multi_label: bool | None = None,
) -> TeacherRun:
    """The named finished run, or for ``best`` the candidate with the highest eval ``metric``
    (ties go to the first in ``candidates``; by default the strategies whose profile says they
    teach classification, by name).

    ``multi_label`` (a classifier student's task kind) refuses a finished candidate of the other
    kind, before its ``metric`` is looked for."""
    candidates = teachers_for("classification") if candidates is None else candidates
    names = candidates if teacher == "best" else (teacher,)
    finished = [
        run
        for name in names
        if (run := _finished_run(runs_root / name, metric, multi_label, student))
    ]
    if finished:
        return max(finished, key=lambda run: run.score)  # max keeps the first of equals
    if teacher == "best":
        raise RunError(
            f"{student} needs a finished fine-tuned teacher run and none of "
            f"{', '.join(candidates)} has finished in {runs_root}: run one first "
            f"(adaptlab compare -s {_runnable_first(candidates)} -s {student})"
        )
    raise RunError(
        f"{student}'s teacher run '{teacher}' has not finished in {runs_root} (no eval.json and "
        f"manifest.json there): run it first (adaptlab compare -s {teacher} -s {student})"
    )


def _runnable_first(candidates: tuple[str, ...]) -> str:
    """The first candidate this machine can run (qlora needs CUDA), to suggest running."""
    for name in candidates:
        strategy = REGISTRY.get(name)
        if strategy is not None and unavailable_here(strategy(), strategy.config_type()) is None:
            return name
    return candidates[0]


def _finished_run(
    folder: Path, metric: str, multi_label: bool | None = None, student: str = "distill"
) -> TeacherRun | None:
    run = RunFolder(folder)
    if not run.is_complete():
        return None
    evaluation = run.read_json(EVAL)
    if multi_label is not None:
        # A multi-label run's eval.json has the section with its per-label thresholds.
        require_same_kind(folder, "multi_label" in evaluation, multi_label, student)
    score = evaluation.get("metrics", {}).get(metric)
    if not isinstance(score, int | float):
        raise RunError(f"{folder / EVAL}: no metrics.{metric}")
    return TeacherRun(folder.name, folder, float(score), run.read_json(MANIFEST))


def teacher_metric(task: ClassificationTask) -> str:
    """What a classifier teacher is chosen by: eval accuracy, or micro-F1 for label sets."""
    return "micro_f1" if task.multi_label else "accuracy"


def classifier_kind(multi_label: bool) -> str:
    if multi_label:
        return "multi-label classifier (label sets, a sigmoid per label)"
    return "single-label classifier (one softmax over the labels)"


def require_same_kind(
    teacher: Path, teacher_multi_label: bool, multi_label: bool, student: str = "distill"
) -> None:
    """Refuse a teacher whose output is not the student's kind: soft targets are one
    distribution over the labels, or one yes/no per label, never a mix."""
    if teacher_multi_label != multi_label:
        raise RunError(
            f"teacher run {teacher} is a {classifier_kind(teacher_multi_label)} but {student} "
            f"trains a {classifier_kind(multi_label)} on this experiment's data: redo the "
            f"teacher on this data (adaptlab compare -s {teacher.name} -s {student})"
        )


def require_same_data(teacher: TeacherRun, task: Task) -> None:
    """Refuse a teacher trained or evaluated on other data than the student's task."""
    same_data = (teacher.manifest.get("train_sha256"), teacher.manifest.get("eval_sha256")) == (
        task.train_sha256,
        task.eval_sha256,
    )
    if not same_data:
        raise RunError(
            f"teacher run {teacher.folder} was trained or evaluated on other data than this "
            f"experiment (train/eval sha256 differ): redo it (adaptlab compare -s {teacher.name})"
        )


def load_teacher(teacher: TeacherRun, run: RunContext) -> EncoderClassifier:
    """The teacher's classifier, checked to belong to this task (its data, labels and kind:
    softmax or, for label sets, sigmoids).

    A run with ``model/`` (full, partial) loads from it directly; any other run (a LoRA
    adapter) is rebuilt by its own strategy's ``load``, which the protocol says needs only the
    run folder and the base model.
    """
    task = run.task
    require_same_data(teacher, task)
    if (teacher.folder / MODEL_DIR).is_dir():
        classifier = load_classifier(teacher.folder / MODEL_DIR)
    else:
        classifier = _load_through_strategy(teacher, run)
    if list(classifier.label_names) != list(task.label_names):
        raise RunError(f"teacher run {teacher.folder} has other labels than this experiment")
    require_same_kind(teacher.folder, classifier.multi_label, task.multi_label, run.name)
    return classifier


def _load_through_strategy(teacher: TeacherRun, run: RunContext) -> EncoderClassifier:
    from transformers import PreTrainedModel

    name = teacher.strategy  # from its manifest: the run may be named otherwise (lora_r8)
    settings = {**(run.experiment.strategies.get(teacher.name) or {}), "strategy": name}
    config = strategy_config(teacher.name, settings)
    context = RunContext(
        teacher.name, teacher.folder, run.task, run.experiment, config, run.train, run.runs_root
    )
    check_before_load(teacher.folder, "teacher run")
    classifier = get_strategy(name).load(context)
    encoder = getattr(getattr(classifier, "model", None), "encoder", None)
    if not isinstance(classifier, EncoderClassifier) or not isinstance(encoder, PreTrainedModel):
        raise RunError(
            f"teacher run '{teacher.name}' ({name}) does not load as a sentence classifier on a "
            "plain transformers encoder, which distill copies its layers from: set "
            "strategies.distill.teacher to full or partial"
        )
    return classifier


def kept_layers(teacher_depth: int, config: DistillConfig) -> list[int]:
    """The teacher layers the student is made of (a ``keep`` list decides the count itself)."""
    if isinstance(config.keep, list):
        count = len(config.keep)
    elif config.student_layers == "half":
        count = max(1, teacher_depth // 2)
    else:
        count = config.student_layers
    return layers_to_keep(teacher_depth, count, config.keep)


def student_classifier(teacher: SentenceClassifier, kept: list[int]) -> SentenceClassifier:
    """The teacher's encoder with only the ``kept`` layers, under a copy of its head."""
    encoder = half_depth_student(teacher.encoder, kept, len(kept))
    student = SentenceClassifier(encoder, teacher.head.out_features, teacher.dropout.p)
    if not teacher.head.weight.is_meta:  # an estimate builds the student from shapes alone
        student.head.load_state_dict(teacher.head.state_dict())
        with torch.no_grad():
            student.scale.copy_(teacher.scale)
    # BERT's [CLS] pooler gets no gradient under mean pooling: frozen, so that every parameter
    # said to train does; kept, so that model/ loads as a plain transformers model.
    freeze(student, except_=lambda name: ".pooler." not in f".{name}")
    return student


def depth(model: SentenceClassifier) -> int:
    return len(find_layer_list(model.encoder)[1])


class DistillStrategy:
    name: ClassVar[str] = "distill"
    config_type: ClassVar[type[StrategyConfig]] = DistillConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=FINE_TUNING_NEED,
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: DistillConfig) -> list[str]:
        return candidate_teachers(config)

    def fit(self, run: RunContext[ClassificationTask, DistillConfig]) -> EncoderClassifier:
        config, task = run.config, run.task
        metric = teacher_metric(task)
        source = find_teacher(
            run.runs_root, config.teacher, metric=metric, multi_label=task.multi_label
        )
        teacher = load_teacher(source, run)
        logits = teacher_logits(
            teacher,
            task.train_texts,
            teacher_key=source.fingerprint(),
            max_length=run.max_length,
        )
        kept = kept_layers(depth(teacher.model), config)
        student = student_classifier(teacher.model, kept)
        loss = cached_teacher_loss(
            torch.from_numpy(logits),
            config.temperature,
            config.alpha,
            multi_label=task.multi_label,
        )
        fit_classifier(run, student, teacher.tokenizer, loss=loss)
        student.cpu().eval()  # served and evaluated on the CPU, wherever it trained
        facts = _facts(source, teacher.model, kept, config, metric)
        meta = {
            "label_names": list(task.label_names),
            "max_length": run.max_length,
            **output_meta(task.multi_label),
            **facts,
        }
        _save_model(student, teacher.tokenizer, run.folder / MODEL_DIR, meta)
        run.record(needs_base_model=False, **facts)  # model/ holds every weight
        return EncoderClassifier(
            student,
            teacher.tokenizer,
            task.label_names,
            run.max_length,
            multi_label=task.multi_label,
        )

    def workload(self, run: RunContext[ClassificationTask, DistillConfig]) -> Workload:
        """The half-depth student trains fully; the teacher (the base model's architecture, as
        every candidate teacher has) is held and computes its logits over the texts once."""
        config = run.config
        teacher = meta_classifier(
            run.base_model, run.task.num_labels, run.experiment.model.revision
        )
        student = student_classifier(teacher, kept_layers(depth(teacher), config))
        return distilled_workload(
            teacher,
            student,
            training_lengths(run),
            run.train,
            "the teacher's logits over the training texts, once (0 when cached)",
        )

    def load(self, run: RunContext) -> EncoderClassifier:
        return load_classifier(run.folder / MODEL_DIR)


def _save_model(
    model: SentenceClassifier, tokenizer: Any, folder: Path, meta: dict[str, Any]
) -> None:
    """``model/`` written under a temporary name and renamed into place: never half-written."""
    write_folder(folder, lambda staging: save_classifier(model, tokenizer, staging, meta))


def _facts(
    source: TeacherRun,
    teacher: SentenceClassifier,
    kept: list[int],
    config: DistillConfig,
    metric: str = "accuracy",
) -> dict[str, Any]:
    return {
        "teacher": source.name,
        f"teacher_{metric}": source.score,
        "teacher_layers": depth(teacher),
        "student_layers": len(kept),
        "kept_layers": kept,
        "temperature": config.temperature,
        "alpha": config.alpha,
    }


register(DistillStrategy)
