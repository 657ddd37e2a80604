"""Drift monitoring: the three tests on their own, a shifted stream raising the alarm through a
real server (uvicorn on loopback, the tiny runs of conftest.py and the tiny encoder), the re-tune
proposal it writes with its inputs scrubbed, the monitor's HTML page, and the false-alarm rate
over 20 windows of unshifted data, measured and printed (run with -s to see it)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from tests.unit.serve.conftest import Server, serving
from typer.testing import CliRunner

from adaptlab import predict
from adaptlab.cli import app as cli_app
from adaptlab.models.encoder import FrozenEncoder
from adaptlab.registry import Registry
from adaptlab.serve.app import create_app
from adaptlab.serve.drift import (
    DriftConfig,
    Reference,
    evaluate_window,
    label_counts,
    mmd_test,
    psi,
)
from adaptlab.serve.monitor import WINDOWS_FILE
from adaptlab.serve.monitor_report import write_monitor_report
from adaptlab.serve.reference import ReferenceUnavailable, build_embeddings, build_reference
from adaptlab.serve.retune import INPUTS, PROPOSAL, PROPOSALS
from adaptlab.serve.settings import ServeSettings

WINDOW = 20
PERSIST = 2
E_MAIL = "jane.doe@example.com"
SALAD = (
    *("zebra", "quantum", "marmalade", "violin", "glacier", "paprika", "saxophone", "nebula"),
    *("walrus", "origami", "tundra", "harpsichord", "mango", "lighthouse", "cobalt", "tapestry"),
)


# --------------------------------------------------------------------------- the tests alone


def test_mmd_of_identical_samples_has_a_high_p_value() -> None:
    x = np.random.default_rng(0).normal(size=(40, 8))
    result = mmd_test(x, x.copy(), permutations=200, seed=0)
    assert result.p_value > 0.5 and result.mmd2 < 0.01 and result.bandwidth > 0


def test_mmd_of_shifted_means_rejects() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)), rng.normal(loc=0.8, size=(30, 8))
    result = mmd_test(x, y, permutations=300, seed=0)
    assert result.p_value < 0.01 and result.p_value >= 1 / 301
    assert mmd_test(x, y, permutations=300, seed=0) == result  # seeded


def test_mmd_is_the_unbiased_estimate_with_the_median_bandwidth() -> None:
    """Against Gretton et al.'s eq. 3 written out directly, with a loop-free kernel."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3))
    pooled = np.vstack([x, y])
    squared = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    sigma = math.sqrt(np.median(squared[np.triu_indices(21, 1)]))
    kernel = np.exp(-squared / (2 * sigma**2))
    xx, yy, xy = kernel[:12, :12], kernel[12:, 12:], kernel[:12, 12:]
    expected = (
        (xx.sum() - np.trace(xx)) / (12 * 11) + (yy.sum() - np.trace(yy)) / (9 * 8) - 2 * xy.mean()
    )
    result = mmd_test(x, y, permutations=50, seed=0)
    assert result.mmd2 == pytest.approx(expected, rel=1e-9)
    assert result.bandwidth == pytest.approx(sigma)


def test_psi_by_hand() -> None:
    # Counts 10/20/30 against 30/20/10, each + 0.5: p = (10.5, 20.5, 30.5) / 61.5 and q the
    # reverse; the middle bin adds nothing, the outer two add (20/61.5) ln(30.5/10.5) each.
    expected = 2 * (20 / 61.5) * math.log(30.5 / 10.5)
    assert psi([10, 20, 30], [30, 20, 10]) == pytest.approx(expected)
    assert expected == pytest.approx(0.6936, abs=1e-4)
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    # an empty bin has a finite logarithm
    assert math.isfinite(psi([50, 50, 0], [0, 50, 50]))


def _reference(rng: np.random.Generator, labels: tuple[str, ...] = ("a", "b")) -> Reference:
    confidences = rng.uniform(0.5, 1.0, size=200)
    return Reference(
        rng.normal(size=(60, 4)).astype(np.float32),
        confidences,
        "confidence",
        labels,
        np.array([100, 100]),
    )


def test_ks_on_confidence_is_scipys_and_can_raise_the_alarm() -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng)
    embeddings = rng.normal(size=(40, 4))
    low = rng.uniform(0.3, 0.6, size=40)
    result = evaluate_window(
        reference, embeddings, DriftConfig(), labels=["a", "b"] * 20, scores=low, seed=1
    )
    expected = stats.ks_2samp(reference.scores, low)
    assert result.ks_statistic == pytest.approx(expected.statistic)
    assert result.ks_p_value == pytest.approx(expected.pvalue)
    assert result.tests == ("mmd", "ks", "labels")
    assert result.alpha_per_test == pytest.approx(0.01 / 3)
    assert result.drifted and any(r.startswith("KS on confidence") for r in result.reasons)
    assert not any(r.startswith("MMD") or r.startswith("labels") for r in result.reasons)


def test_the_label_test_needs_significance_and_a_psi_over_its_threshold() -> None:
    rng = np.random.default_rng(4)
    reference = _reference(rng)
    embeddings = rng.normal(size=(40, 4))
    scores = rng.uniform(0.5, 1.0, size=40)
    config = DriftConfig()
    shifted = evaluate_window(reference, embeddings, config, labels=["a"] * 40, scores=scores)
    assert shifted.psi is not None and shifted.psi > 0.25
    assert shifted.labels_p_value is not None and shifted.labels_p_value < 0.01 / 3
    assert shifted.label_counts == {"a": 40, "b": 0}
    assert any(r.startswith("labels: PSI") for r in shifted.reasons)
    lenient = DriftConfig(psi_threshold=5.0)
    kept = evaluate_window(reference, embeddings, lenient, labels=["a"] * 40, scores=scores)
    assert not any(r.startswith("labels") for r in kept.reasons)
    assert list(label_counts(["b", "x", "b"], ("a", "b"))) == [0, 2]


def test_too_few_permutations_for_alpha_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"permutations: 100 permutations .* at least 300"):
        DriftConfig(alpha=0.01, permutations=100)
    DriftConfig(alpha=0.05, permutations=100)


# --------------------------------------------------------------------------- false alarms

TOPIC_WORDS = {
    "cards": ["card", "pin", "atm", "contactless", "chip", "debit", "limit", "blocked"],
    "transfers": ["transfer", "iban", "wire", "payee", "sepa", "beneficiary", "swift", "sent"],
    "refunds": ["refund", "return", "merchant", "dispute", "chargeback", "receipt", "item"],
}
TEMPLATES = (
    "question about my {a} and {b}",
    "why is my {a} not working with the {b}",
    "help me with the {a} please, the {b} is wrong",
    "can you check the {a} for my {b} today",
    "i have a problem with {a} after the {b}",
)


def same_distribution(rng: np.random.Generator, count: int) -> list[str]:
    """Texts drawn i.i.d. from one fixed distribution (topic, template and words at random)."""
    texts = []
    topics = list(TOPIC_WORDS)
    for _ in range(count):
        words = TOPIC_WORDS[topics[rng.integers(len(topics))]]
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        a, b = rng.choice(words, size=2, replace=False)
        texts.append(template.format(a=a, b=b))
    return texts


def test_false_alarm_rate_over_20_unshifted_windows_is_under_10_percent(
    classifier_run: Path, tiny_encoder: Path
) -> None:
    """Reference: embeddings of 200 'training' texts, and the served classifier's labels and
    confidences on 100 held-out 'eval' texts; then 20 windows of 50 fresh texts from the same
    distribution, each tested as the server tests a window (alpha 0.01, three tests)."""
    config = DriftConfig(encoder=str(tiny_encoder), window=50)
    encoder = FrozenEncoder.load(config.encoder, config.max_length)
    rng = np.random.default_rng(20)
    with predict.open_model(classifier_run) as loaded:
        names = loaded.label_names

        def classified(texts: list[str]) -> tuple[list[str], np.ndarray]:
            found = predict.classify(loaded, texts)
            return [p.label for p in found], np.array([p.probability for p in found])

        eval_labels, eval_confidences = classified(same_distribution(rng, 100))
        reference = Reference(
            encoder.embed(same_distribution(rng, 200)),
            eval_confidences,
            "confidence",
            names,
            label_counts(eval_labels, names),
        )
        alarms = []
        for number in range(20):
            texts = same_distribution(rng, config.window)
            labels, confidences = classified(texts)
            result = evaluate_window(
                reference,
                encoder.embed(texts),
                config,
                labels=labels,
                scores=confidences,
                seed=number,
            )
            alarms.append(result.drifted)
    rate = sum(alarms) / len(alarms)
    print(f"\nfalse-alarm rate (tiny encoder, 20 unshifted windows of 50): {rate:.0%}")
    assert rate < 0.10


# --------------------------------------------------------------------------- through a server


def shifted_texts(rng: np.random.Generator, count: int) -> list[str]:
    """Word salad from another vocabulary than the training set's."""
    return [" ".join(rng.choice(SALAD, size=8)) for _ in range(count)]


@pytest.fixture(scope="module")
def shifted_run(
    classifier_run: Path, tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """A server watched for drift (windows of 20, two in a row make an episode) that got two
    windows of word salad, one text holding an e-mail address; the monitor folder and the
    last /metrics scrape."""
    folder = tmp_path_factory.mktemp("monitor")
    drift = DriftConfig(
        encoder=str(tiny_encoder), window=WINDOW, persist=PERSIST, monitor_dir=str(folder)
    )
    settings = ServeSettings(drift=drift)
    texts = shifted_texts(np.random.default_rng(5), 2 * WINDOW)
    texts[3] = f"please write to {E_MAIL} about the {texts[3]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        with serving(create_app([classifier_run], settings), settings) as server:
            server.wait_ready()
            with server.client() as client:
                for start in range(0, len(texts), 10):
                    answered = client.post(
                        "/v1/classify",
                        json={"model": classifier_run.name, "input": texts[start : start + 10]},
                    )
                    assert answered.status_code == 200, answered.text
            scraped = _wait_for_proposal(server)
    yield folder, scraped


def _wait_for_proposal(server: Server, model: str = "frozen", seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    counted = f'adaptlab_drift_proposals_total{{model="{model}"}} 1.0'
    with server.client() as client:
        while True:
            scraped = client.get("/metrics").text
            if counted in scraped:
                return scraped
            assert time.monotonic() < deadline, f"no proposal after {seconds} s:\n{scraped}"
            time.sleep(0.1)


def _lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / WINDOWS_FILE).read_text().splitlines()]


def test_shifted_data_raises_the_alarm_in_metrics_and_the_monitor_file(
    shifted_run: tuple[Path, str],
) -> None:
    folder, scraped = shifted_run
    for line in (
        'adaptlab_drift_reference_ready{model="frozen"} 1.0',
        'adaptlab_drift_windows_total{model="frozen"} 2.0',
        'adaptlab_drift_windows_drifted_total{model="frozen"} 2.0',
        'adaptlab_drift_consecutive_drifted_windows{model="frozen"} 2.0',
    ):
        assert line in scraped
    for name in ("mmd", "mmd_p_value", "psi", "ks_statistic", "ks_p_value"):
        assert re.search(rf'adaptlab_drift_{name}\{{model="frozen"\}} [-0-9.e]+', scraped), name
    lines = _lines(folder)
    reference, *windows = lines
    assert reference["event"] == "reference" and reference["ready"] is True
    assert reference["facts"]["embedded"] == 45 and reference["facts"]["eval_items"] == 15
    assert [w["window"] for w in windows] == [1, 2]
    for window in windows:
        assert window["drifted"] is True and window["size"] == WINDOW
        assert window["mmd_p_value"] < window["alpha_per_test"]
        assert any(reason.startswith("MMD") for reason in window["reasons"])
    assert windows[0]["proposal"] is None and windows[1]["proposal"]


def test_persistent_drift_writes_one_proposal_with_scrubbed_inputs(
    shifted_run: tuple[Path, str],
) -> None:
    folder, _ = shifted_run
    (proposal_folder,) = (folder / PROPOSALS).iterdir()
    written = (proposal_folder / INPUTS).read_text()
    assert E_MAIL not in written and "example.com" not in written and "<EMAIL>" in written
    rows = [json.loads(line) for line in written.splitlines()]
    assert len(rows) == PERSIST * WINDOW and all(set(row) == {"text"} for row in rows)
    for written_file in (p for p in folder.rglob("*") if p.is_file()):
        assert E_MAIL.encode() not in written_file.read_bytes(), written_file
    proposal = json.loads((proposal_folder / PROPOSAL).read_text())
    assert proposal["model"] == "frozen" and proposal["run"] == "frozen"
    assert [w["window"] for w in proposal["drift"]["windows"]] == [1, 2]
    assert proposal["new_data"]["pii_scrubbed"] == {"EMAIL": 1}
    assert proposal["recommendation"]["run"] == "frozen"
    assert proposal["recommendation"]["strategy"] == "frozen"
    estimate = proposal["estimate"]
    assert estimate.get("why_unknown") is None, estimate
    assert estimate["run"] == "frozen" and estimate["seconds"] is not None
    assert estimate["hardware"] == "cpu_2core"


def test_the_monitor_report_shows_windows_thresholds_and_proposals(
    shifted_run: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = shifted_run
    page = write_monitor_report(folder, tmp_path / "monitor.html").read_text()
    assert 'id="plot-p-frozen"' in page and 'id="plot-psi-frozen"' in page
    assert 'id="windows-frozen"' in page and "Re-tune proposal" in page
    assert "alpha / t" in page and "0.25" in page
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    result = CliRunner().invoke(cli_app, ["monitor", "report", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "monitor.html").is_file()
    missing = CliRunner().invoke(cli_app, ["monitor", "report", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "windows.jsonl" in missing.output


# --------------------------------------------------------------------------- the reference


def test_no_reference_without_the_training_data_says_how_to_build_one(
    classifier_run: Path, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    alone = shutil.copytree(classifier_run, tmp_path / "alone" / "frozen")
    config = DriftConfig(encoder=str(tiny_encoder))
    encoder = FrozenEncoder.load(config.encoder, config.max_length)
    with predict.open_model(alone) as loaded:
        with pytest.raises(ReferenceUnavailable, match="adaptlab monitor reference"):
            build_reference(loaded, encoder, config)
        other = tmp_path / "other.jsonl"
        other.write_text('{"text": "something else", "label": "cards"}\n')
        with pytest.raises(ReferenceUnavailable, match="not the data the run was trained on"):
            build_embeddings(other, loaded.record, encoder, config)
        prepared = classifier_run.parents[1] / "data" / "train.jsonl"
        build_embeddings(prepared, loaded.record, encoder, config)  # cached by its sha256
        reference = build_reference(loaded, encoder, config)
    assert reference.embeddings.shape == (45, 32)
    assert reference.label_counts is not None and reference.label_counts.sum() == 15


def test_monitor_reference_command_builds_it_from_the_given_file(
    classifier_run: Path, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    alone = shutil.copytree(classifier_run, tmp_path / "alone" / "frozen")
    prepared = classifier_run.parents[1] / "data" / "train.jsonl"
    command = ["monitor", "reference", str(alone), "--encoder", str(tiny_encoder)]
    wrong = tmp_path / "raw.jsonl"
    wrong.write_text('{"text": "a", "label": "cards"}\n')
    refused = CliRunner().invoke(cli_app, [*command, "--data", str(wrong)])
    assert refused.exit_code == 2 and "sha256" in refused.output
    built = CliRunner().invoke(cli_app, [*command, "--data", str(prepared)])
    assert built.exit_code == 0, built.output
    assert "Embedded 45 of 45 training texts" in built.output
    assert list((tmp_path / "cache" / "drift").glob("*.safetensors"))


def test_a_generators_requests_and_answer_lengths_are_watched(
    generator_run: Path, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chat requests (one streamed) fill a window of 10; it is tested on the embeddings of the
    user turns and on answer lengths (no label test for a generator)."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    drift = DriftConfig(encoder=str(tiny_encoder), window=10, monitor_dir=str(tmp_path / "m"))
    settings = ServeSettings(drift=drift)
    asked = {"model": generator_run.name, "max_tokens": 2}
    with serving(create_app([generator_run], settings), settings) as server:
        server.wait_ready()
        with server.client() as client:
            for number in range(9):
                turn = [{"role": "user", "content": f"a table for {number} at 7pm please"}]
                answered = client.post("/v1/chat/completions", json={**asked, "messages": turn})
                assert answered.status_code == 200, answered.text
            stream = {**asked, "prompt": "a table for 2 tonight", "stream": True}
            with client.stream("POST", "/v1/completions", json=stream) as streamed:
                assert streamed.status_code == 200
                streamed.read()
            deadline = time.monotonic() + 60
            while "adaptlab_drift_windows_total" not in (scraped := client.get("/metrics").text):
                assert time.monotonic() < deadline, scraped
                time.sleep(0.1)
    reference, window = _lines(tmp_path / "m")
    assert reference["ready"] is True and reference["score"] == "answer_tokens"
    assert window["tests"] == ["mmd", "ks"] and window["psi"] is None
    assert window["size"] == 10 and window["ks_p_value"] is not None


def test_a_monitor_that_cannot_start_never_fails_an_answer(
    classifier_run: Path, tmp_path: Path
) -> None:
    drift = DriftConfig(encoder=str(tmp_path / "no-encoder"), window=10, monitor_dir=str(tmp_path))
    settings = ServeSettings(drift=drift)
    with serving(create_app([classifier_run], settings), settings) as server:
        server.wait_ready()
        with server.client() as client:
            deadline = time.monotonic() + 30
            while not (tmp_path / WINDOWS_FILE).is_file():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for _ in range(3):
                texts = ["my card pin"] * 5
                answered = client.post(
                    "/v1/classify", json={"model": classifier_run.name, "input": texts}
                )
                assert answered.status_code == 200
            scraped = client.get("/metrics").text
    assert 'adaptlab_drift_reference_ready{model="frozen"} 0.0' in scraped
    (line,) = _lines(tmp_path)
    assert line["ready"] is False and "cannot be loaded" in line["reason"]


def test_a_registered_version_finds_its_training_data_and_recommendation_by_lineage(
    classifier_run: Path, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served as intent@champion: the version holds the run folder only; the reference comes
    from the training file its lineage recorded, the proposal's recommendation and estimate
    from the experiment its lineage names."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    registry = tmp_path / "registry"
    Registry(registry, create=True).promote(
        classifier_run, "intent", approver="ann", reason="best", alias="champion"
    )
    drift = DriftConfig(
        encoder=str(tiny_encoder), window=10, persist=1, monitor_dir=str(tmp_path / "m")
    )
    settings = ServeSettings(drift=drift)
    app = create_app(["intent@champion"], settings, registry=registry)
    with serving(app, settings) as server:
        server.wait_ready()
        with server.client() as client:
            texts = shifted_texts(np.random.default_rng(6), 10)
            asked = {"model": "intent@champion", "input": texts}
            answered = client.post("/v1/classify", json=asked)
            assert answered.status_code == 200, answered.text
        scraped = _wait_for_proposal(server, model="intent@champion")
    assert 'adaptlab_drift_windows_drifted_total{model="intent@champion"} 1.0' in scraped
    reference = _lines(tmp_path / "m")[0]
    assert reference["ready"] is True
    assert reference["facts"]["training_file"] == str(
        (classifier_run.parents[1] / "data" / "train.jsonl").resolve()
    )
    (proposal,) = (tmp_path / "m" / PROPOSALS).glob(f"intent@champion-*/{PROPOSAL}")
    content = json.loads(proposal.read_text())
    assert content["source"] == "intent:1" and content["recommendation"]["run"] == "frozen"
    assert content["estimate"].get("why_unknown") is None
