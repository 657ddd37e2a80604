"""The model card: a Hugging Face README.md that ``huggingface_hub.ModelCard`` loads, with the
metadata the Hub reads (base model, license, datasets, metrics, model-index) and a body that
gives the version's data, settings, results against the runs it was compared with,
calibration, forgetting, cost, limitations and every approval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from tests.unit.registry.conftest import flip_byte, promote
from tests.unit.report.conftest import EVAL_SHA, TRAIN_SHA, generative_folder, text_folder
from tests.unit.report.test_report import write_comparison
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.registry import Registry, RegistryError
from adaptlab.registry.card import model_card

SECTIONS = (
    "## Intended use",
    "## Training data",
    "## Strategy and settings",
    "## Results",
    "## Calibration",
    "## Forgetting",
    "## Cost and latency",
    "## Limitations",
    "## Approvals",
)
DOCUMENTS_SHA = "d" * 64


def load(card: str, tmp_path: Path) -> ModelCardData:
    """The card's metadata as the Hub's client reads a README.md from disk (no network); it
    raises on a model-index it cannot parse."""
    path = tmp_path / "README.md"
    path.write_text(card, encoding="utf-8")
    loaded = ModelCard.load(path)
    assert loaded.text.startswith("\n# ")  # the body, after the metadata
    return cast(ModelCardData, loaded.data)


def evaluations(data: ModelCardData) -> list[EvalResult]:
    """The model-index's results as ``huggingface_hub`` parsed them."""
    assert data.eval_results is not None
    return data.eval_results


def front_matter(card: str) -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load(card.split("---\n")[1])
    return metadata


def eval_json(run: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((run / "eval.json").read_text())
    return payload


def section(card: str, title: str) -> str:
    """The text of section ``## title`` up to the next one."""
    start = card.index(f"## {title}\n")
    end = card.find("\n## ", start + 1)
    return card[start : None if end < 0 else end]


def headline(metric: str, payload: dict[str, Any]) -> str:
    low, high = payload[f"{metric}_ci"]
    score = payload["metrics"][metric]
    return f"**{metric} {score:.3f}** (95% CI [{low:.3f}, {high:.3f}])"


def test_a_classifier_s_card_loads_in_huggingface_hub(
    registry: Registry, run_dir: Path, tmp_path: Path
) -> None:
    promote(registry, run_dir, alias="champion")
    card = model_card(registry, "intent@champion", license="apache-2.0")
    data = load(card, tmp_path)
    assert data.base_model == "tiny-base" and data.license == "apache-2.0"
    assert data.metrics == ["accuracy"] and data.pipeline_tag == "text-classification"
    assert data.datasets == [f"train.jsonl@sha256:{TRAIN_SHA}"]
    name, results = model_index_to_eval_results(front_matter(card)["model-index"])
    assert name == data.model_name == "intent"
    primary = results[0]
    payload = eval_json(run_dir)
    assert primary.task_type == "text-classification"
    assert (primary.metric_type, primary.metric_value) == (
        "accuracy",
        payload["metrics"]["accuracy"],
    )
    assert primary.dataset_revision == EVAL_SHA and primary.dataset_split == "eval"
    assert [r.metric_type for r in evaluations(data)] == [r.metric_type for r in results]
    assert {"macro_f1", "ece"} <= {r.metric_type for r in results}
    assert "confident_wrong_threshold" not in {r.metric_type for r in results}
    assert "\n# intent (version 1)\n" in card


def test_a_classifier_s_card_has_every_section_with_the_version_s_numbers(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    promote(registry, run_dir, alias="champion")
    card = model_card(registry, "intent@champion")
    positions = [card.index(title + "\n") for title in SECTIONS]
    assert positions == sorted(positions)
    payload = eval_json(run_dir)
    assert headline("accuracy", payload) in section(card, "Results")
    assert "on 90 of 90 eval items (eval.json)" in card
    assert f"(`{(experiment / 'comparison.json').resolve()}`, sha256 `" in card
    assert "the comparison the promotion relied on" in card
    results = section(card, "Results")
    assert "| **full** (this version) | `full` | tuned |" in results
    assert "| `setfit_k8` | `setfit` | tuned |" in results  # a renamed run: its strategy
    for run in ("zero_shot", "knn", "frozen", "setfit_k8"):
        assert f"| `{run}` |" in results
    assert "Δ this − it (paired CI)" in results
    assert "- Against the untouched base (`zero_shot`:" in results
    assert "- Against the well-prompted base (" in results
    ece = payload["metrics"]["ece"]
    assert f"expected calibration error (ECE): {ece:.3f}" in section(card, "Calibration")
    assert "Not measured" in section(card, "Forgetting")
    training = section(card, "Training data")
    assert TRAIN_SHA in training and EVAL_SHA in training
    assert "PII found: 2 items (train EMAIL 2); scrubbed" in training
    assert "duplicates (train): 2 exact groups, 3 near groups, 10 records dropped" in training
    assert "training wall time: 600.0 s" in section(card, "Cost and latency")
    assert "latency, batch 1: p50 9.0 ms, p95 13.5 ms" in card
    limitations = section(card, "Limitations")
    assert "90 of 90 eval items: the whole locked eval set" in limitations
    assert EVAL_SHA in limitations and "languages and domains are not recorded" in limitations
    assert "License `other`" in limitations
    assert "num_epochs: 3" in section(card, "Strategy and settings")


def test_the_approvals_list_every_event_with_who_and_why(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    promote(registry, run_dir, alias="champion")
    registry.promote(
        experiment / "runs" / "knn",
        "intent",
        approver="cy@bank",
        reason="cheaper | faster\n<b>try it</b>",
        alias="champion",
    )
    registry.rollback("intent", "champion", approver="bo", reason="regressed on refunds")
    card = model_card(registry, "intent@champion")
    assert card.count("\n# intent (version 1)\n") == 1  # the alias is back at version 1
    approvals = section(card, "Approvals")
    rows = [line for line in approvals.splitlines() if line.startswith("| ") and "|---" not in line]
    assert len(rows) == 1 + len(registry.history("intent"))  # header + one row per event
    assert "| promote | - | - | 1 | ana@bank | best on the locked eval set |" in approvals
    assert "| alias | @champion | - | 1 | ana@bank |" in approvals
    assert (
        "| promote | - | 1 | 2 | cy@bank | cheaper \\| faster<br>&lt;b&gt;try it&lt;/b&gt; |"
        in (approvals)
    )
    assert "| rollback | @champion | 2 | 1 | bo | regressed on refunds |" in approvals
    ModelCard(card)  # still loads with markup-like text in a reason


def test_a_version_that_is_not_the_best_is_shown_against_the_best(
    registry: Registry, experiment: Path
) -> None:
    knn = experiment / "runs" / "knn"
    promote(registry, knn)
    results = section(model_card(registry, "intent:1"), "Results")
    assert headline("accuracy", eval_json(knn)) in results
    assert "Δ it − best `full` (paired CI)" in results
    assert "| **knn** (this version) |" in results
    assert "(difference of the scores)" in results  # no paired CI against this version


def test_the_card_reads_the_stored_version_not_the_run_folder(
    registry: Registry, run_dir: Path, tmp_path: Path
) -> None:
    payload = eval_json(run_dir)
    promote(registry, run_dir)
    changed = {**payload, "metrics": {**payload["metrics"], "accuracy": 0.5}}
    (run_dir / "eval.json").write_text(json.dumps(changed))
    card = model_card(registry, "intent")
    assert headline("accuracy", payload) in card
    assert evaluations(load(card, tmp_path))[0].metric_value == payload["metrics"]["accuracy"]


def test_without_the_experiment_folder_only_the_version_s_eval_json_is_shown(
    registry: Registry, run_dir: Path, experiment: Path, tmp_path: Path
) -> None:
    promote(registry, run_dir)
    shutil.rmtree(experiment)
    card = model_card(registry, "intent")
    results = section(card, "Results")
    assert "Only this version's own eval.json is shown" in results
    assert "no longer exists" in results and "| run |" not in results
    assert headline("accuracy", eval_json_from(registry, tmp_path)) in results
    load(card, tmp_path)


def eval_json_from(registry: Registry, tmp_path: Path) -> dict[str, Any]:
    return eval_json(registry.open_version("intent", tmp_path / "opened"))


def test_a_changed_comparison_is_named(registry: Registry, run_dir: Path, experiment: Path) -> None:
    promote(registry, run_dir)
    comparison = json.loads((experiment / "comparison.json").read_text())
    (experiment / "comparison.json").write_text(json.dumps({**comparison, "problems": ["x"]}))
    card = model_card(registry, "intent")
    assert "it changed since the promotion, which relied on sha256" in card
    assert "was redone or left out" not in card
    rows = [
        {**row, "score": 0.5} if row["strategy"] == "full" else row for row in comparison["rows"]
    ]
    (experiment / "comparison.json").write_text(json.dumps({**comparison, "rows": rows}))
    assert "Note: run `full` scores 0.500 there, not this version's 0.944" in model_card(
        registry, "intent"
    )


def test_a_tampered_version_is_refused_naming_the_file(registry: Registry, run_dir: Path) -> None:
    version = promote(registry, run_dir).version
    stored = next(f for f in version.files if f.path == "eval.json")
    flip_byte(registry.store.path_of(stored.sha256))
    with pytest.raises(RegistryError, match="eval.json"):
        model_card(registry, "intent")


@pytest.mark.parametrize("license", ["Apache 2.0", "", "../x", "a" * 65])
def test_a_license_that_is_no_hub_id_is_refused(
    registry: Registry, run_dir: Path, license: str
) -> None:
    promote(registry, run_dir)
    with pytest.raises(RegistryError, match="license"):
        model_card(registry, "intent", license=license)


@pytest.fixture
def text_experiment(tmp_path: Path) -> Path:
    """The free-text experiment with a retrieval run (rag_sft, the best) that answered from a
    document collection."""
    folder = text_folder(tmp_path / "text")
    manifest_path = folder / "runs" / "rag_sft" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "documents_sha256": DOCUMENTS_SHA}))
    write_comparison(folder)
    return folder


def test_a_retrieval_generator_s_card(
    registry: Registry, text_experiment: Path, tmp_path: Path
) -> None:
    run = text_experiment / "runs" / "rag_sft"
    registry.promote(run, "answers", approver="ana@bank", reason="grounded", alias="champion")
    card = model_card(registry, "answers@champion")
    data = load(card, tmp_path)
    assert data.pipeline_tag == "text-generation" and data.metrics == ["rougeL"]
    assert data.datasets == [f"train.jsonl@sha256:{TRAIN_SHA}", f"documents@sha256:{DOCUMENTS_SHA}"]
    result = evaluations(data)[0]
    payload = eval_json(run)
    assert result.task_type == "text-generation"
    assert (result.metric_type, result.metric_value) == ("rougeL", payload["metrics"]["rougeL"])
    results = section(card, "Results")
    assert headline("rougeL", payload) in results
    assert "groundedness 0.800 [0.750, 0.850]" in results
    assert "retrieval (hybrid): recall@3 0.662" in results
    assert "- Against the untouched base (`prompt`:" in results
    assert "- Against the well-prompted base (`rag`:" in results
    assert "Not applicable" in section(card, "Calibration")
    assert "Not measured" in section(card, "Forgetting")
    assert "answers from a document collection" in section(card, "Intended use")
    limitations = section(card, "Limitations")
    assert f"document collection it retrieves from (sha256 `{DOCUMENTS_SHA}`)" in limitations
    cost = section(card, "Cost and latency")
    assert "latency per request: p50 420.0 ms, p95 504.0 ms" in cost
    assert "index build: 3.2 s" in cost


def test_a_slot_extractor_s_card_reports_its_forgetting(registry: Registry, tmp_path: Path) -> None:
    folder = generative_folder(tmp_path / "chat")
    write_comparison(folder)
    registry.promote(folder / "runs" / "sft_lora", "slots", approver="ana@bank", reason="best")
    card = model_card(registry, "slots")
    data = load(card, tmp_path)
    assert data.pipeline_tag == "text-generation" and data.metrics == ["slot_f1"]
    assert evaluations(data)[0].metric_type == "slot_f1"
    forgetting = section(card, "Forgetting")
    assert "- forgetting: 0.050" in forgetting and "- perplexity ratio: 1.300" in forgetting
    assert "Slot extraction" in section(card, "Intended use")
    assert "Not applicable" in section(card, "Calibration")


runner = CliRunner()


def test_the_card_command_writes_the_file(run_dir: Path, tmp_path: Path) -> None:
    where = ["--registry", str(tmp_path / "registry")]
    approval = ["--approver", "ana@bank", "--reason", "best"]
    result = runner.invoke(
        app, ["promote", str(run_dir), "--name", "intent", "--alias", "champion", *approval, *where]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "card" / "README.md"
    args = ["registry", "card", "intent@champion", "--out", str(out), "--license", "mit"]
    result = runner.invoke(app, [*args, *where])
    assert result.exit_code == 0, result.output
    assert "Wrote the model card of intent@champion" in result.output
    assert load(out.read_text(), tmp_path).license == "mit"
    assert [p.name for p in out.parent.iterdir()] == ["README.md"]  # no temporary left
    printed = runner.invoke(app, ["registry", "card", "intent:1", *where])
    assert printed.exit_code == 0, printed.output
    front = front_matter(printed.output)
    assert front["license"] == "other" and front["base_model"] == "tiny-base"
    refused = runner.invoke(app, ["registry", "card", "intent", "--license", "No Way", *where])
    assert refused.exit_code == 2 and "license 'No Way' refused" in refused.output
    missing = runner.invoke(app, ["registry", "card", "other", *where])
    assert missing.exit_code == 2 and "no model named 'other'" in missing.output
