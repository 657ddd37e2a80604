"""Configs: YAML in, validated objects out; errors name file, line, key, value and the range."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    load_config,
    parse_config,
    reference,
    to_yaml,
)
from adaptlab.strategies.base import parse_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs_to_check() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_validates(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    assert load_config(path) == config


def parse(text: str) -> ExperimentConfig:
    """An experiment checked the way adaptlab loads one: its strategy blocks included."""
    return parse_experiment(text, source="x.yaml")


def test_out_of_range_value_names_file_line_key_value_and_range() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("name: t\ntrain:\n  micro_batch_size: 8\n  learning_rate: 5.0\n")
    message = str(caught.value)
    assert "x.yaml:4: train.learning_rate = 5.0 is not allowed" in message
    assert "learning_rate > 0 and <= 1" in message


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("train:\n  learnin_rate: 0.001\n")
    message = str(caught.value)
    assert "x.yaml:2: train.learnin_rate: unknown key" in message
    assert "Did you mean 'learning_rate'?" in message
    assert "micro_batch_size" in message


def test_unknown_top_level_key_and_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:1: bogus: unknown key"):
        parse("bogus: 1\n")
    with pytest.raises(ConfigError, match=r"x.yaml:2: model.sequence_len = 'long' is not allowed"):
        parse("model:\n  sequence_len: long\n")


def test_literal_choices_are_listed() -> None:
    with pytest.raises(ConfigError, match=r"data.format = 'excel'.*'chat'"):
        parse("data:\n  format: excel\n")


def test_split_size_rules() -> None:
    assert DataConfig(val_set_size=500).val_set_size == 500
    with pytest.raises(ValueError, match="whole number"):
        DataConfig(val_set_size=2.5)
    with pytest.raises(ValueError, match="exclude each other"):
        DataConfig(allow_contaminated=True, decontaminate=True)


def test_bad_yaml_and_non_mapping() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse("a: [1, 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse("- 1\n- 2\n")
    assert parse("") == ExperimentConfig()


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.yaml: cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_round_trip_through_yaml() -> None:
    config = parse("train:\n  learning_rate: 0.0002\n  num_epochs: 2\nlora:\n  lora_r: 8\n")
    assert parse(to_yaml(config)) == config


def test_reference_lists_every_key_with_its_description() -> None:
    rows = reference()
    assert any(
        r.startswith("train.learning_rate (default 5e-05): Peak learning rate") for r in rows
    )
    for key in (
        "model.base_model",
        "train.num_epochs",
        "train.micro_batch_size",
        "train.gradient_accumulation_steps",
        "model.sequence_len",
        "lora.lora_r",
        "lora.lora_alpha",
        "data.val_set_size",
        "train.seed",
    ):
        assert any(r.startswith(key + " ") for r in rows), key


def test_strategy_settings_are_validated_with_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("strategies:\n  knn:\n    k: 0\n")
    assert "x.yaml:3: strategies.knn.k = 0 is not allowed" in str(caught.value)
    with pytest.raises(ConfigError, match=r"x.yaml:3: strategies.knn.kk: unknown key"):
        parse("strategies:\n  knn:\n    kk: 3\n")
    with pytest.raises(ConfigError, match="unknown strategy 'magic'; available: "):
        parse("compare:\n  strategies: [knn, magic]\n")


def test_a_strategy_can_run_under_another_name() -> None:
    from adaptlab.strategies.base import resolve_run

    config = parse(
        "compare:\n  strategies: [knn_k3]\nstrategies:\n  knn_k3: {strategy: knn, k: 3}\n"
    )
    strategy, settings = resolve_run("knn_k3", config.strategies["knn_k3"])
    assert strategy.name == "knn" and settings.k == 3  # type: ignore[attr-defined]


def test_demo_config_file_equals_the_built_in_demo() -> None:
    from adaptlab.data.demo import demo_experiment

    path = next(p for p in CONFIGS if p.name == "demo.yaml")
    assert load_config(path) == demo_experiment()


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("strategies:\n  ../../../victim: {strategy: frozen}\n", 2, "strategies.../../../victim"),
        ("strategies:\n  /tmp/victim: {strategy: frozen}\n", 2, "strategies./tmp/victim"),
        ("name: ../../etc/x\n", 1, "name"),
        ("name: a/b\n", 1, "name"),
        ("name: .hidden\n", 1, "name"),
        (f"name: {'x' * 65}\n", 1, "name"),
    ],
)
def test_names_are_data_never_paths(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml", ExperimentConfig)
    message = str(caught.value)
    assert message.startswith(f"x.yaml:{line}: {key} = ")
    assert "is not a name: use letters, digits" in message


def test_ordinary_names_pass() -> None:
    text = "name: demo-1.2_b\nstrategies:\n  lora_r8: {strategy: lora}\n  setfit.k8: {}\n"
    config = parse_config(text, "x.yaml", ExperimentConfig)
    assert (config.name, list(config.strategies)) == ("demo-1.2_b", ["lora_r8", "setfit.k8"])


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)  # 9**9 = 387 million values once expanded, from 400 bytes


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    assert len(BOMB) < 500
    with pytest.raises(ConfigError, match="aliases expand to more than 100,000 values"):
        parse_config(BOMB, "bomb.yaml", ExperimentConfig)


def test_ordinary_aliases_still_work() -> None:
    text = (
        "strategies:\n  lora_r8: &small {strategy: lora, train: {num_epochs: 2}}\n"
        "  lora_r16: *small\n"
    )
    config = parse_config(text, "x.yaml", ExperimentConfig)
    assert config.strategies["lora_r8"] == config.strategies["lora_r16"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  seed: 1\n  seed: 2\n", "x.yaml:3: key 'seed' is given twice in one mapping "),
        ("name: a\nmodel: {}\nname: b\n", "x.yaml:3: key 'name' is given twice"),
    ],
)
def test_a_duplicate_key_is_refused_with_both_lines(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(text, "x.yaml", ExperimentConfig)
    assert "(first on line" in str(caught.value)


def test_a_huge_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"huge.yaml: 2,000,000 bytes; a config may have at most"):
        load_config(path)
