"""Distilling a fine-tuned chat model (tiny Llama teacher and students): the teacher is the
best finished SFT run by slot F1, the logit student has half its blocks, and sequence-level
distillation learns the teacher's answers — also for unlabeled inputs, never for eval inputs.
(The generic checks run in the strategy matrix.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.strategies.conftest import RunFactory, TeacherFactory

from adaptlab.data.issues import DataError
from adaptlab.evaluate.generation import generate_chat
from adaptlab.runs import RunError
from adaptlab.strategies.base import RunContext, get_strategy
from adaptlab.strategies.distill_seq import ANSWERS_FILE

DECODING = {"decoding": {"max_new_tokens": 4}}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def fit(run: RunContext[Any]) -> Any:
    return get_strategy(run.name).fit(run)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_the_best_teacher_by_slot_f1_teaches_a_half_depth_student(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill_logit", DECODING)
    make_teacher(run.runs_root, "sft_full", 0.4)
    make_teacher(run.runs_root, "few_shot", 0.9)  # prompted, not a fine-tuned candidate
    make_teacher(run.runs_root, "sft_scratch", 0.95)  # nor a model trained from scratch
    fit(run)
    assert run.facts["teacher"] == "sft_full" and run.facts["teacher_slot_f1"] == 0.4
    assert run.facts["teacher_layers"] == 2 and run.facts["student_layers"] == 1
    saved = json.loads((run.folder / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 1


def test_without_a_finished_teacher_the_error_says_what_to_run(make_run: RunFactory) -> None:
    with pytest.raises(RunError, match="compare -s sft_full -s distill_logit"):
        fit(make_run("distill_logit", DECODING))


def test_a_teacher_trained_on_other_data_is_refused(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill_seq", DECODING)
    make_teacher(run.runs_root, "sft_full", 0.5, train_sha256="other")
    with pytest.raises(RunError, match="other data"):
        fit(run)


def test_sequence_distillation_learns_the_teachers_answers_for_unlabeled_inputs_too(
    make_run: RunFactory, make_teacher: TeacherFactory, tmp_path: Path
) -> None:
    probe = make_run("distill_seq", DECODING)
    eval_text = probe.task.eval_requests[0][-1]["content"]
    unlabeled = write_rows(
        tmp_path / "unlabeled.jsonl",
        [
            {"text": "a table for nine on friday"},
            {"text": f"  {eval_text.upper()} "},  # an eval input, differently spaced and cased
            {"messages": [{"role": "user", "content": "book for 3 at noon"}]},
        ],
    )
    run = make_run("distill_seq", {**DECODING, "unlabeled": unlabeled})
    make_teacher(run.runs_root, "sft_full", 0.5)
    fit(run)

    facts = run.facts
    assert facts["labelled_inputs"] == len(run.task.train_records)
    assert facts["unlabeled_inputs"] == 2 and facts["unlabeled_dropped_as_eval_inputs"] == 1
    answers = [json.loads(line) for line in (run.folder / ANSWERS_FILE).read_text().splitlines()]
    assert len(answers) == len(run.task.train_records) + 2
    system = run.task.train_records[0][0]
    asked = {"role": "user", "content": "a table for nine on friday"}
    assert answers[-2]["request"] == [system, asked]
    learned = facts["sft_data"]["examples"] + facts["unfinished_teacher_answers"]
    assert learned == len(answers)


def test_the_teacher_answers_each_input_once_across_runs(
    make_run: RunFactory,
    make_teacher: TeacherFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []

    def counting(lm: Any, conversations: Any, config: Any = None) -> Any:
        asked.append(len(conversations))
        return generate_chat(lm, conversations, config)

    monkeypatch.setattr("adaptlab.strategies.distill_seq.generate_chat", counting)
    first = make_run("distill_seq", DECODING)
    make_teacher(first.runs_root, "sft_full", 0.5)
    fit(first)
    before = (first.folder / ANSWERS_FILE).read_text().splitlines()
    unlabeled = write_rows(tmp_path / "more.jsonl", [{"text": "a table for nine on friday"}])
    second = make_run("distill_seq", {**DECODING, "unlabeled": unlabeled})
    assert second.runs_root == first.runs_root
    fit(second)
    labelled = len(first.task.train_records)
    assert asked == [labelled, 1]  # the second run asks only the new input
    after = (second.folder / ANSWERS_FILE).read_text().splitlines()
    assert after[:labelled] == before


def test_the_estimate_counts_the_unlabeled_inputs_the_student_will_learn(
    make_run: RunFactory, tmp_path: Path
) -> None:
    strategy = get_strategy("distill_seq")
    alone = strategy.workload(make_run("distill_seq", DECODING))
    texts = [{"text": f"a table for {n} on friday at {n} pm"} for n in range(40)]
    unlabeled = write_rows(tmp_path / "more.jsonl", texts)
    run = make_run("distill_seq", {**DECODING, "unlabeled": unlabeled})
    more = strategy.workload(run)
    assert more.tokens > alone.tokens
    assert any("unlabeled" in note for note in more.notes)


def test_gold_answers_can_replace_the_teachers_where_there_are_some(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    run = make_run("distill_seq", {**DECODING, "targets": "gold_where_labelled"})
    make_teacher(run.runs_root, "sft_full", 0.5)
    fit(run)
    assert run.facts["unfinished_teacher_answers"] == 0  # gold answers are never unfinished
    assert run.facts["sft_data"]["examples"] == len(run.task.train_records)


def test_unusable_unlabeled_rows_are_named_by_file_and_line(
    make_run: RunFactory, make_teacher: TeacherFactory, tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "bad.jsonl", [{"text": "fine"}, {"utterance": "no text field"}])
    run = make_run("distill_seq", {**DECODING, "unlabeled": path})
    make_teacher(run.runs_root, "sft_full", 0.5)
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no_input \[text\]"):
        fit(run)


def test_another_model_can_be_the_student_since_only_text_passes(
    make_run: RunFactory, make_teacher: TeacherFactory, tiny_llm: Path
) -> None:
    run = make_run("distill_seq", {**DECODING, "student": str(tiny_llm)})
    make_teacher(run.runs_root, "sft_full", 0.5)
    generator = fit(run)
    assert run.facts["student"] == str(tiny_llm)
    assert generator.lm.model.config.num_hidden_layers == 2  # the named model, not a half


def test_a_student_with_another_tokenizer_learns_the_teachers_answers_as_text(
    make_run: RunFactory, make_teacher: TeacherFactory, tiny_llm: Path, tmp_path: Path
) -> None:
    from tests.unit.models.test_causal_lm import build_tiny_llm
    from transformers import AutoTokenizer

    other = build_tiny_llm(tmp_path / "other-tokenizer", vocab_size=300)
    run = make_run("distill_seq", {**DECODING, "student": str(other)})
    make_teacher(run.runs_root, "sft_full", 0.5)
    fit(run)

    ours, theirs = AutoTokenizer.from_pretrained(other), AutoTokenizer.from_pretrained(tiny_llm)
    answers = [json.loads(line) for line in (run.folder / ANSWERS_FILE).read_text().splitlines()]
    texts = [a["answer"] for a in answers if a["finished"] and a["answer"]]
    assert texts and any(ours.encode(t) != theirs.encode(t) for t in texts)
    assert len(ours) != len(theirs)
    assert run.facts["sft_data"]["examples"] == sum(a["finished"] for a in answers)
    saved = AutoTokenizer.from_pretrained(run.folder / "model")
    config = json.loads((run.folder / "model" / "config.json").read_text())
    assert len(saved) == len(ours) == config["vocab_size"]  # the student keeps its own vocabulary
