"""Adding a strategy is one file: a module that ends in ``register(...)`` is discovered (here
through an ``adaptlab.strategies`` entry point of a package made in a temporary folder), runs
in ``compare``, is costed by ``estimate``, and is ranked and reported by the role and data need
it declares, with no table of strategy names anywhere else to edit."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from tests.unit.strategies.test_compare import experiment

from adaptlab.compare import compare
from adaptlab.estimate import estimate_experiment
from adaptlab.report.build import ReportConfig, report_data
from adaptlab.report.inputs import read_inputs
from adaptlab.runs import read_run
from adaptlab.strategies import base, discover

PLUGIN = '''\
"""The class prior: every text gets the training data's label frequencies."""

from typing import ClassVar

import numpy as np

from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import RunContext, StrategyConfig, register


class PriorClassifier:
    def __init__(self, label_names, prior):
        self.label_names = list(label_names)
        self.prior = prior

    def predict_proba(self, texts):
        return np.tile(self.prior, (len(texts), 1))


class PriorStrategy:
    name: ClassVar[str] = "class_prior"
    config_type: ClassVar[type[StrategyConfig]] = StrategyConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="base",
        method="none",
        data_need=DataNeed(5_000, 100, "a prior needs many examples to be a fair baseline"),
    )

    def requires(self, config):
        return []

    def fit(self, run: RunContext):
        counts = np.bincount(run.task.train_labels, minlength=run.task.num_labels)
        np.save(run.folder / "prior.npy", counts / counts.sum())
        return self.load(run)

    def load(self, run: RunContext):
        return PriorClassifier(run.task.label_names, np.load(run.folder / "prior.npy"))


register(PriorStrategy)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package ``prior_plugin`` with one strategy module, installed as far as Python's
    metadata is concerned: a dist-info folder whose entry point names the module."""
    site = tmp_path / "site"
    package = site / "prior_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "class_prior.py").write_text(PLUGIN)
    info = site / "prior_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: prior-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[adaptlab.strategies]\nclass_prior = prior_plugin.class_prior\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(base, "REGISTRY", dict(base.REGISTRY))  # undone after the test
    for name in ("prior_plugin", "prior_plugin.class_prior"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    yield "class_prior"
    for name in ("prior_plugin", "prior_plugin.class_prior"):
        sys.modules.pop(name, None)


def test_every_module_of_the_package_registers_itself() -> None:
    """No import list: each strategy file in the package is a registered strategy."""
    folder = Path(base.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"__init__", "base"}
    modules = {strategy.__module__.rsplit(".", 1)[-1] for strategy in base.REGISTRY.values()}
    assert files <= modules


def test_a_strategy_in_one_file_is_discovered_run_costed_ranked_and_reported(
    plugin: str, tmp_path: Path, tiny_encoder: Path
) -> None:
    assert plugin not in base.REGISTRY
    discover()
    assert plugin in base.REGISTRY and plugin in base.strategies_for("classification")

    config = experiment(tmp_path, tiny_encoder)
    result = compare(config, [plugin, "knn", "frozen"], log=lambda _: None)
    assert result.failures == {}
    record = read_run(result.folder / "runs" / plugin)
    assert (record.name, record.strategy) == (plugin, plugin)
    assert record.profile is not None and record.profile.role == "base"
    assert (
        json.loads((result.folder / "runs" / plugin / "manifest.json").read_text())["profile"][
            "data_need"
        ]["examples"]
        == 5_000
    )

    estimate = estimate_experiment(config, [plugin])
    (row,) = estimate.estimates
    assert row.strategy == plugin and row.workload.method == "none"

    decision = report_data(read_inputs([result.folder]), ReportConfig()).decision
    # Its declared role: the tuned run is measured against it as the untrained base.
    (against_base,) = [f for f in decision.findings if f.rule == "tuned_vs_base" and f.other]
    assert (against_base.subject, against_base.other) == ("frozen", plugin)
    # Its declared data need: 45 training texts against the 5,000 it says it needs.
    (thin,) = decision.fired("too_little_data")
    assert thin.subject == plugin and "5,000" in thin.message
    assert "a prior needs many examples" in thin.message
