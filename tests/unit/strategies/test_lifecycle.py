"""From comparison to champion and back, on the command line (issue 16's end-to-end test):
compare on the tiny encoder, promote the recommended run as ``intent@champion``, predict with
it, export it, promote a second run under the same alias, roll back, and find the alias at the
first version again with both changes in the history and the first version's predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.unit.strategies.test_compare import write_dataset
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.registry import Registry

TEXTS = ["my card pin does not work", "send a sepa transfer to a new payee"]


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"adaptlab {' '.join(args)}:\n{result.output}"
    return result.stdout


def _predict(target: str, registry: Path) -> list[dict[str, object]]:
    text = [part for t in TEXTS for part in ("--text", t)]
    out = _run("predict", target, *text, "--top-k", "3", "--registry", str(registry))
    return [json.loads(line) for line in out.splitlines()]


def test_compare_promote_predict_export_promote_again_and_roll_back(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime
    from transformers import AutoTokenizer

    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "output_dir": str(tmp_path / "runs"),
                "data": {"train": str(write_dataset(tmp_path / "train.jsonl"))},
                "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
                "train": {"max_steps": 3},
                "compare": {
                    "strategies": ["zero_shot", "frozen", "full"],
                    "latency_budget_s": 0.05,
                    "bootstrap_resamples": 100,
                },
            }
        )
    )
    _run("compare", str(config))
    experiment = tmp_path / "runs" / "tiny"
    best = json.loads((experiment / "comparison.json").read_text())["best"]
    other = next(name for name in ("zero_shot", "frozen", "full") if name != best)
    registry = tmp_path / "registry"
    approval = ("--approver", "ana@bank", "--registry", str(registry))

    _run("promote", str(experiment / "runs" / best), "--name", "intent", "--alias", "champion",
         "--reason", "best on the locked eval set", *approval)  # fmt: skip
    first = _predict("intent@champion", registry)
    assert first == _predict(str(experiment / "runs" / best), registry)
    assert [set(row) for row in first] == [{"label", "probability", "probabilities"}] * 2

    exported = tmp_path / "exported"
    _run("export", "intent@champion", "--format", "onnx", str(exported), *approval[2:])
    onnx_file = next(exported.glob("*.onnx"))
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(exported)
    labels = json.loads((exported / "config.json").read_text())["id2label"]
    for text, row in zip(TEXTS, first, strict=True):
        encoded = tokenizer([text], return_tensors="np")
        feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
        probabilities = session.run(None, feeds)[0][0]
        shown = {labels[str(i)]: float(p) for i, p in enumerate(probabilities)}
        for label, probability in row["probabilities"].items():  # type: ignore[attr-defined]
            assert shown[label] == pytest.approx(probability, abs=1e-4)

    _run("promote", str(experiment / "runs" / other), "--name", "intent", "--alias", "champion",
         "--reason", "try the other candidate", *approval)  # fmt: skip
    catalog = Registry(registry)
    assert catalog.version("intent@champion").version == 2
    _run("registry", "rollback", "intent@champion", "--reason", "it regressed", *approval)

    assert catalog.version("intent@champion").version == 1
    assert _predict("intent@champion", registry) == first
    changes = [(e.kind, e.alias, e.from_version, e.to_version) for e in catalog.history("intent")]
    assert ("promote", None, 1, 2) in changes  # the second promotion...
    assert ("alias", "champion", 1, 2) in changes  # ...moved the alias,
    assert changes[-1] == ("rollback", "champion", 2, 1)  # and the rollback moved it back
    assert "rollback" in _run("registry", "show", "intent@champion", "--registry", str(registry))
    assert "every one matches" in _run("registry", "verify", "--registry", str(registry))
