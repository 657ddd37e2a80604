"""Size and shape of a dataset, the guidance a practitioner would give, and how to show it.

The ranges come from practice rather than theory: behavioural tuning (style, format, tone)
works with 200–2,000 examples; task-specific classification or extraction wants 1,000–10,000;
domain adaptation needs at least 10k–100k tokens of in-domain text. A class with only a handful
of examples cannot be learned or measured reliably. In multi-label data a record counts once
for each label in its list, and records with no label (no intent) are counted apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptlab.data.pii import scrub

BEHAVIOURAL = (200, 2_000)
TASK_SPECIFIC = (1_000, 10_000)
DOMAIN_TOKENS = (10_000, 100_000)
IMBALANCE_WARNING = 10.0
SAMPLE_CHARS = 80
# Per-label thresholds are tuned on a validation split of train: a label needs a record in
# the part that is fit and one in the part that is held out.
MIN_RECORDS_TO_SPLIT = 2
RARE_NAMED = 20  # rare labels a guidance note names; the report's labels section lists all


def safe_sample(text: str, limit: int = SAMPLE_CHARS) -> str:
    """A short, PII-scrubbed excerpt for reports: raw PII values never reach a report."""
    cleaned = " ".join(scrub(text)[0].split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def length_stats(lengths: Sequence[int], limit: int | None) -> dict[str, Any]:
    """Count, total, p50/p95/max tokens, and how many exceed ``limit``."""
    if not lengths:
        return {"count": 0, "total": 0, "p50": 0, "p95": 0, "max": 0, "over_limit": 0}
    values = np.asarray(lengths)
    return {
        "count": len(lengths),
        "total": int(values.sum()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
        "limit": limit,
        "over_limit": int((values > limit).sum()) if limit else 0,
    }


def label_stats(train: Sequence[str], eval_labels: Sequence[str] | None) -> dict[str, Any]:
    """Class counts. Labels are vocabulary, but a label column can hold anything (a misnamed
    column of e-mail addresses), so the names shown are :func:`safe_sample` s."""
    counts = Counter(train)
    most, least = (max(counts.values()), min(counts.values())) if counts else (0, 0)
    shown = _shown_names({*counts, *(eval_labels or ())})
    return {
        "classes": len(counts),
        "train_counts": _shown_counts(counts, shown),
        "eval_counts": _shown_counts(Counter(eval_labels), shown) if eval_labels else None,
        "imbalance_ratio": round(most / least, 2) if least else None,
        "min_per_class": least,
        "max_per_class": most,
    }


def label_set_stats(
    train: Sequence[tuple[str, ...]],
    eval_sets: Sequence[tuple[str, ...]] | None,
    train_lines: Sequence[int],
    train_path: str,
) -> dict[str, Any]:
    """:func:`label_stats` of multi-label data, counted per label (a record counts once for
    each label in its list), with the records that have no label (no intent) counted apart,
    and each label with fewer than :data:`MIN_RECORDS_TO_SPLIT` training records with the
    lines where it occurs (``train_lines``: each training record's line in ``train_path``)."""
    counts = Counter(name for labels in train for name in labels)
    eval_counts = Counter(name for labels in eval_sets or () for name in labels)
    stats = label_stats(list(counts.elements()), list(eval_counts.elements()) or None)
    if eval_sets is not None and stats["eval_counts"] is None:
        stats["eval_counts"] = {}  # an eval set whose records all have no intent
    shown = _shown_names({*counts, *eval_counts})
    rare: dict[str, list[int]] = {}
    for labels, line in zip(train, train_lines, strict=True):
        for name in labels:
            if counts[name] < MIN_RECORDS_TO_SPLIT:
                rare.setdefault(name, []).append(line)
    stats["multi_label"] = True
    stats["records"] = {"train": len(train), "eval": _size(eval_sets)}
    stats["no_intent"] = {
        "train": sum(1 for labels in train if not labels),
        "eval": None if eval_sets is None else sum(1 for labels in eval_sets if not labels),
    }
    stats["too_rare_to_split"] = [
        {"label": shown[name], "path": train_path, "lines": lines}
        for name, lines in sorted(rare.items())
    ]
    return stats


def _size(items: Sequence[Any] | None) -> int | None:
    return None if items is None else len(items)


def _shown_names(names: set[str]) -> dict[str, str]:
    """Each label's name as the report shows it; names that scrub alike stay apart ("<EMAIL>",
    "<EMAIL> #2"): the report counts classes from these."""
    shown: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(names):
        base, n = safe_sample(name), 1
        while (key := base if n == 1 else f"{base} #{n}") in taken:
            n += 1
        shown[name] = key
        taken.add(key)
    return shown


def _shown_counts(counts: Counter[str], shown: dict[str, str]) -> dict[str, int]:
    return dict(sorted((shown[name], count) for name, count in counts.items()))


def guidance(
    format: str,
    examples: int,
    tokens: int | None,
    labels: dict[str, Any] | None,
    planned_eval_fraction: float | None,
    min_examples_per_class: int,
    over_limit: int,
    sequence_len: int | None,
) -> list[dict[str, str]]:
    """Plain-language findings, each with a level: ok, info or warn."""
    notes = _size_notes(format, examples, tokens)
    if labels:
        notes += _class_notes(labels, planned_eval_fraction, min_examples_per_class)
    if over_limit:
        notes.append(
            _note(
                "warn",
                f"{over_limit} examples are longer than sequence_len="
                f"{sequence_len} tokens; they are kept, and training must truncate "
                "or drop them explicitly (the count is recorded).",
            )
        )
    return notes


def _note(level: str, message: str) -> dict[str, str]:
    return {"level": level, "message": message}


def _size_notes(format: str, examples: int, tokens: int | None) -> list[dict[str, str]]:
    low, high = TASK_SPECIFIC
    if format == "classification":
        level = "ok" if low <= examples else "warn"
        msg = f"{examples:,} examples; task-specific classification usually needs {low:,}–{high:,}."
        if examples < low:
            msg += " Expect few-shot strategies (SetFit, kNN, prompting) to be competitive."
        notes = [_note(level, msg)]
    else:
        b_low, b_high = BEHAVIOURAL
        fits = (
            "within" if b_low <= examples <= b_high else ("below" if examples < b_low else "above")
        )
        notes = [
            _note(
                "ok" if examples >= b_low else "warn",
                f"{examples:,} examples: {fits} the {b_low:,}–{b_high:,} range for behavioural "
                f"tuning (format, style); task-specific extraction usually needs {low:,}–{high:,}.",
            ),
        ]
    if tokens is not None:
        d_low, d_high = DOMAIN_TOKENS
        level = "ok" if tokens >= d_low else "info"
        notes.append(
            _note(
                level,
                f"{tokens:,} tokens; domain adaptation needs at least "
                f"{d_low:,}–{d_high:,} tokens of in-domain text.",
            )
        )
    return notes


def _class_notes(
    labels: dict[str, Any], planned_eval_fraction: float | None, min_per_class: int
) -> list[dict[str, str]]:
    counts: dict[str, int] = labels["train_counts"]
    notes = []
    few = sorted(name for name, n in counts.items() if n < min_per_class)
    if few:
        notes.append(
            _note(
                "warn",
                f"{len(few)} classes have fewer than {min_per_class} "
                f"training examples: {', '.join(few[:10])}" + (" …" if len(few) > 10 else ""),
            )
        )
    if planned_eval_fraction:
        thin = sorted(n for n, c in counts.items() if math.floor(c * planned_eval_fraction) < 2)
        if thin:
            notes.append(
                _note(
                    "warn",
                    f"{len(thin)} classes would get fewer than 2 eval examples "
                    f"with val_set_size={planned_eval_fraction}; their per-class scores "
                    f"will be noise: {', '.join(thin[:10])}",
                )
            )
    if labels.get("multi_label"):
        notes += _multi_label_notes(labels)
    ratio = labels.get("imbalance_ratio")
    if ratio and ratio >= IMBALANCE_WARNING:
        notes.append(
            _note(
                "warn",
                f"label imbalance {ratio}:1 (largest/smallest class); "
                "report macro-F1, not only accuracy.",
            )
        )
    elif ratio:
        notes.append(_note("ok", f"label imbalance {ratio}:1 over {labels['classes']} classes."))
    return notes


def _multi_label_notes(labels: dict[str, Any]) -> list[dict[str, str]]:
    """How many records have no intent, and the labels too rare to tune a threshold on."""
    records, none = labels["records"], labels["no_intent"]
    message = (
        f"multi-label data: {none['train']:,} of {records['train']:,} training records have no "
        "label (no intent)"
    )
    if none["eval"] is not None:
        message += f", {none['eval']:,} of {records['eval']:,} eval records"
    notes = [_note("info", message + "; a record with several labels counts once for each.")]
    rare = labels["too_rare_to_split"]
    if rare:
        named = "; ".join(
            f"'{item['label']}' ({item['path']}:{', '.join(map(str, item['lines']))})"
            for item in rare[:RARE_NAMED]
        )
        more = len(rare) - RARE_NAMED
        named += (
            f" and {more} more (data_report.json, labels.too_rare_to_split)" if more > 0 else ""
        )
        notes.append(
            _note(
                "warn",
                f"{len(rare)} labels have fewer than {MIN_RECORDS_TO_SPLIT} training records, so "
                "no per-label threshold can be tuned for them on a validation split of train "
                f"(a label must be in both the fit and the validation part): {named}",
            )
        )
    return notes


# --------------------------------------------------------------------------- rendering


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown for terminals, PRs and the run directory."""
    lines = ["# Data report", ""]
    for role, source in report["sources"].items():
        lines.append(
            f"- **{role}**: `{source['path']}` ({source['format']}): {source['valid']:,} valid of "
            f"{source['records_read']:,} read; {source['errors']:,} errors, "
            f"{source['warnings']:,} warnings"
        )
    lines += ["", "## Guidance", ""]
    lines += [f"- **{n['level']}** {n['message']}" for n in report["guidance"]]
    lines += _issues_markdown(report["issues"])
    lines += _duplicates_markdown(report["duplicates"])
    lines += _contamination_markdown(report.get("contamination"))
    lines += _tokens_markdown(report["tokens"])
    lines += _pii_markdown(report["pii"])
    if report.get("labels"):
        lines += _labels_markdown(report["labels"])
    if report.get("documents"):
        lines += _documents_markdown(report["documents"])
    return "\n".join(lines) + "\n"


def documents_summary(documents: dict[str, Any]) -> str:
    """One line on a document collection: documents kept, skipped by reason, chunks."""
    counts = documents["documents"]
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in counts["skipped"].items()) or "none"
    line = (
        f"{counts['kept']:,} of {counts['read']:,} documents kept (skipped: {skipped}); "
        f"{documents['duplicates']['exact_groups']:,} exact and "
        f"{documents['duplicates']['near_groups']:,} near duplicate groups (reported, kept)"
    )
    chunks = documents.get("chunks")
    if chunks:
        tokens = chunks["tokens"]
        line += (
            f"; {chunks['count']:,} chunks of at most {chunks['chunk_tokens']} tokens "
            f"(p50 {tokens['p50']:,.0f}, p95 {tokens['p95']:,.0f}, max {tokens['max']:,})"
        )
    return line


def _documents_markdown(documents: dict[str, Any]) -> list[str]:
    lines = ["", "## Documents", "", f"`{documents['path']}`: {documents_summary(documents)}."]
    pii = documents["pii"]["counts"]
    if pii:
        found = ", ".join(f"{n:,} {kind}" for kind, n in pii.items())
        action = "scrubbed" if documents["pii"]["scrubbed"] else "NOT scrubbed"
        lines.append(f"PII in documents: {found} ({action}).")
    items = documents["issues"]["items"]
    if items:
        lines += ["", "Skipped or flagged:", ""]
        for item in items[:20]:
            field = f" [{item['field']}]" if item.get("field") else ""
            where = item["path"] if not item["line"] else f"{item['path']}:{item['line']}"
            lines.append(f"- `{where}` {item['error']}{field}: {item['message']}")
    return lines


def _issues_markdown(issues: dict[str, Any]) -> list[str]:
    lines = ["", "## Record issues", ""]
    if not issues["counts"]:
        return [*lines, "None."]
    lines += ["| error class | count |", "|---|---:|"]
    lines += [f"| {name} | {count:,} |" for name, count in issues["counts"].items()]
    lines += ["", "First issues:", ""]
    for item in issues["items"][:20]:
        field = f" [{item['field']}]" if item.get("field") else ""
        lines.append(f"- `{item['path']}:{item['line']}` {item['error']}{field}: {item['message']}")
    return lines


def _duplicates_markdown(duplicates: dict[str, Any]) -> list[str]:
    lines = ["", "## Duplicates", ""]
    for role, info in duplicates.items():
        lines.append(
            f"- **{role}**: {info['exact_groups']:,} exact groups, {info['near_groups']:,} near "
            f"groups, {info['dropped']:,} records dropped, {info['conflicting_label_groups']:,} "
            "groups with conflicting labels"
        )
        for group in info["groups"][:5]:
            lines.append(
                f"  - {group['kind']} (sim {group['similarity']:.2f}): keep line "
                f"{group['keep_line']}, drop lines {group['drop_lines'][:8]}: “{group['sample']}”"
            )
    return lines


def _contamination_markdown(info: dict[str, Any] | None) -> list[str]:
    if info is None:
        return []
    lines = ["", "## Contamination (eval items that also occur in train)", ""]
    lines.append(
        f"{info['eval_items']:,} eval items ({info['exact']:,} exact, {info['near']:,} near)."
    )
    for item in info["overlaps"][:10]:
        lines.append(
            f"- eval line {item['eval_line']} ≈ train lines {item['train_lines'][:5]} "
            f"({item['kind']}, {item['similarity']:.2f}): “{item['sample']}”"
        )
    return lines


def _tokens_markdown(tokens: dict[str, Any]) -> list[str]:
    lines = ["", "## Tokens", ""]
    if tokens.get("error"):
        return [*lines, f"Not counted: {tokens['error']}"]
    lines.append(f"Tokenizer: `{tokens['tokenizer']}`, sequence_len {tokens['sequence_len']}.")
    lines += [
        "",
        "| split | examples | tokens | p50 | p95 | max | over limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for role in ("train", "eval"):
        s = tokens.get(role)
        if s:
            lines.append(
                f"| {role} | {s['count']:,} | {s['total']:,} | {s['p50']:.0f} | "
                f"{s['p95']:.0f} | {s['max']:,} | {s['over_limit']:,} |"
            )
    return lines


def _pii_markdown(pii: dict[str, Any]) -> list[str]:
    lines = ["", "## PII", ""]
    for role, counts in pii["counts"].items():
        found = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v) or "none found"
        lines.append(f"- **{role}**: {found}")
    action = (
        "replaced with typed placeholders" if pii["scrubbed"] else "NOT scrubbed (scrub_pii: false)"
    )
    lines.append(f"- Values {action}; not detected at all: {', '.join(pii['not_detected'])}.")
    return lines


def _labels_markdown(labels: dict[str, Any]) -> list[str]:
    kind = "multi-label: records per label, " if labels.get("multi_label") else ""
    lines = [
        "",
        f"## Labels ({kind}{labels['classes']} classes, imbalance {labels['imbalance_ratio']}:1)",
        "",
    ]
    lines += ["| label | train | eval |", "|---|---:|---:|"]
    eval_counts = labels.get("eval_counts") or {}
    for name, count in labels["train_counts"].items():
        lines.append(f"| {name} | {count:,} | {eval_counts.get(name, 0):,} |")
    if labels.get("multi_label"):
        none = labels["no_intent"]
        lines.append(f"| (no intent) | {none['train']:,} | {none['eval'] or 0:,} |")
        rare = labels["too_rare_to_split"]
        if rare:
            lines += [
                "",
                f"Too rare to tune a per-label threshold on (fewer than "
                f"{MIN_RECORDS_TO_SPLIT} training records):",
                "",
            ]
            lines += [
                f"- {item['label']}: `{item['path']}:{', '.join(map(str, item['lines']))}`"
                for item in rare
            ]
    return lines
