"""Re-measure CPU latency of finished banking77 runs in one quiet process, alternating them.

    python bench/latency_rerun.py full distill lora scratch knn

``adaptlab compare`` measures each run once, right after it trains; a single measurement on a
2-core machine is noisy. This loads the named runs from ``runs/bench/banking77/runs`` through
their strategies' ``load`` and measures batch 1 and batch 32 (``measure_latency`` on the
locked eval texts, 5 s budget each) for 2 rounds at 2 threads and 2 rounds at 1 thread,
printing one JSON line per measurement (bench/RESULTS.md quotes them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from adaptlab.compare import experiment_task, prepare_experiment_data
from adaptlab.config import ExperimentConfig
from adaptlab.evaluate.latency import measure_latency
from adaptlab.strategies.base import RunContext, get_strategy, strategy_config

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench" / "banking77" / "runs"


def main() -> None:
    raw = yaml.safe_load((ROOT / "configs" / "banking77.yaml").read_text())
    experiment = ExperimentConfig.model_validate({**raw, "output_dir": str(ROOT / "runs/bench")})
    prepared = prepare_experiment_data(experiment, lambda items, *_: items, lambda _: None)
    task = experiment_task(prepared)
    models = {}
    for name in sys.argv[1:]:
        config = strategy_config(name, experiment.strategies.get(name))
        run = RunContext(name, RUNS / name, task, experiment, config, experiment.train, RUNS)
        models[name] = get_strategy(name).load(run)
    texts = list(task.eval_texts)  # type: ignore[union-attr]
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for round_ in range(2):
            for name, model in models.items():
                for batch in (1, 32):
                    latency = measure_latency(
                        model.predict_proba, texts, batch_size=batch, time_budget_s=5.0
                    )
                    row = {"threads": threads, "round": round_, "strategy": name}
                    print(json.dumps({**row, **latency.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
