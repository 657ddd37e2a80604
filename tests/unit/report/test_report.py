"""The report from hand-written experiment folders: every section and plot present in the HTML
and the Markdown, text escaped, nothing external referenced; broken, deleted and mismatched
runs named while the rest still builds; comparison.json reused only while it is current."""

from __future__ import annotations

import json
import os
import re
import shutil
from html import escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.comparison import build_comparison
from adaptlab.config import CompareConfig
from adaptlab.report.build import (
    REPORT_HTML,
    REPORT_MARKDOWN,
    ReportConfig,
    ReportFiles,
    build_report,
    report_after_compare,
    report_data,
)
from adaptlab.report.decide import Decision, Effect, Finding
from adaptlab.report.document import Document, Section, Table
from adaptlab.report.html import render as render_html
from adaptlab.report.inputs import ReportError, read_inputs
from adaptlab.report.pairs import paired_differences
from adaptlab.report.plots import Point, frontier
from adaptlab.report.sections import hardest_first

CLASSIFICATION_PLOTS = (
    "plot-quality-cost",
    "plot-quality-latency",
    "plot-cost-curves",
    "plot-per-class",
    "plot-calibration",
)
GENERATIVE_PLOTS = (
    "plot-quality-cost",
    "plot-quality-latency",
    "plot-cost-curves",
    "plot-per-slot",
    "plot-forgetting",
)


def image_ids(html: str) -> list[str]:
    return re.findall(r'<img id="([^"]+)" alt="[^"]+" src="data:image/png;base64,', html)


def write_comparison(folder: Path) -> None:
    """comparison.json as ``compare`` leaves it, from the runs now in the folder."""
    runs = sorted(p for p in (folder / "runs").iterdir() if p.is_dir())
    comparison, _ = build_comparison(runs, CompareConfig(bootstrap_resamples=200))
    (folder / "comparison.json").write_text(json.dumps(comparison))


def test_classification_report_has_every_section_and_plot(
    classification_report: ReportFiles,
) -> None:
    files = classification_report
    html = files.html.read_text()
    assert files.html.name == REPORT_HTML and files.html.parent.name == "tiny"
    assert files.recommended == "full" and files.left_out == {}
    for section in ("recommendation", "leaderboard", "quality", "deployment", "per-class"):
        assert f'<section id="{section}">' in html
    for section in ("calibration", "forgetting", "data", "lineage"):
        assert f'<section id="{section}">' in html
    assert "Recommended: full (confidence:" in html
    assert html.index('id="recommendation"') < html.index('id="leaderboard"')  # reasons on top
    assert sorted(image_ids(html)) == sorted(CLASSIFICATION_PLOTS)
    table = html[html.index('<table id="leaderboard-table">') :].split("</table>")[0]
    assert table.count("<tr>") == 1 + 5  # the header and one row per run
    assert "[93" not in table and "Δ vs best (95% CI)" in table
    assert '<th class="num">cost 12 months ($)</th>' in table
    # self-contained: nothing fetched when the file is opened
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html and "<link" not in html
    # the renamed run is priced and judged as the strategy it ran
    assert "<td>setfit_k8</td><td>setfit</td>" in html


def test_text_from_disk_is_escaped(classification_report: ReportFiles) -> None:
    html = classification_report.html.read_text()
    assert "<b>few</b>" not in html  # the data report's guidance carries markup
    assert "&lt;b&gt;few&lt;/b&gt; for fine-tuning" in html


def test_markdown_report_says_the_same(classification_report: ReportFiles) -> None:
    files = classification_report
    markdown = files.markdown.read_text()
    assert files.markdown == files.html.parent / REPORT_MARKDOWN
    assert markdown.startswith("# adaptlab report: tiny\n")
    assert "Recommended: full (confidence:" in markdown
    headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    html = files.html.read_text()
    assert headings == re.findall(r"<h2>(.+?)</h2>", html)
    assert "| strategy | accuracy | Δ vs best (95% CI) |" in markdown
    for plot in CLASSIFICATION_PLOTS:
        assert f'id="{plot}"' in html
    assert markdown.count("_Plot (") == len(CLASSIFICATION_PLOTS)
    assert "[cheaper_within_ci]" in markdown  # rules are cited by name
    assert "<details><summary>full: manifest.json and config.yaml</summary>" in markdown


def test_generative_report_reads_slot_f1_and_forgetting(generative_report: ReportFiles) -> None:
    files = generative_report
    html, markdown = files.html.read_text(), files.markdown.read_text()
    assert sorted(image_ids(html)) == sorted(GENERATIVE_PLOTS)
    assert "ranked on slot F1" in html
    assert files.recommended == "sft_lora"
    # sft_lora forgot 5 points of general capability and its perplexity rose 1.3x
    assert "[forgetting_regression] sft_lora lost 5.0 points of general capability" in markdown
    assert "1.30× the base model&#x27;s perplexity" in html
    # and has 390 training examples: each lowers the confidence one step
    assert "[too_little_data] sft_lora has 390 training examples (needs 1,000)" in markdown
    assert "Recommended: sft_lora (confidence: low)" in markdown
    # the margin over the well-prompted base is shown although no rule fired about it
    against_prompt = markdown.split("Each tuned run against the well-prompted base:")[1]
    assert "[tuned_vs_prompted] sft_lora beats the prompted few_shot: +" in against_prompt
    assert "Slot F1 against projected cost" in markdown
    calibration = markdown.split("## Calibration")[1].split("## ")[0]
    assert "Not measured: generated answers carry no class probabilities" in calibration


def test_broken_and_deleted_runs_are_named_and_the_rest_still_builds(
    classification_experiment: Path,
) -> None:
    write_comparison(classification_experiment)
    runs = classification_experiment / "runs"
    (runs / "knn" / "eval.json").write_text("{ not json")
    shutil.rmtree(runs / "frozen")
    (runs / "setfit_k8" / "eval.json").unlink()
    files = build_report([classification_experiment])
    assert set(files.left_out) == {"knn", "frozen", "setfit_k8"}
    assert f"{runs / 'knn' / 'eval.json'}: unreadable" in files.left_out["knn"]
    assert f"{runs / 'frozen'}: no such run folder" in files.left_out["frozen"]
    assert f"{runs / 'setfit_k8'}: no eval.json" in files.left_out["setfit_k8"]
    html, markdown = files.html.read_text(), files.markdown.read_text()
    assert f"run &#x27;knn&#x27; left out: {runs / 'knn' / 'eval.json'}: unreadable" in html
    assert f"> **warning:** run 'frozen' left out: {runs / 'frozen'}: no such run folder" in (
        markdown
    )
    table = html[html.index('<table id="leaderboard-table">') :].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2  # zero_shot and full remain
    assert sorted(image_ids(html)) == sorted(CLASSIFICATION_PLOTS)


def test_a_failed_strategy_names_its_error(classification_experiment: Path) -> None:
    run = classification_experiment / "runs" / "knn"
    (run / "manifest.json").unlink()
    (run / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")
    inputs = read_inputs([classification_experiment])
    assert "the strategy failed: RuntimeError: out of memory" in inputs.left_out["knn"]


def test_a_run_on_another_eval_set_is_left_out(classification_experiment: Path) -> None:
    manifest_path = classification_experiment / "runs" / "knn" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "eval_sha256": "0" * 64}))
    inputs = read_inputs([classification_experiment])
    assert "knn" not in inputs.runs
    assert "scored on eval set 000000000000…" in inputs.left_out["knn"]


def test_comparison_json_is_reused_only_while_current(classification_experiment: Path) -> None:
    write_comparison(classification_experiment)
    path = classification_experiment / "comparison.json"
    marked = {**json.loads(path.read_text()), "marker": True}
    path.write_text(json.dumps(marked))
    assert read_inputs([classification_experiment]).comparison.get("marker")
    # a run finished after comparison.json was written makes it stale
    later = path.stat().st_mtime + 10
    os.utime(classification_experiment / "runs" / "knn" / "manifest.json", (later, later))
    assert "marker" not in read_inputs([classification_experiment]).comparison


def test_run_folders_given_alone_belong_to_their_experiment(
    classification_experiment: Path,
) -> None:
    runs = classification_experiment / "runs"
    inputs = read_inputs([runs / "full", runs / "knn", runs / "gone"])
    assert list(inputs.runs) == ["full", "knn"]
    assert inputs.experiment_folder == classification_experiment
    assert inputs.data_report is not None  # found through the experiment folder
    assert "no such run folder" in inputs.left_out["gone"]
    with pytest.raises(ReportError, match="no run to report on: run 'gone' left out"):
        read_inputs([runs / "gone"])


def test_a_report_after_compare_that_fails_removes_the_old_one(
    classification_experiment: Path,
) -> None:
    for name in (REPORT_HTML, REPORT_MARKDOWN):  # as an earlier compare left them
        (classification_experiment / name).write_text("old")
    lines: list[str] = []
    bad = {"rows": [{"strategy": "missing"}], "task": "classification"}
    assert report_after_compare(classification_experiment, bad, lines.append) is None
    assert lines and lines[0].startswith("report not built: ")
    assert not (classification_experiment / REPORT_HTML).exists()
    assert not (classification_experiment / REPORT_MARKDOWN).exists()


def test_cli_report_writes_both_files_and_names_left_out_runs(
    classification_experiment: Path, tmp_path: Path
) -> None:
    (classification_experiment / "runs" / "knn" / "cost.json").write_text("[]")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["report", str(classification_experiment), "--out", str(out), "--months", "24"],
    )
    assert result.exit_code == 0, result.output
    assert "run 'knn' left out:" in result.output and "expected a JSON object" in result.output
    assert f"Report: {out / REPORT_HTML} and {out / REPORT_MARKDOWN}" in result.output
    assert "24 months" in (out / REPORT_MARKDOWN).read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no run to report on" in bad.output
    unknown = ["report", str(classification_experiment), "--serving-hardware", "tpu"]
    result = CliRunner().invoke(app, unknown)
    assert result.exit_code == 2 and "unknown hardware profile 'tpu'" in result.output
    margins = ["--quality-margin", "0.02", "--cost-tie-margin", "0.2"]
    result = CliRunner().invoke(
        app, ["report", str(classification_experiment), "--out", str(out), *margins]
    )
    assert result.exit_code == 0, result.output
    text = (out / REPORT_MARKDOWN).read_text()
    assert "wholly above the 2.0-point margin" in text and "differ by less than 20%" in text
    too_wide = ["report", str(classification_experiment), "--quality-margin", "1.5"]
    result = CliRunner().invoke(app, too_wide)
    assert result.exit_code == 2 and "quality_margin" in result.output


def test_pairs_agree_with_the_comparison_and_cover_every_two_runs(
    classification_experiment: Path,
) -> None:
    inputs = read_inputs([classification_experiment])
    pairs = paired_differences(inputs.runs.values(), inputs.settings)
    assert len(pairs) == 5 * 4 // 2
    best = inputs.comparison["best"]
    for row in inputs.comparison["rows"]:
        if row["vs_best"] is None:
            continue
        # the same items, resamples and seed as compare's difference to the best
        name = row["strategy"]
        pair = pairs.get((name, best)) or pairs[(best, name)].flipped()
        expected = row["vs_best"]
        assert (pair.difference, pair.low, pair.high) == pytest.approx(
            (expected["difference"], expected["low"], expected["high"])
        )


def test_a_copied_run_folder_is_named_by_its_manifest(classification_experiment: Path) -> None:
    runs = classification_experiment / "runs"
    shutil.copytree(runs / "knn", runs / "knn_copy")
    inputs = read_inputs([runs / "full", runs / "knn_copy", runs / "knn"])
    assert list(inputs.runs) == ["full", "knn"]
    assert inputs.runs["knn"].folder == runs / "knn_copy"
    assert f"another run named 'knn' is already in: {runs / 'knn_copy'}" in inputs.left_out["knn"]


def test_one_experiment_folder_per_report(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "runs").mkdir(parents=True)
    with pytest.raises(ReportError, match="one experiment folder per report, got 2"):
        read_inputs([tmp_path / "a", tmp_path / "b"])


def test_frontier_keeps_runs_nothing_cheaper_beats() -> None:
    points = [
        Point("cheap", 1.0, 0.50, 0.4, 0.6),
        Point("dear_and_worse", 5.0, 0.45, 0.4, 0.5),
        Point("mid", 2.0, 0.80, 0.7, 0.9),
        Point("tie_dearer", 3.0, 0.80, 0.7, 0.9),
        Point("best", 10.0, 0.90, 0.8, 1.0),
    ]
    assert [p.name for p in frontier(points)] == ["cheap", "mid", "best"]


def test_hardest_labels_follow_the_recommended_run() -> None:
    scores = {"chosen": {"a": 0.9, "b": 0.2, "c": 0.5}, "other": {"a": 0.0, "b": 1.0, "c": 0.5}}
    assert hardest_first(scores, "chosen") == ["b", "c", "a"]
    assert hardest_first(scores, None) == ["a", "c", "b"]  # by mean: 0.45, 0.5, 0.6


def recommendation_box(text: str, start: str, end: str) -> str:
    return text[text.index(start) :].split(end)[0]


@pytest.mark.parametrize(
    "report", ["classification_report", "demo_sized_report", "generative_report"]
)
def test_the_recommendation_opens_with_three_reasons_and_folds_every_other_finding(
    report: str, request: pytest.FixtureRequest
) -> None:
    files: ReportFiles = request.getfixturevalue(report)
    data = report_data(read_inputs([files.html.parent]), ReportConfig())
    ranked = data.decision.by_priority()
    cites = [f"[{f.rule}] {f.message}" for f in ranked]
    against_prompt = [
        f"[{f.rule}] {f.message}"
        for f in data.decision.findings
        if f.rule == "tuned_vs_prompted" and f.other
    ]
    html_box = recommendation_box(
        files.html.read_text(), '<section id="recommendation">', "</section>"
    )
    markdown_box = recommendation_box(files.markdown.read_text(), "## Recommendation", "\n## ")
    for box, quote, opening in (
        (html_box, escape, '<details class="fold"><summary>'),
        (markdown_box, str, "<details><summary>"),
    ):
        assert box.count("<details") == 1 and "<details open" not in box
        top, folded = box.split(opening)
        assert f"Recommended: {files.recommended} (confidence:" in top
        shown = [cite for cite in cites if quote(cite) in top]
        assert shown == cites[:3]  # at most three, in the order of priority
        summary = folded.split("</summary>")[0]
        more = len(cites) - 3
        if more > 0:
            assert summary.startswith(f"{more} more finding{'' if more == 1 else 's'}")
        else:
            assert "more finding" not in summary
        inside = folded.split("</details>")[0]
        # nothing is lost: every fired finding is shown or folded, and so is each tuned run
        # against the prompted base
        assert all(quote(cite) in inside for cite in cites[3:] + against_prompt)


def test_a_cell_s_detail_goes_under_its_number_and_headers_wrap_after_slashes() -> None:
    table = Table(
        ("strategy", "prompt tokens/request", "held-out perplexity (× base)"),
        (("sft_lora (sample)", "120", "13.00 (×1.300)"), ("few_shot", "94.9% [92.8, 96.9]", "—")),
    )
    rendered = render_html(Document("t", "s", (Section("s", "S", (table,)),)))
    assert '<th class="num">prompt tokens/<wbr>request</th>' in rendered
    assert '<td class="num">13.00 <span class="detail">(×1.300)</span></td>' in rendered
    assert '<td class="num">94.9% <span class="detail">[92.8, 96.9]</span></td>' in rendered
    assert "<td>sft_lora (sample)</td>" in rendered  # a name is not a number with a detail


def test_reasons_about_the_recommendation_come_first() -> None:
    def finding(rule: str, subject: str, effect: Effect, other: str | None = None) -> Finding:
        return Finding(rule, subject, True, effect, f"{rule} {subject}", other)

    findings = (
        finding("sampled_eval", "c", "confidence"),
        finding("cheaper_within_ci", "b", "ranking", "d"),
        finding("cheaper_within_ci", "d", "ranking", "a"),
        finding("tuned_vs_base", "a", "flag"),
        finding("too_little_data", "a", "confidence"),
        Finding("tuned_vs_base", "a", False, "none", "quiet"),
    )
    decision = Decision("a", "b", "medium", ("a", "b", "c", "d"), findings)
    ordered = [(f.rule, f.subject) for f in decision.by_priority()]
    assert ordered == [
        ("too_little_data", "a"),  # about the recommendation, lowering trust in it
        ("tuned_vs_base", "a"),
        ("cheaper_within_ci", "d"),  # a run that lost to it
        ("cheaper_within_ci", "b"),  # the runner-up
        ("sampled_eval", "c"),
    ]
