"""Readers for every raw input format; each yields one RawRecord per raw record.

A record that cannot be parsed becomes a RawRecord with a `problem` (it is rejected, not
dropped); a file that cannot be parsed at all raises InputError naming the file and line.
Bytes are decoded with `surrogateescape` so that invalid UTF-8 surfaces as a per-record,
per-field rejection instead of failing the whole file.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.errors import InputError
from koraft.core.formats import ANSWER_MARKER

FIELDS = ("id", "question", "context", "answer", "cot")
FORMATS = ("jsonl", "json", "csv", "tsv", "squad", "gorilla")
_EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
_DEFAULT_COLUMNS = {"gorilla": {"context": "oracle_context", "cot": "cot_answer"}}


@dataclass(frozen=True)
class InputSpec:
    """One entry of `validate.inputs` in params.yaml."""

    path: str
    format: str
    columns: dict[str, str] = field(default_factory=dict)  # our field -> the file's key/column
    id_prefix: str = ""

    def column(self, name: str) -> str:
        return self.columns.get(name, _DEFAULT_COLUMNS.get(self.format, {}).get(name, name))


@dataclass
class RawRecord:
    source: str  # "path:line"; "path:line [index]" in a JSON array; "path:data[i].paragraphs[j].qas[k]" in SQuAD
    fields: dict[str, Any]  # our field names -> values as found (absent keys are absent)
    problem: tuple[str, str] | None = None  # (reason, detail) when it could not be parsed


def infer_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSION_FORMATS:
        raise InputError(
            path, f"unknown extension '{suffix}'; set 'format' to one of {', '.join(FORMATS)}"
        )
    return _EXTENSION_FORMATS[suffix]


def read_records(spec: InputSpec) -> Iterator[RawRecord]:
    """Yield every raw record of one input file, in file order.

    JSONL, CSV and TSV stream line by line, in memory bounded by the longest record. A JSON array
    or a SQuAD file is one JSON document, so it is read whole: convert large corpora to JSONL.
    """
    if spec.format == "jsonl":
        yield from _map_objects(spec, _jsonl_objects(spec.path))
    elif spec.format == "json":
        yield from _map_objects(spec, _json_array_objects(spec.path, _read_text(spec.path)))
    elif spec.format in ("csv", "tsv"):
        yield from _delimited(spec)
    elif spec.format == "squad":
        yield from _squad(spec.path, _read_text(spec.path))
    elif spec.format == "gorilla":
        if spec.path.endswith(".jsonl"):
            yield from _gorilla(spec, _jsonl_objects(spec.path))
        else:
            yield from _gorilla(spec, _json_array_objects(spec.path, _read_text(spec.path)))
    else:
        raise InputError(spec.path, f"unknown format '{spec.format}'; use one of {', '.join(FORMATS)}")


def _open(path: str, **text_mode):
    """The file, binary or (with keyword arguments) text; a missing or unreadable file is an InputError."""
    try:
        return open(path, "r" if text_mode else "rb", **text_mode)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None


def _read_text(path: str) -> str:
    with _open(path) as handle:
        data = handle.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) one at a time; a UTF-8 BOM on the first line is dropped."""
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, raw.decode("utf-8", errors="surrogateescape").rstrip("\n").rstrip("\r")


def _jsonl_objects(path: str) -> Iterator[tuple[str, Any, tuple[str, str] | None]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        try:
            yield source, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield source, None, ("invalid_json", f"column {exc.colno}: {exc.msg}")


def _json_array_objects(path: str, text: str) -> Iterator[tuple[str, Any, None]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position == len(text):
        raise InputError(path, "empty file, expected a JSON array", line=1)
    if text[position] != "[":
        hint = " (for SQuAD/KorQuAD files set format: squad)" if text[position] == "{" else ""
        raise InputError(path, f"expected a JSON array{hint}", line=_line_of(text, position))
    position = _skip_space(text, position + 1)
    if text.startswith("]", position):
        return
    for index in itertools.count():
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        # The index disambiguates arrays written on one line.
        yield f"{path}:{_line_of(text, position)} [{index}]", value, None
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif text.startswith("]", position):
            break
        else:
            where = _line_of(text, min(position, len(text) - 1))
            raise InputError(path, "invalid JSON: expected ',' or ']' (truncated file?)", line=where)
    if _skip_space(text, position + 1) != len(text):
        raise InputError(path, "invalid JSON: extra data after the array", line=_line_of(text, position))


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _map_objects(spec: InputSpec, objects: Iterator) -> Iterator[RawRecord]:
    for source, value, problem in objects:
        if problem is None and not isinstance(value, dict):
            problem = ("not_an_object", f"expected a JSON object, got {type(value).__name__}")
        if problem:
            yield RawRecord(source, {}, problem)
            continue
        fields = {name: value[spec.column(name)] for name in FIELDS if spec.column(name) in value}
        yield RawRecord(source, fields)


def _delimited(spec: InputSpec) -> Iterator[RawRecord]:
    with _open(spec.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        yield from _delimited_rows(spec, handle)


def _delimited_rows(spec: InputSpec, handle) -> Iterator[RawRecord]:
    csv.field_size_limit(sys.maxsize)  # length bounds are ours to enforce, with a clear reason
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if spec.format == "tsv" else {}
    reader = csv.reader(handle, **options)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(spec.path, f"invalid {spec.format.upper()} header: {exc}", line=1) from None
    if header is None:
        raise InputError(spec.path, "empty file, expected a header row", line=1)
    header = [name.strip() for name in header]
    for name in ("question", "context", "answer"):
        if spec.column(name) not in header:
            raise InputError(
                spec.path, f"column '{spec.column(name)}' not in header {header}", line=1, field=name
            )
    wanted = {name: header.index(spec.column(name)) for name in FIELDS if spec.column(name) in header}
    previous_line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(spec.path, f"invalid {spec.format.upper()}: {exc}", line=reader.line_num) from None
        source, previous_line = f"{spec.path}:{previous_line + 1}", reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problem = ("wrong_column_count", f"row has {len(row)} cells, header has {len(header)}")
            yield RawRecord(source, {}, problem)
            continue
        yield RawRecord(source, {name: row[index] for name, index in wanted.items()})


def _squad(path: str, text: str) -> Iterator[RawRecord]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise InputError(path, "not SQuAD/KorQuAD: expected an object with a 'data' list", field="data")
    for i, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise InputError(path, f"data[{i}].paragraphs is not a list", field="paragraphs")
        for j, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise InputError(path, f"data[{i}].paragraphs[{j}].qas is not a list", field="qas")
            for k, qa in enumerate(qas):
                source = f"{path}:data[{i}].paragraphs[{j}].qas[{k}]"
                yield _squad_record(source, paragraph.get("context"), qa)


def _squad_record(source: str, context: Any, qa: Any) -> RawRecord:
    if not isinstance(qa, dict):
        return RawRecord(source, {}, ("not_an_object", f"expected an object, got {type(qa).__name__}"))
    fields = {"context": context, **{k: qa[k] for k in ("id", "question") if k in qa}}
    answers = qa.get("answers")
    if qa.get("is_impossible") or not answers:
        return RawRecord(source, fields, ("no_answer", "question has no answer (is_impossible or empty answers)"))
    first = answers[0] if isinstance(answers, list) else None
    if not isinstance(first, dict) or not isinstance(first.get("text"), str):
        return RawRecord(source, fields, ("wrong_type", "answers[0] must be an object with a 'text' string"))
    fields["answer"] = first["text"]
    start = first.get("answer_start")
    if isinstance(context, str) and start is not None:
        if not isinstance(start, int) or isinstance(start, bool):
            return RawRecord(source, fields, ("wrong_type", f"answer_start must be an integer, got {start!r}"))
        found = context[start : start + len(first["text"])]
        if found != first["text"]:
            detail = f"answer_start {start} points to {found!r}, answer is {first['text']!r}"
            return RawRecord(source, fields, ("answer_start_mismatch", detail))
    return RawRecord(source, fields)


def _gorilla(spec: InputSpec, objects: Iterator) -> Iterator[RawRecord]:
    """Gorilla RAFT output: golden document in `oracle_context`, `cot_answer` ends in <ANSWER>: ...

    Its distractors (`context.sentences`) are not reused: the raft stage draws new ones from
    the record's own split, so no test document can leak into training as a distractor.
    """
    for record in _map_objects(spec, objects):
        if record.problem is None:
            record.problem = _split_cot_answer(record.fields, spec.column("cot"))
        yield record


def _split_cot_answer(fields: dict[str, Any], key: str) -> tuple[str, str] | None:
    cot_answer = fields.pop("cot", None)
    if cot_answer is None:
        return ("missing_field", f"'{key}' is missing or null")
    if not isinstance(cot_answer, str):
        return ("wrong_type", f"'{key}' must be a string, got {type(cot_answer).__name__}")
    reasoning, marker, answer = cot_answer.rpartition(ANSWER_MARKER)
    if not marker:
        return ("missing_answer_marker", f"'{key}' has no {ANSWER_MARKER}")
    fields["answer"] = answer
    if reasoning.strip():
        fields["cot"] = reasoning
    return None
