"""Every input format end to end through validation, with the defects real exports carry:
a BOM, CRLF line ends, NFD Korean, invalid UTF-8 and a huge field, in one file per format."""

from __future__ import annotations

import csv
import io
import json
import unicodedata

import pytest
from helpers import validate_inputs

from koraft.data.readers import InputSpec

DOC = "한결시는 강원도 북부에 위치한 도시이다. 2020년 기준 한결시의 인구는 약 12만 명이다. 특산물은 사과이다."
GOOD = {"question": "한결시의 인구는?", "context": DOC, "answer": "약 12만 명"}
NFD = {**GOOD, "question": unicodedata.normalize("NFD", "한결시는 어느 도에 있나요?"), "answer": "강원도"}
BROKEN = {**GOOD, "question": "한결시의 \udcff특산물은?", "answer": "사과"}  # \udcff is written as byte 0xff
HUGE = {**GOOD, "question": "아주 긴 문서의 질문은?", "context": DOC * 5000}
ROWS = [GOOD, NFD, BROKEN, HUGE]


def _jsonl(rows):
    return "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"


def _delimited(rows, delimiter):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n",
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    writer.writerow(["question", "context", "answer"])
    writer.writerows([r["question"], r["context"], r["answer"]] for r in rows)
    return buffer.getvalue()


def _squad(rows):
    paragraphs = [{"context": r["context"], "qas": [{"id": f"q{i}", "question": r["question"], "answers": [
        {"text": r["answer"], "answer_start": r["context"].index(r["answer"])}]}]} for i, r in enumerate(rows)]
    return json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}, ensure_ascii=False, indent=1)


def _gorilla(rows):
    return _jsonl([{"question": r["question"], "oracle_context": r["context"],
                    "cot_answer": f"##Reason: 문서를 보면 알 수 있다.\n<ANSWER>: {r['answer']}"} for r in rows])


WRITERS = {
    "jsonl": ("a.jsonl", _jsonl),
    "json": ("a.json", lambda rows: json.dumps(rows, ensure_ascii=False, indent=2).replace("\n", "\r\n")),
    "csv": ("a.csv", lambda rows: _delimited(rows, ",")),
    "tsv": ("a.tsv", lambda rows: _delimited(rows, "\t")),
    "squad": ("a.json", _squad),
    "gorilla": ("a.jsonl", _gorilla),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_format_with_real_world_defects(tmp_path, validate_params, fmt):
    name, write = WRITERS[fmt]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + write(ROWS).encode("utf-8", "surrogateescape"))
    result = validate_inputs([InputSpec(str(path), fmt)], validate_params["lengths"],
                             validate_params["near_duplicates"])
    m = result.metrics
    assert (m["raw"], m["kept"], m["rejected"]) == (4, 2, 2)
    assert m["rejected_by_reason"] == {"invalid_utf8": 1, "too_long": 1}
    kept = {r["question"]: r for r in result.records}
    assert set(kept) == {"한결시의 인구는?", "한결시는 어느 도에 있나요?"}  # NFD composed back to NFC
    assert all(r["answer"] in ("약 12만 명", "강원도") and "\r" not in r["context"] for r in kept.values())
    assert all(r["source"].startswith(str(path)) for r in result.records + result.rejects)
    assert len({r["source"] for r in result.records + result.rejects}) == 4
    if fmt == "gorilla":
        assert all(r["cot"] == "##Reason: 문서를 보면 알 수 있다." for r in result.records)
