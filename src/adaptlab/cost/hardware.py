"""Hardware profiles: what a machine can compute, hold and costs per hour, as data.

Every number here is an assumption a reviewer must be able to check, so each one names its
source. Users replace or add profiles in YAML (:func:`load_hardware`); a partial entry for a
built-in profile changes only the keys it names, e.g. a negotiated price::

    profiles:
      a100_80gb:
        price_per_hour: 1.79
        price_source: "Lambda on-demand, 2025"

Peak FLOP/s are *dense* (no 2:4 structured sparsity: vendor datasheets print the sparse figure
first, twice the dense one, and training never gets it) at the precision the work runs in: bf16
tensor cores on GPUs; fp32 vector units on a CPU without bf16 instructions.

Prices are on-demand list prices of AWS EC2, us-east-1, Linux, as published in early 2025, per
GPU (an 8-GPU instance's price divided by 8). AWS announced cuts of up to 45% to P4 and P5
(A100, H100) on-demand prices in June 2025, so those two are the most likely to be stale;
spot, reserved and smaller GPU clouds are often several times cheaper. Override them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import Field, ValidationError

from adaptlab.config import (
    ConfigError,
    Section,
    _describe,
    _key_lines,
    parse_config,
    read_yaml,
)

MEASURED_PROFILE = "cpu_2core"
"""The profile of the machine adaptlab's own runs are measured on."""


class HardwareProfile(Section):
    """One machine to train or serve on."""

    description: str = Field("", description="What the machine is, in words.")
    kind: Literal["cpu", "gpu"] = Field(description="Processor kind.")
    peak_tflops: Annotated[float, Gt(0)] = Field(
        description="Dense peak throughput in TFLOP/s (10^12 floating-point operations per "
        "second) at `precision`; for a multi-GPU entry, the total."
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="The number format `peak_tflops` is quoted for."
    )
    memory_gb: Annotated[float, Gt(0)] = Field(
        description="Accelerator memory (GPU) or RAM (CPU) in GB, as the vendor states it."
    )
    price_per_hour: Annotated[float, Ge(0)] = Field(
        description="US dollars per hour of the whole machine, on-demand."
    )
    price_source: str = Field("", description="Where the price comes from, and when.")
    assumed_utilisation: Annotated[float, Gt(0), Le(1)] = Field(
        0.3,
        description="Fraction of peak a job reaches when no run was measured on this profile "
        "(model FLOPs utilisation). A measured run on the same profile replaces it.",
    )

    @property
    def peak_flops(self) -> float:
        """Peak FLOP/s (not TFLOP/s)."""
        return self.peak_tflops * 1e12


_AWS_2025 = "AWS EC2 on-demand, us-east-1, Linux, early-2025 list price"

BUILTIN_PROFILES: dict[str, HardwareProfile] = {
    # This machine: a KVM guest with 2 vCPUs of an Intel Xeon (Cascade Lake, family 6 model 85,
    # 2.5 GHz, AVX-512, no AVX512_BF16) and 23 GiB RAM, per `lscpu`/`free`. Peak fp32 =
    # 2 cores x 2.5e9 Hz x 2 AVX-512 FMA units x 16 lanes x 2 FLOP per FMA = 320 GFLOP/s; the
    # AVX-512 clock is lower than 2.5 GHz under load, which the measured utilisation absorbs.
    # Comparable VM: m5.large (2 vCPU Xeon Platinum 8175M/8259CL at 2.5 GHz, 8 GiB).
    MEASURED_PROFILE: HardwareProfile(
        description="2 vCPU Intel Xeon (Cascade Lake) 2.5 GHz, the machine runs are measured on",
        kind="cpu",
        peak_tflops=0.32,
        precision="fp32",
        memory_gb=24,
        price_per_hour=0.096,
        price_source=f"m5.large (2 vCPU, 8 GiB), {_AWS_2025}",
    ),
    # NVIDIA publishes no datasheet for the AWS-only A10G; 70 TFLOP/s dense bf16 is the figure
    # in AWS's G5 material as quoted by Baseten ("NVIDIA A10 vs A10G for ML model inference")
    # and MosaicML Composer's speed monitor. The retail A10 is 125.
    "a10g": HardwareProfile(
        description="NVIDIA A10G 24 GB (AWS g5)",
        kind="gpu",
        peak_tflops=70,
        memory_gb=24,
        price_per_hour=1.006,
        price_source=f"g5.xlarge (1x A10G, 4 vCPU), {_AWS_2025}",
    ),
    # NVIDIA L4 datasheet: BF16 tensor 242 TFLOP/s with sparsity -> 121 dense; 24 GB GDDR6.
    "l4": HardwareProfile(
        description="NVIDIA L4 24 GB (AWS g6)",
        kind="gpu",
        peak_tflops=121,
        memory_gb=24,
        price_per_hour=0.8048,
        price_source=f"g6.xlarge (1x L4, 4 vCPU), {_AWS_2025}",
    ),
    # NVIDIA A100 datasheet: BF16 tensor 312 TFLOP/s dense (624 sparse), both memory sizes.
    "a100_40gb": HardwareProfile(
        description="NVIDIA A100 SXM 40 GB (AWS p4d)",
        kind="gpu",
        peak_tflops=312,
        memory_gb=40,
        price_per_hour=4.0966,
        price_source=f"p4d.24xlarge ($32.7726/h for 8x A100 40 GB) / 8, {_AWS_2025}",
    ),
    "a100_80gb": HardwareProfile(
        description="NVIDIA A100 SXM 80 GB (AWS p4de)",
        kind="gpu",
        peak_tflops=312,
        memory_gb=80,
        price_per_hour=5.1207,
        price_source=f"p4de.24xlarge ($40.9657/h for 8x A100 80 GB) / 8, {_AWS_2025}",
    ),
    # NVIDIA H100 datasheet: H100 SXM BF16 tensor 1,979 TFLOP/s with sparsity -> 989 dense
    # (the PCIe card is 756 dense); 80 GB HBM3.
    "h100": HardwareProfile(
        description="NVIDIA H100 SXM 80 GB (AWS p5)",
        kind="gpu",
        peak_tflops=989,
        memory_gb=80,
        price_per_hour=12.29,
        price_source=f"p5.48xlarge ($98.32/h for 8x H100) / 8, {_AWS_2025}",
    ),
}


class HardwareFile(Section):
    """A YAML file of hardware profiles: new ones, or changed keys of built-in ones."""

    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Profile name -> its keys; a built-in name changes only the keys given.",
    )


def get_profile(profiles: Mapping[str, HardwareProfile], name: str) -> HardwareProfile:
    """The profile called ``name``, or a KeyError that lists the known ones."""
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, list(profiles), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise KeyError(f"unknown hardware profile '{name}'.{hint} Known: {', '.join(sorted(profiles))}")


def load_hardware(path: str | Path | None = None) -> dict[str, HardwareProfile]:
    """The built-in profiles, with those in the YAML file at ``path`` added or changed.

    Errors are :class:`~adaptlab.config.ConfigError` naming the file, line, key and value.
    """
    if path is None:
        return dict(BUILTIN_PROFILES)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read hardware profiles: {exc}") from exc
    return parse_hardware(text, source=str(path))


def parse_hardware(text: str, source: str) -> dict[str, HardwareProfile]:
    """Validate YAML ``text`` (named ``source`` in errors) into profiles, built-ins included."""
    file = parse_config(text, source=source, model=HardwareFile)
    node, _ = read_yaml(text, source)  # bounded, as parse_config read it
    lines = _key_lines(node) if node is not None else {}
    profiles = dict(BUILTIN_PROFILES)
    for name, raw in file.profiles.items():
        builtin = BUILTIN_PROFILES.get(name)
        if builtin is None:
            _require_keys(raw, source, lines, ("profiles", name))
        values = {**builtin.model_dump(), **raw} if builtin else raw
        try:
            profiles[name] = HardwareProfile.model_validate(values)
        except ValidationError as exc:
            message = _describe(exc, HardwareProfile, source, lines, prefix=("profiles", name))
            raise ConfigError(message) from None
    return profiles


def _require_keys(
    raw: Mapping[str, Any], source: str, lines: dict[Any, int], where: tuple[str, ...]
) -> None:
    """A new profile must give every key without a default; say which, with its meaning."""
    missing = [
        f"{key} ({field.description})"
        for key, field in HardwareProfile.model_fields.items()
        if field.is_required() and key not in raw
    ]
    if missing:
        line = lines.get(where, 1)
        raise ConfigError(
            f"{source}:{line}: {'.'.join(where)}: a new profile needs: " + "; ".join(missing)
        )
