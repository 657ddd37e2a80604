"""``adaptlab export`` (:mod:`adaptlab.export`): each export's outputs equal the run's.

Finished runs of the tiny models are exported in every format that applies; the export is then
loaded with plain transformers, PEFT or ONNX Runtime only (the README's own snippet, executed,
for classifiers) and its probabilities, or a generator's next-token logits, are compared with
what :mod:`adaptlab.predict` gives for the run on eight inputs. Refused kinds, a folder in the
way and a failing export are checked too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.unit.strategies.test_compare import tiny_runs_config
from tests.unit.strategies.test_generative import chat_experiment
from tests.unit.test_import_layers import SOURCE, import_edges
from typer.testing import CliRunner

from adaptlab import export as export_module
from adaptlab import predict
from adaptlab.cli import app
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.export import ExportError, export
from adaptlab.registry import Registry
from adaptlab.safeload import PICKLE_SUFFIXES

QUIET = {"log": lambda _: None}
DECODING = {"max_new_tokens": 4}
CLASSIFIER_RUNS: dict[str, dict[str, Any]] = {
    "full": {},
    "lora": {},
    "frozen": {"runtime": "torch"},
    "frozen_mlp": {"strategy": "frozen", "runtime": "torch", "head": "mlp", "hidden_size": 16},
    "frozen_int8": {"strategy": "frozen", "runtime": "onnx-int8"},
    "zero_shot": {},
    "knn": {"k": 5},
}
GENERATOR_RUNS: dict[str, dict[str, Any]] = {
    "sft_full": {"decoding": DECODING},
    "sft_lora": {"decoding": DECODING},
    "prompt": {"decoding": DECODING},
}
TEXTS = [
    "my card and the pin please",
    "a wire transfer to a new payee",
    "refund for the merchant receipt",
    "contactless chip not working at the atm",
    "sepa transfer with the wrong iban",
    "dispute a chargeback",
    "question 3 about my debit and chip number 23757",
    "hello",
]
ALLOWED_SUFFIXES = {".json", ".safetensors", ".onnx", ".md", ".txt", ".jinja"}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    tmp_path = tmp_path_factory.mktemp("export-classify")
    raw = tiny_runs_config(tmp_path, tiny_encoder, list(CLASSIFIER_RUNS), CLASSIFIER_RUNS)
    result = compare(ExperimentConfig.model_validate(raw), **QUIET)
    assert result.comparison["failures"] == {}
    return result.folder / "runs"


@pytest.fixture(scope="module")
def generators(
    tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path, tiny_encoder: Path
) -> Path:
    tmp_path = tmp_path_factory.mktemp("export-generate")
    config = chat_experiment(
        tmp_path,
        tiny_llm,
        tiny_encoder,
        train={"max_steps": 2, "micro_batch_size": 8},
        strategies=GENERATOR_RUNS,
        compare={
            "strategies": list(GENERATOR_RUNS),
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "retention": {"enabled": False},
        },
    )
    result = compare(config, **QUIET)
    assert result.failures == {}
    return result.folder / "runs"


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "exports" / "model"
    yield folder
    # Nothing but the export itself is left beside it (no staging folder).
    beside = [p.name for p in folder.parent.iterdir()] if folder.parent.exists() else []
    assert beside in ([], [folder.name])


def _snippet(folder: Path) -> str:
    """The README's Python code block, which must need nothing of adaptlab."""
    readme = (folder / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None, readme
    assert "adaptlab" not in code.group(1)
    return code.group(1)


def _run_probabilities(run: Path | str, registry: Path | None = None) -> np.ndarray:
    with predict.open_model(run, registry) as loaded:
        rows = predict.classify(loaded, TEXTS, top_k=len(loaded.label_names))
        names = loaded.label_names
    return np.array([[row.probabilities[name] for name in names] for row in rows])


def _export_probabilities(folder: Path) -> np.ndarray:
    """The README's snippet run as it is: plain transformers, PEFT or ONNX Runtime."""
    scope: dict[str, Any] = {}
    exec(_snippet(folder), scope)
    return np.asarray(scope["probabilities"](TEXTS))


def _assert_safe(folder: Path) -> None:
    """Nothing pickled, and readable as the umask says (a server may run as another user)."""
    mask = os.umask(0o022)
    os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    for path in folder.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~mask
        assert path.suffix.lower() not in PICKLE_SUFFIXES, path
        if path.is_file():
            assert path.suffix in ALLOWED_SUFFIXES, path
        if path.suffix == ".safetensors":
            with path.open("rb") as handle:
                assert handle.read(9)[8:9] == b"{", path


CLASSIFIER_EXPORTS = [
    ("full", "hf"),
    ("full", "onnx"),
    ("lora", "hf"),
    ("lora", "peft"),
    ("lora", "onnx"),
    ("frozen", "hf"),
    ("frozen", "onnx"),
    ("frozen_mlp", "hf"),
    ("frozen_mlp", "onnx"),
    ("zero_shot", "hf"),
    ("zero_shot", "onnx"),
]


@pytest.mark.parametrize(("run", "format"), CLASSIFIER_EXPORTS)
def test_an_exported_classifier_gives_the_runs_probabilities(
    classifiers: Path, run: str, format: str, out: Path
) -> None:
    result = export(classifiers / run, format, out)

    assert result.folder == out and result.format == format
    assert sorted(result.files) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
    )
    _assert_safe(out)
    tolerance = 1e-4 if format == "onnx" else 1e-5
    expected = _run_probabilities(classifiers / run)
    np.testing.assert_allclose(_export_probabilities(out), expected, atol=tolerance)
    spec = json.loads((out / "classifier.json").read_text(encoding="utf-8"))
    names = spec["label_names"]
    assert spec["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert json.loads((out / "labels.json").read_text(encoding="utf-8"))["label_names"] == names


def test_hf_classifier_config_holds_the_label_map(classifiers: Path, out: Path) -> None:
    from transformers import AutoConfig

    export(classifiers / "full", "hf", out)

    config = AutoConfig.from_pretrained(out)
    names = json.loads((out / "classifier.json").read_text(encoding="utf-8"))["label_names"]
    assert config.id2label == dict(enumerate(names))
    assert config.label2id == {n: i for i, n in enumerate(names)}


def test_onnx_folder_carries_the_label_names_in_the_graph_and_config(
    classifiers: Path, out: Path
) -> None:
    import onnx

    export(classifiers / "zero_shot", "onnx", out)

    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    with predict.open_model(classifiers / "zero_shot") as loaded:
        names = list(loaded.label_names)
    assert json.loads(props["label_names"]) == names
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {str(i): n for i, n in enumerate(names)}


def test_peft_classifier_adapter_names_its_base_and_saves_no_whole_modules(
    classifiers: Path, tiny_encoder: Path, out: Path
) -> None:
    export(classifiers / "lora", "peft", out)

    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(tiny_encoder)
    assert not config.get("modules_to_save")
    assert {"adapter_model.safetensors", "head.safetensors", "classifier.json"} <= {
        p.name for p in out.iterdir()
    }


def test_an_int8_frozen_run_says_its_export_is_float32(classifiers: Path, out: Path) -> None:
    result = export(classifiers / "frozen_int8", "hf", out)

    assert any("int8" in note for note in result.notes)
    assert "int8" in (out / "README.md").read_text(encoding="utf-8")
    probabilities = _export_probabilities(out)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def _prompt_ids(tokenizer: Any, requests: list[Any]) -> list[list[int]]:
    rendered = [
        tokenizer.apply_chat_template(r, tokenize=False, add_generation_prompt=True)
        for r in requests
    ]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]


def _next_token_logits(model: Any, prompts: list[list[int]]) -> np.ndarray:
    with torch.no_grad():
        return np.stack(
            [model(torch.tensor([ids])).logits[0, -1].float().numpy() for ids in prompts]
        )


def _eval_requests(generators: Path) -> list[Any]:
    lines = (generators.parent / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line)["messages"] for line in lines if line.strip()]
    requests = [[m for m in record if m["role"] != "assistant"] for record in records]
    assert len(requests) == 8
    return requests


def _run_logits(run: Path, requests: list[Any]) -> tuple[list[list[int]], np.ndarray]:
    with predict.open_model(run) as loaded:
        assert not loaded.is_classifier
        lm = loaded.model.lm  # type: ignore[union-attr]
        prompts = [lm.encode(lm.chat(r, add_generation_prompt=True)) for r in requests]
        return prompts, _next_token_logits(lm.model, prompts)


@pytest.mark.parametrize("run", ["sft_full", "sft_lora"])
def test_an_hf_generator_gives_the_runs_next_token_logits_and_answers(
    generators: Path, run: str, out: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    requests = _eval_requests(generators)
    prompts, expected = _run_logits(generators / run, requests)

    result = export(generators / run, "hf", out)

    _assert_safe(out)
    assert result.notes == ()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert _prompt_ids(tokenizer, requests) == prompts  # the chat template travelled
    np.testing.assert_allclose(_next_token_logits(model, prompts), expected, atol=1e-5)
    scope: dict[str, Any] = {}
    exec(_snippet(out), scope)
    with predict.open_model(generators / run) as loaded:
        answers = predict.answer(loaded, requests[:2])
    assert [scope["answer"](r).strip() for r in requests[:2]] == [a.text for a in answers]


def test_a_peft_generator_adapter_loads_onto_its_base(
    generators: Path, tiny_llm: Path, out: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    requests = _eval_requests(generators)
    prompts, expected = _run_logits(generators / "sft_lora", requests)

    export(generators / "sft_lora", "peft", out)

    _assert_safe(out)
    assert {p.name for p in out.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
    }
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(tiny_llm)
    assert not config.get("modules_to_save")
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(out)).eval()
    np.testing.assert_allclose(_next_token_logits(model, prompts), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "run", "format", "says"),
    [
        ("classifiers", "knn", "hf", ["NearestNeighbourClassifier", "index.safetensors"]),
        ("classifiers", "knn", "onnx", ["no export format applies"]),
        ("classifiers", "full", "peft", ["no adapter/", "formats it has: hf, onnx"]),
        ("generators", "prompt", "hf", ["no weights of its own", "prompt.json"]),
        ("generators", "sft_full", "onnx", ["generator", "formats it has: hf"]),
        ("generators", "sft_full", "peft", ["no adapter/", "formats it has: hf"]),
    ],
)
def test_what_cannot_be_exported_is_refused_with_the_reason(
    request: pytest.FixtureRequest, kind: str, run: str, format: str, says: list[str], out: Path
) -> None:
    runs: Path = request.getfixturevalue(kind)

    with pytest.raises(ExportError) as raised:
        export(runs / run, format, out)

    message = str(raised.value)
    assert f"run '{run}'" in message and f"as {format}" in message
    for words in says:
        assert words in message
    assert not out.exists()


def test_a_non_empty_folder_is_refused_and_left_as_it_was(classifiers: Path, out: Path) -> None:
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")

    with pytest.raises(ExportError, match="not empty"):
        export(classifiers / "zero_shot", "hf", out)

    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"


def test_an_empty_folder_is_filled(classifiers: Path, out: Path) -> None:
    out.mkdir(parents=True)

    export(classifiers / "zero_shot", "onnx", out)

    assert (out / "model.onnx").is_file()


def test_a_failing_export_leaves_no_folder(
    classifiers: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_write_readme", broken)

    with pytest.raises(RuntimeError, match="disk full"):
        export(classifiers / "zero_shot", "hf", out)

    assert not out.exists()


def test_an_unknown_format_is_refused(classifiers: Path, out: Path) -> None:
    with pytest.raises(ExportError, match="expected one of hf, peft, onnx"):
        export(classifiers / "full", "gguf", out)


def test_a_registered_version_exports_like_its_run(
    classifiers: Path, tmp_path: Path, out: Path
) -> None:
    store = tmp_path / "registry"
    Registry(store, create=True).promote(
        classifiers / "frozen", "intent", approver="ana", reason="best", alias="champion"
    )

    result = export("intent@champion", "onnx", out, registry=store)

    assert result.source == "intent:1"
    expected = _run_probabilities(classifiers / "frozen")
    np.testing.assert_allclose(_export_probabilities(out), expected, atol=1e-4)


def test_the_cli_exports_and_prints_the_files(classifiers: Path, out: Path) -> None:
    runner = CliRunner()

    done = runner.invoke(
        app, ["export", str(classifiers / "zero_shot"), "--format", "hf", str(out)]
    )
    refused = runner.invoke(app, ["export", str(classifiers / "knn"), "--format", "hf", str(out)])

    assert done.exit_code == 0, done.output
    assert "head.safetensors" in done.output and str(out) in done.output
    assert refused.exit_code == 2
    assert "not empty" in refused.output


def test_the_cli_says_why_a_run_is_refused(classifiers: Path, out: Path) -> None:
    refused = CliRunner().invoke(
        app, ["export", str(classifiers / "knn"), "--format", "onnx", str(out)]
    )

    assert refused.exit_code == 2
    assert "no export format applies" in " ".join(refused.output.split())
    assert not out.exists()


def test_export_imports_no_concrete_strategy() -> None:
    imported = {b for a, b, _ in import_edges(SOURCE, "adaptlab") if a == "adaptlab.export"}

    strategies = {m for m in imported if m.startswith("adaptlab.strategies")}
    assert strategies <= {"adaptlab.strategies.base"}
    assert "adaptlab.predict" in imported
