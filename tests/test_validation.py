"""Schema checks, cleanup, deduplication, near-duplicate doc ids, and the counts-add-up invariant."""

from __future__ import annotations

import json
import random
import unicodedata

from helpers import group_documents, validate_inputs, write_jsonl

from koraft.data.normalize import clean_text
from koraft.data.readers import InputSpec, RawRecord
from koraft.data.schema import Record, Reject, check_record

DOC = "한결시는 강원도 북부에 위치한 도시이다. 2020년 기준 한결시의 인구는 약 12만 명이다."
LENGTHS = {"question": [2, 100], "context": [20, 1000], "answer": [1, 50], "cot": [10, 500]}


def check(**fields):
    return check_record(RawRecord("f.jsonl:1", fields), LENGTHS)


def test_cleanup_nfc_whitespace_control_zero_width():
    nfd = unicodedata.normalize("NFD", "한결시의 인구는?")
    assert nfd != "한결시의 인구는?"
    assert clean_text(nfd) == "한결시의 인구는?"
    assert clean_text("  한결\u200b시의\t\t인구는\x07?\r\n") == "한결시의 인구는 ?"
    record = check(question=nfd, context=DOC, answer=" 약 12만 명 ")
    assert isinstance(record, Record) and record.question == "한결시의 인구는?" and record.answer == "약 12만 명"


def test_each_schema_problem_has_its_reason_and_field():
    cases = [
        (dict(context=DOC, answer="a"), "missing_field", "question"),
        (dict(question=None, context=DOC, answer="a"), "missing_field", "question"),
        (dict(question=3, context=DOC, answer="a"), "wrong_type", "question"),
        (dict(question="질문", context=DOC, answer=["a"]), "wrong_type", "answer"),
        (dict(question="질문", context=DOC, answer=" \t\u3000 "), "empty_field", "answer"),
        (dict(question="질문", context="짧음", answer="a"), "too_short", "context"),
        (dict(question="질문", context=DOC * 100, answer="a"), "too_long", "context"),
        (dict(question="질\udcff문", context=DOC, answer="a"), "invalid_utf8", "question"),
        (dict(question="질문", context=DOC, answer="a", id=True), "wrong_type", "id"),
        (dict(question="질문", context=DOC, answer="a", cot="##begin_quote##서울##end_quote## 근거"),
         "cot_quote_not_in_context", "cot"),
    ]
    for fields, reason, field in cases:
        outcome = check(**fields)
        assert isinstance(outcome, Reject), fields
        assert (outcome.reason, outcome.field) == (reason, field), outcome


def test_valid_cot_and_integer_id_are_kept():
    cot = "##Reason: ##begin_quote## 인구는 약 12만 명이다. ##end_quote## 그러므로"
    record = check(id=7, question="인구는?", context=DOC, answer="약 12만 명", cot=cot)
    assert isinstance(record, Record) and record.id == "7" and record.cot.startswith("##Reason")


def test_reject_preview_is_bounded_and_serializable():
    outcome = check(question="질\udcff문", context=DOC * 1000, answer="a")
    line = json.dumps(outcome.to_json(), ensure_ascii=False)
    assert len(line) < 1000 and "characters)" in line


def test_invalid_utf8_in_an_id_or_inside_a_list_is_a_reject_not_a_crash(tmp_path, validate_params):
    context = "구래시의 대표 명소로는 늘하공원이 꼽힌다. 호수를 끼고 있다."
    rest = f', "context": "{context}", "answer": "늘하공원"}}\n'.encode()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "a\xff", "question": "' + "구래시의 명소는?".encode() + b'"' + rest
                     + b'{"id": "b", "question": ["\xff"]' + rest
                     + b'{"id": "c", "question": "' + "구래시의 명소는?".encode() + b'"' + rest)
    result = validate_inputs([InputSpec(str(path), "jsonl")], validate_params["lengths"],
                             validate_params["near_duplicates"])
    assert result.metrics["kept"] == 1 and result.metrics["rejected"] == 2
    assert [(r["reason"], r["field"]) for r in result.rejects] == [("invalid_utf8", "id"), ("wrong_type", "question")]
    assert result.rejects[0]["raw"]["id"] == "a\\xff" and result.rejects[1]["raw"]["question"] == ["\\xff"]


def _sources(result):
    return [r["source"] for r in result.records] + [r["source"] for r in result.rejects]


def test_every_raw_record_is_kept_or_rejected_across_formats(tmp_path, validate_params):
    good = {"question": "한결시의 인구는?", "context": DOC, "answer": "약 12만 명"}
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(
        b"\xef\xbb\xbf" + "\r\n".join([
            json.dumps(good, ensure_ascii=False),
            json.dumps(good, ensure_ascii=False),  # exact duplicate
            json.dumps({**good, "question": unicodedata.normalize("NFD", "한결시는 어느 도에?")}, ensure_ascii=False),
            json.dumps({**good, "answer": ""}, ensure_ascii=False),
            '{"question": "truncated',
        ]).encode() + b"\r\n" + json.dumps({**good, "question": "깨진 \udcff"}, ensure_ascii=False).encode("utf-8",
                                                                                                       "surrogateescape")
    )
    csv_path = tmp_path / "b.csv"
    csv_path.write_text(f"question,context,answer\n다른 질문?,{DOC},강원도\nonly two,cells\n", encoding="utf-8")
    array = tmp_path / "c.json"
    array.write_text(json.dumps([{**good, "question": "배열 질문?"}, {"question": 5}], ensure_ascii=False))
    specs = [InputSpec(str(jsonl), "jsonl"), InputSpec(str(csv_path), "csv"), InputSpec(str(array), "json")]
    result = validate_inputs(specs, validate_params["lengths"], validate_params["near_duplicates"])
    m = result.metrics
    assert m["raw"] == 10 and m["raw"] == m["kept"] + m["rejected"]
    assert m["kept"] == 4 and m["rejected"] == 6
    assert m["rejected_by_reason"] == {"duplicate": 1, "empty_field": 1, "invalid_json": 1, "invalid_utf8": 1,
                                       "wrong_column_count": 1, "missing_field": 1}
    for path, counts in m["files"].items():
        assert counts["raw"] == counts["kept"] + counts["rejected"], path
    sources = _sources(result)
    assert len(sources) == len(set(sources)) == 10  # each raw record exactly once
    assert all(r["reason"] and r["detail"] for r in result.rejects)
    assert m["documents"] == 1  # every kept record quotes the same document


def test_duplicate_ids_are_rejected_unless_prefixed(tmp_path, validate_params):
    rows_a = [{"id": 1, "question": "질문 하나?", "context": DOC, "answer": "a"}]
    rows_b = [{"id": 1, "question": "질문 둘?", "context": DOC, "answer": "b"}]
    a, b = write_jsonl(tmp_path / "a.jsonl", rows_a), write_jsonl(tmp_path / "b.jsonl", rows_b)
    args = (validate_params["lengths"], validate_params["near_duplicates"])
    clash = validate_inputs([InputSpec(str(a), "jsonl"), InputSpec(str(b), "jsonl")], *args)
    assert clash.metrics["rejected_by_reason"] == {"duplicate_id": 1}
    prefixed = validate_inputs([InputSpec(str(a), "jsonl"), InputSpec(str(b), "jsonl", id_prefix="b/")], *args)
    assert [r["id"] for r in prefixed.records] == ["1", "b/1"]


def test_near_duplicates_share_a_doc_id_independent_of_order(validate_params):
    near = validate_params["near_duplicates"]
    long_doc = DOC + " 한결시는 사과로 널리 알려져 있으며, 매년 10월에는 한결시에서 사과 축제가 열린다. " \
        "한결시는 1989년에 시로 승격되었고, 대표 명소로는 호수를 끼고 있는 솔빛공원이 꼽힌다."
    other = "누리전자는 1987년 김하늘이 설립한 반도체 기업이다. 본사는 부산에 있으며 직원 수는 약 3천 명이다. " \
        "주력 제품은 메모리 칩이며 수출 비중이 높다. 지난해 매출은 915억 원을 기록했다."
    texts = [long_doc, long_doc + " 이 문서는 2024년에 개정되었다.", long_doc.replace("12만", "13만"), other]
    groups = group_documents(texts, near["threshold"], near["shingle_size"], near["num_perm"], near["bands"])
    assert groups[texts[0]] == groups[texts[1]] == groups[texts[2]] != groups[other]
    shuffled = texts[:]
    random.Random(3).shuffle(shuffled)
    assert group_documents(shuffled, near["threshold"], near["shingle_size"], near["num_perm"], near["bands"]) == groups
