"""Chains of thought as LLMs write them: quotes found after folding, the unverified-quote policy, counts."""

from __future__ import annotations

import json

import pytest
from helpers import validate_inputs, write_jsonl

from koraft.core.errors import InputError
from koraft.data.quotes import check_quotes, locate
from koraft.data.readers import InputSpec
from koraft.data.validate import validate_to_files

DOC = "한결시는 강원도 북부에 위치한 도시이다. 2020년 기준 한결시의 인구는 약 12만 명이다. 시청은 솔빛로 1에 있다."


@pytest.mark.parametrize("quote", [
    '"2020년 기준 한결시의 인구는 약 12만 명이다."',  # straight quotation marks around the span
    "\u201c2020년 기준 한결시의 인구는 약 12만 명이다.\u201d",  # curly ones
    "「2020년 기준 한결시의 인구는 약 12만 명이다.」",  # CJK corner brackets
    "2020년 기준 한결시의인구는 약 12만명이다.",  # Korean word spacing changed
    "２０２０년 기준 한결시의 인구는 약 １２만 명이다.",  # full-width digits (NFKC)
])
def test_a_quote_is_found_after_folding_and_rewritten_to_the_documents_own_text(quote):
    assert locate(quote, DOC) == "2020년 기준 한결시의 인구는 약 12만 명이다."
    checked = check_quotes(f"##Reason: ##begin_quote## {quote} ##end_quote## 따라서 12만 명.", DOC)
    assert checked.outcome == "folded" and checked.missing is None
    expected = "##Reason: ##begin_quote## 2020년 기준 한결시의 인구는 약 12만 명이다. ##end_quote## 따라서 12만 명."
    assert checked.cot == expected


def test_verbatim_quotes_are_left_as_written_and_a_changed_quote_is_unverified():
    cot = "##begin_quote##시청은 솔빛로 1에 있다.##end_quote## 그리고 ##begin_quote## \"강원도 북부\" ##end_quote##"
    checked = check_quotes(cot, DOC)
    assert checked.outcome == "folded" and "##begin_quote## 강원도 북부 ##end_quote##" in checked.cot
    assert check_quotes("##begin_quote##시청은 솔빛로 1에 있다.##end_quote##", DOC).outcome == "verbatim"
    changed = check_quotes("##begin_quote##시청은 솔빛로 2에 있다.##end_quote## "
                           "##begin_quote##\"도시이다\"##end_quote##", DOC)
    assert (changed.outcome, changed.missing) == ("unverified", "시청은 솔빛로 2에 있다.")
    assert locate('" "', DOC) is None  # marks and spaces alone quote nothing


def gorilla_file(tmp_path):
    """Gorilla RAFT output as an LLM writes it: one verbatim, one quoted in marks, one paraphrased quote."""
    rows = [
        ("인구는?", "##begin_quote##2020년 기준 한결시의 인구는 약 12만 명이다.##end_quote##", "약 12만 명"),
        ("시청은?", "##begin_quote## “시청은 솔빛로 1에\n있다.” ##end_quote##", "솔빛로 1"),
        ("위치는?", "##begin_quote## 한결시는 강원도 남부에 있다 ##end_quote##", "강원도 북부"),
        ("별명은?", "##begin_quote## 한결시는 강원도 북부에 위치한 도시이다. ##end_quote##", "사과의 고장"),
    ]
    return write_jsonl(tmp_path / "gorilla.jsonl", [
        {"question": q, "oracle_context": DOC, "cot_answer": f"##Reason: {cot} <ANSWER>: {answer}"}
        for q, cot, answer in rows])


@pytest.mark.parametrize("policy, kept, outcomes", [
    ("reject", 3, {"verbatim": 2, "folded": 1, "unverified_kept": 0, "stripped": 0, "rejected": 1}),
    ("keep", 4, {"verbatim": 2, "folded": 1, "unverified_kept": 1, "stripped": 0, "rejected": 0}),
    ("strip", 4, {"verbatim": 2, "folded": 1, "unverified_kept": 0, "stripped": 1, "rejected": 0}),
])
def test_unverified_quotes_follow_the_policy_and_every_outcome_is_counted(policy, kept, outcomes, tmp_path,
                                                                          validate_params):
    path = gorilla_file(tmp_path)
    result = validate_inputs([InputSpec(str(path), "gorilla")], validate_params["lengths"],
                             validate_params["near_duplicates"], unverified_quotes=policy)
    m = result.metrics
    assert (m["kept"], m["raw"]) == (kept, m["kept"] + m["rejected"])
    assert m["quotes"] == {"unverified_policy": policy, **outcomes}
    by_question = {r["question"]: r for r in result.records}
    assert "##begin_quote## 시청은 솔빛로 1에 있다. ##end_quote##" in by_question["시청은?"]["cot"]
    if policy == "strip":
        assert by_question["위치는?"]["cot"] is None and by_question["위치는?"]["answer"] == "강원도 북부"
    if policy == "keep":
        assert "남부에 있다" in by_question["위치는?"]["cot"]
    if policy == "reject":
        (reject,) = result.rejects
        assert (reject["reason"], reject["field"]) == ("cot_quote_not_in_context", "cot")
        assert "한결시는 강원도 남부에 있다" in reject["detail"]
    # "사과의 고장" is nowhere in the document: kept (a paraphrase can be right), and counted for its file
    assert m["files"][str(path)]["answer_not_in_context"] == 1


def test_a_failing_validate_leaves_no_output_behind(tmp_path, validate_params):
    good = write_jsonl(tmp_path / "good.jsonl", [{"question": "인구는?", "context": DOC, "answer": "약 12만 명"},
                                                 {"question": "없음", "context": DOC, "answer": ""}])
    truncated = tmp_path / "bad.json"
    truncated.write_text(json.dumps([{"question": "q", "context": DOC, "answer": "a"}])[:-1], encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="truncated file"):
        validate_to_files([InputSpec(str(good), "jsonl"), InputSpec(str(truncated), "json")],
                          validate_params["lengths"], validate_params["near_duplicates"],
                          out / "records.jsonl", out / "rejects.jsonl")
    assert list(out.iterdir()) == []  # the first file's reject was written to a temporary file, now gone
