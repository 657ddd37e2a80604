"""The report's retrieval section, from hand-written free-text runs (conftest ``text_folder``:
the closed-book prompt and sft_lora, and rag and rag_sft answering from documents): there only
when a run retrieved, its recall table read from eval.json, every run side by side, the paired
differences, the break-even of retrieval's long prompt against fine-tuning, and a report
without retrieval runs left as it was."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from tests.unit.report.conftest import BY_RETRIEVER, generative_folder, text_folder

from adaptlab.comparison import paired_difference
from adaptlab.cost.projection import ProjectionConfig
from adaptlab.report import build, html, markdown, sections
from adaptlab.report.build import ReportConfig, ReportFiles, report_data
from adaptlab.report.decide import RULES, decide, retrieval_vs_fine_tuning
from adaptlab.report.document import Bullets, Document, Paragraph, Section, Table
from adaptlab.report.inputs import read_inputs
from adaptlab.report.sections import ReportData, document


@dataclass(frozen=True)
class Built:
    folder: Path
    data: ReportData
    document: Document


def built(folder: Path, settings: ReportConfig | None = None) -> Built:
    data = report_data(read_inputs([folder]), settings or ReportConfig())
    return Built(folder, data, document(data))


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return built(text_folder(tmp_path_factory.mktemp("qa")))


def section(doc: Document, section_id: str) -> Section:
    return next(s for s in doc.sections if s.id == section_id)


def table(found: Section, table_id: str) -> Table:
    return next(b for b in found.blocks if isinstance(b, Table) and b.id == table_id)


def column(found: Table, header: str) -> list[str]:
    index = found.headers.index(header)
    return [row[index] for row in found.rows]


def text(found: Section) -> str:
    parts = [b.text for b in found.blocks if isinstance(b, Paragraph)]
    parts += [item for b in found.blocks if isinstance(b, Bullets) for item in b.items]
    return "\n".join(parts)


def test_the_section_follows_the_deployment_costs_when_runs_retrieved(qa: Built) -> None:
    ids = [s.id for s in qa.document.sections]
    assert ids.index("retrieval") == ids.index("deployment") + 1
    assert '<section id="retrieval">' in html.render(qa.document)
    assert "## Retrieval: answering from documents" in markdown.render(qa.document)


def test_no_section_without_retrieval_runs(
    tmp_path: Path, generative_report: ReportFiles, classification_report: ReportFiles
) -> None:
    closed_book = built(text_folder(tmp_path, ("prompt", "sft_lora")))
    assert "retrieval" not in [s.id for s in closed_book.document.sections]
    for files in (generative_report, classification_report):
        assert 'id="retrieval"' not in files.html.read_text()
        assert "Retrieval" not in files.markdown.read_text()


def test_the_recall_table_is_read_from_eval_json(qa: Built) -> None:
    found = table(section(qa.document, "retrieval"), "retrieval-recall-table")
    assert found.headers == (
        "retriever",
        "recall@1",
        "recall@3",
        "recall@5",
        "recall@10",
        "recall@20",
        "MRR",
    )
    # from the best retrieval run's eval.json, as written on disk
    evaluation = json.loads((qa.folder / "runs" / "rag_sft" / "eval.json").read_text())
    scored = evaluation["retrieval"]["by_retriever"]
    assert scored == BY_RETRIEVER
    expected = [
        (
            name,
            *(f"{scored[kind][f'recall@{k}'] * 100:.1f}%" for k in (1, 3, 5, 10, 20)),
            f"{scored[kind]['mrr']:.3f}",
        )
        for kind, name in sections.RETRIEVER_WORDS.items()
    ]
    assert [tuple(r) for r in found.rows] == expected
    assert found.rows[2] == (
        "hybrid (reciprocal-rank fusion)",
        "45.0%",
        "66.2%",
        "73.8%",
        "83.8%",
        "92.5%",
        "0.561",
    )
    said = text(section(qa.document, "retrieval"))
    assert (
        "Every retriever on the same 80 eval questions that name their gold document (of 90)"
        in said
    )
    assert "rag: hybrid (reciprocal-rank fusion), top 3 (recall@3 66.2%)" in said


def test_every_run_is_shown_with_and_without_retrieval(qa: Built) -> None:
    found = table(section(qa.document, "retrieval"), "retrieval-runs-table")
    rows = {row[0]: row for row in found.rows}
    assert list(rows) == [str(r["strategy"]) for r in qa.data.rows]  # leaderboard order
    assert column(found, "answers from") == [
        "documents" if name.startswith("rag") else "closed book" for name in rows
    ]
    by_name = dict(zip(rows, column(found, "trains"), strict=True))
    assert by_name == {"rag_sft": "yes", "rag": "no", "sft_lora": "yes", "prompt": "no"}
    groundedness = dict(zip(rows, column(found, "groundedness (95% CI)"), strict=True))
    assert groundedness["rag"] == "80.0 [75.0, 85.0]" and groundedness["sft_lora"] == "—"
    tokens = dict(zip(rows, column(found, "prompt tokens/request"), strict=True))
    assert tokens == {"rag_sft": "600", "rag": "600", "sft_lora": "40", "prompt": "40"}
    comparison = {str(r["strategy"]): r for r in qa.data.rows}
    low, high = comparison["rag"]["rougeL_ci"]
    quality = dict(zip(rows, column(found, "ROUGE-L F1 (95% CI)"), strict=True))
    assert (
        quality["rag"]
        == f"{comparison['rag']['rougeL'] * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]"
    )


def test_the_pairs_are_paired_bootstraps_and_agree_with_the_rule(qa: Built) -> None:
    found = table(section(qa.document, "retrieval"), "retrieval-pairs-table")
    pairs = column(found, "a − b")
    assert pairs == ["rag_sft − sft_lora", "rag_sft − rag", "rag_sft − prompt", "rag − prompt"]
    # the best closed-book run is the fine-tuned one: one row names both comparisons
    assert found.rows[0][0] == (
        "best retrieval against best closed book; best retrieval against best closed-book "
        "fine-tuning"
    )
    runs, settings = qa.data.inputs.runs, qa.data.inputs.settings
    for (a, b), cell in zip(
        (p.split(" − ") for p in pairs), column(found, "Δ ROUGE-L F1 (95% CI)"), strict=True
    ):
        d = paired_difference(runs[a], runs[b], settings, "rougeL")
        assert d is not None
        star = "*" if d.significant else ""
        assert cell == f"{d.difference * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}]{star}"
    # the decision rule cites the same difference as the table's first row
    cited = next(
        f for f in qa.data.decision.fired("retrieval_vs_fine_tuning") if f.subject == "rag_sft"
    )
    difference = column(found, "Δ ROUGE-L F1 (95% CI)")[0].rstrip("*")
    value, interval = difference.split(" ", 1)
    assert f"by {value} points of ROUGE-L F1 {interval} (paired bootstrap)" in cited.message
    assert set(column(found, "items")) == {"90"}


def test_the_cost_of_retrieval_states_the_break_even_against_fine_tuning(qa: Built) -> None:
    said = text(section(qa.document, "retrieval"))
    assert "(rag_sft sends 600 prompt tokens a request against sft_lora's 40)" in said
    deployment = qa.data.deployment
    for name in ("rag_sft", "rag"):
        even = next(e for e in deployment.break_evens(name) if e.b == "sft_lora")
        line = next(line for line in said.splitlines() if line.startswith(f"{name}: "))
        assert line.endswith(even.describe())
    # rag trains next to nothing and pays per request: sft_lora catches up with it
    rag = next(line for line in said.splitlines() if line.startswith("rag: "))
    assert re.search(r"sft_lora pays for itself after [\d,]+ requests \(.+\) versus rag\.$", rag)
    assert "Retrieving the passages takes 6.5 ms a request (rag_sft" in said


def test_serving_priced_from_flops_counts_the_passages(tmp_path: Path) -> None:
    """On hardware the runs were not timed on, a request costs its FLOPs: the prompt tokens
    eval.json measured (passages included) plus the answer's, so 600 + 12 against 40 + 12."""
    settings = ReportConfig(projection=ProjectionConfig(serving_hardware="a10g"))
    data = report_data(read_inputs([text_folder(tmp_path)]), settings)
    costs = data.deployment.costs
    assert costs["rag"].per_request / costs["sft_lora"].per_request == pytest.approx(612 / 52)


@pytest.mark.parametrize("which", ["closed-book text", "slot extraction"])
def test_a_report_without_retrieval_runs_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    folder = (
        text_folder(tmp_path, ("prompt", "sft_lora"))
        if which == "closed-book text"
        else generative_folder(tmp_path)
    )
    inputs = read_inputs([folder])
    now = markdown.render(document(report_data(inputs, ReportConfig())))
    # as before: no retrieval section, no retrieval rule
    monkeypatch.setattr(sections, "retrieval", lambda data: None)
    rules = tuple(rule for rule in RULES if rule is not retrieval_vs_fine_tuning)
    monkeypatch.setattr(build, "decide", partial(decide, rules=rules))
    before = markdown.render(document(report_data(inputs, ReportConfig())))

    def undated(text: str) -> str:
        return re.sub(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC", "built", text)

    assert undated(now) == undated(before)
