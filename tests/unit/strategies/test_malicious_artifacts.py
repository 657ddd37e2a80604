"""Malicious artefacts in every place adaptlab loads from: refused by its own check, no code run.

Each case plants a file that runs code when a loader trusts it: a pickle whose ``__reduce__``
creates a sentinel file, a ``torch.save`` archive carrying the same pickle, a ``.safetensors``
name over pickle bytes, or a model configuration that asks for its own Python (``auto_map``,
``trust_remote_code``) next to a module that creates the sentinel on import. The test then goes
through adaptlab's real entry point for that place (loading a base model, a tokenizer, a model
config, a LoRA adapter, a teacher run, a training checkpoint, a run's predictions, a registry
artefact) and asserts adaptlab's own :class:`UnsafeArtifactError` and no sentinel.

The payloads are shown to work (a control test unpickles one and finds the sentinel), so the
refusals are not passing on a payload that would never have fired.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.unit.strategies.conftest import RunFactory, TeacherFactory

from adaptlab.cost.workload import model_config
from adaptlab.models.bundled import load_tokenizer
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.encoder import load_encoder
from adaptlab.runs import RunError, RunFolder
from adaptlab.safeload import UnsafeArtifactError, check_before_load
from adaptlab.strategies.base import get_strategy
from adaptlab.strategies.sft_lora import adapted_generator


class _Payload:
    """Unpickling this creates ``sentinel``: what a hostile ``pytorch_model.bin`` does."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return builtins.open, (str(self.sentinel), "w")


def pickle_bytes(sentinel: Path) -> bytes:
    return pickle.dumps({"weight": _Payload(sentinel)})


def torch_zip(path: Path, sentinel: Path) -> None:
    torch.save({"weight": _Payload(sentinel)}, path)


def remote_code(folder: Path, sentinel: Path, config: str = "config.json") -> None:
    """A model folder whose ``config`` asks transformers to import its own module."""
    (folder / "evil_model.py").write_text(
        f"open({str(sentinel)!r}, 'w').close()\n", encoding="utf-8"
    )
    data = json.loads((folder / config).read_text(encoding="utf-8"))
    data["auto_map"] = {"AutoModel": "evil_model.Evil", "AutoTokenizer": ["evil_model.Evil", None]}
    (folder / config).write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "SENTINEL"


def test_the_payloads_work_when_trusted(tmp_path: Path) -> None:
    """Control: the pickle and the torch.save archive do run code when loaded unchecked."""
    first, second = tmp_path / "first", tmp_path / "second"
    pickle.loads(pickle_bytes(first))
    torch_zip(tmp_path / "w.pt", second)
    torch.load(tmp_path / "w.pt", weights_only=False)
    assert first.exists() and second.exists()


def _copy(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def _without_safetensors(folder: Path) -> None:
    for weights in folder.glob("*.safetensors"):
        weights.unlink()


# Each case: a place adaptlab loads from, planted with a hostile file, and the load to try.
# (tmp_path, sentinel, fixtures) -> the call that must be refused.
Case = Callable[[Path, Path, dict[str, Any]], Callable[[], object]]


def _encoder_bin(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Callable[[], object]:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    _without_safetensors(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle_bytes(sentinel))
    return lambda: load_encoder(str(folder))


def _encoder_pt_beside_safetensors(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")  # safetensors kept: .pt still refused
    torch_zip(folder / "extra_weights.pt", sentinel)
    return lambda: load_encoder(str(folder))


def _encoder_renamed_pickle(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    (folder / "model.safetensors").write_bytes(pickle_bytes(sentinel))
    return lambda: load_encoder(str(folder))


def _encoder_renamed_zip(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    torch_zip(folder / "model.safetensors", sentinel)
    return lambda: load_encoder(str(folder))


def _encoder_remote_code(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    remote_code(folder, sentinel)
    return lambda: load_encoder(str(folder))


def _tokenizer_remote_code(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    remote_code(folder, sentinel, "tokenizer_config.json")
    return lambda: load_tokenizer(str(folder))


def _config_trust_flag(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_encoder"], tmp / "model")
    remote_code(folder, sentinel)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "trust_remote_code": True}))
    return lambda: model_config(str(folder))  # the cost estimate reads the config alone


def _causal_lm_pth(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_llm"], tmp / "llm")
    _without_safetensors(folder)
    torch_zip(folder / "model.pth", sentinel)
    return lambda: CausalLM.load(str(folder))


def _causal_lm_pickle_in_subfolder(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    folder = _copy(fx["tiny_llm"], tmp / "llm")
    (folder / "extra").mkdir()
    (folder / "extra" / "tokenizer.pkl").write_bytes(pickle_bytes(sentinel))
    return lambda: CausalLM.load(str(folder))


def _generative_adapter(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    adapter = tmp / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(pickle_bytes(sentinel))
    lm = CausalLM.load(str(fx["tiny_llm"]))
    return lambda: adapted_generator(adapter, lm, merge=True)


def _encoder_adapter(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    run = fx["make_run"]("lora")
    adapter = run.folder / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    torch_zip(adapter / "adapter_model.ckpt", sentinel)
    return lambda: get_strategy("lora").load(run)


def _teacher_run(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    run = fx["make_run"]("distill")
    teacher = fx["make_teacher"](run.runs_root, "full", 0.9)
    (teacher / "model" / "training_args.bin").write_bytes(pickle_bytes(sentinel))
    return lambda: get_strategy("distill").fit(run)


def _checkpoint(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    run = fx["make_run"]("full")
    folder = run.folder / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    (folder / "trainable.safetensors").write_bytes(pickle_bytes(sentinel))
    return lambda: get_strategy("full").fit(dataclasses.replace(run, resume=True))


def _checkpoint_optimizer_pt(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    run = fx["make_run"]("full")
    folder = run.folder / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    torch_zip(folder / "optimizer.pt", sentinel)
    return lambda: get_strategy("full").fit(dataclasses.replace(run, resume=True))


def _registry_artifact(tmp: Path, sentinel: Path, fx: dict[str, Any]) -> Any:
    artifact = tmp / "store" / "ab" / "model.joblib"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(pickle_bytes(sentinel))
    return lambda: check_before_load(artifact, "registry artefact")


CASES: dict[str, Case] = {
    "base model: pytorch_model.bin": _encoder_bin,
    "base model: a .pt beside the safetensors": _encoder_pt_beside_safetensors,
    "base model: pickle named model.safetensors": _encoder_renamed_pickle,
    "base model: torch.save zip named model.safetensors": _encoder_renamed_zip,
    "base model: auto_map remote code": _encoder_remote_code,
    "tokenizer: auto_map remote code": _tokenizer_remote_code,
    "model config: trust_remote_code true": _config_trust_flag,
    "causal LM: model.pth": _causal_lm_pth,
    "causal LM: a .pkl in a subfolder": _causal_lm_pickle_in_subfolder,
    "sft_lora adapter: adapter_model.bin": _generative_adapter,
    "lora adapter: adapter_model.ckpt": _encoder_adapter,
    "teacher run: training_args.bin": _teacher_run,
    "checkpoint: pickle named trainable.safetensors": _checkpoint,
    "checkpoint: optimizer.pt": _checkpoint_optimizer_pt,
    "registry artefact: .joblib": _registry_artifact,
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_by_adaptlabs_own_check_and_no_code_runs(
    case: str,
    tmp_path: Path,
    sentinel: Path,
    tiny_encoder: Path,
    tiny_llm: Path,
    make_run: RunFactory,
    make_teacher: TeacherFactory,
) -> None:
    fixtures = {
        "tiny_encoder": tiny_encoder,
        "tiny_llm": tiny_llm,
        "make_run": make_run,
        "make_teacher": make_teacher,
    }
    load = CASES[case](tmp_path, sentinel, fixtures)
    with pytest.raises(UnsafeArtifactError, match="refused") as refused:
        load()
    assert not sentinel.exists(), f"{case}: the payload ran"
    message = str(refused.value)
    assert "weights_only" not in message and "trust_remote_code=True" not in message


def test_a_corrupt_predictions_file_is_a_run_error_naming_it(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    folder = RunFolder(tmp_path / "run")
    folder.reset()
    (folder.path / "predictions.safetensors").write_bytes(pickle_bytes(sentinel))
    with pytest.raises(RunError, match=r"predictions\.safetensors.*pickle"):
        folder.read_prediction_arrays()
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "name, content",
    [
        ("config.json", {"auto_map": None}),
        ("config.json", {"trust_remote_code": False}),
        ("config.json", "not json at all"),
        ("notes.txt", "auto_map"),
    ],
)
def test_harmless_lookalikes_pass(tmp_path: Path, name: str, content: Any) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / name).write_text(text, encoding="utf-8")
    check_before_load(tmp_path, "base model")


def test_the_bundled_and_tiny_models_pass(tiny_encoder: Path, tiny_llm: Path) -> None:
    from adaptlab.models.bundled import MINILM, resolve_model

    for folder in (resolve_model(MINILM), tiny_encoder, tiny_llm):
        check_before_load(folder, "base model")


def test_a_hub_name_is_left_to_the_restricted_download() -> None:
    check_before_load("someone/some-model", "base model")  # nothing on disk to inspect
