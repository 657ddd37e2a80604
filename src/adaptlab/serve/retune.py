"""A re-tune proposal: written once per drift episode (``persist`` drifted windows in a row).

``<monitor_dir>/proposals/<model>-<UTC time>-w<window>/`` holds

- ``inputs.jsonl``: the episode's inputs as new unlabeled data (``{"text": ...}`` for a
  classifier, ``{"messages": [{"role": "user", ...}]}`` for a generator), each scrubbed of
  personal data by :func:`adaptlab.data.pii.scrub` before it is written: no raw input reaches
  the disk;
- ``proposal.json``: the model, the episode's windows and why each drifted, the strategy the
  last comparison recommended, and what ``adaptlab estimate`` says retraining it would cost.

The recommendation is the one ``adaptlab report`` makes (its decision rules, default settings,
the report ``compare`` writes) on the experiment the model came from: the run folder's
experiment, or the one a registered version's lineage names. The estimate is
:func:`adaptlab.estimate.estimate_experiment` (what ``adaptlab estimate`` calls) on that
experiment's ``experiment.yaml``, for the recommended run, on the profile adaptlab's own runs
are measured on. Either may be unknown (the experiment folder is gone, its data moved): the
proposal then says why in ``why_unknown``; the folder is written whatever is missing. The
folder appears whole or not at all (written beside and renamed).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from adaptlab.config import ConfigError, ExperimentConfig
from adaptlab.cost.hardware import MEASURED_PROFILE
from adaptlab.data.issues import DataError
from adaptlab.data.pii import scrub
from adaptlab.estimate import estimate_experiment
from adaptlab.models.bundled import ModelNotAvailable
from adaptlab.paths import write_folder, write_text_atomic
from adaptlab.predict import LoadedModel
from adaptlab.registry import Registry, RegistryError, registry_root
from adaptlab.registry.lineage import COMPARISON, experiment_folder
from adaptlab.report.build import ReportConfig, report_data
from adaptlab.report.inputs import EXPERIMENT, ReportError, read_inputs
from adaptlab.runs import RunError
from adaptlab.serve.drift import DriftConfig, WindowResult

PROPOSALS = "proposals"
PROPOSAL = "proposal.json"
INPUTS = "inputs.jsonl"
PROPOSAL_VERSION = 1


@dataclass(frozen=True)
class Episode:
    """The drifted windows in a row that make a proposal: (window number, its input texts,
    its result), oldest first."""

    model: str
    loaded: LoadedModel
    windows: Sequence[tuple[int, Sequence[str], WindowResult]]


def folder_name(model: str) -> str:
    """``model`` as a file name: characters other than letters, digits, ``.``, ``_``, ``@`` and
    ``-`` become ``_`` (``intent:3`` -> ``intent_3``)."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", model) or "model"


def write_proposal(
    monitor_folder: Path,
    episode: Episode,
    config: DriftConfig,
    registry: Path | None = None,
    hardware: str = MEASURED_PROFILE,
) -> Path:
    """Write the proposal of ``episode`` into ``monitor_folder/proposals/``; its folder."""
    created = datetime.now(UTC)
    last = episode.windows[-1][0]
    folder = (
        monitor_folder
        / PROPOSALS
        / (f"{folder_name(episode.model)}-{created:%Y%m%dT%H%M%SZ}-w{last}")
    )
    rows, found = scrubbed_rows(episode)
    experiment, why = experiment_of(episode.loaded, registry)
    recommended = recommendation(experiment, why)
    estimate = retraining_estimate(experiment, recommended, hardware, len(rows))
    proposal = {
        "proposal_version": PROPOSAL_VERSION,
        "created_at": created.isoformat(timespec="seconds"),
        "model": episode.model,
        "source": episode.loaded.source,
        "run": episode.loaded.record.name,
        "strategy": episode.loaded.record.strategy,
        "experiment": None if experiment is None else str(experiment),
        "drift": {
            "persist": config.persist,
            "alpha": config.alpha,
            "psi_threshold": config.psi_threshold,
            "windows": [
                {"window": number, **result.to_dict()} for number, _, result in episode.windows
            ],
        },
        "recommendation": recommended,
        "estimate": estimate,
        "new_data": {
            "file": INPUTS,
            "rows": len(rows),
            "labelled": False,
            "pii_scrubbed": dict(sorted(found.items())),
        },
        "next_steps": next_steps(episode.loaded, experiment, recommended),
    }

    def write(staging: Path) -> None:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_text_atomic(staging / INPUTS, lines)
        write_text_atomic(staging / PROPOSAL, json.dumps(proposal, indent=2) + "\n")

    write_folder(folder, write)
    return folder


def scrubbed_rows(episode: Episode) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The episode's inputs as rows of new unlabeled data, PII replaced by placeholders, and
    how many of each kind were replaced."""
    found: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for _, texts, _ in episode.windows:
        for text in texts:
            clean, counts = scrub(text)
            found.update(counts)
            if episode.loaded.is_classifier:
                rows.append({"text": clean})
            else:
                rows.append({"messages": [{"role": "user", "content": clean}]})
    return rows, found


def experiment_of(loaded: LoadedModel, registry: Path | None) -> tuple[Path | None, str]:
    """The experiment folder ``loaded`` came from, or None and why it is not known."""
    experiment = experiment_folder(loaded.record.folder)
    if experiment is not None:
        return experiment, ""
    if Path(loaded.source).is_dir():
        return None, f"{loaded.source} is not inside an experiment folder (<experiment>/runs/<run>)"
    try:
        lineage = Registry(registry_root(registry)).version(loaded.source).lineage
    except (RegistryError, ValueError) as exc:
        return None, f"the lineage of {loaded.source} cannot be read: {exc}"
    named = lineage.get("experiment")
    if not isinstance(named, str):
        return None, f"{loaded.source} was not promoted from an experiment folder"
    if not Path(named).is_dir():
        return None, f"the experiment folder {named} of {loaded.source} no longer exists"
    return Path(named), ""


def recommendation(experiment: Path | None, why: str) -> dict[str, Any]:
    """What the report recommends on ``experiment``'s runs (``why``: why there is none)."""
    unknown: dict[str, Any] = {"run": None, "strategy": None}
    if experiment is None:
        return {**unknown, "why_unknown": why}
    try:
        inputs = read_inputs([experiment])
        decision = report_data(inputs, ReportConfig()).decision
    except (ReportError, RunError, ModelNotAvailable, OSError, ValueError, KeyError) as exc:
        return {**unknown, "why_unknown": f"the report on {experiment} cannot be built: {exc}"}
    chosen = inputs.runs.get(decision.recommended)
    comparison = experiment / COMPARISON
    return {
        "run": decision.recommended,
        "strategy": None if chosen is None else chosen.strategy,
        "confidence": decision.confidence,
        "runner_up": decision.runner_up,
        "source": f"the decision rules of 'adaptlab report {experiment}' (default settings)",
        "comparison_sha256": hashlib.sha256(comparison.read_bytes()).hexdigest()
        if comparison.is_file()
        else None,
    }


def retraining_estimate(
    experiment: Path | None, recommended: dict[str, Any], hardware: str, new_rows: int
) -> dict[str, Any]:
    """``adaptlab estimate``'s figures for the recommended run of ``experiment``."""
    run = recommended.get("run")
    if experiment is None or not isinstance(run, str):
        reason = recommended.get("why_unknown") or "no recommended run"
        return {"hardware": hardware, "why_unknown": f"nothing to estimate: {reason}"}
    try:
        config = _experiment_config(experiment)
        result = estimate_experiment(config, [run], hardware, runs=[experiment / "runs"])
    except (ConfigError, DataError, ModelNotAvailable, RunError, OSError, ValueError) as exc:
        return {"hardware": hardware, "why_unknown": f"the estimate failed: {exc}"}
    except KeyError as exc:
        return {"hardware": hardware, "why_unknown": f"the estimate failed: {exc.args[0]}"}
    (estimate,) = result.estimates
    return {
        "hardware": hardware,
        "command": f"adaptlab estimate {experiment / EXPERIMENT} --strategy {run}",
        **estimate.as_dict(),
        "assumptions": result.assumptions(),
        "note": f"on the experiment's training data as it is; labelling the {new_rows} new rows "
        "and adding them adds training tokens in proportion",
    }


def _experiment_config(experiment: Path) -> ExperimentConfig:
    """The experiment's ``experiment.yaml``, placed where the folder is now (it may have been
    moved since ``compare`` wrote it)."""
    path = experiment / EXPERIMENT
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a mapping")
    placed = {**raw, "name": experiment.name, "output_dir": str(experiment.parent)}
    try:
        return ExperimentConfig.model_validate(placed)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def next_steps(
    loaded: LoadedModel, experiment: Path | None, recommended: dict[str, Any]
) -> list[str]:
    """What a person does with the proposal."""
    steps = [
        f"Label the rows of {INPUTS} (placeholders such as <EMAIL> stand where personal data "
        "was) and add them to the training data.",
    ]
    if experiment is not None and isinstance(recommended.get("run"), str):
        steps.append(
            f"Re-run the comparison: adaptlab compare {experiment / EXPERIMENT} "
            f"--strategy {recommended['run']}"
        )
    else:
        steps.append("Re-run the comparison that produced this model with the new data.")
    steps.append(f"Compare the new run with {loaded.source} on the locked eval set before "
                 "promoting it (adaptlab serve --canary).")  # fmt: skip
    return steps
