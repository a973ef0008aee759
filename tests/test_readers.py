"""Each raw format on well-formed and malformed input: records, rejects with reasons, file errors."""

from __future__ import annotations

import json

import pytest

from koraft.core.errors import InputError
from koraft.data.readers import InputSpec, infer_format, read_records

DOC = "서울특별시는 대한민국의 수도이며 인구는 약 940만 명이다."


def read(path, fmt, **kwargs):
    return list(read_records(InputSpec(str(path), fmt, **kwargs)))


def test_jsonl_records_carry_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"id": 1, "question": "수도는?", "context": DOC, "answer": "서울특별시", "extra": 1}]
    path.write_text("\n" + json.dumps(rows[0], ensure_ascii=False) + "\n\n", encoding="utf-8")
    (record,) = read(path, "jsonl")
    assert record.source == f"{path}:2"  # blank lines are skipped but still counted
    assert record.fields == {"id": 1, "question": "수도는?", "context": DOC, "answer": "서울특별시"}
    assert record.problem is None


def test_jsonl_bad_lines_become_rejects_not_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    good = json.dumps({"question": "q", "context": DOC, "answer": "a"}, ensure_ascii=False)
    path.write_text(f'{good}\n["a list"]\n{good[: len(good) // 2]}', encoding="utf-8")  # truncated last line
    first, listed, truncated = read(path, "jsonl")
    assert first.problem is None
    assert listed.problem[0] == "not_an_object" and listed.source.endswith(":2")
    assert truncated.problem[0] == "invalid_json" and truncated.source.endswith(":3")


def test_jsonl_bom_and_crlf(tmp_path):
    path = tmp_path / "a.jsonl"
    line = json.dumps({"question": "질문", "context": DOC, "answer": "답"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + (line + "\r\n" + line + "\r\n").encode("utf-8"))
    records = read(path, "jsonl")
    assert [r.source.rsplit(":", 1)[1] for r in records] == ["1", "2"]
    assert all(r.problem is None and r.fields["question"] == "질문" for r in records)


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_utf16_or_utf32_file_is_refused_by_its_encoding_not_read_as_garbage(tmp_path, encoding, name, fmt):
    record = {"question": "질문", "context": DOC, "answer": "답"}
    text = {"jsonl": json.dumps(record, ensure_ascii=False) + "\n", "json": json.dumps([record], ensure_ascii=False),
            "csv": f"question,context,answer\n질문,{DOC},답\n"}[fmt]
    path = tmp_path / f"unicode.{fmt}"
    path.write_bytes(("\ufeff" + text).encode(encoding))  # with its byte order mark, as Windows saves it
    with pytest.raises(InputError) as error:
        read(path, fmt)
    assert str(error.value) == f"{path}:1: is {name} text (its byte order mark says so): save it as UTF-8"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_jsonl_file_is_one_line_like_the_other_formats(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        read(path, "jsonl")
    assert str(error.value) == f"{path}:1: empty file, expected one JSON object per line"


def test_invalid_utf8_is_isolated_to_its_record(tmp_path):
    path = tmp_path / "a.jsonl"
    good = json.dumps({"question": "질문", "context": DOC, "answer": "답"}, ensure_ascii=False).encode()
    bad = good.replace("질문".encode(), b"\xff\xfe bad")
    path.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    records = read(path, "jsonl")
    assert len(records) == 3
    assert "\udcff" in records[1].fields["question"]  # surfaced for the schema check, not a crash


def test_json_array_elements_know_their_line(tmp_path):
    path = tmp_path / "a.json"
    rows = [{"question": f"질문 {i}", "context": DOC, "answer": "답"} for i in range(3)]
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    records = read(path, "json")
    assert [r.fields["question"] for r in records] == ["질문 0", "질문 1", "질문 2"]
    lines = path.read_text(encoding="utf-8").split("\n")
    for index, record in enumerate(records):
        location, element = record.source.rsplit(":", 1)[1].split(" ")
        assert element == f"[{index}]" and lines[int(location) - 1].strip() == "{"


def test_truncated_json_array_names_file_and_line(tmp_path):
    path = tmp_path / "a.json"
    text = json.dumps([{"question": "q", "context": DOC, "answer": "a"}] * 3, ensure_ascii=False, indent=1)
    path.write_text(text[: len(text) - 40], encoding="utf-8")
    with pytest.raises(InputError) as error:
        read(path, "json")
    assert error.value.path == str(path) and error.value.line is not None and error.value.line > 1


def test_json_object_instead_of_array_hints_at_squad(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"data": []}', encoding="utf-8")
    with pytest.raises(InputError, match="format: squad"):
        read(path, "json")


def test_csv_with_korean_column_map_and_multiline_cell(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text('질문,문서,답변\r\n"수도는?","첫 줄\r\n둘째 줄",서울\r\n인구는?,' + DOC + ",약 940만 명\r\n",
                    encoding="utf-8")
    columns = {"question": "질문", "context": "문서", "answer": "답변"}
    first, second = read(path, "csv", columns=columns)
    assert first.fields == {"question": "수도는?", "context": "첫 줄\r\n둘째 줄", "answer": "서울"}
    assert first.source.endswith(":2") and second.source.endswith(":4")


def test_csv_missing_mapped_column_is_a_file_error(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,context\nq,c\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read(path, "csv")
    assert (error.value.line, error.value.field) == (1, "answer")


def test_csv_short_row_and_huge_field(tmp_path):
    path = tmp_path / "a.csv"
    huge = "가" * 300_000  # above the csv module's default field limit
    path.write_text(f"question,context,answer\nq,{DOC}\nq,{huge},a\n", encoding="utf-8")
    short, big = read(path, "csv")
    assert short.problem[0] == "wrong_column_count"
    assert big.problem is None and len(big.fields["context"]) == 300_000


def test_tsv_keeps_quotes_verbatim(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('question\tcontext\tanswer\n"서울"은 어디?\t' + DOC + "\t서울\n", encoding="utf-8")
    (record,) = read(path, "tsv")
    assert record.fields["question"] == '"서울"은 어디?'


def _squad(context, answer, start, **qa):
    qa = {"id": "q1", "question": "수도는?", "answers": [{"text": answer, "answer_start": start}], **qa}
    return {"version": "1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}


def test_squad_answer_start_is_checked(tmp_path):
    path = tmp_path / "korquad.json"
    path.write_text(json.dumps(_squad(DOC, "서울특별시", 0), ensure_ascii=False), encoding="utf-8")
    (good,) = read(path, "squad")
    assert good.problem is None and good.fields["answer"] == "서울특별시"
    assert good.source == f"{path}:data[0].paragraphs[0].qas[0]"
    path.write_text(json.dumps(_squad(DOC, "서울특별시", 5), ensure_ascii=False), encoding="utf-8")
    (bad,) = read(path, "squad")
    assert bad.problem[0] == "answer_start_mismatch"


def test_squad_unanswerable_and_truncated(tmp_path):
    path = tmp_path / "korquad.json"
    path.write_text(json.dumps(_squad(DOC, "x", 0, is_impossible=True), ensure_ascii=False), encoding="utf-8")
    assert read(path, "squad")[0].problem[0] == "no_answer"
    path.write_text('{"data": [{"paragraphs": [\n{"context": "abc", ', encoding="utf-8")
    with pytest.raises(InputError) as error:
        read(path, "squad")
    assert error.value.line == 2


def test_gorilla_output_splits_reasoning_from_answer(tmp_path):
    path = tmp_path / "raft.jsonl"
    cot = "##Reason: ##begin_quote##서울특별시는 대한민국의 수도이며##end_quote## <ANSWER>: 서울특별시"
    rows = [
        {"question": "수도는?", "context": {"sentences": [[DOC]]}, "oracle_context": DOC, "cot_answer": cot},
        {"question": "수도는?", "oracle_context": DOC, "cot_answer": "no marker here"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    good, bad = read(path, "gorilla")
    assert good.fields["context"] == DOC and good.fields["answer"].strip() == "서울특별시"
    assert good.fields["cot"].startswith("##Reason:") and "<ANSWER>" not in good.fields["cot"]
    assert bad.problem[0] == "missing_answer_marker"


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read(tmp_path / "nope.jsonl", "jsonl")
    with pytest.raises(InputError, match="unknown extension '.txt'"):
        infer_format("data/raw/notes.txt")
