"""``adaptlab predict``'s path (:mod:`adaptlab.predict`) loads every strategy's finished run from
its folder alone and answers what ``compare`` scored: a classifier's probabilities on the
locked eval items equal those in ``predictions.safetensors``, a generator's answers have the
prompt and answer lengths and the text of ``generations.jsonl``.

Every registered strategy of each task kind runs, with its settings from the shared matrix's
first row for it (``test_matrix.ROWS``): a new strategy is covered by its matrix row alone.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.strategies.test_compare import tiny_runs_config
from tests.unit.strategies.test_generative import write_jsonl
from tests.unit.strategies.test_matrix import ROWS, FromFixture
from tests.unit.strategies.test_rag_compare import DOCUMENTS, EVAL, TRAIN, write_documents
from typer.testing import CliRunner

from adaptlab import predict
from adaptlab.cli import app
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.data.issues import DataError
from adaptlab.models.shared_base import SharedBases
from adaptlab.runs import RunError, read_run
from adaptlab.strategies.base import get_strategy, strategies_for, supported_tasks

QUIET = {"log": lambda _: None}
UNFINISHED_TEACHER = {"distill_seq": {"targets": "gold_where_labelled"}}
"""The tiny random teacher never ends an answer, so the student learns the gold answers (as in
test_free_text_compare)."""


def _settings(strategy: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The matrix's first row for ``strategy``: its settings, fixtures resolved, and its
    teacher."""
    row = next(r for r in ROWS if r.strategy == strategy)

    def resolve(value: Any) -> Any:
        if isinstance(value, FromFixture):
            return str(request.getfixturevalue(value.fixture))
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    settings = resolve(row.settings)
    if row.teacher is not None:
        settings.setdefault("teacher", row.teacher)
    return {**settings, **UNFINISHED_TEACHER.get(strategy, {})}


def _runnable(kind: str) -> list[str]:
    """Every strategy for ``kind`` that has a matrix row runnable on this machine (qlora
    needs CUDA)."""
    cuda = {r.strategy for r in ROWS if r.cuda}
    return [s for s in strategies_for(kind) if s not in cuda]


@pytest.fixture(scope="module")
def classifiers(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, request: pytest.FixtureRequest
) -> Path:
    tmp_path = tmp_path_factory.mktemp("predict-classify")
    names = _runnable("classification")
    settings = {name: _settings(name, request) for name in names}
    raw = tiny_runs_config(tmp_path, tiny_encoder, names, settings)
    result = compare(ExperimentConfig.model_validate(raw), **QUIET)
    assert result.comparison["failures"] == {}
    return result.folder


@pytest.fixture(scope="module")
def generators(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_llm: Path,
    tiny_encoder: Path,
    request: pytest.FixtureRequest,
) -> Path:
    tmp_path = tmp_path_factory.mktemp("predict-generate")
    names = _runnable("generation")
    raw = {
        "name": "tiny-chat",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "train": write_jsonl(tmp_path / "train.jsonl", TRAIN),
            "eval": write_jsonl(tmp_path / "eval.jsonl", EVAL),
            "documents": str(write_documents(tmp_path / "documents", DOCUMENTS)),
            "dedup": False,
            "chunk_tokens": 32,
            "chunk_overlap_tokens": 8,
        },
        "model": {"base_model": str(tiny_llm), "sequence_len": 1024},
        "train": {"max_steps": 2, "micro_batch_size": 4},
        "strategies": {name: _settings(name, request) for name in names},
        "compare": {
            "strategies": names,
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "similarity_model": str(tiny_encoder),
            "retention": {"enabled": False},
        },
    }
    result = compare(ExperimentConfig.model_validate(raw), **QUIET)
    assert result.comparison["failures"] == {}
    return result.folder


def _eval_rows(experiment: Path) -> list[dict[str, Any]]:
    lines = (experiment / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("strategy", _runnable("classification"))
def test_a_loaded_classifier_gives_the_probabilities_compare_scored(
    classifiers: Path, strategy: str
) -> None:
    folder = classifiers / "runs" / strategy
    record = read_run(folder)
    texts = [row["text"] for row in _eval_rows(classifiers)]
    asked = [texts[i] for i in record.indices]
    with predict.open_model(folder) as loaded:
        assert loaded.is_classifier and loaded.record.strategy == strategy
        rows = predict.classify(loaded, asked, top_k=len(loaded.label_names))
    probabilities = record.predictions["probabilities"]
    for row, scored in zip(rows, probabilities, strict=True):
        again = np.array([row.probabilities[name] for name in loaded.label_names])
        np.testing.assert_allclose(again, scored, atol=1e-5)
        assert row.label == loaded.label_names[int(np.argmax(scored))]
    assert list(loaded.label_names) == record.manifest.raw["label_names"]


@pytest.mark.parametrize("strategy", _runnable("generation"))
def test_a_loaded_generator_answers_what_compare_scored(
    generators: Path, strategy: str, tiny_llm: Path
) -> None:
    from transformers import AutoTokenizer

    folder = generators / "runs" / strategy
    record = read_run(folder)
    requests = [row["messages"][:-1] for row in _eval_rows(generators)]
    scored = {row.index: row for row in record.generations}
    asked = [requests[i] for i in sorted(scored)]
    with predict.open_model(folder) as loaded:
        answers = predict.answer(loaded, asked)
    special = AutoTokenizer.from_pretrained(tiny_llm).all_special_tokens
    for index, answer in zip(sorted(scored), answers, strict=True):
        row = scored[index]
        assert (answer.prompt_tokens, answer.completion_tokens) == (
            row.prompt_tokens,
            row.generated_tokens,
        )
        text = row.text
        for token in special:
            text = text.replace(token, "")
        assert answer.text == text.strip()
        if get_strategy(strategy).profile.retrieves:
            assert tuple(answer.context) == row.context


def test_the_cli_prints_one_json_line_per_text_and_writes_a_file(
    classifiers: Path, tmp_path: Path
) -> None:
    folder = str(classifiers / "runs" / "frozen")
    shown = CliRunner().invoke(app, ["predict", folder, "--text", "my card pin", "--text", "iban"])
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 2 and all(set(r) == {"label", "probability", "probabilities"} for r in rows)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"text": "my card pin"}\n{"text": "iban"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    written = CliRunner().invoke(app, ["predict", folder, str(inputs), "--output", str(out)])
    assert written.exit_code == 0, written.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_bad_rows_are_named_by_file_line_and_field_and_nothing_is_predicted(
    classifiers: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"text": "fine"}\n{"txt": "typo"}\n{"text": ""}\nnot json\n')
    with (
        predict.open_model(classifiers / "runs" / "frozen") as loaded,
        pytest.raises(DataError) as caught,
    ):
        predict.read_inputs(inputs, loaded)
    message = str(caught.value)
    assert "3 rows cannot be predicted" in message
    for line in (2, 3, 4):
        assert f"{inputs}:{line}" in message
    assert "'text'" in message


def test_a_chat_request_must_end_with_a_user_turn(generators: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "system", "content": "be brief"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"text": "a plain question"},
    ]
    write_jsonl(inputs, rows)
    with predict.open_model(generators / "runs" / "prompt") as loaded:
        with pytest.raises(DataError) as caught:
            predict.read_inputs(inputs, loaded)
        message = str(caught.value)
        assert "2 rows cannot be predicted" in message
        assert f"{inputs}:2" in message and f"{inputs}:3" in message
        assert "messages[0]" in message
        ok = tmp_path / "ok.jsonl"
        write_jsonl(ok, [rows[0], rows[3]])
        assert predict.read_inputs(ok, loaded) == [
            [{"role": "user", "content": "hi"}],
            [{"role": "user", "content": "a plain question"}],
        ]


def test_a_classifier_run_without_its_label_names_is_refused_by_name(
    classifiers: Path, tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(classifiers / "runs" / "knn", tmp_path / "knn"))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["label_names"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"manifest.json: field 'label_names' is missing"):
        predict.load_run(folder)


def test_every_strategy_with_a_matrix_row_is_covered() -> None:
    covered = set(_runnable("classification")) | set(_runnable("generation"))
    for name in strategies_for("classification") + strategies_for("generation"):
        assert name in covered or any(r.cuda for r in ROWS if r.strategy == name)
    assert all(supported_tasks(get_strategy(name)) for name in covered)


def test_a_registered_version_predicts_as_its_run_and_a_flipped_byte_is_refused(
    classifiers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.registry.conftest import flip_byte

    from adaptlab.registry import IntegrityError, Registry

    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    registry = Registry(tmp_path / "registry", create=True)
    folder = classifiers / "runs" / "frozen"
    version = registry.promote(
        folder, "intent", approver="ana@bank", reason="best", alias="champion"
    ).version
    texts = ["my card pin", "iban transfer", "a refund please"]
    with predict.open_model(folder) as loaded:
        expected = [p.to_dict() for p in predict.classify(loaded, texts)]
    with predict.open_model("intent@champion", tmp_path / "registry") as loaded:
        assert loaded.source == "intent:1"
        checkout = loaded.record.folder
        assert [p.to_dict() for p in predict.classify(loaded, texts)] == expected
    assert not checkout.exists()  # the temporary copy is gone with the block
    head = next(f for f in version.files if f.path.endswith(".safetensors"))
    flip_byte(registry.store.path_of(head.sha256))
    with (
        pytest.raises(IntegrityError, match=rf"intent:1 file {head.path}: refused"),
        predict.open_model("intent@champion", tmp_path / "registry"),
    ):
        pass
    assert not any((tmp_path / "cache" / "checkouts").iterdir())


def test_a_mistyped_run_folder_is_named_as_a_missing_folder(tmp_path: Path) -> None:
    with (
        pytest.raises(RunError, match=r"runs/tiny/runs/frozn: no such run folder"),
        predict.open_model(str(tmp_path / "runs/tiny/runs/frozn")),
    ):
        pass


def _adapter_runs() -> list[str]:
    """The generation strategies that save a LoRA adapter over the base (sft_lora, rag_sft)."""
    return [s for s in _runnable("generation") if get_strategy(s).profile.method == "adapter"]


def test_adapter_runs_loaded_together_share_one_base_and_answer_as_alone(
    generators: Path,
) -> None:
    """Adapter runs of one base opened with one :class:`SharedBases` (as the server opens its
    models) load the base's weights once, share one lock, and each answers, interleaved with
    the others, exactly what it answers loaded alone and what compare scored."""
    names = _adapter_runs()
    assert len(names) >= 2, names
    requests = [row["messages"][:-1] for row in _eval_rows(generators)][:3]
    alone = {}
    for name in names:
        with predict.open_model(generators / "runs" / name) as loaded:
            alone[name] = predict.answer(loaded, requests)
    bases = SharedBases()
    with ExitStack() as stack:
        # The first run twice: a second adapter of the same files under another name.
        targets = [*names, names[0]]
        opened = [
            stack.enter_context(predict.open_model(generators / "runs" / n, bases=bases))
            for n in targets
        ]
        assert bases.loaded() == 1
        assert len({id(loaded.lock) for loaded in opened}) == 1
        base_tensors = {
            parameter.data_ptr()
            for loaded in opened
            for name, parameter in loaded.model.lm.model.named_parameters()
            if "lora_" not in name
        }
        with predict.open_model(generators / "runs" / names[0]) as single:
            assert len(base_tensors) == len(list(single.model.lm.model.parameters()))
        for request in requests:  # interleaved: each request asked of every run in turn
            for name, loaded in zip(targets, opened, strict=True):
                shared = predict.answer(loaded, [request])[0]
                assert shared == alone[name][requests.index(request)], name
