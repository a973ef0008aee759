"""The validate stage's logic: raw files -> normalized records with doc ids, plus rejects.

Every raw record ends in exactly one of the two outputs, and the metrics prove it:
raw == kept + rejected, per file and in total. Records stream from the inputs to the outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.jsonl import jsonl_line
from koraft.data.neardup import DocumentGrouper, text_hash
from koraft.data.outputs import written_whole
from koraft.data.quotes import locate
from koraft.data.readers import InputSpec, read_records
from koraft.data.schema import TEXT_FIELDS, Record, Reject, check_record


def content_key(record: Record) -> bytes:
    """Exact-duplicate key: the cleaned question, context and answer (the chain of thought is extra)."""
    joined = "\x1f".join((record.question, record.context, record.answer))
    return hashlib.sha1(joined.encode("utf-8")).digest()


QUOTE_OUTCOMES = ("verbatim", "folded", "unverified_kept", "stripped", "rejected")


def validate_to_files(specs: list[InputSpec], lengths: dict[str, list[int]], near: dict[str, Any],
                      records_path: str | Path, rejects_path: str | Path,
                      unverified_quotes: str = "reject", refuse_empty: bool = False) -> dict[str, Any]:
    """Stream every raw record to the records or the rejects file; returns the metrics.

    Pass 1 reads the inputs once, writes rejects as they come and kept records (still without
    doc ids) to a scratch file, and keeps only what deduplication and grouping need: a digest and
    source per kept record, a MinHash signature per distinct document. Pass 2 copies the scratch
    file to records_path with each record's doc id. Memory does not hold the texts. Both files
    appear only when every input has been read: a failure leaves neither. With `refuse_empty`, keeping no
    record is such a failure (KoraftError, with the first reject's reason), and the previous outputs stay.
    """
    with written_whole(records_path, rejects_path) as (records_partial, rejects_partial):
        metrics = _validate(specs, lengths, near, records_partial, rejects_partial, unverified_quotes)
        if refuse_empty and not metrics["kept"]:
            with open(rejects_partial, encoding="utf-8") as rejects:
                first = json.loads(rejects.readline() or "null")
            example = f", e.g. {first['source']}: {first['detail']}" if first else ""
            raise KoraftError(f"validate kept 0 of {metrics['raw']} raw records {metrics['rejected_by_reason']}"
                              f"{example}; the previous outputs are left as they were")
    return metrics


def _validate(specs: list[InputSpec], lengths: dict[str, list[int]], near: dict[str, Any],
              records_path: Path, rejects_path: Path, unverified_quotes: str) -> dict[str, Any]:
    scratch = records_path.with_name(records_path.name + ".pending")
    grouper = DocumentGrouper(near["threshold"], near["shingle_size"], near["num_perm"], near["bands"])
    first_by_key: dict[bytes, int] = {}  # content digest -> position of the first such record in the scratch file
    first_by_id: dict[str, int] = {}
    per_file: dict[str, Counter] = {}
    reasons: Counter = Counter()
    quote_outcomes: Counter = Counter()
    changed_by_cleanup = with_cot = kept = 0

    try:
        with open(rejects_path, "w", encoding="utf-8", newline="\n") as rejects, \
                open(scratch, "w", encoding="utf-8", newline="\n") as pending:
            sources = _KeptSources(pending)
            for spec in specs:
                counts = per_file.setdefault(spec.path, Counter())
                for raw in read_records(spec):
                    counts["raw"] += 1
                    outcome = check_record(raw, lengths, spec.id_prefix, unverified_quotes)
                    if isinstance(outcome, Record):
                        outcome = _deduplicate(outcome, raw.fields, first_by_key, first_by_id, sources)
                    if isinstance(outcome, Reject):
                        counts["rejected"] += 1
                        reasons[outcome.reason] += 1
                        quote_outcomes["rejected"] += outcome.reason == "cot_quote_not_in_context"
                        rejects.write(jsonl_line(outcome.to_json()))
                        continue
                    counts["kept"] += 1
                    kept += 1
                    with_cot += outcome.cot is not None
                    if outcome.quotes:
                        quote_outcomes["unverified_kept" if outcome.quotes == "unverified" else outcome.quotes] += 1
                    # Kept, since a paraphrased answer can be right, but counted: a span-QA file should have none.
                    counts["answer_not_in_context"] += locate(outcome.answer, outcome.context) is None
                    changed_by_cleanup += any(
                        raw.fields.get(name) not in (None, getattr(outcome, name)) for name in TEXT_FIELDS
                    )
                    grouper.add(outcome.context)
                    pending.write(jsonl_line(_scratch_row(outcome)))

        doc_ids = grouper.group_ids()
        with open(scratch, encoding="utf-8") as pending, \
                open(records_path, "w", encoding="utf-8", newline="\n") as records:
            for line in pending:
                record_id, question, context, answer, cot, source = json.loads(line)
                records.write(jsonl_line({"id": record_id, "question": question, "context": context,
                                          "doc_id": doc_ids[text_hash(context)], "answer": answer, "cot": cot,
                                          "source": source}))
    finally:
        scratch.unlink(missing_ok=True)

    raw_total = sum(c["raw"] for c in per_file.values())
    rejected = sum(reasons.values())
    if raw_total != kept + rejected:
        raise AssertionError("validate lost records: raw count != kept + rejected")  # a bug, never input
    groups = len(set(doc_ids.values()))
    return {
        "raw": raw_total,
        "kept": kept,
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "files": {path: {k: c[k] for k in ("raw", "kept", "rejected", "answer_not_in_context")}
                  for path, c in per_file.items()},
        "changed_by_cleanup": changed_by_cleanup,
        "with_cot": with_cot,
        "quotes": {"unverified_policy": unverified_quotes, **{k: quote_outcomes[k] for k in QUOTE_OUTCOMES}},
        "documents": groups,
        "near_duplicate_texts_merged": len(doc_ids) - groups,
    }


def _scratch_row(record: Record) -> tuple:
    """A kept record in the scratch file: its source last, where _KeptSources reads it."""
    return record.id, record.question, record.context, record.answer, record.cot, record.source


class _KeptSources:
    """The source of each kept record, found by its position in the scratch file rather than held in memory:
    duplicates are rare, so their detail can afford a read."""

    def __init__(self, pending) -> None:
        self.pending = pending

    def position(self) -> int:
        return self.pending.tell()

    def __getitem__(self, position: int) -> str:
        self.pending.flush()
        with open(self.pending.name, "rb") as handle:
            handle.seek(position)
            return json.loads(handle.readline())[-1]


def _deduplicate(record: Record, raw_fields: dict[str, Any], by_key: dict[bytes, int], by_id: dict[str, int],
                 sources: _KeptSources) -> Record | Reject:
    key = content_key(record)
    if key in by_key:
        detail = f"same question, context and answer as {sources[by_key[key]]}"
        return Reject(record.source, "duplicate", None, detail, raw_fields)
    record_id = record.id or f"q-{key.hex()[:16]}"
    if record_id in by_id:
        detail = f"id {record_id!r} already used by {sources[by_id[record_id]]} (set id_prefix for this input)"
        return Reject(record.source, "duplicate_id", "id", detail, raw_fields)
    by_key[key] = by_id[record_id] = sources.position()  # the caller writes the record there next
    return dataclasses.replace(record, id=record_id)
