"""The ``adaptlab`` command line: parses, calls the library, prints. No logic of its own.

``HELP`` below, not this docstring, is what ``adaptlab --help`` shows: it is for users.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaptlab.config import ConfigError, ExperimentConfig, reference
from adaptlab.data.contamination import ContaminationError
from adaptlab.data.issues import DataError
from adaptlab.paths import FolderBusyError, OutputError, writable_folder

HELP = (
    "adaptlab runs every way to adapt a pretrained model to your task (prompting, retrieval, "
    "transfer learning, fine-tuning, distillation) on your data against one locked eval set, "
    "measures quality, cost, latency, memory and forgetting side by side, and recommends one."
    "\n\n"
    "Check your data with 'adaptlab data check', see what each strategy would cost with "
    "'adaptlab estimate', run them all with 'adaptlab compare', and read the recommendation "
    "in the report it writes ('adaptlab report' rebuilds it)."
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
data_app = typer.Typer(no_args_is_help=True, help="Check, convert and prepare training data.")
config_app = typer.Typer(no_args_is_help=True, help="Validate configs; print the reference.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
# Piped or in CI, rich would assume 80 columns and fold the leaderboard beyond reading.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config.")]
EvalOption = Annotated[str | None, typer.Option("--eval", help="A given eval file.")]
FormatOption = Annotated[str | None, typer.Option(help="Record format (default: auto-detect).")]
ModelOption = Annotated[str | None, typer.Option(help="Model whose tokenizer counts tokens.")]
StrictOption = Annotated[bool, typer.Option("--strict", help="Any data issue is an error.")]


@contextmanager
def _progress() -> Iterator[Any]:
    """A rich progress display and a ``track(items, description, total)`` function for it."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:

        def track(items: Iterable[Any], description: str, total: int) -> Iterable[Any]:
            return progress.track(items, total=total, description=description)

        yield track


def _experiment(
    config: Path | None,
    train: str | None,
    eval_file: str | None,
    data_overrides: dict[str, Any],
    model_overrides: dict[str, Any],
) -> ExperimentConfig:
    """The config file (or defaults) with command-line values laid over it, validated."""
    if config is not None:
        from adaptlab.strategies.base import load_experiment

        base: ExperimentConfig = load_experiment(config)
    else:
        from adaptlab.data.demo import demo_experiment

        base = demo_experiment()
    data = base.data.model_dump()
    data.update(
        {
            k: v
            for k, v in {"train": train, "eval": eval_file, **data_overrides}.items()
            if v is not None
        }
    )
    if data["train"] is None:
        from adaptlab.data.demo import DEMO_CITATION, bbc_news_path

        data["train"] = str(bbc_news_path())
        console.print(f"[dim]No data given: using the bundled demo data. {DEMO_CITATION}[/dim]")
    model = {
        **base.model.model_dump(),
        **{k: v for k, v in model_overrides.items() if v is not None},
    }
    try:
        # exclude_unset: which training settings the config set explicitly decides whether they
        # override each strategy's own defaults, so unset ones must stay unset.
        raw = {**base.model_dump(exclude_unset=True), "data": data, "model": model}
        return ExperimentConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"command-line options: {exc}") from None


def _print_version(wanted: bool) -> None:
    if wanted:
        console.print(f"adaptlab {installed_version('adaptlab')}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@data_app.command("check")
def data_check(
    train: Annotated[str | None, typer.Argument(help="Training data (default: demo data).")] = None,
    eval_file: EvalOption = None,
    config: ConfigOption = None,
    format: FormatOption = None,
    base_model: ModelOption = None,
    sequence_len: Annotated[int | None, typer.Option(help="Token limit per example.")] = None,
    out: Annotated[Path, typer.Option(help="Where the report is written.")] = Path(
        "runs/data_check"
    ),
    strict: StrictOption = False,
) -> None:
    """Validate data, count PII, find duplicates and contamination, and report size guidance."""
    from adaptlab.data.pipeline import check_data, write_report

    try:
        writable_folder(out)  # before minutes of checking, not after
        experiment = _experiment(
            config,
            train,
            eval_file,
            {"format": format},
            {"base_model": base_model, "sequence_len": sequence_len},
        )
        with _progress() as track:
            result = check_data(experiment.data, experiment.model, track)
        json_path, md_path = write_report(result.report, out)
    except (ConfigError, DataError, OutputError) as exc:
        _fail(str(exc))
        return
    _print_summary(result.report)
    console.print(f"Report: {json_path} and {md_path}")
    if strict and result.has_issues:
        _fail("--strict: the data has issues (listed above and in the report)", code=1)


@data_app.command("prepare")
def data_prepare(
    train: Annotated[str | None, typer.Argument(help="Training data (default: demo data).")] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for train.jsonl, eval.jsonl, eval.lock.")
    ] = Path("runs/data"),
    eval_file: EvalOption = None,
    config: ConfigOption = None,
    format: FormatOption = None,
    base_model: ModelOption = None,
    val_set_size: Annotated[float | None, typer.Option(help="Eval fraction or count.")] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed.")] = None,
    allow_contaminated: Annotated[
        bool,
        typer.Option(
            "--allow-contaminated", help="Proceed although eval items occur in train (recorded)."
        ),
    ] = False,
    decontaminate: Annotated[
        bool, typer.Option("--decontaminate", help="Drop train records that occur in eval.")
    ] = False,
    strict: StrictOption = False,
) -> None:
    """Clean the data, split it (or take --eval), write it and lock the eval set."""
    from adaptlab.data.pipeline import check_data, prepare_data, write_report

    overrides = {
        "format": format,
        "val_set_size": val_set_size,
        "seed": seed,
        "allow_contaminated": allow_contaminated or None,
        "decontaminate": decontaminate or None,
    }
    try:
        writable_folder(out)
        experiment = _experiment(config, train, eval_file, overrides, {"base_model": base_model})
        with _progress() as track:
            result = check_data(experiment.data, experiment.model, track)
        write_report(result.report, out)
        prepared = prepare_data(result, experiment.data, out, strict=strict)
    except ContaminationError as exc:
        _fail(str(exc), code=1)
        return
    except (ConfigError, DataError, OutputError) as exc:
        _fail(str(exc), code=1 if strict else 2)
        return
    _print_summary(result.report)
    for note in prepared.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    lock = prepared.lock
    console.print(
        f"Wrote {prepared.train_path} and {prepared.eval_path} ({lock.size:,} eval examples, "
        f"sha256 {lock.eval_sha256[:12]}…) and {out / 'eval.lock'}"
    )


@data_app.command("convert")
def data_convert(
    dataset: Annotated[str, typer.Argument(help="banking77, restaurant8k, e2e_nlg or covidqa")],
    source: Annotated[Path, typer.Argument(help="The dataset's original file.")],
    out: Annotated[Path, typer.Argument(help="The JSONL file to write.")],
) -> None:
    """Convert a development dataset to adaptlab's JSONL formats."""
    from adaptlab.data.convert import (
        convert_banking77,
        convert_covidqa,
        convert_e2e_nlg,
        convert_restaurant8k,
    )

    converters = {
        "banking77": convert_banking77,
        "restaurant8k": convert_restaurant8k,
        "e2e_nlg": convert_e2e_nlg,
        "covidqa": convert_covidqa,
    }
    if dataset not in converters:
        _fail(f"unknown dataset '{dataset}'; allowed: {', '.join(converters)}")
    try:
        summary = converters[dataset](source, out)
    except DataError as exc:
        _fail(str(exc))
        return
    console.print(f"Wrote {summary.records:,} records to {summary.output}")


@config_app.command("check")
def config_check(files: Annotated[list[Path], typer.Argument(help="YAML configs.")]) -> None:
    """Validate config files; exit 2 naming file, line, key and value on the first bad one."""
    from adaptlab.strategies.base import load_experiment

    failed = False
    for path in files:
        try:
            load_experiment(path)
            console.print(f"[green]ok[/green] {path}")
        except ConfigError as exc:
            errors.print(str(exc), highlight=False, markup=False)
            failed = True
    if failed:
        raise typer.Exit(2)


@config_app.command("reference")
def config_reference() -> None:
    """Every config key with its default and meaning."""
    for line in reference():
        console.print(line, highlight=False, markup=False)


def _print_stability(folder: Path) -> None:
    """Each run's change between the seeds (``compare --repeat``)."""
    from adaptlab.stability import STABILITY, read_stability

    stability = read_stability(folder)
    if stability is None:
        return
    # compare has logged whether the pick held; here, how each run moved between the seeds
    if not stability.held:
        console.print("The report lowers its confidence: the pick changed with the seed.")
    for change in stability.changes:
        moved = change.difference
        interval = "" if moved is None else f" [{moved.low * 100:+.1f}, {moved.high * 100:+.1f}]"
        console.print(
            f"  {change.run}: {change.score * 100:.1f} -> {change.other_score * 100:.1f} "
            f"(seed {change.seed}; Δ {(change.other_score - change.score) * 100:+.1f}{interval})",
            highlight=False,
        )
    console.print(f"Stability: {folder / STABILITY}", highlight=False)


@app.command("compare")
def compare_command(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment YAML (default: the embedded demo).")
    ] = None,
    strategy: Annotated[
        list[str] | None, typer.Option("--strategy", "-s", help="Run only these (repeatable).")
    ] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where runs are written.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo runs that are up to date.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="If another compare is writing this experiment, wait for it to end."
        ),
    ] = False,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            metavar="URI",
            help="Also log each finished run to this MLflow tracking server "
            "(pip install 'adaptlab\\[mlflow]').",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            min=1,
            max=9,
            help="Then rerun the runs that train with N-1 other seeds (42, 7, 1234, ..., "
            "skipping the experiment's own; in <experiment>/repeats/), report whether the "
            "recommendation held (stability.json, the report's stability section) and decide "
            "on every seed's runs together. Default: the experiment's compare.repeat (the "
            "demo's: 2); 1 decides on one seed.",
        ),
    ] = None,
) -> None:
    """Run every strategy on the same data and locked eval set; print the leaderboard."""
    from adaptlab.compare import compare
    from adaptlab.data.contamination import ContaminationError
    from adaptlab.runs import RunError
    from adaptlab.safeload import UnsafeArtifactError

    if mlflow is not None:
        _check_mlflow(mlflow)
    _quiet_libraries()
    try:
        experiment = _experiment(config, None, None, {}, {})
        if output_dir is not None:
            experiment = experiment.model_copy(update={"output_dir": output_dir})
        with _progress() as track:
            result = compare(
                experiment, strategy, track, log=_log, force=force, wait=wait, repeat=repeat
            )
    except (
        ConfigError,
        DataError,
        ContaminationError,
        RunError,
        FolderBusyError,
        OutputError,
        UnsafeArtifactError,
        KeyError,
    ) as exc:
        _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc))
        return
    _print_leaderboard(result.comparison)
    if (experiment.compare.repeat if repeat is None else repeat) > 1:
        _print_stability(result.folder)
    console.print(
        f"Results: {result.folder / 'leaderboard.md'}, "
        f"{result.folder / 'comparison.json'}; runs in {result.folder / 'runs'}"
    )
    if (result.folder / "report.html").is_file():  # compare removes it when the build failed
        report = f"Report: {result.folder / 'report.html'} and {result.folder / 'report.md'}"
        console.print(report, highlight=False, soft_wrap=True)
    if mlflow is not None:
        _log_to_mlflow(result.folder, mlflow)
    if result.failures:
        _fail(
            f"{len(result.failures)} strategies failed: {', '.join(result.failures)} "
            "(error.txt in their run folders)",
            code=1,
        )


@app.command("estimate")
def estimate_command(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment YAML (default: the embedded demo).")
    ] = None,
    strategy: Annotated[
        list[str] | None, typer.Option("--strategy", "-s", help="Only these (repeatable).")
    ] = None,
    hardware: Annotated[str, typer.Option(help="Hardware profile to estimate for.")] = "cpu_2core",
    hardware_file: Annotated[
        Path | None, typer.Option(help="YAML of hardware profiles to add or change.")
    ] = None,
    runs: Annotated[
        list[Path] | None,
        typer.Option(help="Finished runs to calibrate from (default: the experiment's runs)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Before any training: wall time, peak memory and cost of each strategy, with the
    assumptions behind them."""
    from adaptlab.cost.hardware import load_hardware
    from adaptlab.estimate import estimate_experiment
    from adaptlab.models.bundled import ModelNotAvailable

    _quiet_libraries()
    try:
        experiment = _experiment(config, None, None, {}, {})
        profiles = load_hardware(hardware_file)
        log = (lambda message: None) if as_json else _log
        result = estimate_experiment(experiment, strategy, hardware, profiles, runs, log=log)
    except (ConfigError, DataError, ModelNotAvailable, ValueError, KeyError) as exc:
        _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc))
        return
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    _print_estimate(result)


def _print_estimate(result: Any) -> None:
    table = Table(title=f"Estimate on {result.profile_name} ({result.profile.description})")
    headers = ("strategy", "method", "tokens trained", "FLOPs", "utilisation", "time", "peak MB")
    for header in (*headers, "cost $"):
        table.add_column(header, justify="left" if header in ("strategy", "method") else "right")
    for estimate in result.estimates:
        table.add_row(*_estimate_cells(estimate))
    console.print(table)
    for estimate in result.estimates:
        for warning in estimate.warnings:
            errors.print(f"[yellow]warning:[/yellow] {estimate.name}: {warning}", highlight=False)
    console.print("Assumptions:")
    for number, line in enumerate(result.assumptions(), start=1):
        console.print(f"  {number}. {line}", highlight=False, markup=False, soft_wrap=True)


def _estimate_cells(estimate: Any) -> list[str]:
    workload = estimate.workload
    if workload.not_estimated:
        return [estimate.name, workload.method, "—", "—", "not estimated", "—", "—", "—"]
    used = estimate.utilisation
    utilisation = "—" if used is None else f"{used.value:.1%} ({used.source.split(':')[0]})"
    return [
        estimate.name,
        workload.method,
        f"{workload.tokens:,}",
        f"{workload.flops:.3g}",
        utilisation,
        _duration(estimate.seconds),
        f"{estimate.peak_bytes / 1e6:,.0f}",
        f"{estimate.cost:.4f}",
    ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@app.command("report")
def report_command(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="An experiment folder (runs/<name>) or run folders.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for report.html and report.md (default: the experiment)."),
    ] = None,
    requests_per_day: Annotated[
        float | None, typer.Option(help="Projected traffic (default 10,000).")
    ] = None,
    months: Annotated[float | None, typer.Option(help="Projection horizon (default 12).")] = None,
    retune_every_months: Annotated[
        float | None, typer.Option(help="Re-tuning cadence in months; 0: never (default 3).")
    ] = None,
    training_hardware: Annotated[
        str | None, typer.Option(help="Hardware profile training is priced on.")
    ] = None,
    serving_hardware: Annotated[
        str | None, typer.Option(help="Hardware profile serving is priced on.")
    ] = None,
    serving_mode: Annotated[str | None, typer.Option(help="batch_1 or batched.")] = None,
    hardware: Annotated[
        Path | None, typer.Option(help="YAML of hardware profiles to add or change.")
    ] = None,
    cost_tie_margin: Annotated[
        float | None,
        typer.Option(
            help="Two runs cost the same when their projected costs' intervals overlap or they "
            "differ by less than this share of the cheaper one (default 0.1)."
        ),
    ] = None,
    quality_margin: Annotated[
        float | None,
        typer.Option(
            help="The smallest difference in the ranked metric worth acting on, in its 0-1 "
            "scale (0.01: one point): one run is better than another only when the paired "
            "difference's 95% interval lies wholly above it (default 0: significance alone)."
        ),
    ] = None,
) -> None:
    """Write report.html (self-contained) and report.md: the recommendation and its reasons,
    the leaderboard, plots, deployment cost, per-class results, calibration, forgetting, the
    data report and every run's lineage."""
    from adaptlab.report.build import ReportConfig, build_report
    from adaptlab.report.inputs import ReportError
    from adaptlab.runs import RunError

    projection = {
        "requests_per_day": requests_per_day,
        "months": months,
        "retune_every_months": retune_every_months,
        "training_hardware": training_hardware,
        "serving_hardware": serving_hardware,
        "serving_mode": serving_mode,
    }
    given: dict[str, float | str | None] = {k: v for k, v in projection.items() if v is not None}
    if given.get("retune_every_months") == 0:
        given["retune_every_months"] = None  # 0 on the command line: never re-tune
    try:
        margins = {"cost_tie_margin": cost_tie_margin, "quality_margin": quality_margin}
        decision = {k: v for k, v in margins.items() if v is not None}
        settings = ReportConfig.model_validate(
            {
                "projection": given,
                "decision": decision,
                "hardware": None if hardware is None else str(hardware),
            }
        )
        files = build_report(run_dirs, settings, out)
    except (ReportError, ConfigError, RunError, ValueError) as exc:
        _fail(str(exc))
        return
    for name, why in files.left_out.items():
        errors.print(f"[yellow]run '{name}' left out:[/yellow] {why}", highlight=False)
    console.print(f"Recommended: [bold]{files.recommended}[/bold]")
    console.print(f"Report: {files.html} and {files.markdown}", highlight=False, soft_wrap=True)


@app.command("rate")
def rate_command(
    experiment_folder: Annotated[
        Path, typer.Argument(help="An experiment folder (<output_dir>/<experiment>).")
    ],
    runs: Annotated[
        str | None,
        typer.Option(
            help="The two runs to rate, 'a,b' (default: the best run against the best "
            "prompted one)."
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; the page has no login, keep it on loopback."),
    ] = "127.0.0.1",
) -> None:
    """Serve a page where people rate two runs' answers blind (A or B better, tie, both bad);
    ratings are saved in the experiment's ratings.sqlite."""
    from adaptlab.ratings import RatingError
    from adaptlab.serve.rating import serve_ratings

    pair = None
    if runs is not None:
        names = tuple(name.strip() for name in runs.split(","))
        if len(names) != 2 or not all(names):
            _fail(f"--runs {runs!r}: give two run names separated by a comma, e.g. prompt,few_shot")
            return
        pair = (names[0], names[1])
    try:
        serve_ratings(experiment_folder, pair, host=host, port=port, log=_log)
    except RatingError as exc:
        _fail(str(exc))


@app.command("strategies")
def strategies_command() -> None:
    """The registered strategies and their settings."""
    from adaptlab import strategies as _registered  # noqa: F401
    from adaptlab.strategies.base import REGISTRY

    for name in sorted(REGISTRY):
        strategy = REGISTRY[name]
        console.print(f"[bold]{name}[/bold]: {(strategy.__module__ and _first_line(strategy))}")
        for key, field in strategy.config_type.model_fields.items():
            default = field.get_default(call_default_factory=True)
            console.print(
                f"  strategies.{name}.{key} (default {default!r}): {field.description}",
                highlight=False,
                markup=False,
            )


def _first_line(strategy: Any) -> str:
    import sys

    doc = sys.modules[strategy.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _log(message: str) -> None:
    console.print(message, highlight=False, markup=False)


def _quiet_libraries() -> None:
    """transformers' own progress bars and warnings would drown adaptlab's output."""
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # PEFT still asks for the attribute transformers 5 renamed; nothing for a user to act on.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )


def _print_leaderboard(comparison: dict[str, Any]) -> None:
    from adaptlab.comparison import METRIC_WORDS, leaderboard_cells, leaderboard_headers

    table = Table(title=f"Leaderboard (locked eval set {comparison['eval_sha256'][:12]}…)")
    for header in leaderboard_headers(comparison, compact=True):
        table.add_column(header, justify="left" if header == "strategy" else "right")
    for row in comparison["rows"]:
        table.add_row(*leaderboard_cells(row))
    console.print(table)
    metric = METRIC_WORDS[comparison.get("metric", "accuracy")]
    console.print(
        f"Best on {metric}: [bold]{comparison['best']}[/bold]. * = the difference to "
        "the best is significant (paired bootstrap)."
    )


def _print_summary(report: dict[str, Any]) -> None:
    table = Table(title="Data check", show_lines=False)
    for column in ("", "read", "valid", "errors", "warnings", "duplicates dropped", "PII found"):
        table.add_column(column, justify="right" if column else "left")
    for role, source in report["sources"].items():
        pii = sum(report["pii"]["counts"][role].values())
        dropped = report["duplicates"][role]["dropped"]
        table.add_row(
            role,
            f"{source['records_read']:,}",
            f"{source['valid']:,}",
            f"{source['errors']:,}",
            f"{source['warnings']:,}",
            f"{dropped:,}",
            f"{pii:,}",
        )
    console.print(table)
    _print_tokens_and_labels(report)
    for role, dup in report["duplicates"].items():
        console.print(
            f"Duplicates ({role}): {dup['exact_groups']:,} exact groups, {dup['near_groups']:,} "
            f"near groups, {dup['conflicting_label_groups']:,} with conflicting labels; "
            f"{dup['action']}",
            highlight=False,
        )
    if report.get("documents"):
        from adaptlab.data.report import documents_summary

        console.print(f"Documents: {documents_summary(report['documents'])}", highlight=False)
    contamination = report.get("contamination")
    if contamination:
        console.print(
            f"Contamination: {contamination['eval_items']:,} eval items also occur in "
            f"train ({contamination['exact']:,} exact, {contamination['near']:,} near)"
        )
    shown = report["issues"]["items"][:10]
    if report["issues"]["total"] > len(shown):
        console.print(f"Issues ({report['issues']['total']:,}; the first {len(shown)}):")
    for item in shown:
        field = f" [{item['field']}]" if item.get("field") else ""
        console.print(
            f"  {item['path']}:{item['line']}: {item['error']}{field}: {item['message']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for note in report["guidance"]:
        color = {"ok": "green", "info": "cyan", "warn": "yellow"}[note["level"]]
        console.print(f"[{color}]{note['level']}[/{color}] {note['message']}", highlight=False)


def _print_tokens_and_labels(report: dict[str, Any]) -> None:
    tokens = report["tokens"]
    if tokens.get("error"):
        console.print(f"[yellow]tokens not counted:[/yellow] {tokens['error']}")
    else:
        for role in report["sources"]:
            s = tokens[role]
            console.print(
                f"Tokens ({role}, {tokens['tokenizer']}): {s['total']:,} total, p50 "
                f"{s['p50']:.0f}, p95 {s['p95']:.0f}, max {s['max']:,}; "
                f"{s['over_limit']:,} over sequence_len {s['limit']}"
            )
    labels = report.get("labels")
    if labels:
        console.print(
            f"Labels: {labels['classes']} classes, {labels['min_per_class']}–"
            f"{labels['max_per_class']} training examples per class "
            f"(imbalance {labels['imbalance_ratio']}:1)"
        )


def main() -> None:
    app()


# The model registry (issue 16): promote a finished run to a version, then list, show, move
# aliases, roll back and verify. The logic is adaptlab.registry's; these commands print.

registry_app = typer.Typer(
    no_args_is_help=True,
    help="The model registry: versions, aliases, approvals, lineage and integrity checks.",
)
app.add_typer(registry_app, name="registry")

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="The registry folder (default: $ADAPTLAB_REGISTRY, else registry/ in the cache).",
    ),
]
ApproverOption = Annotated[str, typer.Option(help="Who approves this change (recorded).")]
ReasonOption = Annotated[str, typer.Option(help="Why (recorded with the change).")]


def _escape(text: str) -> str:
    """``text`` shown as written: names, paths and reasons may hold rich markup's brackets."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def _registry(path: Path | None, *, create: bool = False) -> Any:
    from adaptlab.registry import Registry, registry_root

    return Registry(registry_root(path), create=create)


def _registry_errors() -> tuple[type[Exception], ...]:
    from adaptlab.registry import RegistryError
    from adaptlab.runs import RunError
    from adaptlab.safeload import UnsafeArtifactError

    return RegistryError, RunError, UnsafeArtifactError, OutputError


def _print_event(event: Any) -> None:
    alias = f"@{event.alias}" if event.alias else ""
    before = "none" if event.from_version is None else event.from_version
    console.print(
        f"{event.kind}: {event.name}{alias} {before} -> {event.to_version} "
        f"(by {event.who}: {event.why})",
        highlight=False,
        markup=False,
    )


# MLflow, optional (issue 16): --mlflow on compare and promote; the work is
# adaptlab.registry.tracking's, checked before the command does anything it would then undo.


def _check_mlflow(uri: str, alias: str | None = None) -> None:
    from adaptlab.registry.tracking import TrackingError, check_tracking

    try:
        check_tracking(uri, alias)
    except TrackingError as exc:
        _fail(_escape(str(exc)))


def _log_to_mlflow(experiment_folder: Path, uri: str) -> None:
    from adaptlab.registry.tracking import TrackingError, experiment_name, log_comparison

    try:
        logged = log_comparison(experiment_folder, uri)
    except TrackingError as exc:
        _fail(f"the comparison is written but not logged to MLflow: {_escape(str(exc))}", code=1)
        return
    ids = ", ".join(f"{run.run}={run.run_id}" for run in logged)
    new = sum(run.new for run in logged)
    console.print(
        f"MLflow {uri}, experiment '{experiment_name(experiment_folder)}': {new} runs logged "
        f"now, {len(logged) - new} logged before: {ids}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _register_in_mlflow(store: Any, version: Any, uri: str, alias: str | None) -> None:
    from adaptlab.registry.tracking import TrackingError, register_version

    refusals: tuple[type[Exception], ...] = (TrackingError, *_registry_errors())
    try:
        registered = register_version(store, version, uri, alias=alias)
    except refusals as exc:
        _fail(f"{version} is in the registry but not in MLflow: {_escape(str(exc))}", code=1)
        return
    pointed = f", @{registered.alias}" if registered.alias else ""
    console.print(
        f"MLflow {uri}: registered model '{registered.name}' version {registered.version}"
        f"{pointed} (run {registered.run_id})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@app.command("promote")
def promote_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (runs/<exp>/runs/<run>).")],
    name: Annotated[str, typer.Option(help="The model's name in the registry.")],
    approver: ApproverOption,
    reason: ReasonOption,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias (e.g. champion) at the new version.")
    ] = None,
    registry: RegistryOption = None,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            metavar="URI",
            help="Also register the version (and its alias) in this MLflow server's Model "
            "Registry (pip install 'adaptlab\\[mlflow]').",
        ),
    ] = None,
) -> None:
    """Register a finished run as the next version of a model: its files are copied into the
    registry's store (the run folder is not changed) with its lineage and your approval."""
    if mlflow is not None:
        _check_mlflow(mlflow, alias)
    try:
        store = _registry(registry, create=True)
        promotion = store.promote(run_dir, name, approver=approver, reason=reason, alias=alias)
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    version = promotion.version
    stored = sum(f.size for f in version.files)
    console.print(
        f"Registered [bold]{version}[/bold] from run {_escape(version.run)} "
        f"({_escape(version.strategy)}): {len(version.files)} files, {stored:,} bytes.",
        highlight=False,
    )
    for event in promotion.events:
        _print_event(event)
    for path in promotion.left_out:
        errors.print(f"[yellow]left out (temporary):[/yellow] {_escape(path)}", highlight=False)
    if mlflow is not None:
        _register_in_mlflow(store, version, mlflow, alias)


@registry_app.command("list")
def registry_list(registry: RegistryOption = None) -> None:
    """The registered models: latest version, aliases, last change."""
    try:
        models = _registry(registry).models()
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    table = Table(title="Registered models")
    for column in ("model", "latest", "aliases", "last change"):
        table.add_column(column, justify="right" if column == "latest" else "left")
    for model in models:
        aliases = ", ".join(f"@{alias} -> {number}" for alias, number in model.aliases.items())
        table.add_row(model.name, str(model.latest), aliases or "-", model.changed_at)
    console.print(table)


@registry_app.command("show")
def registry_show(
    reference: Annotated[
        str, typer.Argument(help="NAME (latest version), NAME@ALIAS or NAME:VERSION.")
    ],
    lineage: Annotated[
        bool, typer.Option("--lineage", help="Also print the version's lineage (JSON).")
    ] = False,
    registry: RegistryOption = None,
) -> None:
    """One version: its run, approval, aliases and files, and the model's history."""
    try:
        opened = _registry(registry)
        version = opened.version(reference)
        history = opened.history(version.name)
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    aliases = ", ".join(f"@{alias}" for alias in version.aliases) or "none"
    console.print(
        f"[bold]{version}[/bold]: run {_escape(version.run)} ({_escape(version.strategy)}), "
        f"promoted {version.created_at} by {_escape(version.who)}; aliases: {aliases}",
        highlight=False,
    )
    _print_files(version.files)
    _print_history(version.name, history)
    if lineage:
        console.print_json(data=version.lineage)


def _print_files(files: Any) -> None:
    table = Table(title="Files")
    for column in ("path", "bytes", "sha256"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    for stored in files:
        table.add_row(_escape(stored.path), f"{stored.size:,}", stored.sha256[:16] + "…")
    console.print(table)


def _print_history(name: str, history: Any) -> None:
    table = Table(title=f"History of {name}")
    for column in ("#", "at", "change", "alias", "from", "to", "who", "why"):
        table.add_column(column)
    for event in history:
        before = "-" if event.from_version is None else str(event.from_version)
        alias = f"@{event.alias}" if event.alias else "-"
        who, why = _escape(event.who), _escape(event.why)
        row = (event.at, event.kind, alias, before, str(event.to_version), who, why)
        table.add_row(str(event.id), *row)
    console.print(table)


def _alias_reference(target: str) -> Any:
    """``NAME@ALIAS`` parsed; a target without an alias is a RegistryError saying so."""
    from adaptlab.registry import RegistryError, parse_reference

    reference = parse_reference(target)
    if reference.alias is None:
        raise RegistryError(f"{target!r}: give NAME@ALIAS, e.g. {reference.name}@champion")
    return reference


@registry_app.command("alias")
def registry_alias(
    target: Annotated[str, typer.Argument(help="NAME@ALIAS, e.g. intent@champion.")],
    version: Annotated[int, typer.Argument(min=1, help="The version the alias points at.")],
    approver: ApproverOption,
    reason: ReasonOption,
    registry: RegistryOption = None,
) -> None:
    """Point an alias at a version (recorded as an event)."""
    try:
        reference = _alias_reference(target)
        event = _registry(registry).set_alias(
            reference.name, reference.alias, version, approver=approver, reason=reason
        )
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    if event is None:
        console.print(f"{target} already points at version {version}; nothing changed.")
    else:
        _print_event(event)


@registry_app.command("rollback")
def registry_rollback(
    target: Annotated[str, typer.Argument(help="NAME@ALIAS, e.g. intent@champion.")],
    approver: ApproverOption,
    reason: ReasonOption,
    registry: RegistryOption = None,
) -> None:
    """Move an alias back to the version it pointed at before its last move."""
    try:
        reference = _alias_reference(target)
        event = _registry(registry).rollback(
            reference.name, reference.alias, approver=approver, reason=reason
        )
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    _print_event(event)


@registry_app.command("verify")
def registry_verify(registry: RegistryOption = None) -> None:
    """Re-hash every stored file of every version; exit 1 naming each one that changed."""
    try:
        result = _registry(registry).verify()
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    for problem in result.problems:
        errors.print(f"[red]changed:[/red] {_escape(problem.message)}", highlight=False)
    versions = f"{result.versions:,} version{'' if result.versions == 1 else 's'}"
    summary = f"{result.files:,} files of {versions} ({result.objects:,} stored objects)"
    if result.problems:
        _fail(f"{len(result.problems):,} of {summary} do not match their sha256", code=1)
    console.print(f"Verified {summary}: every one matches its sha256.")


@registry_app.command("card")
def registry_card(
    reference: Annotated[
        str, typer.Argument(help="NAME (latest version), NAME@ALIAS or NAME:VERSION.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the card to this file (e.g. README.md).")
    ] = None,
    license: Annotated[
        str,
        typer.Option(
            "--license",
            help="The Hub license id of the model (apache-2.0, mit...); 'other' when unknown.",
        ),
    ] = "other",
    registry: RegistryOption = None,
) -> None:
    """A version's model card (Hugging Face README.md): metadata, data, results, approvals."""
    from adaptlab.paths import write_text_atomic
    from adaptlab.registry.card import model_card

    try:
        card = model_card(_registry(registry), reference, license=license)
        if out is not None:
            write_text_atomic(out, card)
    except _registry_errors() as exc:
        _fail(_escape(str(exc)))
        return
    except OSError as exc:
        _fail(_escape(f"{out}: cannot write the card: {exc.strerror or exc}"))
        return
    if out is None:
        typer.echo(card, nl=False)
    else:
        console.print(f"Wrote the model card of {_escape(reference)} to {_escape(str(out))}.")


# Prediction and export with a finished run or a registered version (issue 16). They load the
# model through adaptlab.predict, the path the server takes.

ModelTarget = Annotated[
    str,
    typer.Argument(
        help="A finished run folder, or a registered version: NAME, NAME@ALIAS or NAME:VERSION."
    ),
]


def _predict_errors() -> tuple[type[Exception], ...]:
    from adaptlab.models.bundled import ModelNotAvailable

    return (*_registry_errors(), DataError, ConfigError, ModelNotAvailable)


@app.command("predict")
def predict_command(
    target: ModelTarget,
    inputs: Annotated[
        Path | None,
        typer.Argument(
            help="A JSONL/CSV/JSON file: 'text' per row (a generator also reads 'messages')."
        ),
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", help="A text to predict (repeatable).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write JSON lines here, not stdout.")
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="A classifier's labels shown per text.")
    ] = 5,
    registry: RegistryOption = None,
) -> None:
    """Labels with probabilities (a classifier) or answers (a generator), one JSON line per
    input, from the same loading path the server uses."""
    from adaptlab import predict
    from adaptlab.paths import write_text_atomic

    if (inputs is None) == (not text):
        _fail("give a FILE of inputs or --text, one of the two")
        return
    _quiet_libraries()
    try:
        with predict.open_model(target, registry) as loaded:
            given = predict.as_input_list(text or [], loaded)
            rows = predict.predict(
                loaded, given if inputs is None else predict.read_inputs(inputs, loaded), top_k
            )
    except _predict_errors() as exc:
        _fail(_escape(str(exc)))
        return
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if output is None:
        typer.echo(lines, nl=False)
        return
    try:
        write_text_atomic(output, lines)
    except OSError as exc:
        _fail(_escape(f"{output}: cannot write: {exc.strerror or exc}"))
        return
    errors.print(f"Wrote {len(rows):,} predictions of {loaded.source} to {output}.", markup=False)


@app.command("export")
def export_command(
    target: ModelTarget,
    out: Annotated[Path, typer.Argument(help="A new or empty folder to write the export into.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="hf: a folder plain transformers loads (merged weights, tokenizer, label map); "
            "peft: the run's adapter for PEFT and vLLM; onnx: an encoder classifier as one "
            "graph giving probabilities.",
        ),
    ],
    registry: RegistryOption = None,
) -> None:
    """Write a finished run or a registered version in a form other tools load, with a
    README that shows how (loaded the way 'adaptlab predict' loads it)."""
    from adaptlab.export import ExportError, export

    _quiet_libraries()
    refused: tuple[type[Exception], ...] = (*_predict_errors(), ExportError)
    try:
        result = export(target, format, out, registry)
    except refused as exc:
        _fail(_escape(str(exc)))
        return
    console.print(
        f"Exported {_escape(result.source)} as {result.format} to {_escape(str(result.folder))}: "
        + ", ".join(_escape(name) for name in result.files),
        highlight=False,
    )
    for note in result.notes:
        console.print(f"note: {_escape(note)}", highlight=False)


# Serving (issue 17): the champion behind an OpenAI-compatible API. The server is
# adaptlab.serve.app's; it loads and predicts through adaptlab.predict, as `predict` does.


@app.command("serve")
def serve_command(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="What to serve: registered versions (NAME@champion, NAME:3) or run folders; "
            "the request's 'model' field picks one."
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on; the server has no login.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Predictions computed at once, over all models.")
    ] = 4,
    max_queue: Annotated[
        int, typer.Option(min=0, help="Requests waiting for a slot; one more gets 429.")
    ] = 16,
    request_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may take (queue included): 504.")
    ] = 60.0,
    registry: RegistryOption = None,
    canary: Annotated[
        str | None,
        typer.Option(
            help="A registered candidate (NAME@ALIAS) to canary against the served alias of the "
            "same NAME: gated on the eval set, split, watched, then rolled back or promoted."
        ),
    ] = None,
    canary_weight: Annotated[
        int, typer.Option(min=0, max=100, help="Percent of the champion's traffic it answers.")
    ] = 10,
    canary_margin: Annotated[
        float,
        typer.Option(
            min=0,
            max=100,
            help="Points: refused unless the eval set's interval of candidate minus champion "
            "has its lower bound above -margin.",
        ),
    ] = 2.0,
    canary_window: Annotated[
        int, typer.Option(min=5, help="Candidate requests per guard window.")
    ] = 50,
    canary_promote_after: Annotated[
        int, typer.Option(min=1, help="Healthy candidate requests before it is promoted.")
    ] = 500,
    drift_window: Annotated[
        int,
        typer.Option(
            min=0,
            help="Drift: compare each model's inputs with its training data every this many "
            "inputs (0: no drift monitoring).",
        ),
    ] = 100,
    drift_alpha: Annotated[
        float, typer.Option(help="Drift: false-alarm rate per window (Bonferroni over the tests).")
    ] = 0.01,
    drift_persist: Annotated[
        int, typer.Option(help="Drift: drifted windows in a row that write a re-tune proposal.")
    ] = 3,
    drift_encoder: Annotated[
        str, typer.Option(help="Drift: the sentence encoder of the embeddings.")
    ] = "sentence-transformers/all-MiniLM-L6-v2",
    monitor_dir: Annotated[
        Path | None,
        typer.Option(help="Drift: where windows.jsonl and proposals go (default: the cache's)."),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Deploy on Ray Serve (extra adaptlab[ray]): the cluster $RAY_ADDRESS names, else "
            "a local one; models multiplexed over the replicas.",
        ),
    ] = False,
    ray_replicas: Annotated[
        int | None, typer.Option(min=1, help="Ray: a fixed number of replicas.")
    ] = None,
    ray_min_replicas: Annotated[
        int | None, typer.Option(min=0, help="Ray autoscaling: the fewest replicas (default 1).")
    ] = None,
    ray_max_replicas: Annotated[
        int | None, typer.Option(min=1, help="Ray autoscaling: the most replicas.")
    ] = None,
    ray_target_ongoing_requests: Annotated[
        float | None, typer.Option(help="Ray autoscaling: requests in flight per replica.")
    ] = None,
    ray_replica_cpus: Annotated[
        float | None, typer.Option(help="Ray: CPUs reserved per replica (default 1).")
    ] = None,
    ray_models_per_replica: Annotated[
        int | None, typer.Option(min=1, help="Ray: models one replica holds (default 3).")
    ] = None,
) -> None:
    """Serve models over HTTP: /v1/classify, /v1/chat/completions, /v1/completions, /v1/models,
    /health, /ready and /metrics (Prometheus)."""
    from pydantic import ValidationError

    from adaptlab.serve.app import run_server
    from adaptlab.serve.canary import CanaryRefused, CanarySettings
    from adaptlab.serve.drift import DriftConfig
    from adaptlab.serve.network import ListenError
    from adaptlab.serve.settings import ServeSettings

    try:
        settings = ServeSettings(
            host=host,
            port=port,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            request_timeout_s=request_timeout,
            drift=None
            if drift_window == 0
            else DriftConfig(
                window=drift_window,
                alpha=drift_alpha,
                persist=drift_persist,
                encoder=drift_encoder,
                monitor_dir=None if monitor_dir is None else str(monitor_dir),
            ),
        )
        canary_settings = None
        if canary is not None:
            canary_settings = CanarySettings(
                candidate=canary,
                weight=canary_weight,
                margin=canary_margin,
                window=canary_window,
                promote_after=canary_promote_after,
            )
        ray_settings = _ray_settings(
            ray,
            replicas=ray_replicas,
            min_replicas=ray_min_replicas,
            max_replicas=ray_max_replicas,
            target_ongoing_requests=ray_target_ongoing_requests,
            replica_cpus=ray_replica_cpus,
            models_per_replica=ray_models_per_replica,
        )
    except ValidationError as exc:
        _fail(_escape(str(exc)))
        return
    _quiet_libraries()
    if ray_settings is not None:
        _serve_on_ray(list(targets), registry, settings, ray_settings, canary=canary)
        return
    refusals: tuple[type[Exception], ...] = (*_predict_errors(), ListenError, CanaryRefused)
    try:
        run_server(list(targets), registry, settings, canary=canary_settings, log=_log)
    except refusals as exc:
        _fail(_escape(str(exc)))


# Drift monitoring (issue 17): what `serve` recorded, as a page; and a model's drift reference
# built from its training data when the server cannot find that data itself. The work is
# adaptlab.serve.monitor_report's and adaptlab.serve.reference's.

monitor_app = typer.Typer(
    no_args_is_help=True, help="Drift monitoring of served models: the report, the reference."
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("report")
def monitor_report_command(
    monitor_dir: Annotated[
        Path, typer.Argument(help="The folder 'adaptlab serve' monitored into (--monitor-dir).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The HTML file to write (default: MONITOR_DIR/monitor.html)."),
    ] = None,
) -> None:
    """Write an HTML page of every window's drift figures over time, the thresholds, and the
    re-tune proposals."""
    from adaptlab.serve.monitor_report import MonitorReportError, write_monitor_report

    try:
        written = write_monitor_report(monitor_dir, out)
    except (MonitorReportError, OSError) as exc:
        _fail(_escape(str(exc)))
        return
    console.print(f"Wrote {_escape(str(written))}.", highlight=False)


@monitor_app.command("reference")
def monitor_reference_command(
    target: ModelTarget,
    data: Annotated[
        Path,
        typer.Option(
            help="The prepared training file the run was trained on "
            "(<experiment>/data/train.jsonl; its sha256 must be the run's)."
        ),
    ],
    encoder: Annotated[
        str, typer.Option(help="The sentence encoder 'serve --drift-encoder' will use.")
    ] = "sentence-transformers/all-MiniLM-L6-v2",
    registry: RegistryOption = None,
) -> None:
    """Build and cache a model's drift reference from its training data, for a server that
    cannot find that data (the experiment folder moved or is gone)."""
    from adaptlab import predict
    from adaptlab.models.encoder import FrozenEncoder
    from adaptlab.serve.drift import DriftConfig
    from adaptlab.serve.reference import ReferenceUnavailable, build_embeddings, cache_path

    _quiet_libraries()
    config = DriftConfig(encoder=encoder)
    refusals: tuple[type[Exception], ...] = (*_predict_errors(), ReferenceUnavailable, OSError)
    try:
        with predict.open_model(target, registry) as loaded:
            model = FrozenEncoder.load(config.encoder, config.max_length)
            _, facts = build_embeddings(data, loaded.record, model, config)
            sha256 = loaded.record.manifest.train_sha256
    except refusals as exc:
        _fail(_escape(str(exc)))
        return
    console.print(
        f"Embedded {facts['embedded']:,} of {facts['training_texts']:,} training texts with "
        f"{_escape(encoder)}: {_escape(str(cache_path(sha256, config)))}",
        highlight=False,
    )


def _ray_settings(ray: bool, **given: Any) -> Any:
    """``serve``'s Ray settings (``--ray-*``), None without ``--ray``."""
    chosen = {field: value for field, value in given.items() if value is not None}
    if not ray:
        if chosen:
            options = ", ".join(f"--ray-{field.replace('_', '-')}" for field in chosen)
            _fail(f"{options}: only with --ray")
        return None
    from adaptlab.serve.ray_deployment import RaySettings

    return RaySettings(**chosen)


def _serve_on_ray(
    targets: list[str], registry: Path | None, settings: Any, ray_settings: Any, *, canary: Any
) -> None:
    from adaptlab.serve.network import ListenError
    from adaptlab.serve.ray_deployment import RayServeError, serve_on_ray

    if canary is not None:
        _fail("--canary runs in the single-process server only, not with --ray")
    refusals: tuple[type[Exception], ...] = (*_predict_errors(), ListenError, RayServeError)
    try:
        serve_on_ray(targets, registry, settings, ray_settings, log=_log)
    except refusals as exc:
        _fail(_escape(str(exc)))
