"""The server's drift monitor: live inputs in windows, each compared with the model's reference.

The routes hand every answered input to :meth:`DriftMonitor.observe_classified` or
:meth:`~DriftMonitor.observe_answered` (its text, and a classifier's predicted label and
confidence or a generator's answer length). That is an append to a list under a lock: nothing
is computed on the request path, and nothing there can fail an answer (a monitor error is
logged and the input dropped). Every ``window`` inputs of a model make a window, queued for one
background thread, which

1. first loads the encoder and builds each model's reference (:mod:`adaptlab.serve.reference`;
   a model without one is not watched, and its ``reference`` line says why);
2. embeds each window, runs the tests (:func:`adaptlab.serve.drift.evaluate_window`), sets the
   ``adaptlab_drift_*`` gauges of ``/metrics`` and appends one JSON line to
   ``<monitor_dir>/windows.jsonl``;
3. after ``persist`` drifted windows in a row writes a re-tune proposal, once per episode
   (:mod:`adaptlab.serve.retune`); a window that does not drift ends the episode.

Memory is bounded: at most ``window`` pending inputs and :data:`QUEUED_WINDOWS` full windows per
model, plus the ``persist`` last windows' texts for a proposal. Inputs that arrive while the
queue is full (the reference is being built, or evaluation lags behind traffic) are dropped and
counted in ``adaptlab_drift_inputs_dropped_total``.

The models watched are those the server was started with; a canary's candidate, which answers
under its champion's name, is not (its answers are not the champion's, so they are neither
counted against the champion's reference nor in its windows).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from adaptlab.models.encoder import FrozenEncoder
from adaptlab.paths import cache_dir
from adaptlab.predict import Answer, LabelPrediction
from adaptlab.serve.drift import DriftConfig, Reference, WindowResult, evaluate_window
from adaptlab.serve.reference import ReferenceUnavailable, build_reference, request_text
from adaptlab.serve.retune import Episode, write_proposal
from adaptlab.serve.routing import ServedModel

logger = logging.getLogger("adaptlab.serve.monitor")

WINDOWS_FILE = "windows.jsonl"
QUEUED_WINDOWS = 2
"""Full windows of one model waiting for the background thread; more are dropped."""
_STOP = object()


def monitor_folder(config: DriftConfig) -> Path:
    """Where the monitor writes: ``config.monitor_dir``, else ``monitor/`` in the cache."""
    return Path(config.monitor_dir).expanduser() if config.monitor_dir else cache_dir() / "monitor"


def append_line(path: Path, payload: dict[str, Any]) -> None:
    """Append ``payload`` as one JSON line, whole: one write under an advisory file lock (two
    servers may share a monitor folder), flushed to disk before the lock is released."""
    text = json.dumps(_finite(payload), ensure_ascii=False, allow_nan=False)
    line = (text + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(path) + ".lock"):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@dataclass(frozen=True)
class Observation:
    """One answered input as the monitor keeps it."""

    text: str
    label: str | None = None
    score: float | None = None
    """A classifier's confidence, a generator's answer length in tokens."""


class DriftMetrics:
    """The monitor's figures in the app's Prometheus registry (``/metrics``), by model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, text: str) -> Gauge:
            return Gauge(f"adaptlab_drift_{name}", text, ("model",), registry=registry)

        def counter(name: str, text: str) -> Counter:
            return Counter(f"adaptlab_drift_{name}", text, ("model",), registry=registry)

        self.mmd = gauge("mmd", "Unbiased MMD² of the last window's embeddings vs the reference.")
        self.mmd_p = gauge("mmd_p_value", "Permutation p-value of the last window's MMD.")
        self.psi = gauge("psi", "PSI of the last window's predicted labels vs the reference.")
        self.labels_p = gauge("labels_p_value", "Chi-square p-value of the predicted labels.")
        self.ks = gauge("ks_statistic", "KS statistic of confidence (or answer length).")
        self.ks_p = gauge("ks_p_value", "KS p-value of confidence (or answer length).")
        self.consecutive = gauge("consecutive_drifted_windows", "Drifted windows in a row now.")
        self.ready = gauge("reference_ready", "1 once the model's reference is built, else 0.")
        self.windows = counter("windows", "Windows evaluated.")
        self.drifted = counter("windows_drifted", "Windows that drifted.")
        self.dropped = counter("inputs_dropped", "Inputs not monitored: the queue was full.")
        self.proposals = counter("proposals", "Re-tune proposals written.")

    def show(self, model: str, result: WindowResult, consecutive: int) -> None:
        self.mmd.labels(model).set(result.mmd.mmd2)
        self.mmd_p.labels(model).set(result.mmd.p_value)
        for gauge, value in (
            (self.psi, result.psi),
            (self.labels_p, result.labels_p_value),
            (self.ks, result.ks_statistic),
            (self.ks_p, result.ks_p_value),
        ):
            if value is not None:
                gauge.labels(model).set(value)
        self.consecutive.labels(model).set(consecutive)
        self.windows.labels(model).inc()
        if result.drifted:
            self.drifted.labels(model).inc()


@dataclass(eq=False)
class _Watch:
    """One model's state in the monitor."""

    model: ServedModel
    persist: int
    reference: Reference | None = None
    off: str | None = None
    """Why the model is not watched (no reference); None while it is, or may be."""
    pending: list[Observation] = field(default_factory=list)
    queued: int = 0
    windows: int = 0
    consecutive: int = 0
    proposed: bool = False
    recent: deque[tuple[int, list[Observation], WindowResult]] = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.persist)


class DriftMonitor:
    """Watches the inputs of ``models`` (see the module's docstring)."""

    def __init__(
        self,
        models: Sequence[ServedModel],
        config: DriftConfig,
        metrics: CollectorRegistry,
        *,
        registry: Path | None = None,
    ) -> None:
        self.config = config
        self.folder = monitor_folder(config)
        self.registry = registry
        self.metrics = DriftMetrics(metrics)
        self.server = f"{datetime.now(UTC).isoformat(timespec='seconds')} pid {os.getpid()}"
        # By the model object, not its name: a canary's candidate answers under the champion's
        # name, and its answers must not be counted against the champion's reference.
        self._watches = {model: _Watch(model, config.persist) for model in models}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="adaptlab-drift", daemon=True)
        self._encoder: FrozenEncoder | None = None
        for model in self._watches:
            self.metrics.ready.labels(model.name).set(0)

    # ----------------------------------------------------------------- the request side

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the window being evaluated (queued ones are left); a thread still busy
        after ``timeout`` seconds (building a reference) is left to end with the process."""
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def observe_classified(
        self, model: ServedModel, texts: Sequence[str], predictions: Sequence[LabelPrediction]
    ) -> None:
        """Record a classify request's texts with their predicted labels and confidences."""
        self._observe(
            model,
            [
                Observation(t, p.label, p.probability)
                for t, p in zip(texts, predictions, strict=True)
            ],
        )

    def observe_answered(
        self, model: ServedModel, conversation: Sequence[dict[str, Any]], answer: Answer | None
    ) -> None:
        """Record a generator's request (its user turns) and its answer's length in tokens
        (``None``: a stream that failed; its request still counts)."""
        length = None if answer is None else float(answer.completion_tokens)
        self._observe(model, [Observation(request_text(conversation), None, length)])

    def observe_stream(
        self, model: ServedModel, conversation: Sequence[dict[str, Any]], future: Any
    ) -> None:
        """Record a streamed request when its prediction (``future``) ends."""

        def done(finished: Any) -> None:
            failed = finished.cancelled() or finished.exception() is not None
            self.observe_answered(model, conversation, None if failed else finished.result())

        future.add_done_callback(done)

    def _observe(self, model: ServedModel, observations: list[Observation]) -> None:
        try:
            self._add(model, observations)
        except Exception:  # the monitor never fails an answer
            logger.exception("the drift monitor could not record an input of %s", model.name)

    def _add(self, model: ServedModel, observations: list[Observation]) -> None:
        watch = self._watches.get(model)
        if watch is None or watch.off is not None:
            return
        dropped = 0
        with self._lock:
            for observation in observations:
                watch.pending.append(observation)
                if len(watch.pending) < self.config.window:
                    continue
                window, watch.pending = watch.pending, []
                if watch.queued >= QUEUED_WINDOWS:
                    dropped += len(window)
                    continue
                watch.queued += 1
                self._queue.put((watch, window))
        if dropped:
            self.metrics.dropped.labels(model.name).inc(dropped)

    # ----------------------------------------------------------------- the background thread

    def _work(self) -> None:
        self._prepare()
        while (item := self._queue.get()) is not _STOP:
            watch, window = item
            try:
                if watch.reference is not None:
                    self._evaluate(watch, window)
            except Exception:
                name = watch.model.name
                logger.exception("the drift monitor could not evaluate a window of %s", name)
            finally:
                with self._lock:
                    watch.queued -= 1

    def _prepare(self) -> None:
        config = self.config
        try:
            encoder = FrozenEncoder.load(config.encoder, config.max_length)
        except Exception as exc:  # ModelNotAvailable, a folder that is not an encoder...
            for watch in self._watches.values():
                self._switch_off(watch, f"the encoder {config.encoder} cannot be loaded: {exc}")
            return
        self._encoder = encoder
        for model, watch in self._watches.items():
            name = model.name
            try:
                reference = build_reference(model.loaded, encoder, config, self.registry)
            except ReferenceUnavailable as exc:
                self._switch_off(watch, str(exc))
                continue
            except Exception as exc:
                logger.exception("the drift reference of %s could not be built", name)
                self._switch_off(watch, f"the reference could not be built: {exc}")
                continue
            watch.reference = reference
            self.metrics.ready.labels(name).set(1)
            self._append(
                {"event": "reference", "model": name, "ready": True, **self._reference(reference)}
            )

    def _reference(self, reference: Reference) -> dict[str, Any]:
        scores = reference.scores
        return {
            "facts": reference.facts,
            "score": reference.score_name,
            "score_mean": None if scores is None else float(np.mean(scores)),
            "label_counts": None
            if reference.label_counts is None
            else dict(zip(reference.label_names, reference.label_counts.tolist(), strict=True)),
            "config": self.config.model_dump(mode="json"),
        }

    def _switch_off(self, watch: _Watch, why: str) -> None:
        name = watch.model.name
        with self._lock:
            watch.off, watch.pending = why, []
        logger.warning("drift monitoring of %s is off: %s", name, why)
        self._append({"event": "reference", "model": name, "ready": False, "reason": why})

    def _evaluate(self, watch: _Watch, window: list[Observation]) -> None:
        assert watch.reference is not None and self._encoder is not None
        name, config = watch.model.name, self.config
        watch.windows += 1
        embeddings = self._encoder.embed([o.text for o in window])
        labels = [o.label or "" for o in window] if watch.model.is_classifier else None
        scores = [o.score for o in window if o.score is not None]
        result = evaluate_window(
            watch.reference,
            embeddings,
            config,
            labels=labels,
            scores=scores,
            seed=config.seed + watch.windows,
        )
        watch.consecutive = watch.consecutive + 1 if result.drifted else 0
        watch.recent.append((watch.windows, window, result))
        if not result.drifted:
            watch.proposed, watch.recent = False, deque(maxlen=config.persist)
        self.metrics.show(name, result, watch.consecutive)
        proposal = None
        if watch.consecutive >= config.persist and not watch.proposed:
            watch.proposed = True
            proposal = self._propose(watch)
        self._append(
            {
                "event": "window",
                "model": name,
                "window": watch.windows,
                "consecutive": watch.consecutive,
                "persist": config.persist,
                **result.to_dict(),
                "proposal": None if proposal is None else str(proposal),
            }
        )
        if proposal is not None:  # counted once its window's line is written
            self.metrics.proposals.labels(name).inc()

    def _propose(self, watch: _Watch) -> Path | None:
        episode = Episode(
            watch.model.name,
            watch.model.loaded,
            [(number, [o.text for o in window], result) for number, window, result in watch.recent],
        )
        try:
            folder = write_proposal(self.folder, episode, self.config, self.registry)
        except Exception:
            logger.exception("the re-tune proposal of %s could not be written", watch.model.name)
            return None
        logger.warning("drift persists for %s: re-tune proposal in %s", watch.model.name, folder)
        return folder

    def _append(self, payload: dict[str, Any]) -> None:
        stamped = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "server": self.server}
        try:
            append_line(self.folder / WINDOWS_FILE, {**stamped, **payload})
        except (OSError, ValueError):
            logger.exception("the drift monitor could not write to %s", self.folder)


def start_monitor(
    models: Sequence[ServedModel],
    config: DriftConfig | None,
    metrics: CollectorRegistry,
    registry: Path | None = None,
) -> DriftMonitor | None:
    """A started monitor of ``models``, or None when ``config`` is None (monitoring off)."""
    if config is None:
        return None
    monitor = DriftMonitor(models, config, metrics, registry=registry)
    monitor.start()
    return monitor
