"""A registered version's model card: a ``README.md`` in the Hugging Face model-card format.

The YAML metadata holds ``base_model``, ``license``, ``datasets`` (the training file and, for a
retrieval run, the document collection, by sha256), ``metrics`` (the ranking metric) and a
``model-index`` in the Hub's schema (``huggingface_hub.ModelCard`` loads it and reads its
``eval_results``). The body says what the model is for, what it was trained on, how, how well
it did against the runs it was compared with (untouched base, well-prompted base and every
other strategy), its calibration, forgetting, cost and latency, what the eval set leaves out,
and who approved each change.

The version's files are read back through :meth:`Registry.open_version` (each checked against
its sha256) into a temporary folder and from there through :func:`adaptlab.runs.read_run`,
like every stage after ``compare``; the rest comes from the version's lineage, the model's
events and, while the experiment folder the lineage names still exists, its
``comparison.json`` and the other runs' manifests (for their roles).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from adaptlab.data.lock import EVAL_NAME, TRAIN_NAME
from adaptlab.paths import inside
from adaptlab.registry.catalog import Event, Registry, Version
from adaptlab.registry.errors import RegistryError
from adaptlab.registry.lineage import COMPARISON, RUNS
from adaptlab.registry.names import Reference, parse_reference
from adaptlab.runs import RunError, RunRecord, read_manifest, read_run

DEFAULT_LICENSE = "other"
"""The card's ``license`` when none is given: adaptlab cannot know the terms the base model
and the training data allow, so it says so instead of guessing."""
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+_-]{0,63}")
_ROLES = {
    "base": "the base model unchanged",
    "prompted": "the base model instructed or shown examples, without training",
    "tuned": "the base model adapted by training on the training data",
}
_METHODS = {
    "full": "every weight trained",
    "adapter": "an adapter trained on the frozen base model",
    "top_blocks": "the top blocks trained, the rest frozen",
    "features": "a head trained on the frozen base model's features",
    "none": "nothing trained",
}
_NOT_SCORES = frozenset({"confident_wrong_threshold"})
"""Numbers in ``eval.json``'s metrics that are settings, not results."""


def pipeline_tag(task: str) -> str:
    """The Hub's task type for a run of task kind ``task``."""
    return "text-classification" if task == "classification" else "text-generation"


def check_license(value: str) -> str:
    """``value`` when it looks like a Hub license id (``apache-2.0``, ``cc-by-4.0``, ``other``)."""
    if not _LICENSE.fullmatch(value):
        raise RegistryError(
            f"license {value[:80]!r} refused: give a Hub license id such as apache-2.0, mit or "
            "other (lower-case letters, digits, '.', '+', '_' and '-', at most 64 characters)"
        )
    return value


# -- what the card is made from ----------------------------------------------------------------


@dataclass(frozen=True)
class ComparedRun:
    """One row of the comparison the version took part in."""

    run: str
    strategy: str
    role: str | None
    """``base``, ``prompted`` or ``tuned`` from the run's manifest; ``None`` when unknown."""
    score: float | None
    interval: tuple[float, float] | None
    vs_best: dict[str, Any] | None
    """The row's paired difference to the comparison's best run (``comparison.json``)."""


@dataclass(frozen=True)
class Comparison:
    path: Path
    sha256: str
    approved_sha256: str | None
    """The file's sha256 when the version was promoted (its lineage)."""
    metric: str
    best: str | None
    rows: tuple[ComparedRun, ...]


@dataclass(frozen=True)
class CardFacts:
    version: Version
    record: RunRecord
    config: dict[str, Any]
    events: tuple[Event, ...]
    comparison: Comparison | None
    without_comparison: str
    """Why the results come from ``eval.json`` alone (when :attr:`comparison` is ``None``)."""
    license: str

    @property
    def lineage(self) -> dict[str, Any]:
        return self.version.lineage

    @property
    def retrieves(self) -> bool:
        profile = self.record.profile
        return bool(self.lineage.get("documents")) or (profile is not None and profile.retrieves)


def model_card(
    registry: Registry, reference: Reference | str, *, license: str = DEFAULT_LICENSE
) -> str:
    """The model card (``README.md`` text) of version ``reference`` of ``registry``."""
    check_license(license)
    wanted = parse_reference(reference) if isinstance(reference, str) else reference
    version = registry.version(wanted)
    pinned = Reference(version.name, version=version.version)  # an alias may move meanwhile
    events = tuple(registry.history(version.name))
    with tempfile.TemporaryDirectory(prefix="adaptlab-card-") as scratch:
        folder = registry.open_version(pinned, Path(scratch) / "version")
        record = read_run(folder, predictions=False)
        comparison, why = read_comparison(version.lineage, record)
        facts = CardFacts(version, record, _config(record), events, comparison, why, license)
        return render(facts)


def _config(record: RunRecord) -> dict[str, Any]:
    try:
        config = yaml.safe_load(record.config_yaml) if record.config_yaml else None
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def read_comparison(lineage: dict[str, Any], record: RunRecord) -> tuple[Comparison | None, str]:
    """The comparison in the experiment folder the lineage names, or ``None`` and why not."""
    experiment = lineage.get("experiment")
    if not isinstance(experiment, str):
        return None, "the run was not promoted from an experiment folder"
    path = Path(experiment) / COMPARISON
    if not Path(experiment).is_dir():
        return None, f"the experiment folder {experiment} no longer exists"
    try:
        raw = path.read_bytes()
        comparison = json.loads(raw)
    except (OSError, ValueError):
        return None, f"{path} is missing or unreadable"
    rows = comparison.get("rows") if isinstance(comparison, dict) else None
    if not isinstance(rows, list):
        return None, f"{path} has no rows"
    if comparison.get("eval_sha256") != record.manifest.eval_sha256:
        return None, f"{path} now compares runs on another eval set than this version's"
    metric = str(comparison.get("metric") or record.eval.primary_metric)
    approved = (lineage.get("comparison") or {}).get("sha256")
    compared = tuple(
        _compared(row, metric, Path(experiment), record) for row in rows if isinstance(row, dict)
    )
    digest = hashlib.sha256(raw).hexdigest()
    return Comparison(path, digest, approved, metric, comparison.get("best"), compared), ""


def _compared(row: dict[str, Any], metric: str, experiment: Path, mine: RunRecord) -> ComparedRun:
    run = str(row.get("strategy"))
    score, interval = row.get("score"), row.get(f"{metric}_ci")
    vs_best = row.get("vs_best")
    return ComparedRun(
        run=run,
        strategy=str(row.get("registered_strategy") or run),
        role=_role(experiment, run, mine),
        score=float(score) if _is_number(score) else None,
        interval=_pair(interval),
        vs_best=vs_best if isinstance(vs_best, dict) else None,
    )


def _role(experiment: Path, run: str, mine: RunRecord) -> str | None:
    """What run ``run`` of the experiment was (its manifest's profile)."""
    if run == mine.name:
        return None if mine.profile is None else mine.profile.role
    try:
        profile = read_manifest(inside(experiment / RUNS, run)).profile
    except (RunError, ValueError, OSError):
        return None
    return None if profile is None else profile.role


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)):
        return float(value[0]), float(value[1])
    return None


# -- the card ----------------------------------------------------------------------------------


def render(facts: CardFacts) -> str:
    """The card: YAML metadata between ``---`` lines, then the Markdown body."""
    metadata = yaml.safe_dump(card_metadata(facts), sort_keys=False, allow_unicode=True)
    sections = (
        _heading(facts),
        _intended_use(facts),
        _training_data(facts),
        _strategy(facts),
        _results(facts),
        _calibration(facts),
        _forgetting(facts),
        _cost(facts),
        _limitations(facts),
        _approvals(facts),
        _provenance(facts),
    )
    body = "\n\n".join("\n".join(lines) for lines in sections)
    return f"---\n{metadata}---\n\n{body}\n"


def card_metadata(facts: CardFacts) -> dict[str, Any]:
    """The card's YAML metadata (the Hub's model-card fields)."""
    record, version = facts.record, facts.version
    metadata: dict[str, Any] = {}
    if record.manifest.base_model:
        metadata["base_model"] = record.manifest.base_model
    metadata["license"] = facts.license
    metadata["datasets"] = _datasets(facts)
    metadata["metrics"] = [record.eval.primary_metric]
    metadata["pipeline_tag"] = pipeline_tag(record.kind)
    metadata["tags"] = ["adaptlab", record.strategy, record.kind]
    result = {
        "task": {"type": pipeline_tag(record.kind), "name": _task_title(record.kind)},
        "dataset": _eval_dataset(facts),
        "metrics": _index_metrics(record),
    }
    metadata["model-index"] = [{"name": version.name, "results": [result]}]
    return metadata


def _datasets(facts: CardFacts) -> list[str]:
    """The training file (and a retrieval run's collection) as ``name@sha256:<hex>``."""
    named = [f"{_training_file(facts)}@sha256:{facts.record.manifest.train_sha256}"]
    documents = facts.lineage.get("documents") or {}
    if documents.get("sha256"):
        named.append(f"documents@sha256:{documents['sha256']}")
    return named


def _training_file(facts: CardFacts) -> str:
    report = facts.lineage.get("data_report") or {}
    source = (report.get("sources") or {}).get("train") or {}
    path = source.get("path") if isinstance(source, dict) else None
    return Path(path).name if isinstance(path, str) and path else TRAIN_NAME


def _task_title(task: str) -> str:
    titles = {"classification": "Text Classification", "generative": "Slot extraction"}
    return titles.get(task, "Text Generation")


def _eval_dataset(facts: CardFacts) -> dict[str, Any]:
    experiment = facts.lineage.get("experiment")
    where = f"experiment {Path(experiment).name}" if isinstance(experiment, str) else "its run"
    return {
        "type": EVAL_NAME,
        "name": f"locked eval set of {where}",
        "split": "eval sample" if facts.record.eval.sampled else "eval",
        "revision": facts.record.manifest.eval_sha256,
    }


def _index_metrics(record: RunRecord) -> list[dict[str, Any]]:
    """The ranking metric first (its interval in its name), then the other scalar scores."""
    evaluation = record.eval
    low, high = evaluation.interval
    level = _level(record)
    primary = {
        "type": evaluation.primary_metric,
        "value": evaluation.score,
        "name": f"{evaluation.primary_metric} ({level} CI {low:.3f} to {high:.3f}, "
        f"n={evaluation.n})",
    }
    others = [
        {"type": key, "value": float(value), "name": key}
        for key, value in evaluation.metrics.items()
        if key != evaluation.primary_metric and key not in _NOT_SCORES and isinstance(value, float)
    ]
    return [primary, *others]


def _level(record: RunRecord) -> str:
    confidence = record.eval.raw.get("confidence")
    return f"{confidence:.0%}" if _is_number(confidence) else "bootstrap"


# -- sections ----------------------------------------------------------------------------------


def _heading(facts: CardFacts) -> list[str]:
    version, record = facts.version, facts.record
    aliases = ", ".join(f"`@{alias}`" for alias in version.aliases) or "none"
    return [
        f"# {version.name} (version {version.version})",
        "",
        f"Version {version.version} of `{version.name}` in the adaptlab registry: run "
        f"`{record.name}` (strategy `{record.strategy}`) on base model "
        f"`{record.manifest.base_model or 'unknown'}`, promoted {version.created_at} by "
        f"{_text(version.who)}. Aliases pointing at it now: {aliases}.",
    ]


def _intended_use(facts: CardFacts) -> list[str]:
    record = facts.record
    lines = ["## Intended use", "", _task_sentence(facts)]
    profile = record.profile
    if profile is None:
        lines.append("The run's strategy profile is unknown (a folder from before profiles).")
    else:
        lines.append(
            f"Strategy `{record.strategy}`: {_ROLES[profile.role]} ({_METHODS[profile.method]})."
        )
        need = profile.data_need
        if need.examples or need.per_class:
            wanted = f"{need.examples:,} examples" if need.examples else ""
            per_class = f"{need.per_class:,} per class" if need.per_class else ""
            because = f": {need.why}" if need.why else ""
            lines.append(
                f"It declares it needs at least {' and '.join(filter(None, (wanted, per_class)))}"
                f" of training data to be trusted{because}."
            )
    lines += [
        "",
        "Use it on inputs like its training and eval data. Anything else was not measured "
        "(see Limitations); keep a person in the loop where a wrong answer is costly.",
    ]
    return lines


def _task_sentence(facts: CardFacts) -> str:
    record = facts.record
    metrics = record.eval.metrics
    if record.kind == "classification":
        labels = metrics.get("per_class_f1")
        named = f" ({', '.join(f'`{label}`' for label in labels)})" if labels else ""
        return (
            f"Text classification: it gives each text one of the labels it was trained on{named}."
        )
    if record.kind == "generative":
        slots = metrics.get("per_slot")
        named = f" ({', '.join(f'`{slot}`' for slot in slots)})" if slots else ""
        return f"Slot extraction: it answers a chat request with a JSON frame of slots{named}."
    grounded = (
        " It answers from a document collection (retrieval), citing the chunks it was shown."
        if facts.retrieves
        else ""
    )
    return f"Text generation: it answers requests with free text.{grounded}"


def _training_data(facts: CardFacts) -> list[str]:
    lineage, record = facts.lineage, facts.record
    training = lineage.get("training_data") or {}
    evaluation = lineage.get("eval") or {}
    lock = evaluation.get("lock") or {}
    lines = [
        "## Training data",
        "",
        f"- training file: `{_training_file(facts)}`, sha256 `{record.manifest.train_sha256}`, "
        f"size {_bytes(training.get('bytes'))}",
        f"- eval set: sha256 `{record.manifest.eval_sha256}`, "
        f"{_count(evaluation.get('size'), 'items')} (source: {lock.get('source') or 'unknown'})",
    ]
    documents = lineage.get("documents")
    if documents:
        chunks = (documents.get("lock") or {}).get("chunks")
        lines.append(
            f"- document collection: sha256 `{documents.get('sha256') or 'unknown'}`"
            + (f", {_count(chunks, 'chunks')}" if chunks is not None else "")
        )
    return [*lines, "", *_data_report(lineage.get("data_report"))]


def _data_report(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return ["No data report was found at promotion: PII and duplicate counts are unknown."]
    scrubbed = report.get("pii_scrubbed")
    lines = [
        f"- PII found: {_count(report.get('pii_total'), 'items')}"
        f" ({_nested(report.get('pii')) or 'none'});"
        f" {'scrubbed before training' if scrubbed else 'not scrubbed'}",
    ]
    for role, found in (report.get("duplicates") or {}).items():
        if isinstance(found, dict):
            lines.append(
                f"- duplicates ({role}): {_count(found.get('exact_groups'), 'exact groups')}, "
                f"{_count(found.get('near_groups'), 'near groups')}, "
                f"{_count(found.get('dropped'), 'records dropped')}"
            )
    contamination = report.get("contamination")
    if isinstance(contamination, dict):
        lines.append(
            f"- eval items also in the training data: "
            f"{_count(contamination.get('eval_items'), '')}(exact "
            f"{contamination.get('exact', '?')}, near {contamination.get('near', '?')})"
        )
    for role, source in (report.get("sources") or {}).items():
        if isinstance(source, dict):
            lines.append(
                f"- {role} records: {_count(source.get('records_read'), 'read')}, "
                f"{_count(source.get('valid'), 'valid')}, "
                f"{_count(source.get('after_dedup'), 'after deduplication')}"
            )
    return lines


def _strategy(facts: CardFacts) -> list[str]:
    lineage, record = facts.lineage, facts.record
    base = lineage.get("base_model") or {}
    config = lineage.get("config") or {}
    lines = [
        "## Strategy and settings",
        "",
        f"- run `{record.name}`, strategy `{record.strategy}`"
        + (
            f" (role {record.profile.role}, method {record.profile.method})"
            if record.profile
            else ""
        ),
        f"- base model `{base.get('name') or 'unknown'}`, fingerprint "
        f"`{base.get('fingerprint') or 'unknown'}`",
        f"- seed {lineage.get('seed')}; config.yaml sha256 `{config.get('sha256') or 'unknown'}`",
    ]
    teachers = lineage.get("teachers")
    if teachers:
        lines.append(f"- distilled from teacher run(s): {', '.join(f'`{t}`' for t in teachers)}")
    lines += ["", *_settings("strategy_config", facts.config.get("strategy_config"))]
    if record.profile is not None and record.profile.role == "tuned":
        lines += ["", *_settings("train", facts.config.get("train"))]
    return lines


def _settings(key: str, value: Any) -> list[str]:
    if not isinstance(value, dict) or not value:
        return [f"config.yaml records no `{key}` settings."]
    dumped = yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip()
    return [f"`{key}` (config.yaml):", "", "```yaml", dumped, "```"]


def _results(facts: CardFacts) -> list[str]:
    evaluation = facts.record.eval
    lines = [
        "## Results",
        "",
        f"This version: **{evaluation.primary_metric} {_score(evaluation.score)}** "
        f"({_level(facts.record)} CI {_interval(evaluation.interval)}) on "
        f"{_items(facts)} (eval.json).",
        "",
    ]
    lines += _other_scores(facts.record)
    comparison = facts.comparison
    if comparison is None:
        why = facts.without_comparison
        only = (
            f"Only this version's own eval.json is shown: {why}, so the runs it was compared "
            "with (untouched base, well-prompted base, other strategies) are not listed here."
        )
        return [*lines, only]
    return [
        *lines,
        *_comparison_source(comparison),
        *_redone(facts, comparison),
        *_against(facts, comparison),
    ]


def _redone(facts: CardFacts, comparison: Comparison) -> list[str]:
    """A warning when the comparison's row of this run is not this version's score: the run
    was redone (or left out) after the promotion."""
    record = facts.record
    mine = next((row for row in comparison.rows if row.run == record.name), None)
    if mine is not None and mine.score is not None and abs(mine.score - record.eval.score) < 1e-9:
        return []
    found = "is not among its rows" if mine is None else f"scores {_score(mine.score)} there"
    return [
        f"Note: run `{record.name}` {found}, not this version's {_score(record.eval.score)}: the "
        "run was redone or left out after the promotion, so its row is not this version.",
        "",
    ]


def _other_scores(record: RunRecord) -> list[str]:
    """This version's other scores (eval.json): its other metrics, a retrieval run's
    grounding and its retriever's recall."""
    evaluation = record.eval
    others = [
        f"{metric['type']} {_score(metric['value'])}" for metric in _index_metrics(record)[1:]
    ]
    lines = [f"- other metrics: {', '.join(others)}"] if others else []
    grounding = evaluation.grounding or {}
    if grounding:
        interval = _pair(grounding.get("groundedness_ci"))
        lines.append(
            f"- groundedness {_score(grounding.get('groundedness'))} {_interval(interval)}, "
            f"citation rate {_score(grounding.get('citation_rate'))}, citation accuracy "
            f"{_score(grounding.get('citation_accuracy'))}"
        )
    retrieval = evaluation.retrieval or {}
    used, k = retrieval.get("used"), retrieval.get("k")
    recall = ((retrieval.get("by_retriever") or {}).get(used) or {}).get(f"recall@{k}")
    if used is not None:
        lines.append(f"- retrieval ({used}): recall@{k} {_score(recall)}")
    return [*lines, ""] if lines else []


def _items(facts: CardFacts) -> str:
    evaluation = facts.record.eval
    size = evaluation.eval_size
    scored = f"{evaluation.n:,}" + (f" of {size:,}" if size is not None else "")
    return f"{scored} eval items" + (" (a sample)" if evaluation.sampled else "")


def _comparison_source(comparison: Comparison) -> list[str]:
    if comparison.approved_sha256 is None:
        approved = "it was not found when the version was promoted"
    elif comparison.approved_sha256 == comparison.sha256:
        approved = "the comparison the promotion relied on"
    else:
        approved = (
            f"it changed since the promotion, which relied on sha256 `{comparison.approved_sha256}`"
        )
    return [
        f"From the experiment's comparison (`{comparison.path}`, sha256 `{comparison.sha256}`: "
        f"{approved}), ranked on {comparison.metric}:",
        "",
    ]


def _against(facts: CardFacts, comparison: Comparison) -> list[str]:
    """Every compared run: its score and interval, and its paired difference to this version
    when this version is the comparison's best (``comparison.json`` pairs every run with the
    best only), else to the best."""
    mine = facts.record.name
    best = mine == comparison.best
    header = "Δ this − it (paired CI)" if best else f"Δ it − best `{comparison.best}` (paired CI)"
    lines = [
        f"| run | strategy | role | {comparison.metric} (CI) | {header} |",
        "|---|---|---|---|---|",
    ]
    for row in comparison.rows:
        name = f"**{row.run}** (this version)" if row.run == mine else f"`{row.run}`"
        scored = f"{_score(row.score)} {_interval(row.interval)}"
        difference = _delta(row.vs_best, flip=best)
        cells = (name, f"`{row.strategy}`", row.role or "unknown", scored, difference)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *_baselines(facts, comparison)]


def _baselines(facts: CardFacts, comparison: Comparison) -> list[str]:
    mine = facts.record
    lines = []
    for role, title in (("base", "the untouched base"), ("prompted", "the well-prompted base")):
        found = [row for row in comparison.rows if row.role == role and row.score is not None]
        if not found:
            lines.append(f"- Against {title}: no such run in the comparison.")
            continue
        baseline = max(found, key=lambda row: row.score or 0.0)
        if baseline.run == mine.name:
            lines.append(f"- This version is {title}.")
            continue
        if mine.name == comparison.best and baseline.vs_best is not None:
            gap = f"{_delta(baseline.vs_best, flip=True)} (paired)"
        else:
            gap = f"{mine.eval.score - (baseline.score or 0.0):+.3f} (difference of the scores)"
        lines.append(
            f"- Against {title} (`{baseline.run}`: {_score(baseline.score)} "
            f"{_interval(baseline.interval)}): {gap}."
        )
    return lines


def _calibration(facts: CardFacts) -> list[str]:
    record = facts.record
    lines = ["## Calibration", ""]
    if record.kind != "classification":
        return [*lines, "Not applicable: a generator returns text, not class probabilities."]
    metrics = record.eval.metrics
    lines.append(f"- expected calibration error (ECE): {_score(metrics.get('ece'))}")
    if metrics.get("confident_wrong_rate") is not None:
        threshold = metrics.get("confident_wrong_threshold")
        above = f" (confidence ≥ {threshold})" if threshold is not None else ""
        lines.append(
            f"- confidently wrong{above}: {_score(metrics.get('confident_wrong_rate'))}"
            " of eval items"
        )
    return lines


def _forgetting(facts: CardFacts) -> list[str]:
    lines = ["## Forgetting", ""]
    retention = facts.record.eval.raw.get("retention")
    change = retention.get("vs_base") if isinstance(retention, dict) else None
    if not isinstance(change, dict):
        return [*lines, "Not measured: eval.json has no retention against the base model."]
    lines.append("Change against the base model on general abilities (eval.json `retention`):")
    lines.append("")
    for key in ("forgetting", "instruction_pass_rate", "perplexity", "perplexity_ratio"):
        if change.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {_score(change[key])}")
    return lines


def _cost(facts: CardFacts) -> list[str]:
    cost = facts.record.cost
    raw = cost.raw
    lines = ["## Cost and latency", ""]
    facts_shown = [
        ("training wall time", _seconds(cost.fit_wall_s)),
        ("peak memory (RSS)", _bytes(cost.peak_rss_bytes)),
        ("peak GPU memory", _bytes(raw.get("peak_cuda_bytes"))),
        ("own weights", _bytes(cost.artefact_bytes)),
        ("size on disk to serve", _bytes(cost.size_on_disk_bytes)),
        ("trainable / total parameters", _params(cost.trainable_params, cost.total_params)),
        ("index build", _seconds(raw.get("index_build_s"))),
        ("index size", _bytes(raw.get("index_bytes"))),
    ]
    lines += [f"- {what}: {value}" for what, value in facts_shown if "unknown" not in value]
    return lines + _latency(facts.record)


def _latency(record: RunRecord) -> list[str]:
    """A classifier's latency per batch size, a generator's per request (eval.json)."""
    if record.kind == "classification":
        batch_1 = record.eval.latency.get("batch_1") or {}
        batch_32 = record.eval.latency.get("batch_32") or {}
        shown = [
            ("latency, batch 1", _percentiles(batch_1)),
            ("latency per example, batch 32", _ms(batch_32.get("per_example_ms"))),
        ]
    else:
        cost = record.eval.raw.get("cost") or {}
        tokens = record.eval.raw.get("tokens") or {}
        building = cost.get("prompt_build_latency") or {}
        shown = [
            ("latency per request", _percentiles(cost.get("latency") or {})),
            ("output tokens per second", _score(cost.get("output_tokens_per_s"), 1)),
            ("prompt tokens per request (mean)", _mean(tokens.get("prompt"))),
            ("generated tokens per request (mean)", _mean(tokens.get("generated"))),
            ("prompt building, p50", _ms(building.get("p50_ms"))),
        ]
    return [f"- {what}: {value}" for what, value in shown if "unknown" not in value]


def _limitations(facts: CardFacts) -> list[str]:
    record, lineage = facts.record, facts.lineage
    evaluation = record.eval
    sample = (
        "a sample of the locked eval set, not all of it"
        if evaluation.sampled
        else "the whole locked eval set"
    )
    lines = [
        "## Limitations",
        "",
        f"- The scores come from {_items(facts)}: {sample} (sha256 "
        f"`{record.manifest.eval_sha256}`); the interval is a bootstrap over those items.",
        "- The eval set's languages and domains are not recorded: behaviour on other "
        "languages, domains or input lengths is unknown.",
        "- Inputs unlike the training data (sha256 above) were not measured.",
    ]
    documents = lineage.get("documents") or {}
    if facts.retrieves:
        lines.append(
            "- Its answers depend on the document collection it retrieves from (sha256 "
            f"`{documents.get('sha256') or 'unknown'}`): another or a changed collection "
            "changes them, unmeasured."
        )
    if facts.license == DEFAULT_LICENSE:
        lines.append(
            "- License `other`: adaptlab does not know the terms of the base model and the "
            "training data; check both before use (`adaptlab registry card --license ID`)."
        )
    lines += [f"- {_text(note)}" for note in lineage.get("notes") or []]
    return lines


def _approvals(facts: CardFacts) -> list[str]:
    version = facts.version
    lines = [
        "## Approvals",
        "",
        f"Every change to `{version.name}`, oldest first (the registry's append-only events):",
        "",
        "| # | when | change | alias | from | to | who | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for event in facts.events:
        alias = f"@{event.alias}" if event.alias else "-"
        before = "-" if event.from_version is None else str(event.from_version)
        cells = (str(event.id), event.at, event.kind, alias, before, str(event.to_version))
        lines.append("| " + " | ".join((*cells, _text(event.who), _text(event.why))) + " |")
    return lines


def _provenance(facts: CardFacts) -> list[str]:
    lineage = facts.lineage
    libraries = lineage.get("libraries") or {}
    listed = ", ".join(f"{name} {found}" for name, found in libraries.items()) or "unknown"
    return [
        "## Provenance",
        "",
        f"- adaptlab {lineage.get('code_version') or 'unknown'}; {listed}",
        f"- trained on {lineage.get('device') or 'unknown'}, run finished "
        f"{lineage.get('created_at') or 'unknown'}",
        f"- every file of the version by sha256: `adaptlab registry show {facts.version}`; "
        f"the whole lineage: add `--lineage`",
    ]


# -- formatting --------------------------------------------------------------------------------


def _text(value: str) -> str:
    """Free text (who, why, notes) as a Markdown table cell shows it: no markup, no breaks."""
    escaped = html.escape(value, quote=False).replace("|", "\\|")
    return "<br>".join(line.strip() for line in escaped.splitlines()) or "-"


def _score(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else "unknown"


def _interval(interval: tuple[float, float] | None) -> str:
    return "[unknown]" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _delta(difference: dict[str, Any] | None, *, flip: bool = False) -> str:
    """A paired difference ``{difference, low, high}`` as ``+0.120 [+0.050, +0.200]``;
    ``flip``: the other run minus this one."""
    if difference is None:
        return "-"
    values = [difference.get(key) for key in ("difference", "low", "high")]
    numbers = [float(value) for value in values if _is_number(value)]
    if len(numbers) != len(values):
        return "-"
    middle, low, high = numbers
    if flip:
        middle, low, high = -middle, -high, -low
    return f"{middle:+.3f} [{low:+.3f}, {high:+.3f}]"


def _count(value: Any, what: str) -> str:
    return f"{value:,} {what}" if _is_number(value) else f"unknown {what}"


def _nested(counts: Any) -> str:
    """``{"train": {"EMAIL": 2}}`` as ``train EMAIL 2``, leaving out zeros."""
    if not isinstance(counts, dict):
        return ""
    parts: Iterable[str] = (
        f"{key} {_nested(value) if isinstance(value, dict) else value}"
        for key, value in counts.items()
        if value and (not isinstance(value, dict) or _nested(value))
    )
    return ", ".join(parts)


def _bytes(value: Any) -> str:
    if not _is_number(value):
        return "unknown"
    return f"{value:,} bytes ({value / 1e6:,.1f} MB)"


def _seconds(value: Any) -> str:
    return f"{value:,.1f} s" if _is_number(value) else "unknown"


def _ms(value: Any) -> str:
    return f"{value:,.1f} ms" if _is_number(value) else "unknown"


def _percentiles(latency: dict[str, Any]) -> str:
    return f"p50 {_ms(latency.get('p50_ms'))}, p95 {_ms(latency.get('p95_ms'))}"


def _mean(summary: Any) -> str:
    return _score(summary.get("mean"), 1) if isinstance(summary, dict) else "unknown"


def _params(trainable: int | None, total: int | None) -> str:
    if trainable is None and total is None:
        return "unknown"
    return " / ".join("unknown" if n is None else f"{n:,}" for n in (trainable, total))
