"""Child processes for the kill-anywhere suite: run ``compare`` and die at the k-th file event.

A *moment* is one file-system event of the run, as CPython's audit hooks see it (``open``,
``os.rename``, ``os.remove``, ``os.rmdir``, ``os.mkdir``, ``shutil.rmtree``, ...) on a path
under the test's root: reading the data, writing the prepared splits, every metrics row, each
file of a checkpoint, its removal, the eval, the manifest, the report. The hook runs *before*
the operation, so dying at event k means events 1..k-1 happened and k did not.

The children fork from a forkserver that has imported adaptlab and torch once, so each kill
costs a fork, not an interpreter start; the forkserver never ran torch, so no thread pool is
inherited half-locked.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

FILE_EVENTS = frozenset(
    {
        "open",
        "os.rename",
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.truncate",
        "os.link",
        "os.symlink",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
    }
)
RUNS = ("zero_shot", "full")
PRELOAD = ["adaptlab.compare", "adaptlab.report.build", "tests.unit.strategies.killpoints"]


def _path_of(event: str, args: tuple[Any, ...]) -> str | None:
    if event not in FILE_EVENTS or not args:
        return None
    first = args[0]
    if isinstance(first, int):  # an fd-relative call: no path to place it
        return None
    try:
        return os.fsdecode(first)
    except TypeError:
        return None


class _Stage:
    """The stage of the run that is under way, set by wrappers around adaptlab's own steps."""

    def __init__(self) -> None:
        self.base = "startup"  # outside any wrapped step: before the data, between runs, after
        self.current: list[str] = []

    @property
    def name(self) -> str:
        return self.current[-1] if self.current else self.base

    def wrap(self, owner: Any, attribute: str, stage: str, then: str | None = None) -> None:
        real = getattr(owner, attribute)

        def staged(*args: Any, **kwargs: Any) -> Any:
            if then == "report":
                self.base = then  # everything after this point writes the comparison
            self.current.append(stage)
            try:
                return real(*args, **kwargs)
            finally:
                self.current.pop()
                if then is not None:
                    self.base = then

        setattr(owner, attribute, staged)


def _instrument() -> _Stage:
    import adaptlab.compare as compare_module
    import adaptlab.train.fit as fit_module
    import adaptlab.train.loop as loop_module
    from adaptlab.runs import RunFolder
    from adaptlab.strategies.base import get_strategy

    stage = _Stage()
    stage.wrap(compare_module, "prepare_experiment_data", "data preparation", then="run setup")
    for name in RUNS:
        stage.wrap(type(get_strategy(name)), "fit", "training")
    stage.wrap(loop_module, "_save_checkpoint", "checkpoint write")
    stage.wrap(compare_module, "remove_checkpoint", "checkpoint removal")
    stage.wrap(fit_module, "remove_checkpoint", "checkpoint removal")
    stage.wrap(compare_module, "_evaluate", "evaluation")
    stage.wrap(RunFolder, "write_eval", "evaluation")
    stage.wrap(RunFolder, "write_cost", "evaluation")
    stage.wrap(RunFolder, "write_manifest", "manifest")
    stage.wrap(compare_module, "build_comparison", "report", then="report")
    stage.wrap(compare_module, "report_after_compare", "report")
    return stage


def run_compare(payload: str, root: str, cache: str, kill_at: int, record: str | None) -> None:
    """Run ``compare`` for the experiment in ``payload`` (JSON); SIGKILL self at event
    ``kill_at`` (0: never). With ``record`` (a path outside ``root``), write every counted event
    there as JSON lines: the event, the path and the stage it came in."""
    os.environ["ADAPTLAB_CACHE"] = cache
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from adaptlab.compare import compare
    from adaptlab.config import ExperimentConfig

    torch.set_num_threads(1)
    stage = _instrument()
    seen: list[dict[str, str]] = []
    count = 0
    prefix = os.path.abspath(root) + os.sep

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal count
        path = _path_of(event, args)
        if path is None or not os.path.abspath(path).startswith(prefix):
            return
        count += 1
        relative = os.path.relpath(os.path.abspath(path), root)
        seen.append({"event": event, "path": relative, "stage": stage.name})
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a crash or OOM kill

    experiment = ExperimentConfig.model_validate(json.loads(payload))
    sys.addaudithook(hook)
    compare(experiment, list(RUNS), log=lambda _: None)
    if record is not None:
        Path(record).write_text("".join(json.dumps(e) + "\n" for e in seen), encoding="utf-8")
