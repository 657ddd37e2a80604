"""Benchmark data: out-of-scope (open intent) rejection on banking77, ADB's protocol.

    python bench/open_intent.py prepare --known 0.5 --seed 0 --out DIR [--data FOLDER]
        [--train-oos 0.5]
    python bench/open_intent.py breakdown --out DIR --experiment DIR/runs/NAME

Writes into DIR the data half of the benchmark: ``train.jsonl`` (known intents only),
``eval.jsonl`` (the whole test set, every unknown intent relabelled ``oos``),
``known_intents.json`` (the split and its counts) and ``experiment.yaml`` (an ``adaptlab
compare`` config of frozen, knn, setfit and full on those files). Prints one JSON line.

Protocol
--------
Zhang, Xu and Lin, "Deep Open Intent Classification with Adaptive Decision Boundary" (ADB),
AAAI 2021, https://ojs.aaai.org/index.php/AAAI/article/view/17690, arXiv:2012.10209; code at
https://github.com/thuiar/Adaptive-Decision-Boundary (``dataloader.py``, ``init_parameter.py``,
``scripts/run.sh``), the same protocol in https://github.com/thuiar/TEXTOIR
(``open_intent_detection/dataloaders/base.py`` and ``bert_loader.py``). From their code:

- Known intents: ``round(77 * known_cls_ratio)`` of the intents (19, 38, 58 at 25/50/75%;
  Python's ``round`` takes 38.5 to 38), drawn at random without replacement from the sorted
  label list: ``np.random.seed(seed)`` then ``np.random.choice(np.unique(train_labels), n,
  replace=False)``.
- Train: only examples of known intents; those of unknown intents are removed (TEXTOIR keeps
  them aside as unlabelled data for the methods that use any; ADB does not). ``labeled_ratio``
  then keeps each known example with probability ``labeled_ratio``; the main tables use 1.0
  (all of them).
- Validation (their ``dev.tsv``, split off the official train set): known intents only; used
  for early stopping.
- Test: every test example; an unknown intent's label becomes the one open class (``<UNK>`` in
  their code for banking, ``oos`` for CLINC), so the task is (n+1)-way.
- Metrics: accuracy over all test examples; macro F1 over the n known classes and the open
  class ("F1-score"); F1 of the open class ("Open") and macro F1 over the known ones
  ("Known"). Each number is the mean of ten runs, seeds 0-9 (``scripts/run.sh``; the ``seed``
  column of ``results/results.md`` is 4.5, the mean of 0..9). BERT-base-uncased, only its last
  layer fine-tuned (``--freeze_bert_parameters``).

What this script does differently, and why
------------------------------------------
- The known intents are ``numpy.random.default_rng(seed).choice(sorted(intents),
  round(ratio * 77), replace=False)``, sorted: the project's seeded-sampling rule. ADB draws
  from NumPy's legacy global generator (MT19937), so the same seed picks a different set here
  and **ADB's exact split cannot be reproduced** (``np.random.RandomState(seed).choice`` over
  the same sorted list should give theirs, since their sorted label order is Python's; not
  used, not checked). Our numbers are comparable in protocol, not split for split; average
  several seeds before comparing with theirs.
- Train is the whole official train set (10,003 rows) less the unknown intents, not ADB's
  smaller part of it: ADB holds about 1,000 rows out as the known-only validation set
  (TEXTOIR's ``data/banking/train.tsv`` is 90% of the official train file by size, i.e. about
  9,000 rows; the paper's dataset table gives 9,003 / 1,000 / 3,080 as we recall it, not
  checked against the PDF; its test file is the official 3,080-row test set, as ours). No
  validation file is written; adaptlab's strategies hold out their own from train when they
  need one.
- The config decontaminates (drops training queries that also occur in the test set), as
  ``configs/banking77.yaml`` does; ADB does not.
- The open class is named ``oos``, and ``data.out_of_scope_label: oos`` tells adaptlab that it
  is the rejection class rather than an intent never seen in training.

Reported numbers on BANKING (labeled ratio 1.0)
-----------------------------------------------
From the README of thuiar/Adaptive-Decision-Boundary ("Overall Performance" and "Fine-grained
Performance"), which to our knowledge reproduce the paper's Table 2 (accuracy, F1) and Table 3
(Open, Known); the paper's table text itself was not reachable from here, so these are not
checked against the PDF. ADB's rows agree with the repository's ``results/results.md``
(banking, labeled_ratio 1.0); its baseline rows there are later re-runs and differ (e.g. DOC
at 25%: accuracy 41.17, F1 50.02), so the baselines below are the README's.

    known  method   accuracy  F1     open F1  known F1
    25%    MSP      43.67     50.09  41.43    50.55
           DOC      56.99     58.03  61.42    57.85
           OpenMax  49.94     54.14  51.32    54.28
           DeepUnk  64.21     61.36  70.44    60.88
           ADB      78.85     71.62  84.56    70.94
    50%    MSP      59.73     71.18  41.19    71.97
           DOC      64.81     73.12  55.14    73.59
           OpenMax  65.31     74.24  54.33    74.76
           DeepUnk  72.73     77.53  69.53    77.74
           ADB      78.86     80.90  78.44    80.96
    75%    MSP      75.89     83.60  39.23    84.36
           DOC      76.77     83.34  50.60    83.91
           OpenMax  77.45     84.07  50.85    84.64
           DeepUnk  78.52     84.31  58.54    84.75
           ADB      81.08     85.96  66.47    86.29

TEXTOIR's own re-run of ADB (``open_intent_detection/README.md``): accuracy 79.33 / 79.61 /
81.39, F1 71.63 / 81.34 / 86.11, open F1 85.05 / 79.43 / 67.34, known F1 70.92 / 81.39 / 86.44
at 25 / 50 / 75% known.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
OUT_OF_SCOPE = "oos"
STRATEGIES = ["frozen", "knn", "setfit", "full"]
# configs/banking77.yaml's settings for the runs above; setfit's default of 8 shots per class
# is its setfit_k8.
MODEL = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "sequence_len": 128}
TRAIN_SEED = 42

Row = dict[str, str]


def read_rows(path: Path) -> list[Row]:
    """``{"text", "label"}`` rows of a banking77 CSV (columns ``text,category``)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "category"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: missing column(s) {sorted(missing)}; expected text,category")
        return [{"text": row["text"], "label": row["category"]} for row in reader]


def choose_known(intents: list[str], ratio: float, seed: int) -> list[str]:
    """The known intents: ``round(ratio * len(intents))`` of the sorted intents, drawn without
    replacement by ``default_rng(seed)``, sorted. Sorting first makes the draw depend on the
    intent names only, not on the order rows happen to appear in the file."""
    count = round(ratio * len(intents))
    if not 0 < count < len(intents):
        raise SystemExit(
            f"--known {ratio}: keeps {count} of {len(intents)} intents; it must keep at least "
            "one and leave at least one unknown"
        )
    chosen = np.random.default_rng(seed).choice(sorted(intents), size=count, replace=False)
    return sorted(str(intent) for intent in chosen)


def open_split(
    train: list[Row], test: list[Row], known: set[str], seen: set[str] = frozenset()
) -> tuple[list[Row], list[Row]]:
    """Train keeps known intents only (the model must never see an unknown one), plus, outside
    the protocol, the rows of the unknown intents in ``seen`` labelled as the open class; eval
    keeps every test row, an unknown intent's label replaced by the one open class."""
    kept = [
        row if row["label"] in known else {"text": row["text"], "label": OUT_OF_SCOPE}
        for row in train
        if row["label"] in known or row["label"] in seen
    ]
    relabelled = [
        row if row["label"] in known else {"text": row["text"], "label": OUT_OF_SCOPE}
        for row in test
    ]
    return kept, relabelled


def experiment(name: str, train: Path, eval_: Path) -> dict[str, Any]:
    """An ``adaptlab compare`` config on the written files, with banking77.yaml's settings."""
    return {
        "name": name,
        "output_dir": "runs",
        "data": {
            "train": str(train),
            "eval": str(eval_),
            "format": "classification",
            "text_field": "text",
            "label_field": "label",
            # The test set shares 51 queries with train (see configs/banking77.yaml).
            "decontaminate": True,
            "out_of_scope_label": OUT_OF_SCOPE,
        },
        "model": dict(MODEL),
        "train": {"seed": TRAIN_SEED},
        "compare": {"strategies": list(STRATEGIES)},
    }


def write_jsonl(path: Path, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def choose_seen(unknown: list[str], share: float, seed: int) -> list[str]:
    """The unknown intents whose training rows are kept as out-of-scope examples: a seeded
    ``share`` of them (``default_rng(seed + 1)``, so the draw is independent of the known one);
    none at 0, the protocol."""
    count = round(share * len(unknown))
    if count == 0:
        return []
    chosen = np.random.default_rng(seed + 1).choice(sorted(unknown), size=count, replace=False)
    return sorted(str(intent) for intent in chosen)


def prepare(
    data: Path, out: Path, ratio: float, seed: int, train_oos: float = 0.0
) -> dict[str, Any]:
    """Write the four files into ``out``; return the summary that ``known_intents.json``
    records and the command prints. ``train_oos``: the share of unknown intents whose training
    rows stay in train as out-of-scope examples (0: ADB's protocol)."""
    train, test = read_rows(data / "train.csv"), read_rows(data / "test.csv")
    intents = sorted({row["label"] for row in train})
    if OUT_OF_SCOPE in intents:
        raise SystemExit(f"{data}: an intent is already named {OUT_OF_SCOPE!r}")
    known = choose_known(intents, ratio, seed)
    known_set = set(known)
    seen = choose_seen([i for i in intents if i not in known_set], train_oos, seed)
    kept, relabelled = open_split(train, test, known_set, set(seen))
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    write_jsonl(out / "train.jsonl", kept)
    write_jsonl(out / "eval.jsonl", relabelled)
    name = f"banking77_open_{round(ratio * 100)}" + (
        f"_oos{round(train_oos * 100)}" if seen else ""
    )
    config = experiment(name, out / "train.jsonl", out / "eval.jsonl")
    (out / "experiment.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out_of_scope = Counter(row["label"] for row in relabelled)[OUT_OF_SCOPE]
    summary = {
        "name": name,
        "ratio": ratio,
        "seed": seed,
        "rule": "sorted(numpy.random.default_rng(seed).choice(sorted(intents), "
        "round(ratio * len(intents)), replace=False))",
        "known_intents": known,
        "unknown_intents": [intent for intent in intents if intent not in known_set],
        "trained_as_out_of_scope": seen,
        "counts": {
            "intents": len(intents),
            "known": len(known),
            "unknown": len(intents) - len(known),
            "train_kept": len(kept),
            "train_out_of_scope": sum(row["label"] == OUT_OF_SCOPE for row in kept),
            "train_dropped": len(train) - len(kept),
            "eval_in_scope": len(relabelled) - out_of_scope,
            "eval_out_of_scope": out_of_scope,
        },
    }
    (out / "known_intents.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def breakdown(out: Path, experiment: Path, data: Path) -> dict[str, Any]:
    """Each run's out-of-scope recall on the eval queries of the unknown intents that train
    held as ``oos`` examples (``--train-oos``) and on those it never saw, read from the run
    folders' per-query scores (each eval text mapped back to its banking77 intent)."""
    from safetensors.numpy import load_file

    intent_of = {row["text"]: row["label"] for row in read_rows(data / "test.csv")}
    seen = set(json.loads((out / "known_intents.json").read_text())["trained_as_out_of_scope"])
    lines = (experiment / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    result: dict[str, Any] = {}
    for folder in sorted((experiment / "runs").iterdir()):
        predictions = folder / "predictions.safetensors"
        if not predictions.is_file():
            continue
        arrays = load_file(str(predictions))
        groups: dict[str, list[float]] = {"trained_as_oos": [], "never_seen": []}
        for value, index in zip(arrays["out_of_scope_recall"], arrays["indices"], strict=True):
            if np.isnan(value):
                continue  # an in-scope query
            group = "trained_as_oos" if intent_of[texts[index]] in seen else "never_seen"
            groups[group].append(float(value))
        result[folder.name] = {
            group: {"recall": round(float(np.mean(values)), 4), "queries": len(values)}
            for group, values in groups.items()
            if values
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("prepare", help="Write the open-intent split and its config.")
    command.add_argument("--known", type=float, required=True, help="Known-intent ratio (0.5).")
    command.add_argument("--seed", type=int, default=0, help="Seed of the known-intent draw.")
    command.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    command.add_argument("--data", type=Path, default=DATA, help="banking77 CSV folder.")
    command.add_argument(
        "--train-oos",
        type=float,
        default=0.0,
        help="Outside the protocol: the share of unknown intents whose training rows stay in "
        "train labelled oos (the eval set is the same), to measure what such examples buy.",
    )
    split = commands.add_parser(
        "breakdown", help="Out-of-scope recall by whether train held the intent as oos."
    )
    split.add_argument("--out", type=Path, required=True, help="The folder prepare wrote.")
    split.add_argument("--experiment", type=Path, required=True, help="compare's folder.")
    split.add_argument("--data", type=Path, default=DATA, help="banking77 CSV folder.")
    args = parser.parse_args(argv)
    if args.command == "breakdown":
        print(json.dumps(breakdown(args.out, args.experiment, args.data), indent=2))
        return
    summary = prepare(args.data, args.out, args.known, args.seed, args.train_oos)
    hidden = ("rule", "unknown_intents", "trained_as_out_of_scope")
    line = {key: value for key, value in summary.items() if key not in hidden}
    line["known_intents"] = len(summary["known_intents"])
    line["trained_as_out_of_scope"] = len(summary["trained_as_out_of_scope"])
    line["out"] = str(args.out.resolve())
    print(json.dumps(line))


if __name__ == "__main__":
    main()
