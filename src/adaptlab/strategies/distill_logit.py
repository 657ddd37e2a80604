"""Logit distillation of a chat model: a half-depth student learns the teacher's next-token
distributions on the task's answers.

The teacher is a finished fine-tuned generative run of this experiment (``sft_full``,
``sft_lora`` or ``qlora``, or the best of them by slot F1), loaded by its own strategy and
merged into a plain model. The student is a copy of it with every other decoder block
(DistilBERT's initialisation, Sanh et al. 2019, §3; the embeddings and output layer copied
too). The teacher's top-k logits at every answer token are computed once and cached on disk;
the student trains with the shared loop on ``alpha × cross-entropy + (1 − alpha) ×`` a
divergence to the teacher over its top-k words: forward KL (Hinton et al. 2015, §2), reverse
KL or generalised JSD (Agarwal et al. 2024, "On-Policy Distillation of Language Models",
eq. 1) — see :mod:`adaptlab.train.distillation`. Half the blocks is about half the compute
per generated token; the output layer and the per-token overhead stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, model_validator
from torch import nn

from adaptlab.cost.workload import (
    Workload,
    distilled_workload,
    meta_model,
    training_lengths,
)
from adaptlab.models.causal_lm import CausalLM
from adaptlab.profile import StrategyProfile
from adaptlab.runs import RunError
from adaptlab.safeload import check_before_load
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    RunContext,
    StrategyConfig,
    get_strategy,
    register,
    strategy_config,
    teachers_for,
)
from adaptlab.strategies.distill import TeacherRun, find_teacher, kept_layers, require_same_data
from adaptlab.strategies.sft_full import (
    MODEL_DIR,
    SftConfig,
    load_model,
    save_model,
    training_examples,
)
from adaptlab.train.chat import ChatCollator, pad_token_id
from adaptlab.train.distillation import (
    Divergence,
    cached_top_logits,
    find_layer_list,
    half_depth_student,
    lm_kd_loss,
)
from adaptlab.train.sft import TunedGenerator, fit_causal_lm


class GenerativeDistillConfig(SftConfig):
    """What every generative student shares: its teacher and its size."""

    teacher: str = Field(
        "best",
        min_length=1,
        description="Teacher run: a run name (sft_full, sft_lora, qlora) or best, the finished "
        "one of those with the highest eval slot F1 (model selection on the locked eval set, "
        "at the comparison level).",
    )
    student_layers: Literal["half"] | Annotated[int, Ge(1)] = Field(
        "half", description="Decoder blocks of the student: half the teacher's, or a number."
    )
    keep: Literal["alternate", "first", "last"] | list[Annotated[int, Ge(0)]] = Field(
        "alternate",
        description="Teacher blocks the student starts from: alternate (evenly spaced, first "
        "and last included), first, last, or a list of block indices.",
    )

    def candidate_teachers(self) -> list[str]:
        return list(teachers_for("generative")) if self.teacher == "best" else [self.teacher]


class DistillLogitConfig(GenerativeDistillConfig):
    """Logit distillation. ``learning_rate`` 1e-4 as ``sft_full`` (the student starts from
    the teacher's weights) over 5 epochs: the student has lost half its blocks and must
    re-fit."""

    temperature: Annotated[float, Gt(0), Le(20)] = Field(
        1.0,
        description="Softmax temperature of both distributions; a fine-tuned teacher's answer "
        "tokens are near one-hot at 1, higher values expose its alternatives.",
    )
    alpha: Annotated[float, Ge(0), Le(1)] = Field(
        0.5, description="Weight of the gold-answer cross-entropy; 1 - alpha weighs the teacher."
    )
    divergence: Divergence = Field(
        "forward_kl", description="forward_kl, reverse_kl or jsd (generalised, with beta)."
    )
    beta: Annotated[float, Gt(0), Lt(1)] = Field(
        0.5, description="JSD's mixture weight β (0.5: the symmetric Jensen-Shannon divergence)."
    )
    top_k: Annotated[int, Ge(1), Le(4096)] = Field(
        64, description="Teacher logits kept per answer token in the cache."
    )

    @model_validator(mode="after")
    def _not_its_own_teacher(self) -> DistillLogitConfig:
        if self.teacher.startswith("distill"):
            raise ValueError(f"teacher = '{self.teacher}': a student cannot teach a student")
        return self

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "num_epochs": 5.0}


def load_generative_teacher(
    run: RunContext[GenerativeTask], config: GenerativeDistillConfig
) -> tuple[TeacherRun, TunedGenerator]:
    """The teacher run (best by the task's primary metric: slot F1, or the free-text metric
    the experiment ranks on; or the one named) and its model, merged."""
    from transformers import PreTrainedModel

    source = find_teacher(
        run.runs_root,
        config.teacher,
        candidates=teachers_for(run.task.kind),
        metric=teacher_metric(run),
        student=run.name,
    )
    require_same_data(source, run.task)
    name = source.strategy  # from its manifest: the run may be named otherwise
    raw = {**(run.experiment.strategies.get(source.name) or {}), "strategy": name}
    settings = strategy_config(source.name, raw)
    context = RunContext(
        source.name, source.folder, run.task, run.experiment, settings, run.train, run.runs_root
    )
    check_before_load(source.folder, "teacher run")
    teacher = get_strategy(name).load(context)
    if not isinstance(teacher, TunedGenerator) or not isinstance(teacher.lm.model, PreTrainedModel):
        raise RunError(
            f"teacher run '{source.name}' ({name}) does not load as a plain transformers model "
            "(a 4-bit qlora base on a GPU stays quantised): name an sft_full or sft_lora teacher"
        )
    return source, teacher


def student_model(
    teacher: nn.Module, config: GenerativeDistillConfig
) -> tuple[nn.Module, list[int]]:
    """A copy of the teacher with the chosen decoder blocks, every weight trainable."""
    kept = kept_layers(len(find_layer_list(teacher)[1]), config)  # type: ignore[arg-type]
    student = half_depth_student(teacher, kept, len(kept))
    student.float().requires_grad_(True)
    return student, kept


def teacher_metric(run: RunContext[GenerativeTask]) -> str:
    """What a teacher is chosen by: slot F1, or the metric a free-text experiment ranks on."""
    return "slot_f1" if run.task.kind == "generative" else run.experiment.compare.generation_metric


def student_facts(
    source: TeacherRun, teacher: nn.Module, kept: list[int], metric: str
) -> dict[str, Any]:
    return {
        "teacher": source.name,
        f"teacher_{metric}": source.score,
        "teacher_layers": len(find_layer_list(teacher)[1]),
        "student_layers": len(kept),
        "kept_layers": kept,
    }


def student_workload(
    run: RunContext[GenerativeTask],
    config: GenerativeDistillConfig,
    student: nn.Module | None = None,
    one_off: str = "the teacher's top-k logits over the training rows, once (0 when cached)",
    lengths: Sequence[int] | None = None,
) -> Workload:
    """A student (the teacher's half-depth copy unless given) trains fully on the run's rows
    (or rows of ``lengths`` tokens); the teacher (the base model's architecture, as every
    candidate teacher has) is held and runs over the same tokens once."""
    teacher = meta_model(run.base_model, revision=run.experiment.model.revision)
    if student is None:
        student, _ = student_model(teacher, config)
    if lengths is None:
        lengths = training_lengths(run)
    return distilled_workload(teacher, student, lengths, run.train, one_off)


class DistillLogitStrategy:
    name: ClassVar[str] = "distill_logit"
    config_type: ClassVar[type[StrategyConfig]] = DistillLogitConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=EXTRACTION_NEED,
        tasks=("generative", "generation"),
    )

    def requires(self, config: DistillLogitConfig) -> list[str]:
        return config.candidate_teachers()

    def fit(self, run: RunContext[GenerativeTask, DistillLogitConfig]) -> TunedGenerator:
        config = run.config
        source, teacher = load_generative_teacher(run, config)
        tokenizer = teacher.lm.tokenizer
        rows = training_examples(run, tokenizer, config)
        top = cached_top_logits(
            teacher.lm.model,
            rows,
            ChatCollator(pad_token_id(tokenizer)),
            k=config.top_k,
            teacher_key=source.fingerprint(),
            batch_size=run.train.micro_batch_size,
        )
        student, kept = student_model(teacher.lm.model, config)
        loss = lm_kd_loss(
            top,
            temperature=config.temperature,
            alpha=config.alpha,
            divergence=config.divergence,
            beta=config.beta,
        )
        fit_causal_lm(run, student, tokenizer, rows, loss=loss)
        student.cpu().eval()  # served and evaluated on the CPU, wherever it trained
        facts = {
            **student_facts(source, teacher.lm.model, kept, teacher_metric(run)),
            "top_k": config.top_k,
        }
        decoding = config.decoding.model_dump(mode="json")
        save_model(student, tokenizer, run.folder / MODEL_DIR, decoding=decoding, **facts)
        run.record(needs_base_model=False, **facts)
        return TunedGenerator(CausalLM(run.name, tokenizer, student), config.decoding)

    def workload(self, run: RunContext[GenerativeTask, DistillLogitConfig]) -> Workload:
        config = run.config
        return student_workload(run, config)

    def load(self, run: RunContext[GenerativeTask]) -> TunedGenerator:
        return load_model(run.folder / MODEL_DIR)


register(DistillLogitStrategy)
