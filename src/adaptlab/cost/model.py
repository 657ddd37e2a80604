"""Cost arithmetic: training and serving time and money, measured or scaled by FLOPs.

Pure functions of numbers; nothing here runs a model. The formulas, with N the parameters the
forward pass uses, N_t the trainable ones and T the tokens processed (examples x tokens per
example x epochs):

- **Measured cost** = wall seconds / 3600 x the profile's price per hour.
- **Training FLOPs** (:func:`training_flops`), counting a multiply-add as 2 FLOPs, by the
  training method a strategy declares (``profile.method``, :mod:`adaptlab.profile`):

  - ``full`` (every weight trains: full fine-tuning, distillation's student, from scratch,
    SetFit's body): 6·N·T — forward 2·N·T, backward 4·N·T (gradients with respect to the
    activations, 2·N·T, and to the weights, 2·N·T). Kaplan et al. 2020, "Scaling Laws for
    Neural Language Models", §2.1 (C ≈ 6NT); attention's sequence-length term is left out,
    which is fair for the short sequences classification uses.
  - ``adapter`` (a frozen backbone that gradients flow through to trainable adapters: LoRA):
    forward 2·N·T + backward through the activations 2·N·T + weight gradients of the
    trainable parameters only 2·N_t·T = (4·N + 2·N_t)·T.
  - ``top_blocks`` (the top blocks and the head train, everything below is frozen: partial
    fine-tuning): backpropagation stops at the lowest trained block, so forward 2·N·T +
    backward through the trained part only 4·N_t·T = (2·N + 4·N_t)·T.
  - ``features`` (the frozen backbone embeds each example once, a small head trains on the
    vectors: frozen, kNN): 2·N·T; the head's own FLOPs are negligible next to the encoder's.
  - ``none`` (nothing trains: zero-shot, prompting): 0.

- **Utilisation** (model FLOPs utilisation, MFU) = FLOPs / wall seconds / peak FLOP/s.
- **Scaling a run** to another profile or model size: seconds = FLOPs / (peak x utilisation),
  with the utilisation measured when the target is the profile the run was measured on, and
  the target profile's ``assumed_utilisation`` otherwise (a CPU's utilisation says nothing
  about a GPU's). Scaling a small model up to a larger one on the same profile with the small
  one's utilisation overestimates time: larger matrices use the hardware better.
- **Inference FLOPs** per request = 2·N·tokens, where tokens are those the model really
  computes per request: a few-shot prompt carries hundreds, a fine-tuned classifier only the
  input text. With a cached shared prompt prefix only the uncached tokens count (attention to
  the cache is left out).
- **Serving cost per 1M requests** = 10^6 x seconds per request / 3600 x price per hour: the
  marginal cost at full utilisation (idle capacity and autoscaling floors are not charged).
  Seconds per request are measured latency (batch 1: every request alone) or per-example time
  in a batch (throughput-bound serving), or inference FLOPs / (peak x utilisation) on a
  profile nothing was measured on — which assumes throughput-bound serving: at batch 1 a
  small model on a GPU is bound by per-call overheads, not FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adaptlab.cost.hardware import HardwareProfile
from adaptlab.profile import TrainingMethod

SECONDS_PER_HOUR = 3600.0
REQUESTS_PER_QUOTE = 1_000_000
"""Serving cost is quoted per million requests."""


def training_flops(
    method: TrainingMethod, total_params: float, trainable_params: float, tokens: float
) -> float:
    """FLOPs to train on ``tokens`` tokens (see the module docstring for each formula)."""
    _check_non_negative(total_params=total_params, trainable_params=trainable_params, tokens=tokens)
    if trainable_params > total_params:
        raise ValueError(
            f"trainable_params = {trainable_params:,.0f} exceeds total_params = {total_params:,.0f}"
        )
    if method == "full":
        return 6.0 * total_params * tokens
    if method == "adapter":
        return (4.0 * total_params + 2.0 * trainable_params) * tokens
    if method == "top_blocks":
        return (2.0 * total_params + 4.0 * trainable_params) * tokens
    if method == "features":
        return 2.0 * total_params * tokens
    return 0.0


def inference_flops(params: float, tokens_per_request: float) -> float:
    """Forward FLOPs of one request: 2 per parameter per computed token."""
    _check_non_negative(params=params, tokens_per_request=tokens_per_request)
    return 2.0 * params * tokens_per_request


def cost_of(seconds: float, profile: HardwareProfile) -> float:
    """Dollars for ``seconds`` of the whole machine."""
    _check_non_negative(seconds=seconds)
    return seconds / SECONDS_PER_HOUR * profile.price_per_hour


def utilisation(flops: float, seconds: float, profile: HardwareProfile) -> float:
    """Achieved FLOP/s as a fraction of the profile's peak."""
    if seconds <= 0:
        raise ValueError(f"seconds = {seconds}: must be > 0 to measure utilisation")
    _check_non_negative(flops=flops)
    return flops / seconds / profile.peak_flops


def seconds_for(flops: float, profile: HardwareProfile, fraction_of_peak: float) -> float:
    """Time for ``flops`` on ``profile`` at ``fraction_of_peak`` of its peak."""
    if not 0 < fraction_of_peak <= 1:
        raise ValueError(f"utilisation = {fraction_of_peak}: must be in (0, 1]")
    _check_non_negative(flops=flops)
    return flops / (profile.peak_flops * fraction_of_peak)


@dataclass(frozen=True)
class MeasuredRun:
    """A run's measured wall time, the FLOPs it did, and the profile it ran on."""

    seconds: float
    flops: float
    profile: HardwareProfile

    @property
    def utilisation(self) -> float:
        return utilisation(self.flops, self.seconds, self.profile)

    @property
    def cost(self) -> float:
        return cost_of(self.seconds, self.profile)


UtilisationSource = Literal["measured", "assumed", "given"]


@dataclass(frozen=True)
class ScaledRun:
    """A run projected onto another profile or model size."""

    seconds: float
    cost: float
    flops: float
    utilisation: float
    utilisation_source: UtilisationSource

    def assumption(self) -> str:
        return (
            f"{self.flops:.3g} FLOPs at {self.utilisation:.1%} of peak "
            f"({self.utilisation_source} utilisation)"
        )


def scale_run(
    measured: MeasuredRun,
    target: HardwareProfile,
    target_flops: float | None = None,
    fraction_of_peak: float | None = None,
) -> ScaledRun:
    """Time and cost of ``measured`` redone on ``target`` with ``target_flops`` FLOPs.

    ``target_flops`` defaults to the measured run's (the same work on other hardware); pass
    :func:`training_flops` of another model size to scale the model. The utilisation is, in
    order: ``fraction_of_peak`` if given; the measured one when ``target`` is the measured
    profile; else ``target.assumed_utilisation``.
    """
    flops = measured.flops if target_flops is None else target_flops
    source: UtilisationSource
    if fraction_of_peak is not None:
        used, source = fraction_of_peak, "given"
    elif target == measured.profile:
        used, source = measured.utilisation, "measured"
    else:
        used, source = target.assumed_utilisation, "assumed"
    seconds = seconds_for(flops, target, used)
    return ScaledRun(seconds, cost_of(seconds, target), flops, used, source)


def serving_cost_per_million(seconds_per_request: float, profile: HardwareProfile) -> float:
    """Dollars per 1M requests when each occupies the machine for ``seconds_per_request``."""
    _check_non_negative(seconds_per_request=seconds_per_request)
    return cost_of(REQUESTS_PER_QUOTE * seconds_per_request, profile)


def seconds_per_request(
    params: float, tokens_per_request: float, profile: HardwareProfile, fraction_of_peak: float
) -> float:
    """Projected seconds per request on ``profile`` from inference FLOPs (throughput-bound)."""
    return seconds_for(inference_flops(params, tokens_per_request), profile, fraction_of_peak)


def api_cost_per_million(
    input_tokens: float,
    output_tokens: float,
    input_price_per_million_tokens: float,
    output_price_per_million_tokens: float,
) -> float:
    """Dollars per 1M requests to a hosted model billed per token (input and output priced
    separately, as the hosted APIs do): every prompt token of every request is paid for."""
    _check_non_negative(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price_per_million_tokens=input_price_per_million_tokens,
        output_price_per_million_tokens=output_price_per_million_tokens,
    )
    return (
        input_tokens * input_price_per_million_tokens
        + output_tokens * output_price_per_million_tokens
    )


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:  # also rejects NaN
            raise ValueError(f"{name} = {value}: must be >= 0")
