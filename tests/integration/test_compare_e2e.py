"""``adaptlab compare`` on a small E2E NLG slice (free text) with the real SmolLM2 and MiniLM:
prompt, few_shot and sft_lora from start to end, through the command line. Each run's BLEU,
chrF++ and ROUGE-L equal sacrebleu and rouge-score called directly on the run's own answers
against every reference of each test MR.

The slice: the training pairs of 12 MRs of ../shared/data/e2e_nlg/train.jsonl, 6 test MRs of
test_multiref.jsonl converted by ``adaptlab data convert e2e_nlg``; sft_lora takes 4 steps.
About 4 minutes on two otherwise idle CPU cores (13 with a benchmark beside it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF
from tests.integration.conftest import SHARED_DATA, require_shared
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir

pytestmark = pytest.mark.integration

E2E = SHARED_DATA / "e2e_nlg"
RUNS = ("prompt", "few_shot", "sft_lora")


def adaptlab(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output[-3000:]


def test_compare_on_an_e2e_slice_scores_as_sacrebleu_and_rouge_score(tmp_path: Path) -> None:
    require_shared(E2E / "train.jsonl", E2E / "test_multiref.jsonl")
    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    records = [json.loads(line) for line in (E2E / "train.jsonl").open(encoding="utf-8")]
    requests = list(dict.fromkeys(r["messages"][0]["content"] for r in records))[:12]
    train = [r for r in records if r["messages"][0]["content"] in requests]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    test = (E2E / "test_multiref.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    (tmp_path / "multiref.jsonl").write_text("\n".join(test) + "\n")
    converted = tmp_path / "test.jsonl"
    adaptlab("data", "convert", "e2e_nlg", str(tmp_path / "multiref.jsonl"), str(converted))
    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / "e2e.yaml").read_text())
    config.update(name="e2e-slice", output_dir=str(tmp_path / "runs"))
    config["data"].update(train=str(tmp_path / "train.jsonl"), eval=str(converted))
    config["train"] = {"max_steps": 4, "micro_batch_size": 4}
    for settings in config["strategies"].values():
        settings.pop("train", None)  # the preset's CPU budget: 4 steps here
    config["compare"].update(strategies=list(RUNS), latency_budget_s=0.1, bootstrap_resamples=500)
    config["strategies"]["few_shot"]["k"] = 2
    (tmp_path / "e2e.yaml").write_text(yaml.safe_dump(config))
    adaptlab("compare", str(tmp_path / "e2e.yaml"))

    folder = tmp_path / "runs" / "e2e-slice"
    references = [json.loads(line)["references"] for line in test]
    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    rouge = RougeScorer(["rougeL"], use_stemmer=True)
    comparison = json.loads((folder / "comparison.json").read_text())
    assert comparison["task"] == "generation" and comparison["metric"] == "rougeL"
    assert {row["strategy"] for row in comparison["rows"]} == set(RUNS)
    for name in RUNS:
        run = folder / "runs" / name
        evaluation = json.loads((run / "eval.json").read_text())
        answers = [json.loads(line)["text"] for line in (run / "generations.jsonl").open()]
        assert len(answers) == 6 and all(a.strip() for a in answers), answers
        metrics = evaluation["metrics"]
        assert metrics["bleu"] * 100 == pytest.approx(BLEU().corpus_score(answers, streams).score)
        chrf = CHRF(word_order=2).corpus_score(answers, streams).score
        assert metrics["chrf"] * 100 == pytest.approx(chrf)
        pairs = zip(answers, references, strict=True)
        expected = np.mean([rouge.score_multi(refs, a)["rougeL"].fmeasure for a, refs in pairs])
        assert metrics["rougeL"] == pytest.approx(expected)
    assert "## Examples" in (folder / "report.md").read_text()
