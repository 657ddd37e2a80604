"""kill -9 at seeded random moments of a tiny ``compare``; the next run ends as an uninterrupted
one would, and nothing left behind breaks ``report``.

A moment is one file event of the run (see :mod:`tests.unit.strategies.killpoints`): an
uninterrupted, recorded run lists them all with the stage each came in (startup, data
preparation, run setup, training, checkpoint write, checkpoint removal, evaluation, manifest,
report), and the kills are drawn from that list with a fixed seed, every stage represented.
After each kill:

- ``report`` on the experiment folder builds, or refuses with its own ``ReportError`` (nothing
  finished yet): never a traceback;
- the next ``compare`` succeeds with no failed run, and every run's eval metrics and
  per-example probabilities equal the uninterrupted run's;
- no checkpoint or staging folder is left in any run.

The default tier kills at one moment of each of three stages; ``-m fault`` (CI) at 50.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import random
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from tests.unit.strategies import killpoints
from tests.unit.strategies.test_compare import experiment

from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.report.build import build_report
from adaptlab.report.inputs import ReportError

TRAIN = {"num_epochs": 2, "micro_batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0}
RUNS = killpoints.RUNS
SEED = 50
FULL_SUITE = 50
STAGES = (
    "startup",
    "data preparation",
    "run setup",
    "training",
    "checkpoint write",
    "checkpoint removal",
    "evaluation",
    "manifest",
    "report",
)
# A kill while evaluating is the unit tier's already (test_compare_resume.py).
FAST_SAMPLE = ("checkpoint write", "checkpoint removal", "manifest")


def setup(root: Path, tiny_encoder: Path) -> ExperimentConfig:
    root.mkdir(parents=True)
    return experiment(root, tiny_encoder, train=TRAIN)


def child(
    context: Any, config: ExperimentConfig, root: Path, kill_at: int, record: Path | None
) -> int:
    payload = json.dumps(config.model_dump(mode="json"))
    args = (payload, str(root), str(root / "cache"), kill_at, str(record) if record else None)
    process = context.Process(target=killpoints.run_compare, args=args)
    process.start()
    process.join(timeout=300)
    if process.is_alive():
        process.kill()
        raise AssertionError(f"compare hung (kill at event {kill_at})")
    assert process.exitcode is not None
    return process.exitcode


def outcome(experiment_folder: Path) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    result = {}
    for name in RUNS:
        folder = experiment_folder / "runs" / name
        evaluation = json.loads((folder / "eval.json").read_text())
        probabilities = load_file(str(folder / "predictions.safetensors"))["probabilities"]
        result[name] = (evaluation["metrics"], probabilities)
    return result


def leftovers(experiment_folder: Path) -> list[str]:
    staging = ("checkpoint", ".checkpoint.tmp", ".checkpoint.old", ".checkpoint.removed")
    return [
        str(path.relative_to(experiment_folder))
        for name in staging
        for path in (experiment_folder / "runs").glob(f"*/{name}")
    ]


@pytest.fixture(scope="module")
def forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(killpoints.PRELOAD)
    return context


@pytest.fixture(scope="module")
def moments(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, forkserver: Any
) -> tuple[list[dict[str, str]], dict[str, tuple[dict[str, Any], np.ndarray]], Path]:
    """The recorded events of an uninterrupted run in the same layout, and its outcome."""
    base = tmp_path_factory.mktemp("kill-anywhere")
    config = setup(base / "straight", tiny_encoder)
    record = base / "events.jsonl"
    assert child(forkserver, config, base / "straight", 0, record) == 0
    events = [json.loads(line) for line in record.read_text().splitlines() if line]
    folder = Path(config.output_dir) / config.name
    return events, outcome(folder), base


def draw(events: list[dict[str, str]], count: int, stages: tuple[str, ...]) -> list[int]:
    """``count`` event numbers (1-based), seeded: every stage in ``stages`` at least once, the
    rest spread uniformly over all events."""
    by_stage: dict[str, list[int]] = defaultdict(list)
    for number, event in enumerate(events, start=1):
        by_stage[event["stage"]].append(number)
    missing = [stage for stage in stages if not by_stage[stage]]
    assert not missing, f"no file event recorded in stage(s) {missing}"
    rng = random.Random(SEED)
    chosen = {rng.choice(by_stage[stage]) for stage in stages}
    rest = [number for number in range(1, len(events) + 1) if number not in chosen]
    chosen.update(rng.sample(rest, max(0, count - len(chosen))))
    return sorted(chosen)


def survives(
    number: int,
    events: list[dict[str, str]],
    expected: dict[str, tuple[dict[str, Any], np.ndarray]],
    root: Path,
    tiny_encoder: Path,
    forkserver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = events[number - 1]
    where = f"kill at event {number} ({event['event']} {event['path']})"
    config = setup(root, tiny_encoder)
    assert child(forkserver, config, root, number, None) == -signal.SIGKILL, where
    folder = Path(config.output_dir) / config.name
    if folder.is_dir():  # nothing finished yet is refused with a message, as a user sees it
        with contextlib.suppress(ReportError):
            build_report([folder])

    monkeypatch.setenv("ADAPTLAB_CACHE", str(root / "cache"))
    result = compare(config, list(RUNS), log=lambda _: None)

    assert result.failures == {}, where
    got = outcome(folder)
    for name in RUNS:
        assert got[name][0] == expected[name][0], f"{where}: {name} metrics differ"
        np.testing.assert_array_equal(got[name][1], expected[name][1], err_msg=where)
    assert leftovers(folder) == [], where


def test_every_stage_has_moments(moments: Any) -> None:
    events, _, _ = moments
    stages = {e["stage"] for e in events}
    assert set(STAGES) <= stages, sorted(set(STAGES) - stages)


def test_a_kill_in_each_of_three_stages_is_survived(
    moments: Any, tiny_encoder: Path, forkserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, expected, base = moments
    rng = random.Random(SEED)
    for stage in FAST_SAMPLE:
        numbers = [n for n, e in enumerate(events, 1) if e["stage"] == stage]
        number = rng.choice(numbers)
        root = base / f"fast-{number}"
        survives(number, events, expected, root, tiny_encoder, forkserver, monkeypatch)


@pytest.mark.fault
def test_fifty_seeded_kills_are_all_survived(
    moments: Any, tiny_encoder: Path, forkserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, expected, base = moments
    numbers = draw(events, FULL_SUITE, STAGES)
    survived: list[int] = []
    failed: dict[int, str] = {}
    for number in numbers:
        try:
            survives(
                number, events, expected, base / f"kill-{number}", tiny_encoder, forkserver,
                monkeypatch,
            )  # fmt: skip
        except AssertionError as exc:
            failed[number] = str(exc).splitlines()[0]
        else:
            survived.append(number)
    per_stage: dict[str, int] = defaultdict(int)
    for number in numbers:
        event = events[number - 1]
        per_stage[event["stage"]] += 1
    print(f"kill -9 survived: {len(survived)} of {len(numbers)}; per stage {dict(per_stage)}")
    assert not failed, f"{len(failed)} of {len(numbers)} kills not survived: {failed}"
