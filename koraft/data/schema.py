"""Schema checks and cleanup for one raw record: it becomes a Record or a Reject with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koraft.data.normalize import clean_text, has_invalid_utf8
from koraft.data.quotes import check_quotes
from koraft.data.readers import RawRecord

REQUIRED = ("question", "context", "answer")
TEXT_FIELDS = ("question", "context", "answer", "cot")
# How much of each raw field a rejects line keeps: enough to find the record, not a copy of a huge field.
_REJECT_PREVIEW_CHARS = 200


@dataclass(frozen=True)
class Record:
    """A validated, normalized record; `doc_id` is filled in after near-duplicate grouping."""

    id: str
    question: str
    context: str
    answer: str
    cot: str | None
    source: str
    quotes: str | None = None  # the chain of thought's quotes: verbatim | folded | unverified | stripped


@dataclass(frozen=True)
class Reject:
    source: str
    reason: str
    field: str | None
    detail: str
    raw: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "field": self.field,
                "detail": self.detail, "raw": _preview(self.raw)}


def check_record(raw: RawRecord, lengths: dict[str, list[int]], id_prefix: str = "",
                 unverified_quotes: str = "reject") -> Record | Reject:
    """Validate and clean one raw record; `lengths` maps a field to [min, max] characters.

    A chain of thought whose quotes are not in the context, even after folding quotation marks,
    whitespace and Unicode forms (koraft.data.quotes), is rejected, kept, or dropped from the record
    (`unverified_quotes`: reject | keep | strip).
    """

    def reject(reason: str, field: str | None, detail: str) -> Reject:
        return Reject(raw.source, reason, field, detail, raw.fields)

    if raw.problem:
        return reject(raw.problem[0], None, raw.problem[1])
    values = raw.fields
    for name in REQUIRED:
        if values.get(name) is None:
            return reject("missing_field", name, f"'{name}' is {'null' if name in values else 'missing'}")
    for name in TEXT_FIELDS:
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            return reject("wrong_type", name, f"'{name}' must be a string, got {type(value).__name__}")
        if value is not None and has_invalid_utf8(value):
            return reject("invalid_utf8", name, f"'{name}' contains bytes that are not valid UTF-8")
    raw_id = values.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        return reject("wrong_type", "id", f"'id' must be a string or integer, got {type(raw_id).__name__}")
    if isinstance(raw_id, str) and has_invalid_utf8(raw_id):
        return reject("invalid_utf8", "id", "'id' contains bytes that are not valid UTF-8")

    cleaned = {name: clean_text(values[name]) for name in TEXT_FIELDS if values.get(name) is not None}
    if "cot" in cleaned and not cleaned["cot"]:
        del cleaned["cot"]  # an empty optional chain of thought is simply absent
    for name, text in cleaned.items():
        if not text:
            return reject("empty_field", name, f"'{name}' is empty or whitespace-only")
        low, high = lengths[name]
        if len(text) < low:
            return reject("too_short", name, f"'{name}' has {len(text)} characters, minimum is {low}")
        if len(text) > high:
            return reject("too_long", name, f"'{name}' has {len(text)} characters, maximum is {high}")

    cot, quote_outcome = cleaned.get("cot"), None
    if cot is not None:
        found = check_quotes(cot, cleaned["context"])
        cot, quote_outcome = found.cot, found.outcome
        if found.outcome == "unverified" and unverified_quotes == "reject":
            return reject("cot_quote_not_in_context", "cot",
                          f"quote not in context, even with quotation marks and spaces folded: {found.missing!r}")
        if found.outcome == "unverified" and unverified_quotes == "strip":
            cot, quote_outcome = None, "stripped"
    record_id = clean_text(str(raw_id)) if raw_id is not None else ""
    if raw_id is not None and not record_id:
        return reject("empty_field", "id", "'id' is empty or whitespace-only")
    return Record(
        id=f"{id_prefix}{record_id}" if record_id else "",  # content-hash ids are assigned later
        question=cleaned["question"],
        context=cleaned["context"],
        answer=cleaned["answer"],
        cot=cot,
        source=raw.source,
        quotes=quote_outcome,
    )


def _preview(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: _printable(value) for name, value in fields.items()}


def _printable(value: Any) -> Any:
    """A raw value as the rejects file can hold it: invalid UTF-8 as \\xNN escapes, at any depth of a list or
    mapping (a surrogate cannot be written as UTF-8), long strings shortened."""
    if isinstance(value, str):
        try:  # the bytes that were not UTF-8 (read with surrogateescape) as \xNN
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape ("\\ud800") as \udNNN
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value if len(value) <= _REJECT_PREVIEW_CHARS else (
            value[:_REJECT_PREVIEW_CHARS] + f"... ({len(value)} characters)")
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(str(key)): _printable(item) for key, item in value.items()}
    return value
