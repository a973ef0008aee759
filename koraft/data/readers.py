"""Readers for every raw input format; each yields one RawRecord per raw record.

A record that cannot be parsed becomes a RawRecord with a `problem` (it is rejected, not
dropped); a file that cannot be parsed at all raises InputError naming the file and line.
Bytes are decoded with `surrogateescape` so that invalid UTF-8 surfaces as a per-record,
per-field rejection instead of failing the whole file.

Tables stream in batches, so memory stays bounded however many rows a file holds: an Excel sheet
row by row through openpyxl's read-only mode (pandas.read_excel would build the whole sheet in
memory first), Parquet in record batches through pyarrow, and a Hugging Face dataset through
`datasets`, memory-mapped from a `save_to_disk` folder or streamed from the hub.
"""

from __future__ import annotations

import collections
import csv
import datetime
import itertools
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.errors import InputError
from koraft.core.formats import ANSWER_MARKER

FIELDS = ("id", "question", "context", "answer", "cot")
FORMATS = ("jsonl", "json", "csv", "tsv", "squad", "gorilla", "xlsx", "parquet", "hf")
_EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".xlsx": "xlsx",
                      ".parquet": "parquet"}
_DEFAULT_COLUMNS = {"gorilla": {"context": "oracle_context", "cot": "cot_answer"}}
HUB_PREFIX = "hf://"  # a Hugging Face hub dataset id instead of a local path
_TABLE_BATCH = 4096  # rows per Parquet or datasets batch


@dataclass(frozen=True)
class InputSpec:
    """One entry of `validate.inputs` in params.yaml."""

    path: str
    format: str
    columns: dict[str, str] = field(default_factory=dict)  # our field -> the file's key/column
    id_prefix: str = ""
    sheet: str | int = 0  # xlsx: a sheet name, or its 0-based position
    header_row: int = 1  # xlsx: the 1-based row holding the column names
    split: str | None = None  # hf: which split of a DatasetDict folder or hub dataset
    revision: str | None = None  # hf:// only: the hub commit to read

    def column(self, name: str) -> str:
        return self.columns.get(name, _DEFAULT_COLUMNS.get(self.format, {}).get(name, name))


@dataclass
class RawRecord:
    source: str  # "path:line"; "path:line [index]" in a JSON array; "path:data[i].paragraphs[j].qas[k]" in SQuAD
    fields: dict[str, Any]  # our field names -> values as found (absent keys are absent)
    problem: tuple[str, str] | None = None  # (reason, detail) when it could not be parsed


def infer_format(path: str) -> str:
    if path.startswith(HUB_PREFIX) or Path(path).is_dir():
        return "hf"
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
    elif spec.format == "xlsx":
        yield from _xlsx(spec)
    elif spec.format == "parquet":
        yield from _parquet(spec)
    elif spec.format == "hf":
        yield from _hf(spec)
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


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}  # UTF-32 first: its little-endian mark starts like UTF-16's


def _refuse_wide_encoding(path: str) -> None:
    """A text input in UTF-16 or UTF-32 (Excel's and Notepad's "Unicode" saves) is refused by name: read as
    UTF-8, each of its lines would be an invalid_json or bad-column reject with no word of the encoding."""
    with _open(path) as handle:
        head = handle.read(4)
    for bom, encoding in _WIDE_BOMS.items():
        if head.startswith(bom):
            raise InputError(path, f"is {encoding} text (its byte order mark says so): save it as UTF-8", line=1)


def _read_text(path: str) -> str:
    _refuse_wide_encoding(path)
    with _open(path) as handle:
        data = handle.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) one at a time; a UTF-8 BOM on the first line is dropped."""
    _refuse_wide_encoding(path)
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, raw.decode("utf-8", errors="surrogateescape").rstrip("\n").rstrip("\r")


def _jsonl_objects(path: str) -> Iterator[tuple[str, Any, tuple[str, str] | None]]:
    blank = True
    for number, line in _lines(path):
        if not line.strip():
            continue
        blank = False
        source = f"{path}:{number}"
        try:
            yield source, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield source, None, ("invalid_json", f"column {exc.colno}: {exc.msg}")
    if blank:  # as the other formats' empty files: a wrong path or an export that wrote nothing
        raise InputError(path, "empty file, expected one JSON object per line", line=1)


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
    _refuse_wide_encoding(spec.path)
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
    wanted = _column_positions(spec, header, line=1)
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


def _column_positions(spec: InputSpec, header: list[str], line: int | None = None) -> dict[str, int]:
    """Our field -> the position of its column; a required column that is missing is a file error."""
    for name in ("question", "context", "answer"):
        if spec.column(name) not in header:
            what = "header" if line is not None else "columns"
            raise InputError(spec.path, f"column '{spec.column(name)}' not in {what} {header}", line=line, field=name)
    return {name: header.index(spec.column(name)) for name in FIELDS if spec.column(name) in header}


def _xlsx(spec: InputSpec) -> Iterator[RawRecord]:
    """One record per non-empty row below the header row; the source is `path:sheet!row`, as Excel counts rows."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    with _open(spec.path) as handle:
        try:
            workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
            raise InputError(spec.path, f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
        try:
            yield from _sheet_records(spec, workbook)
        finally:
            workbook.close()


def _sheet_records(spec: InputSpec, workbook) -> Iterator[RawRecord]:
    names = workbook.sheetnames
    if isinstance(spec.sheet, int) and not 0 <= spec.sheet < len(names):
        raise InputError(spec.path, f"has {len(names)} sheets {names}, no sheet {spec.sheet}", field="sheet")
    if isinstance(spec.sheet, str) and spec.sheet not in names:
        raise InputError(spec.path, f"no sheet named {spec.sheet!r}; its sheets are {names}", field="sheet")
    sheet = workbook[names[spec.sheet] if isinstance(spec.sheet, int) else spec.sheet]
    rows = sheet.iter_rows(min_row=spec.header_row, values_only=True)
    header_cells = next(rows, None)
    if header_cells is None:
        raise InputError(spec.path, f"sheet {sheet.title!r} has no header row {spec.header_row}", line=spec.header_row)
    header = [_cell_text(cell).strip() for cell in header_cells]
    wanted = _column_positions(spec, header, line=spec.header_row)
    merged, uncomputed = _sheet_layout(sheet)
    starting = collections.deque(sorted(merged))  # by first row: each joins `active` when the rows reach it
    active: list[tuple[tuple[int, int, int, int], str]] = []  # (range, the text of its first cell)
    for number, cells in enumerate(rows, start=spec.header_row + 1):
        texts = [_cell_text(cell) for cell in cells]
        texts += [""] * (len(header) - len(texts))  # trailing empty cells may be left out of a row
        while starting and starting[0][0] <= number:
            span = starting.popleft()
            if span[0] == number:  # ranges that start above the data rows (a merged header) are left alone
                active.append((span, texts[span[1] - 1] if span[1] <= len(texts) else ""))
        active = [(span, text) for span, text in active if span[2] >= number]
        for (_, first_column, _, last_column), text in active:  # the text a user sees in every merged cell
            for column in range(first_column, min(last_column, len(texts)) + 1):
                texts[column - 1] = text
        if not any(text.strip() for text in texts):
            continue
        source = f"{spec.path}:{sheet.title}!{number}"
        fields = {name: texts[i] for name, i in wanted.items()}
        formulas = [(name, uncomputed[number, i + 1]) for name, i in wanted.items()
                    if not texts[i] and (number, i + 1) in uncomputed]
        if formulas:
            name, formula = formulas[0]
            yield RawRecord(source, fields, ("formula_not_computed", f"'{name}' is the formula ={formula} with no "
                                             f"saved value (a file written by a program, not saved in Excel): "
                                             f"open and save it in Excel or LibreOffice"))
            continue
        yield RawRecord(source, fields)


_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def _sheet_layout(sheet) -> tuple[list[tuple[int, int, int, int]], dict[tuple[int, int], str]]:
    """(merged ranges as (first row, first column, last row, last column), {(row, column): formula} of formula
    cells with no saved value), from the sheet's XML: openpyxl's read-only mode, which keeps memory flat on
    big sheets, gives neither. Merged cells otherwise read empty below and beside their first cell, and an
    uncomputed formula reads like an empty cell."""
    import xml.etree.ElementTree as ElementTree

    from openpyxl.utils.cell import coordinate_to_tuple, range_boundaries

    merged, uncomputed = [], {}
    with sheet.parent._archive.open(sheet._worksheet_path) as source:  # openpyxl 3.1's read-only internals
        for _, element in ElementTree.iterparse(source):
            if element.tag == f"{_SHEET_NS}c" and element.get("r"):
                formula = element.find(f"{_SHEET_NS}f")
                value = element.find(f"{_SHEET_NS}v")
                if formula is not None and (value is None or value.text in (None, "")):
                    uncomputed[coordinate_to_tuple(element.get("r"))] = formula.text or ""
                element.clear()
            elif element.tag == f"{_SHEET_NS}mergeCell":
                first_column, first_row, last_column, last_row = range_boundaries(element.get("ref"))
                merged.append((first_row, first_column, last_row, last_column))
    return merged, uncomputed


def _cell_text(value: Any) -> str:
    """A cell as the text a user sees: 1997 and 1997.0 both read "1997", a date "1988-09-17"; an empty cell ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time(0):
        return value.date().isoformat()  # Excel stores a date as a datetime at midnight
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _parquet(spec: InputSpec) -> Iterator[RawRecord]:
    """One record per row, read in batches of the needed columns; the source is `path:[row index]`."""
    import pyarrow
    import pyarrow.parquet

    with _open(spec.path) as handle:
        try:
            table = pyarrow.parquet.ParquetFile(handle)
        except (pyarrow.ArrowException, OSError) as exc:
            raise InputError(spec.path, f"not a readable Parquet file ({exc})") from None
        wanted = _column_positions(spec, table.schema_arrow.names)
        columns = [spec.column(name) for name in wanted]
        index = 0
        for batch in table.iter_batches(batch_size=_TABLE_BATCH, columns=columns):
            for row in batch.to_pylist():
                yield _table_record(f"{spec.path}:[{index}]", spec, row)
                index += 1


def _hf(spec: InputSpec) -> Iterator[RawRecord]:
    """A Hugging Face dataset from a `save_to_disk` folder or (hf://<id>) the hub; sources are `path:split[index]`."""
    dataset, split = _hub_dataset(spec) if spec.path.startswith(HUB_PREFIX) else _disk_dataset(spec)
    if dataset.column_names is not None:  # a streamed dataset may not know its columns before its first row
        _column_positions(spec, list(dataset.column_names))
    for index, row in enumerate(dataset):
        yield _table_record(f"{spec.path}:{split}[{index}]", spec, row)


def _disk_dataset(spec: InputSpec):
    import datasets

    if not Path(spec.path).is_dir():
        raise InputError(spec.path, "folder not found (format hf reads a folder written by save_to_disk)")
    try:
        loaded = datasets.load_from_disk(spec.path)
    except FileNotFoundError:
        raise InputError(spec.path, "not a dataset folder: write it with Dataset.save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if spec.split is None and len(splits) != 1:
            raise InputError(spec.path, f"holds the splits {splits}: set 'split' to one of them", field="split")
        split = spec.split or splits[0]
        if split not in loaded:
            raise InputError(spec.path, f"has no split {split!r}; its splits are {splits}", field="split")
        return loaded[split], split
    if spec.split is not None:
        raise InputError(spec.path, "holds one dataset, not a DatasetDict: remove 'split'", field="split")
    return loaded, "rows"


def _hub_dataset(spec: InputSpec):
    """Streamed, so a large hub dataset never sits in memory or in a cache here; the token, if any, from HF_TOKEN.

    One metadata request first: unreachable, it fails at once (load_dataset retries for about 25 s),
    and it tells a missing dataset or revision apart from a network problem.
    """
    import datasets
    import huggingface_hub

    name, split = spec.path[len(HUB_PREFIX):], spec.split or "train"
    try:
        huggingface_hub.HfApi().dataset_info(name, revision=spec.revision, timeout=10)
        return datasets.load_dataset(name, split=split, revision=spec.revision, streaming=True), split
    except Exception as exc:  # noqa: BLE001 - whatever the hub client raises, the user gets one line
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(spec.path, f"cannot load from the Hugging Face hub ({type(exc).__name__}: {first_line}); "
                                    "offline, save it with save_to_disk where the hub is reachable and list "
                                    "that folder instead") from None


def _table_record(source: str, spec: InputSpec, row: dict[str, Any]) -> RawRecord:
    """A row of a typed table; SQuAD-shaped answers ({text: [...], answer_start: [...]}) as in KorQuAD's datasets."""
    fields = {name: row[spec.column(name)] for name in FIELDS if spec.column(name) in row}
    answers = fields.get("answer")
    if isinstance(answers, dict) and "text" in answers:
        texts, starts = answers.get("text"), answers.get("answer_start")
        texts = texts if isinstance(texts, list) else [texts]
        starts = starts if isinstance(starts, list) else [starts] * len(texts)
        qa = {**{k: fields[k] for k in ("id", "question") if k in fields},
              "answers": [{"text": t, "answer_start": a} for t, a in zip(texts, starts, strict=False)]}
        record = _squad_record(source, fields.get("context"), qa)
        if "cot" in fields:
            record.fields["cot"] = fields["cot"]
        return record
    return RawRecord(source, fields)
