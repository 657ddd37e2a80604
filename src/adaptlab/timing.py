"""Serving latency of a comparison's classification runs, timed together: ``latency.json``.

Each run's ``eval.json`` keeps a latency measured right after its own evaluation, alone, at its
own moment. On a shared machine that moment decides too much: two runs with the same inference
graph measured 6.1 vs 6.9 ms in one comparison and 7.9 vs 7.5 ms in the next, and a
recommendation that weighs cost flipped on that noise. So after its runs, ``compare`` loads
every classification run again and times them together
(:func:`adaptlab.evaluate.latency.measure_interleaved`): warm-up calls first, then
``compare.latency_rounds`` rounds in which each run gets its share of calls at each batch size,
in an order that rotates every round, on the same batches of the locked eval texts. The rounds
and each run's inference-graph fingerprint go to the experiment's ``latency.json``
(:func:`adaptlab.runs.write_timing`), where the comparison reads them: runs of one graph are
priced on their pooled rounds.

Generators keep their eval-time timing (``eval.json``'s ``cost.latency``): a request's cost
there depends on the answer's length, and loading every generator at once would not fit.

Memory: every classification run is loaded at the same time (small encoders: MiniLM is ~90 MB
in float32, so ten runs fit in about 1 GB); they are freed before this returns.

A ``latency.json`` that covers exactly these runs (by name and manifest ``created_at``) and was
timed with the same settings (batch sizes, budget, rounds) is reused as it is: a ``compare``
with nothing new times nothing. Any change to one run times them all again, since a run timed
at another moment is what interleaving exists to avoid.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from adaptlab.config import CompareConfig
from adaptlab.cost import contention
from adaptlab.evaluate.latency import graph_fingerprint, measure_interleaved
from adaptlab.predict import load_run
from adaptlab.runs import RunError, RunTiming, Timing, read_run, read_timing, write_timing

Log = Callable[[str], None]

WARMUP_CALLS = 3
"""Unmeasured calls per run and batch size before the rounds (as eval-time timing has)."""
MAX_CALLS = 50
"""Timed calls per run and batch size at most, over all rounds (as eval-time timing has)."""


def time_runs(
    experiment_folder: Path,
    folders: Sequence[Path],
    settings: CompareConfig,
    log: Log,
    *,
    texts: Sequence[str],
) -> Timing | None:
    """The classification runs among ``folders`` timed together on ``texts`` (the locked eval
    texts), written to ``experiment_folder/latency.json``, or that file reused when it covers
    the same runs timed the same way. ``None`` when there is no classification run to time (or
    none could be loaded). A run that cannot be loaded is named in ``log`` and left out."""
    stamps = classification_runs(folders)
    if not stamps or not texts:
        return None
    recorded = _recorded(experiment_folder, log)
    if recorded is not None and covers(recorded, stamps, settings):
        log(f"Reusing the latency of {len(stamps)} runs timed together at {recorded.created_at}")
        return recorded
    log(
        f"Timing {len(stamps)} classification runs together: {settings.latency_rounds} rounds "
        f"at batch sizes {', '.join(map(str, settings.latency_batch_sizes))}"
    )
    timing = _measured(stamps, settings, log, texts)
    if timing is not None:
        write_timing(experiment_folder, timing)
    return timing


def classification_runs(folders: Sequence[Path]) -> dict[str, tuple[Path, str | None]]:
    """Run name -> (folder, manifest ``created_at``) of the finished classification runs;
    runs that cannot be read are left to the comparison, which names them."""
    found = {}
    for folder in folders:
        try:
            record = read_run(folder, predictions=False)
        except RunError:
            continue
        if record.kind == "classification":
            found[record.name] = (folder, record.manifest.created_at)
    return found


def covers(
    timing: Timing, runs: Mapping[str, tuple[Path, str | None]], settings: CompareConfig
) -> bool:
    """Whether ``timing`` timed exactly ``runs`` (the same names and manifest stamps) with
    ``settings``' batch sizes, budget and rounds."""
    timed = {name: run.manifest_created_at for name, run in timing.runs.items()}
    return (
        timed == {name: stamp for name, (_, stamp) in runs.items()}
        and timing.batch_sizes == tuple(settings.latency_batch_sizes)
        and timing.budget_s == settings.latency_budget_s
        and timing.rounds == settings.latency_rounds
    )


def _recorded(experiment_folder: Path, log: Log) -> Timing | None:
    try:
        return read_timing(experiment_folder)
    except RunError as exc:  # a damaged record is measured again, never trusted
        log(f"{exc}; timing the runs again")
        return None


def _measured(
    runs: Mapping[str, tuple[Path, str | None]],
    settings: CompareConfig,
    log: Log,
    texts: Sequence[str],
) -> Timing | None:
    """Load every run, time them in interleaved rounds, free them; the record of it."""
    models = _loaded(runs, log)
    if not models:
        return None
    graphs = {name: graph_fingerprint(model) for name, model in models.items()}
    before = contention.load_average()
    window = contention.start()
    seconds = measure_interleaved(
        {name: model.predict_proba for name, model in models.items()},
        list(texts),
        batch_sizes=settings.latency_batch_sizes,
        rounds=settings.latency_rounds,
        warmup=WARMUP_CALLS,
        max_calls=MAX_CALLS,
        time_budget_s=settings.latency_budget_s,
    )
    used = contention.finish(window)
    machine = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_1m_before": None if before is None else round(before, 2),
        "load_1m_after": None if used.load_average is None else round(used.load_average, 2),
        # other processes' share of the CPUs while timing: interleaving spreads it over every
        # run alike, but a high share still widens every interval
        "others_share": round(used.others_share, 4),
    }
    models.clear()
    gc.collect()  # the models held the most memory compare has used since fitting
    return Timing(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        rounds=settings.latency_rounds,
        batch_sizes=tuple(settings.latency_batch_sizes),
        budget_s=settings.latency_budget_s,
        runs={
            name: RunTiming(runs[name][1], graphs[name], _milliseconds(by_size))
            for name, by_size in seconds.items()
        },
        contention=machine,
    )


def _loaded(runs: Mapping[str, tuple[Path, str | None]], log: Log) -> dict[str, Any]:
    """Each run's classifier (``predict_proba``); one that cannot be loaded is left out."""
    models = {}
    for name, (folder, _) in runs.items():
        try:
            models[name] = load_run(folder).model
        except Exception as exc:  # one run that cannot be loaded must not stop the others
            log(f"[{name}] left out of the latency timing: {exc.__class__.__name__}: {exc}")
    return models


def _milliseconds(
    by_size: Mapping[int, list[list[float]]],
) -> dict[int, tuple[tuple[float, ...], ...]]:
    # Rounded to 0.1 µs: far below a call's jitter, and the file stays readable.
    return {
        size: tuple(tuple(round(s * 1000.0, 4) for s in calls) for calls in rounds)
        for size, rounds in by_size.items()
    }
