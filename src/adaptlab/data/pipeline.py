"""``data check`` and ``data prepare``: read → validate → scrub PII → dedup → contamination →
size guidance; ``prepare`` then splits, writes the cleaned files and locks the eval set.

Order matters: PII is scrubbed first so nothing downstream (duplicate samples, reports) ever
holds a raw value; duplicates are dropped before the split so a near-copy of an eval item cannot
sit in train; contamination is checked last, on what would really be trained and evaluated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from adaptlab import __version__
from adaptlab.config import DataConfig, ModelConfig
from adaptlab.data import lock as locking
from adaptlab.data.contamination import (
    ContaminationError,
    Overlap,
    decontaminate_train,
    find_contamination,
    require_clean,
)
from adaptlab.data.dedup import DuplicateGroup, find_duplicates, keep_indices
from adaptlab.data.documents import (
    ChunkSettings,
    PreparedCollection,
    prepare_collection,
    read_collection,
    unknown_gold_ids,
    write_collection,
)
from adaptlab.data.formats import (
    Layout,
    LoadedData,
    Record,
    label_set,
    load,
    quoted,
    quoted_names,
    record_input,
    record_text,
)
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.data.pii import NOT_DETECTED, PII_TYPES, scrub
from adaptlab.data.report import (
    guidance,
    label_set_stats,
    label_stats,
    length_stats,
    safe_sample,
    to_markdown,
)
from adaptlab.paths import atomic_write, writable_folder, write_text_atomic

MAX_LISTED = 1_000  # issues/groups listed in full in data_report.json; counts are always exact
# Keys that name things rather than hold text: a record's id, and the ids of its gold documents,
# which must keep matching the collection's (whose ids are not scrubbed either). PII scrubbing
# leaves them as they are.
REFERENCE_KEYS = ("id", "documents")

Track = Callable[[Iterable[Any], str, int], Iterable[Any]]


def _no_progress(items: Iterable[Any], description: str, total: int) -> Iterable[Any]:
    return items


@dataclass
class Part:
    """One side (train or eval) as it moves through the pipeline."""

    loaded: LoadedData
    rows: list[dict[str, Any]] = field(default_factory=list)  # PII-scrubbed copies
    pii: Counter[str] = field(default_factory=Counter)
    groups: list[DuplicateGroup] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)  # indices into loaded.records after dedup

    def kept_records(self) -> list[Record]:
        return [self.loaded.records[i] for i in self.keep]

    def kept_rows(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in self.keep]

    def kept_labels(self) -> list[str] | None:
        """Each kept record's label; None for multi-label data (see :meth:`kept_label_sets`)."""
        labels = self.loaded.labels()
        return None if labels is None else [labels[i] for i in self.keep]

    def kept_label_sets(self) -> list[tuple[str, ...]] | None:
        """Each kept record's labels (see :meth:`LoadedData.label_sets`)."""
        sets = self.loaded.label_sets()
        return None if sets is None else [sets[i] for i in self.keep]


@dataclass
class CheckResult:
    train: Part
    eval: Part | None
    overlaps: list[Overlap]
    report: dict[str, Any]
    collection: PreparedCollection | None = None
    """The document collection of ``data.documents``, read, scrubbed and chunked."""

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for p in self._parts() for i in p.loaded.issues)

    @property
    def has_issues(self) -> bool:
        return any(p.loaded.issues for p in self._parts())

    def _parts(self) -> list[Part]:
        return [self.train] if self.eval is None else [self.train, self.eval]


def check_data(
    data: DataConfig, model: ModelConfig, track: Track = _no_progress, tokenizer: Any = None
) -> CheckResult:
    """Read, validate, scrub, dedup and cross-check ``data.train`` (and ``data.eval``)."""
    if data.train is None:
        raise DataError("no training data given")
    train = Part(
        load(
            data.train,
            data.format,
            data.text_field,
            data.label_field,
            data.labels,
            hub_split=data.hub_split,
            out_of_scope_label=data.out_of_scope_label,
        )
    )
    eval_part = None
    if data.eval is not None:
        eval_part = Part(_load_eval(data.eval, data, train.loaded))
    for part, role in ((train, "train"), (eval_part, "eval")):
        if part is not None:
            _scrub(part, data, track, role)
            _dedup(part, data, track, role)
    overlaps = _contamination(train, eval_part, data, track)
    collection = _collection(data, train, eval_part)
    report = build_report(train, eval_part, overlaps, data, model, tokenizer, track)
    if collection is not None:
        report["documents"] = collection.report
    return CheckResult(train, eval_part, overlaps, report, collection)


def _load_eval(source: str, data: DataConfig, train: LoadedData) -> LoadedData:
    """The eval file, read with the training file's layout and checked against its labels."""
    known = data.labels if data.labels is not None else _label_names(train.label_sets() or [])
    oos = data.out_of_scope_label
    if oos is not None and oos not in known and not train.multi_label:
        # out-of-scope queries train may lack; in multi-label data they have the empty list
        known = [*known, oos]
    layout = Layout(train.format, train.text_field, train.label_field, train.multi_label)
    labels = known if train.format == "classification" else None
    return load(source, layout=layout, labels=labels, out_of_scope_label=oos)


def _label_names(label_sets: Iterable[Iterable[str]]) -> list[str]:
    """Every label that occurs, sorted (the union of the records' labels)."""
    return sorted({name for labels in label_sets for name in labels})


def _collection(data: DataConfig, train: Part, eval_part: Part | None) -> PreparedCollection | None:
    """The collection of ``data.documents``, chunked; records whose gold ``documents`` name an
    id the collection lacks get a warning each (kept: their retrieval counts as a miss)."""
    if data.documents is None:
        return None
    collection = prepare_collection(
        data.documents,
        ChunkSettings(data.chunk_tokens, data.chunk_overlap_tokens),
        scrub_pii=data.scrub_pii,
        pii_types=data.pii_types,
        near_threshold=data.near_dup_threshold,
    )
    known = collection.document_ids
    for part in (train, eval_part):
        if part is None:
            continue
        named = [
            (part.loaded.path, r.line, [str(i) for i in r.data["documents"]])
            for r in part.loaded.records
            if isinstance(r.data.get("documents"), list)
        ]
        part.loaded.issues.extend(
            replace(issue, severity="warning") for issue in unknown_gold_ids(named, known)
        )
    return collection


def _scrub(part: Part, data: DataConfig, track: Track, role: str) -> None:
    types = data.pii_types if data.scrub_pii else list(PII_TYPES)
    records = part.loaded.records
    for record in track(records, f"PII ({role})", len(records)):
        row, counts = scrub_record(part.loaded, record.data, types)
        part.pii.update(counts)
        # Counting happens either way; only scrub_pii decides whether the data changes.
        part.rows.append(row if data.scrub_pii else record.data)


def scrub_record(
    layout: LoadedData | Layout, row: dict[str, Any], types: Sequence[str]
) -> tuple[dict[str, Any], Counter[str]]:
    """A copy of ``row`` with PII replaced in every string it carries onward: the text, any
    other column or key, nested values, and every field of every chat message (``content``,
    ``name``...). Only the label and a message's ``role`` are left as they are (they are
    vocabulary, not text), and the :data:`REFERENCE_KEYS`."""
    counts: Counter[str] = Counter()

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            text, found = scrub(value, types)
            counts.update(found)
            return text
        if isinstance(value, list):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    # the label and the reference keys as they are (unless one is the text column, as "id" may
    # be made); chat messages below, each with its role as it is
    kept: set[str | None] = {key for key in REFERENCE_KEYS if key != layout.text_field}
    if layout.format == "classification":
        kept.add(layout.label_field)
    elif layout.format == "chat":
        kept.add("messages")
    out = {key: value if key in kept else clean(value) for key, value in row.items()}
    if layout.format == "chat":
        out["messages"] = [
            {key: value if key == "role" else clean(value) for key, value in message.items()}
            if isinstance(message, dict)
            else clean(message)
            for message in row["messages"]
        ]
    return out, counts


def _texts(part: Part, kept: bool = False) -> list[str]:
    rows = part.kept_rows() if kept else part.rows
    return [record_text(part.loaded, row) for row in rows]


def _inputs(part: Part) -> list[str]:
    return [record_input(part.loaded, row) for row in part.kept_rows()]


def _dedup(part: Part, data: DataConfig, track: Track, role: str) -> None:
    """Find duplicate groups; drop them from train only.

    A given eval file is the user's benchmark: its duplicates are reported, never removed, so
    scores stay comparable with anything else measured on the same file.
    """
    texts = _texts(part)
    part.keep = list(range(len(texts)))
    if not data.dedup:
        return
    labels: list[str | None] | None = list(part.loaded.labels() or []) or None
    if part.loaded.multi_label:
        # a copy whose label set differs is a conflict too, "no intent" ([]) included
        labels = [json.dumps(sets) for sets in part.loaded.label_sets() or []] or None
    for _ in track([None], f"duplicates ({role}, {len(texts):,} records)", 1):
        part.groups = find_duplicates(texts, labels, near_threshold=data.near_dup_threshold)
    if role == "train":
        part.keep = keep_indices(len(texts), part.groups)


def _contamination(
    train: Part, eval_part: Part | None, data: DataConfig, track: Track
) -> list[Overlap]:
    if eval_part is None:
        return []
    train_inputs, eval_inputs = _inputs(train), _inputs(eval_part)
    for _ in track([None], f"contamination ({len(eval_inputs):,} eval items)", 1):
        found = find_contamination(
            train_inputs, eval_inputs, near_threshold=data.near_dup_threshold
        )
    # Indices so far point into the deduplicated lists; map them back to record positions.
    return [
        replace(
            o,
            eval_index=eval_part.keep[o.eval_index],
            train_indices=tuple(train.keep[i] for i in o.train_indices),
        )
        for o in found
    ]


# --------------------------------------------------------------------------- the report


def build_report(
    train: Part,
    eval_part: Part | None,
    overlaps: list[Overlap],
    data: DataConfig,
    model: ModelConfig,
    tokenizer: Any,
    track: Track,
) -> dict[str, Any]:
    parts = {"train": train} if eval_part is None else {"train": train, "eval": eval_part}
    tokens = _token_section(parts, model, tokenizer, track)
    labels = None
    if train.loaded.multi_label:
        labels = label_set_stats(
            train.kept_label_sets() or [],
            eval_part.kept_label_sets() if eval_part else None,
            [record.line for record in train.kept_records()],
            train.loaded.path,
        )
    elif train.loaded.format == "classification":
        eval_labels = eval_part.kept_labels() if eval_part else None
        labels = label_stats(train.kept_labels() or [], eval_labels)
    planned = data.val_set_size if eval_part is None and data.val_set_size < 1 else None
    over = sum(
        s.get("over_limit", 0) for k, s in tokens.items() if k in parts and isinstance(s, dict)
    )
    train_tokens = tokens.get("train", {}).get("total") if not tokens.get("error") else None
    report: dict[str, Any] = {
        "adaptlab_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sources": {role: _source_section(p) for role, p in parts.items()},
        "issues": _issue_section([i for p in parts.values() for i in p.loaded.issues]),
        "pii": {
            "scrubbed": data.scrub_pii,
            "types": list(data.pii_types),
            "counts": {role: {t: p.pii.get(t, 0) for t in PII_TYPES} for role, p in parts.items()},
            "not_detected": list(NOT_DETECTED),
        },
        "duplicates": {role: _dup_section(p) for role, p in parts.items()},
        "contamination": _contamination_section(train, eval_part, overlaps) if eval_part else None,
        "tokens": tokens,
        "labels": labels,
    }
    report["guidance"] = guidance(
        train.loaded.format,
        len(train.keep),
        train_tokens,
        labels,
        planned,
        data.min_examples_per_class,
        over,
        model.sequence_len,
    )
    return report


def _source_section(part: Part) -> dict[str, Any]:
    issues = part.loaded.issues
    return {
        "path": part.loaded.path,
        "sha256": locking.sha256_file(Path(part.loaded.path))
        if Path(part.loaded.path).is_file()
        else None,
        "format": part.loaded.format,
        "text_field": part.loaded.text_field,
        "label_field": part.loaded.label_field,
        "records_read": part.loaded.raw_count,
        "valid": len(part.loaded.records),
        "after_dedup": len(part.keep),
        "errors": sum(1 for i in issues if i.severity == "error"),
        "warnings": sum(1 for i in issues if i.severity == "warning"),
    }


def _issue_section(issues: list[DataIssue]) -> dict[str, Any]:
    counts = Counter(i.error for i in issues)
    items = []
    for issue in issues[:MAX_LISTED]:
        item = issue.to_dict()
        # formats already quotes input values through the PII scrubber; scrubbing again here
        # keeps an issue raised anywhere else from bringing a raw value into the report
        item["message"] = safe_sample(str(item["message"]), limit=200)
        if item["field"] is not None:
            item["field"] = quoted(item["field"], limit=80)
        items.append(item)
    return {
        "counts": dict(counts.most_common()),
        "items": items,
        "listed": len(items),
        "total": len(issues),
    }


def _dup_section(part: Part) -> dict[str, Any]:
    records, texts = part.loaded.records, _texts(part)
    groups = [
        {
            "kind": g.kind,
            "keep_line": records[g.keep].line,
            "drop_lines": [records[i].line for i in g.drop],
            "similarity": round(g.similarity, 3),
            "conflicting_labels": g.conflicting_labels,
            "sample": safe_sample(texts[g.keep]),
        }
        for g in part.groups[:MAX_LISTED]
    ]
    return {
        "exact_groups": sum(1 for g in part.groups if g.kind == "exact"),
        "near_groups": sum(1 for g in part.groups if g.kind == "near"),
        "dropped": len(part.loaded.records) - len(part.keep),
        "action": "dropped" if len(part.keep) < len(part.loaded.records) else "reported",
        "conflicting_label_groups": sum(1 for g in part.groups if g.conflicting_labels),
        "groups": groups,
    }


def _contamination_section(train: Part, eval_part: Part, overlaps: list[Overlap]) -> dict[str, Any]:
    listed = [
        {
            "eval_line": eval_part.loaded.records[o.eval_index].line,
            "train_lines": [train.loaded.records[i].line for i in o.train_indices],
            "kind": o.kind,
            "similarity": round(o.similarity, 3),
            "sample": safe_sample(record_input(eval_part.loaded, eval_part.rows[o.eval_index])),
        }
        for o in overlaps[:MAX_LISTED]
    ]
    exact = sum(1 for o in overlaps if o.kind == "exact")
    return {
        "eval_items": len(overlaps),
        "exact": exact,
        "near": len(overlaps) - exact,
        "overlaps": listed,
    }


def _token_section(
    parts: dict[str, Part], model: ModelConfig, tokenizer: Any, track: Track
) -> dict[str, Any]:
    from adaptlab.models.bundled import ModelNotAvailable, load_tokenizer

    try:
        tokenizer = tokenizer or load_tokenizer(model.base_model, model.revision)
    except (ModelNotAvailable, OSError, ValueError) as exc:
        return {"error": str(exc), "tokenizer": model.base_model}
    section: dict[str, Any] = {"tokenizer": model.base_model, "sequence_len": model.sequence_len}
    if "train" in parts:
        _drop_long_answers(parts["train"], tokenizer, model.sequence_len)
    for role, part in parts.items():
        lengths = token_lengths(part, tokenizer, track, role)
        section[role] = length_stats(lengths, model.sequence_len)
        _flag_long(part, lengths, model.sequence_len)
    return section


def token_lengths(part: Part, tokenizer: Any, track: Track, role: str) -> list[int]:
    """Tokens per kept record, as the model will see them (chat template included)."""
    rows = part.kept_rows()
    if part.loaded.format == "chat" and getattr(tokenizer, "chat_template", None):
        return [
            len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False))
            for r in track(rows, f"tokens ({role})", len(rows))
        ]
    texts = _texts(part, kept=True)
    lengths: list[int] = []
    batch = 2048
    for start in track(range(0, len(texts), batch), f"tokens ({role})", -(-len(texts) // batch)):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=True)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    return lengths


def _drop_long_answers(part: Part, tokenizer: Any, limit: int) -> None:
    """A training answer longer than ``sequence_len`` tokens cannot be learned whole: an error
    on its line naming the field, and the record is left out (chat, completion and alpaca
    records; a long prompt is only the warning of :func:`_flag_long`)."""
    fields = [answer_field(part.loaded.format, part.loaded.records[i].data) for i in part.keep]
    if not any(fields):
        return
    records = [part.loaded.records[index].data for index in part.keep]
    texts = [str(_field_value(row, name)) for row, name in zip(records, fields, strict=True)]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    too_long = set()
    for index, name, length in zip(part.keep, fields, lengths, strict=True):
        if name and length > limit:
            too_long.add(index)
            part.loaded.issues.append(
                DataIssue(
                    part.loaded.path,
                    part.loaded.records[index].line,
                    "answer_too_long",
                    f"the answer is {length} tokens, longer than sequence_len {limit}: it "
                    "cannot be learned whole; left out (shorten it or raise sequence_len)",
                    field=name,
                )
            )
    part.keep = [index for index in part.keep if index not in too_long]


def answer_field(format: str, row: dict[str, Any]) -> str | None:
    """Where a generative record's answer is: ``messages[i].content`` of its last assistant
    message, ``completion`` or ``output``; ``None`` for other records."""
    if format == "completion":
        return "completion"
    if format == "alpaca":
        return "output"
    if format != "chat":
        return None
    messages = row.get("messages") or []
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    return f"messages[{answers[-1]}].content" if answers else None


def _field_value(row: dict[str, Any], name: str | None) -> Any:
    if name is None:
        return ""
    if name.startswith("messages["):
        return row["messages"][int(name[9 : name.index("]")])]["content"]
    return row[name]


def _flag_long(part: Part, lengths: list[int], limit: int) -> None:
    for index, length in zip(part.keep, lengths, strict=True):
        if length > limit:
            record = part.loaded.records[index]
            part.loaded.issues.append(
                DataIssue(
                    part.loaded.path,
                    record.line,
                    "too_long",
                    f"{length} tokens > sequence_len {limit}; kept, not truncated",
                    severity="warning",
                )
            )
    part.loaded.issues.sort(key=lambda issue: issue.line)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``data_report.json`` and ``data_report.md`` in ``out_dir``, written atomically."""
    writable_folder(out_dir)
    json_path, md_path = out_dir / "data_report.json", out_dir / "data_report.md"
    write_text_atomic(json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(md_path, to_markdown(report))
    return json_path, md_path


# --------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class Prepared:
    folder: Path
    train_path: Path
    eval_path: Path
    lock: locking.EvalLock
    notes: list[str]


def prepare_data(
    result: CheckResult, data: DataConfig, out_dir: Path, strict: bool = False
) -> Prepared:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``eval.lock`` from a checked dataset.

    Refuses (raises) with a contaminated eval set unless ``allow_contaminated`` or
    ``decontaminate`` is set; the choice is recorded in the lock.
    """
    if strict and result.has_issues:
        raise DataError(
            "--strict: the data has issues (see data_report.md, written so you can read them); "
            "the prepared data and the eval lock were not written"
        )
    train, eval_part = result.train, result.eval
    notes: list[str] = []
    if eval_part is None:
        train_rows, eval_rows, split, notes = _split(train, data)
        contamination = locking.Contamination()
        source: Literal["split", "given"] = "split"
    else:
        train_rows, contamination = _resolve_contamination(result, data)
        eval_rows, source = eval_part.kept_rows(), "given"
        split = {
            "eval_file": eval_part.loaded.path,
            "eval_file_sha256": result.report["sources"]["eval"]["sha256"],
        }
    split["train_file"] = train.loaded.path
    split["train_file_sha256"] = result.report["sources"]["train"]["sha256"]
    train_path = _write_jsonl(out_dir / locking.TRAIN_NAME, train_rows)
    eval_path = _write_jsonl(out_dir / locking.EVAL_NAME, eval_rows)
    label_field = train.loaded.label_field
    labels = _label_names(label_set(r[label_field]) for r in train_rows) if label_field else None
    lock = locking.EvalLock(
        eval_sha256=locking.sha256_file(eval_path),
        size=len(eval_rows),
        format=train.loaded.format,
        source=source,
        split=split,
        labels=labels,
        contamination=contamination,
        text_field=train.loaded.text_field,
        label_field=train.loaded.label_field,
        multi_label=train.loaded.multi_label,
        documents=None if result.collection is None else result.collection.lock_entry(),
    )
    if result.collection is not None:
        write_collection(out_dir, result.collection)
    locking.write_lock(out_dir, lock)
    return Prepared(out_dir, train_path, eval_path, lock, notes)


def _split(
    train: Part, data: DataConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], list[str]]:
    rows, labels = train.kept_rows(), train.kept_labels()
    multi_label = train.loaded.multi_label
    train_idx, eval_idx, notes = locking.split_indices(
        labels, len(rows), data.val_set_size, data.seed, data.stratify, multi_label
    )
    # Near-duplicates were collapsed before splitting, but check the halves anyway: the
    # guarantee "no eval item occurs in train" should not rest on one mechanism alone.
    layout = train.loaded
    inputs = [record_input(layout, r) for r in rows]
    overlaps = find_contamination(
        [inputs[i] for i in train_idx],
        [inputs[i] for i in eval_idx],
        near_threshold=data.near_dup_threshold,
    )
    drop = {train_idx[t] for o in overlaps for t in o.train_indices}
    if drop:
        notes.append(f"{len(drop)} training records near-identical to eval records were dropped")
    if multi_label:
        notes += _eval_only_labels(train, train_idx, eval_idx, drop)
    split = {
        "val_set_size": data.val_set_size,
        "seed": data.seed,
        "stratify": data.stratify and labels is not None,
        "train_size": len(train_idx) - len(drop),
    }
    return (
        [rows[i] for i in train_idx if i not in drop],
        [rows[i] for i in eval_idx],
        split,
        notes,
    )


def _eval_only_labels(
    train: Part, train_idx: list[int], eval_idx: list[int], drop: set[int]
) -> list[str]:
    """A note naming the labels an unstratified split left in eval only: no model sees them
    in training, so their recall is zero whatever the strategy."""
    sets = train.kept_label_sets() or []
    trained = set(_label_names(sets[i] for i in train_idx if i not in drop))
    only = [name for name in _label_names(sets[i] for i in eval_idx) if name not in trained]
    if not only:
        return []
    return [
        f"{len(only)} labels occur only in the eval part of the split (never trained on): "
        f"{quoted_names(only)}"
    ]


def _resolve_contamination(
    result: CheckResult, data: DataConfig
) -> tuple[list[dict[str, Any]], locking.Contamination]:
    train, eval_part, overlaps = result.train, result.eval, result.overlaps
    assert eval_part is not None
    exact = sum(1 for o in overlaps if o.kind == "exact")
    rows = train.kept_rows()
    if not overlaps:
        return rows, locking.Contamination()
    if data.decontaminate:
        position = {index: pos for pos, index in enumerate(train.keep)}
        as_kept = [
            replace(o, train_indices=tuple(position[i] for i in o.train_indices)) for o in overlaps
        ]
        keep = decontaminate_train(len(rows), as_kept)
        dropped = len(rows) - len(keep)
        return [rows[i] for i in keep], locking.Contamination(
            len(overlaps), exact, len(overlaps) - exact, "decontaminate", dropped
        )
    require_clean(
        overlaps,
        allow_contaminated=data.allow_contaminated,
        source=eval_part.loaded.path,
        line_of=lambda i: eval_part.loaded.records[i].line,
    )
    return rows, locking.Contamination(
        len(overlaps), exact, len(overlaps) - exact, "allow_contaminated"
    )


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@dataclass(frozen=True)
class PreparedData:
    """A prepared folder opened for training: the verified lock and both sides, validated."""

    folder: Path
    lock: locking.EvalLock
    train: LoadedData
    eval: LoadedData
    overlaps: list[Overlap]
    allow_contaminated: bool
    collection: PreparedCollection | None = None


def open_prepared(
    folder: Path, *, allow_contaminated: bool = False, near_threshold: float = 0.85
) -> PreparedData:
    """What every training entry point calls before it trains on a prepared folder.

    Verifies the eval lock (the eval file is unchanged) and checks train against eval again, so
    a train file edited after ``data prepare`` cannot smuggle eval items in. A contaminated
    pair is refused unless the lock records an override or the caller passes one (which the
    caller must record in its run manifest).
    """
    lock = locking.verify_lock(folder)
    layout = Layout(lock.format, lock.text_field, lock.label_field, lock.multi_label)
    train = load(folder / locking.TRAIN_NAME, layout=layout)
    evaluation = load(folder / locking.EVAL_NAME, layout=layout)
    overlaps = find_contamination(
        [record_input(layout, r.data) for r in train.records],
        [record_input(layout, r.data) for r in evaluation.records],
        near_threshold=near_threshold,
    )
    allowed = allow_contaminated or lock.contamination.override == "allow_contaminated"
    require_clean(
        overlaps,
        allow_contaminated=allowed,
        source=str(folder / locking.EVAL_NAME),
        line_of=lambda i: evaluation.records[i].line,
    )
    collection = (
        None
        if lock.documents is None
        else read_collection(folder, expected_sha256=str(lock.documents["sha256"]))
    )
    return PreparedData(folder, lock, train, evaluation, overlaps, allowed, collection)


__all__ = [
    "CheckResult",
    "ContaminationError",
    "Prepared",
    "PreparedData",
    "check_data",
    "open_prepared",
    "prepare_data",
    "write_report",
]
