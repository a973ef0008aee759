"""The validate stage's logic: raw files -> normalized records with doc ids, plus rejects.

Every raw record ends in exactly one of the two outputs, and the metrics prove it:
raw == kept + rejected, per file and in total.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from koraft.neardup import group_documents
from koraft.readers import InputSpec, read_records
from koraft.schema import TEXT_FIELDS, Record, Reject, check_record


@dataclass
class ValidationResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def content_key(record: Record) -> str:
    """Exact-duplicate key: the cleaned question, context and answer (the chain of thought is extra)."""
    joined = "\x1f".join((record.question, record.context, record.answer))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def validate_inputs(specs: list[InputSpec], lengths: dict[str, list[int]], near: dict[str, Any]) -> ValidationResult:
    result = ValidationResult()
    kept: list[Record] = []
    first_source_by_key: dict[str, str] = {}
    first_source_by_id: dict[str, str] = {}
    per_file: dict[str, Counter] = {}
    reasons: Counter = Counter()
    changed_by_cleanup = 0

    for spec in specs:
        counts = per_file.setdefault(spec.path, Counter())
        for raw in read_records(spec):
            counts["raw"] += 1
            outcome = check_record(raw, lengths, spec.id_prefix)
            if isinstance(outcome, Record):
                outcome = _deduplicate(outcome, raw.fields, first_source_by_key, first_source_by_id)
            if isinstance(outcome, Reject):
                counts["rejected"] += 1
                reasons[outcome.reason] += 1
                result.rejects.append(outcome.to_json())
                continue
            counts["kept"] += 1
            kept.append(outcome)
            changed_by_cleanup += any(
                raw.fields.get(name) not in (None, getattr(outcome, name)) for name in TEXT_FIELDS
            )

    doc_ids = group_documents(
        (record.context for record in kept),
        threshold=near["threshold"],
        shingle_size=near["shingle_size"],
        num_perm=near["num_perm"],
        bands=near["bands"],
    )
    for record in kept:
        result.records.append({
            "id": record.id,
            "question": record.question,
            "context": record.context,
            "doc_id": doc_ids[record.context],
            "answer": record.answer,
            "cot": record.cot,
            "source": record.source,
        })

    raw_total = sum(c["raw"] for c in per_file.values())
    if raw_total != len(result.records) + len(result.rejects):
        raise AssertionError("validate lost records: raw count != kept + rejected")  # a bug, never input
    distinct_texts = len(doc_ids)
    groups = len(set(doc_ids.values()))
    result.metrics = {
        "raw": raw_total,
        "kept": len(result.records),
        "rejected": len(result.rejects),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "files": {path: {k: c[k] for k in ("raw", "kept", "rejected")} for path, c in per_file.items()},
        "changed_by_cleanup": changed_by_cleanup,
        "with_cot": sum(record.cot is not None for record in kept),
        "documents": groups,
        "near_duplicate_texts_merged": distinct_texts - groups,
    }
    return result


def _deduplicate(
    record: Record, raw_fields: dict[str, Any], by_key: dict[str, str], by_id: dict[str, str]
) -> Record | Reject:
    key = content_key(record)
    if key in by_key:
        detail = f"same question, context and answer as {by_key[key]}"
        return Reject(record.source, "duplicate", None, detail, raw_fields)
    record_id = record.id or f"q-{key[:16]}"
    if record_id in by_id:
        detail = f"id {record_id!r} already used by {by_id[record_id]} (set id_prefix for this input)"
        return Reject(record.source, "duplicate_id", "id", detail, raw_fields)
    by_key[key] = by_id[record_id] = record.source
    return Record(record_id, record.question, record.context, record.answer, record.cot, record.source)
