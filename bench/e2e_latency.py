"""Re-measure batch-1 generation latency of finished E2E runs in one quiet process, alternating.

    python bench/e2e_latency.py prompt few_shot sft_full sft_lora distill_seq

``adaptlab compare`` measures each run once, right after it trains; on a 2-core machine shared
with other work that reading is an upper bound. This loads the named runs from
``runs/bench/e2e/runs`` through their strategies' ``load`` and times answering the first
``--requests`` requests of the same fixed eval sample compare used (greedy, batch 1, their own
decoding settings), in ``--rounds`` rounds that alternate the runs, printing one JSON line per
measurement (bench/RESULTS.md quotes the medians).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from adaptlab.compare import experiment_task, prepare_experiment_data
from adaptlab.config import ExperimentConfig
from adaptlab.evaluate.generation import measure_generation_cost
from adaptlab.evaluate.harness import sample_indices
from adaptlab.runs import read_manifest
from adaptlab.strategies.base import Generator, RunContext, get_strategy, strategy_config
from adaptlab.train.chat import encode_prompt

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench" / "e2e" / "runs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    raw = yaml.safe_load((ROOT / "configs" / "e2e.yaml").read_text())
    experiment = ExperimentConfig.model_validate({**raw, "output_dir": str(ROOT / "runs/bench")})
    prepared = prepare_experiment_data(experiment, lambda items, *_: items, lambda _: None)
    task = experiment_task(prepared, experiment.data.task)
    requests = task.eval_requests  # type: ignore[union-attr]
    asked = [requests[int(i)] for i in sample_indices(len(requests), 200, seed=0)]
    models: dict[str, Generator] = {}
    for name in args.runs:
        registered = read_manifest(RUNS / name).strategy
        config = strategy_config(
            name, {**experiment.strategies.get(name, {}), "strategy": registered}
        )
        run = RunContext(name, RUNS / name, task, experiment, config, experiment.train, RUNS)
        model = get_strategy(registered).load(run)
        assert isinstance(model, Generator)
        models[name] = model
    for round_ in range(args.rounds):
        for name, model in models.items():
            conversations = model.conversations(asked[: args.requests])
            prompts = [encode_prompt(model.lm.tokenizer, c) for c in conversations]
            cost = measure_generation_cost(
                model.lm, prompts, model.decoding, max_requests=args.requests, time_budget_s=120
            )
            print(
                json.dumps(
                    {
                        "run": name,
                        "round": round_,
                        "p50_ms": round(cost.latency.p50_ms, 1),
                        "p95_ms": round(cost.latency.p95_ms, 1),
                        "requests": cost.latency.samples,
                        "output_tokens_per_s": round(cost.output_tokens_per_s, 1),
                        "prompt_tokens_mean": cost.prompt_tokens.mean,
                        "generated_tokens_mean": cost.generated_tokens.mean,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
