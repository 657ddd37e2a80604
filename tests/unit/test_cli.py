"""The command line: exit codes, messages on bad input, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app

runner = CliRunner()


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    rows = [
        {"text": f"question {n} about {topic} number {n * 13}", "label": topic}
        for topic in ("cards", "loans")
        for n in range(12)
    ]
    return write(tmp_path / "train.jsonl", rows)


def test_check_writes_reports_and_strict_fails_on_issues(tmp_path: Path, train_file: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["data", "check", str(train_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "data_report.json").read_text())["sources"]["train"]["valid"] == 24
    assert "# Data report" in (out / "data_report.md").read_text()
    with train_file.open("a") as handle:
        handle.write("{broken\n")
    result = runner.invoke(app, ["data", "check", str(train_file), "--out", str(out)])
    assert result.exit_code == 0
    assert f"{train_file}:25: invalid_json" in result.output
    result = runner.invoke(app, ["data", "check", str(train_file), "--out", str(out), "--strict"])
    assert result.exit_code == 1


def test_prepare_writes_locked_split(tmp_path: Path, train_file: Path) -> None:
    out = tmp_path / "prepared"
    result = runner.invoke(
        app, ["data", "prepare", str(train_file), "--out", str(out), "--val-set-size", "0.25"]
    )
    assert result.exit_code == 0, result.output
    lock = json.loads((out / "eval.lock").read_text())
    assert lock["size"] == 6 and lock["source"] == "split"
    assert {p.name for p in out.iterdir()} >= {
        "train.jsonl",
        "eval.jsonl",
        "eval.lock",
        "data_report.json",
        "data_report.md",
    }


def test_prepare_refuses_contamination_unless_overridden(tmp_path: Path, train_file: Path) -> None:
    first = train_file.read_text().splitlines()[0]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        first + "\n" + json.dumps({"text": "fresh words", "label": "cards"}) + "\n"
    )
    args = ["data", "prepare", str(train_file), "--eval", str(eval_file)]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 1 and "also appear in the training data" in refused.output
    allowed = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--allow-contaminated"])
    assert allowed.exit_code == 0, allowed.output
    lock = json.loads((tmp_path / "b" / "eval.lock").read_text())
    assert lock["contamination"]["override"] == "allow_contaminated"


def test_bad_config_is_a_clear_error(tmp_path: Path, train_file: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  near_dup_threshold: 3\n")
    result = runner.invoke(app, ["data", "check", str(train_file), "--config", str(config)])
    assert result.exit_code == 2
    assert "c.yaml:2: data.near_dup_threshold = 3 is not allowed" in result.output
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_convert_rejects_unknown_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "convert", "imdb", str(tmp_path), str(tmp_path / "o")])
    assert result.exit_code == 2 and "allowed: banking77, restaurant8k" in result.output


def test_config_reference_lists_keys() -> None:
    result = runner.invoke(app, ["config", "reference"])
    assert result.exit_code == 0 and "train.gradient_accumulation_steps" in result.output


def test_command_line_experiment_keeps_which_train_settings_were_set(tmp_path: Path) -> None:
    # Strategy defaults (full's learning rate, ...) yield only to settings the config names.
    from adaptlab.cli import _experiment
    from adaptlab.strategies.base import merged_train_config, resolve_run

    config = tmp_path / "experiment.yaml"
    config.write_text("data: {train: train.csv}\ntrain: {seed: 7}\n")
    experiment = _experiment(config, None, None, {}, {"base_model": None})

    assert experiment.train.model_fields_set == {"seed"}
    _, full = resolve_run("full", experiment.strategies.get("full"))
    merged = merged_train_config(experiment.train, experiment.train.model_fields_set, full)
    assert merged.seed == 7
    assert merged.learning_rate == full.default_train()["learning_rate"]


def estimate_config(tmp_path: Path, train_file: Path) -> Path:
    config = tmp_path / "estimate.yaml"
    config.write_text(
        f"name: est\noutput_dir: {tmp_path / 'runs'}\ndata:\n  train: {train_file}\n"
        "  val_set_size: 0.25\n  min_examples_per_class: 1\n"
    )
    return config


def test_estimate_prints_a_table_and_assumptions(tmp_path: Path, train_file: Path) -> None:
    config = estimate_config(tmp_path, train_file)
    args = ["estimate", str(config), "-s", "full", "-s", "frozen", "-s", "zero_shot"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Estimate on cpu_2core" in result.output and "Assumptions:" in result.output
    assert "6·N·T" in result.output and "nothing trains" in result.output
    assert not (tmp_path / "runs").exists()  # estimating writes nothing into the experiment
    result = runner.invoke(app, [*args, "--json", "--hardware", "h100"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["run"]: row for row in data["estimates"]}
    assert rows["full"]["method"] == "full" and rows["full"]["seconds"] > 0
    assert rows["zero_shot"]["seconds"] == 0 and rows["full"]["tokens"] > 0
    assert "assumed" in rows["full"]["utilisation_source"]


def test_estimate_unknown_profile_or_strategy_is_a_clear_error(
    tmp_path: Path, train_file: Path
) -> None:
    config = estimate_config(tmp_path, train_file)
    result = runner.invoke(app, ["estimate", str(config), "--hardware", "h10"])
    assert result.exit_code == 2
    assert "unknown hardware profile 'h10'" in result.output and "h100" in result.output
    result = runner.invoke(app, ["estimate", str(config), "-s", "fulll"])
    assert result.exit_code == 2 and "unknown strategy 'fulll'" in result.output
    result = runner.invoke(app, ["estimate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "cannot read config" in result.output


def test_help_opens_with_what_adaptlab_is_for() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    opening = text[text.index("Usage:") :].split("Options")[0]
    assert "runs every way to adapt a pretrained model" in opening
    assert "recommends one" in opening and "locked eval set" in opening
    assert "parses, calls the library" not in text  # the developers' note is not for users
    assert text.index("recommends one") < text.index("compare") < text.index("Commands")


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"adaptlab {version('adaptlab')}"


@pytest.mark.parametrize("command", [["data", "check"], ["data", "prepare"]])
def test_an_output_folder_that_cannot_be_written_is_a_message_not_a_traceback(
    tmp_path: Path, train_file: Path, command: list[str]
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    result = runner.invoke(app, [*command, str(train_file), "--out", str(blocker)])
    assert result.exit_code == 2
    assert "cannot write here: a file of that name is in the way" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
