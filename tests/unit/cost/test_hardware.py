"""Hardware profiles: the built-ins are valid data, and YAML overrides are validated with errors
that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.config import ConfigError
from adaptlab.cost.hardware import (
    BUILTIN_PROFILES,
    MEASURED_PROFILE,
    get_profile,
    load_hardware,
    parse_hardware,
)


def test_builtins_cover_this_cpu_and_the_common_gpus() -> None:
    assert {MEASURED_PROFILE, "a10g", "l4", "a100_40gb", "a100_80gb", "h100"} <= set(
        BUILTIN_PROFILES
    )
    for name, profile in BUILTIN_PROFILES.items():
        assert profile.price_per_hour > 0 and profile.price_source, name
    assert BUILTIN_PROFILES["h100"].peak_flops == pytest.approx(989e12)
    assert BUILTIN_PROFILES[MEASURED_PROFILE].kind == "cpu"


def test_no_file_gives_the_builtins() -> None:
    assert load_hardware(None) == BUILTIN_PROFILES


def test_partial_override_changes_only_the_keys_given(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("profiles:\n  a10g:\n    price_per_hour: 0.75\n")
    profiles = load_hardware(path)
    assert profiles["a10g"].price_per_hour == 0.75
    assert profiles["a10g"].peak_tflops == BUILTIN_PROFILES["a10g"].peak_tflops
    assert profiles["h100"] == BUILTIN_PROFILES["h100"]


def test_a_new_profile_is_added() -> None:
    profiles = parse_hardware(
        "profiles:\n  mine:\n    kind: gpu\n    peak_tflops: 100\n    memory_gb: 48\n"
        "    price_per_hour: 2\n",
        source="hw.yaml",
    )
    assert profiles["mine"].peak_flops == pytest.approx(1e14)
    assert profiles["mine"].assumed_utilisation == 0.3


def test_a_new_profile_must_give_every_required_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_hardware("profiles:\n  mine:\n    kind: gpu\n    memory_gb: 4\n", "hw.yaml")
    message = str(caught.value)
    assert message.startswith("hw.yaml:2: profiles.mine: a new profile needs: peak_tflops")
    assert "price_per_hour (US dollars per hour" in message


def test_unknown_key_names_file_line_and_suggests() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_hardware("profiles:\n  l4:\n    memory_gb: 24\n    pric_per_hour: 1\n", "hw.yaml")
    message = str(caught.value)
    assert "hw.yaml:4: profiles.l4.pric_per_hour: unknown key" in message
    assert "Did you mean 'price_per_hour'?" in message


def test_out_of_range_value_names_line_key_and_range() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_hardware("profiles:\n  l4:\n    assumed_utilisation: 1.5\n", "hw.yaml")
    message = str(caught.value)
    assert "hw.yaml:3: profiles.l4.assumed_utilisation = 1.5 is not allowed" in message
    assert "<= 1" in message


def test_unknown_top_level_key_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hw.yaml:1: profile: unknown key"):
        parse_hardware("profile: {}\n", "hw.yaml")
    with pytest.raises(ConfigError, match="cannot read hardware profiles"):
        load_hardware(tmp_path / "missing.yaml")


def test_unknown_profile_name_suggests_the_nearest() -> None:
    with pytest.raises(KeyError, match="Did you mean 'a100_80gb'"):
        get_profile(BUILTIN_PROFILES, "a100_80")
