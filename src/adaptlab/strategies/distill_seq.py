"""Sequence-level distillation: the student is fine-tuned on the teacher's answers.

Kim & Rush 2016, "Sequence-Level Knowledge Distillation", §3.2: instead of matching the
teacher's distribution token by token, train the student with ordinary cross-entropy on the
teacher's own (here greedy) output for each input. Only text passes from teacher to student,
so the student may have another tokenizer and architecture (``student: <model>``), and the
teacher can answer inputs nobody labelled: ``unlabeled`` names a file of more utterances
(chat records, whose answers are ignored, or rows with a text field), which the teacher
labels and the student learns from as well — the cheap way to more training data when
labels are scarce and inputs are not.

The teacher is chosen as for ``distill_logit``; its answers are cached per (teacher, decoding,
input) and written to the run as ``teacher_answers.jsonl`` for inspection. Answers the
teacher did not finish within ``max_new_tokens`` are left out and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge
from pydantic import Field

from adaptlab.cost.workload import Workload, meta_model
from adaptlab.data.formats import read_rows
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.evaluate.generation import generate_chat, request_messages
from adaptlab.models.causal_lm import CausalLM
from adaptlab.paths import cache_dir, read_json_object, write_text_atomic
from adaptlab.profile import StrategyProfile
from adaptlab.runs import RunError
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    Messages,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.distill_logit import (
    GenerativeDistillConfig,
    load_generative_teacher,
    student_facts,
    student_model,
    student_workload,
    teacher_metric,
)
from adaptlab.strategies.sft_full import MODEL_DIR, load_model, save_model, trainable_copy
from adaptlab.train.sft import TunedGenerator, fit_causal_lm, sft_examples, training_records

ANSWERS_FILE = "teacher_answers.jsonl"


class DistillSeqConfig(GenerativeDistillConfig):
    """Sequence-level distillation; the schedule is ``sft_full``'s over 5 epochs."""

    student: Literal["half"] | str = Field(
        "half",
        description="half: the teacher with every other block (its tokenizer); or any causal "
        "LM with a chat template (bundled name, folder, hub name), trained from its own weights.",
    )
    unlabeled: str | None = Field(
        None,
        description="File of more inputs for the teacher to answer: chat records (answers "
        "ignored) or rows with a `text` field; .jsonl, .csv, .json, .parquet.",
    )
    unlabeled_limit: Annotated[int, Ge(1)] | None = Field(
        None, description="Use at most this many unlabeled inputs (the first ones)."
    )
    targets: Literal["teacher", "gold_where_labelled"] = Field(
        "teacher",
        description="teacher: learn the teacher's answer for every input (Kim & Rush); "
        "gold_where_labelled: the reference answer where the training data has one.",
    )

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "num_epochs": 5.0}


def unlabeled_requests(
    path: str, system: Messages, limit: int | None, exclude: set[str]
) -> tuple[list[Messages], int]:
    """Requests built from ``path``'s rows, and how many were left out as eval inputs.

    A chat row gives its messages before the last assistant answer (all of them when it has
    none); a row with ``text`` gives one user turn, after ``system`` (the training data's own
    system turn, so the teacher is asked as in training). Inputs whose user text equals an
    eval request's are dropped: the student must not see eval inputs, labelled or not.
    """
    requests: list[Messages] = []
    issues: list[DataIssue] = []
    dropped = 0
    for line, row in read_rows(path):
        if isinstance(row, DataIssue):
            issues.append(row)
            continue
        request = _request(path, line, row, system, issues)
        if request is None:
            continue
        if _user_text(request) in exclude:
            dropped += 1
            continue
        requests.append(request)
        if limit is not None and len(requests) >= limit:
            break
    if issues:
        shown = "\n".join(str(issue) for issue in issues[:10])
        raise DataError(f"{len(issues)} unusable unlabeled rows in {path}:\n{shown}")
    return requests, dropped


def _request(
    path: str, line: int, row: dict[str, Any], system: Messages, issues: list[DataIssue]
) -> Messages | None:
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
        has_answer = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
        return request_messages(row) if has_answer else [dict(m) for m in messages]
    text = row.get("text")
    if isinstance(text, str) and text.strip():
        return [*system, {"role": "user", "content": text}]
    issues.append(
        DataIssue(path, line, "no_input", "expected a `messages` list or a `text` string", "text")
    )
    return None


def _user_text(request: Messages) -> str:
    users = [str(m.get("content", "")) for m in request if m.get("role") == "user"]
    return " ".join(users[-1].split()).lower() if users else ""


def teacher_answers(
    teacher: TunedGenerator, requests: Sequence[Messages], teacher_key: str
) -> list[dict[str, Any]]:
    """``{"answer", "finished"}`` of the teacher for each request, cached on disk.

    One cache file per (teacher, decoding) holds an answer per request, so a run that adds
    unlabeled inputs, or more training data, asks the teacher only what it has not answered.
    An unreadable cache file is a cache miss: it is answered again and rewritten.
    """
    scope = hashlib.sha256(teacher_key.encode())
    scope.update(teacher.decoding.model_dump_json().encode())
    path = cache_dir() / "teacher_answers" / f"{scope.hexdigest()[:32]}.json"
    cached = read_json_object(path) or {}
    keys = [_request_key(request) for request in requests]
    missing = {
        key: request
        for key, request in zip(keys, requests, strict=True)
        if not _is_answer(cached.get(key))
    }
    if missing:
        conversations = teacher.conversations(list(missing.values()))
        generations = generate_chat(teacher.lm, conversations, teacher.decoding)
        for key, generation in zip(missing, generations, strict=True):
            cached[key] = {"answer": generation.text, "finished": generation.finished}
        write_text_atomic(path, json.dumps(cached))
    return [dict(cached[key]) for key in keys]


def _request_key(request: Messages) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _is_answer(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("answer"), str)
        and isinstance(value.get("finished"), bool)
    )


def distillation_records(
    requests: Sequence[Messages], answers: Sequence[dict[str, Any]], gold: Sequence[str | None]
) -> tuple[list[dict[str, Any]], int]:
    """Chat records of each request with its target answer (gold where given, else the
    teacher's), and how many unfinished teacher answers were left out."""
    records, unfinished = [], 0
    for request, answer, reference in zip(requests, answers, gold, strict=True):
        if reference is None and not answer["finished"]:
            unfinished += 1
            continue
        content = reference if reference is not None else answer["answer"]
        records.append({"messages": [*request, {"role": "assistant", "content": content}]})
    return records, unfinished


class DistillSeqStrategy:
    name: ClassVar[str] = "distill_seq"
    config_type: ClassVar[type[StrategyConfig]] = DistillSeqConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=EXTRACTION_NEED,
        tasks=("generative", "generation"),
    )

    def requires(self, config: DistillSeqConfig) -> list[str]:
        return config.candidate_teachers()

    def fit(self, run: RunContext[GenerativeTask, DistillSeqConfig]) -> TunedGenerator:
        config = run.config
        source, teacher = load_generative_teacher(run, config)
        requests, gold, facts = self._inputs(run, config)
        answers = teacher_answers(teacher, requests, source.fingerprint())
        self._write_answers(run, requests, answers)
        records, unfinished = distillation_records(requests, answers, gold)
        if not records:
            raise RunError(
                f"teacher run '{source.name}' finished none of its {len(requests)} answers within "
                f"decoding.max_new_tokens = {teacher.decoding.max_new_tokens}: nothing to learn "
                "from; raise the teacher's max_new_tokens or check its answers in "
                f"{run.folder / ANSWERS_FILE}"
            )
        if config.student == "half":
            model, kept = student_model(teacher.lm.model, config)
            lm = CausalLM(run.name, teacher.lm.tokenizer, model)
            facts.update(student_facts(source, teacher.lm.model, kept, teacher_metric(run)))
        else:
            lm = trainable_copy(config.student)
            facts.update(teacher=source.name, student=lm.name)
            facts[f"teacher_{teacher_metric(run)}"] = source.score
        rows, report = sft_examples(lm.tokenizer, records, run.max_length, packing=config.packing)
        run.record(sft_data=report, unfinished_teacher_answers=unfinished, **facts)
        fit_causal_lm(run, lm.model, lm.tokenizer, rows)
        lm.model.cpu().eval()
        decoding = config.decoding.model_dump(mode="json")
        save_model(lm.model, lm.tokenizer, run.folder / MODEL_DIR, decoding=decoding, **facts)
        run.record(needs_base_model=False)
        return TunedGenerator(lm, config.decoding)

    def _inputs(
        self, run: RunContext[GenerativeTask], config: DistillSeqConfig
    ) -> tuple[list[Messages], list[str | None], dict[str, Any]]:
        """Training requests (with their gold answers if ``targets`` keeps them) followed by
        the unlabeled ones, and the counts for the run's facts."""
        labelled = [request_messages({"messages": r}) for r in run.task.train_records]
        keep_gold = config.targets == "gold_where_labelled"
        gold: list[str | None] = [
            str(r[len(q)]["content"]) if keep_gold else None
            for r, q in zip(run.task.train_records, labelled, strict=True)
        ]
        extra: list[Messages] = []
        dropped = 0
        if config.unlabeled:
            system = [m for m in labelled[0] if m.get("role") == "system"] if labelled else []
            exclude = {_user_text(request) for request in run.task.eval_requests}
            extra, dropped = unlabeled_requests(
                config.unlabeled, system, config.unlabeled_limit, exclude
            )
        facts = {
            "labelled_inputs": len(labelled),
            "unlabeled_inputs": len(extra),
            "unlabeled_dropped_as_eval_inputs": dropped,
        }
        return [*labelled, *extra], [*gold, *[None] * len(extra)], facts

    def _write_answers(
        self, run: RunContext[GenerativeTask], requests: Sequence[Messages], answers: Sequence[Any]
    ) -> None:
        lines = [
            json.dumps({"request": request, **answer}, ensure_ascii=False)
            for request, answer in zip(requests, answers, strict=True)
        ]
        write_text_atomic(run.folder / ANSWERS_FILE, "\n".join(lines) + "\n")

    def workload(self, run: RunContext[GenerativeTask, DistillSeqConfig]) -> Workload:
        """As ``distill_logit``'s, with the teacher answering instead of scoring. Its answers
        are unknown before it answers: a labelled input's gold answer stands in for it, and
        for an unlabeled input the gold answer of median length."""
        config = run.config
        student = None if config.student == "half" else meta_model(config.student)
        lengths = self._lengths_with_unlabeled(run, config) if config.unlabeled else None
        workload = student_workload(
            run,
            config,
            student,
            one_off="the teacher answering every training input, once",
            lengths=lengths,
        )
        notes = ["the gold answers stand in for the teacher's, tokenised by the base model"]
        if config.unlabeled:
            notes.append(
                f"each unlabeled input of {config.unlabeled} is counted with the training "
                "data's median-length answer"
            )
        return replace(workload, notes=tuple(notes))

    def _lengths_with_unlabeled(
        self, run: RunContext[GenerativeTask], config: DistillSeqConfig
    ) -> list[int]:
        from adaptlab.models.bundled import load_tokenizer
        from adaptlab.train.chat import example_length

        requests, _, facts = self._inputs(run, config)
        records = training_records(run.task)
        answers = sorted((str(r["messages"][-1]["content"]) for r in records), key=len)
        typical = answers[len(answers) // 2] if answers else "{}"
        for request in requests[facts["labelled_inputs"] :]:
            records.append({"messages": [*request, {"role": "assistant", "content": typical}]})
        tokenizer = load_tokenizer(run.base_model, run.experiment.model.revision)
        rows, _ = sft_examples(tokenizer, records, run.max_length, packing=config.packing)
        return [example_length(row) for row in rows]

    def load(self, run: RunContext[GenerativeTask]) -> TunedGenerator:
        return load_model(run.folder / MODEL_DIR)


register(DistillSeqStrategy)
