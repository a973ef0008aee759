"""The LLM judge: parsing of scores and verdicts (garbage and refusals included), the position swap, the
Hangul penalty, and a real OpenAI-compatible judge on 127.0.0.1 behind the call cache."""

from __future__ import annotations

import numpy as np
import pytest
from teacher_server import TeacherServer

from koraft.core.config import load_params
from koraft.core.hangul import hangul_share
from koraft.evaluation.judge import (
    JudgeSettings,
    judge,
    pair_outcome,
    parse_score,
    parse_verdict,
)
from koraft.inference.endpoints import Endpoint

REQUESTS = {"concurrency": 2, "timeout_s": 10.0, "retries": 0}


@pytest.mark.parametrize("reply, score", [
    ("정답과 같습니다.\n[[9]]", 9.0),
    ("처음엔 [[3]]이라 생각했지만 다시 보니 [[6]]", 6.0),  # the last verdict counts
    ("점수: [[7/10]]", 7.0),
    ("[[ 8.5 ]]", 8.5),
    ("[[11]]", None),  # outside 1-10
    ("[[0]]", None),
    ("점수는 7점입니다.", None),  # no [[N]]
    ("I'm sorry, but I can't help with that.", None),  # a refusal
    ("", None),
])
def test_scores_are_parsed_from_the_last_double_bracket(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply, verdict", [
    ("A가 정확합니다. [[A]]", "A"), ("[[B]]", "B"), ("비슷합니다 [[C]]", "C"),
    ("[[A]] 아니 [[B]]", None),  # two different verdicts: none
    ("A가 낫습니다", None), ("[[D]]", None), ("죄송하지만 판단할 수 없습니다.", None),
])
def test_verdicts_are_parsed_and_ambiguity_is_no_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("first, second, outcome", [
    ("B", "A", ("after", True)),  # B first (after), A swapped (after again): a consistent win
    ("A", "B", ("before", True)),
    ("C", "C", ("tie", True)),
    ("A", "A", ("tie", False)),  # position bias: always the first answer, so the orders disagree
    ("B", "C", ("tie", False)),
    (None, "A", None),
])
def test_the_position_swap_turns_disagreement_into_a_tie(first, second, outcome):
    assert pair_outcome(first, second) == outcome


def test_hangul_share_counts_letters_only():
    assert hangul_share("경기도") == 1.0 and hangul_share("Gyeonggi-do") == 0.0
    assert hangul_share("1978년") == 1.0 and hangul_share("1470") is None  # digits are not letters
    assert hangul_share("서울 Seoul") == pytest.approx(2 / 7)


def settings_for(url: str, **changes) -> JudgeSettings:
    shipped = load_params()["eval"]["judge"]
    values = dict(endpoint=Endpoint("judge", url, "judge"), systems=("base", "finetuned"),
                  pairs=(("base", "finetuned"),), questions=None, max_tokens=64, min_hangul_share=0.5,
                  system_prompt=shipped["system_prompt"], single_prompt=shipped["single_prompt"],
                  pairwise_prompt=shipped["pairwise_prompt"])
    return JudgeSettings(**{**values, **changes})


ROWS = [{"id": f"r{i}", "question": f"질문 {i}?", "answer": reference}
        for i, reference in enumerate(["경기도", "14개", "1978년", "누록사", "서울", "부산"])]
ANSWERS = {"base": ["경기도입니다", "몰라요", "Gyeonggi", "", "서울", "대구"],
           "finetuned": ["경기도", "14개", "1978년", "누록사", "서울", "부산"]}


def fair_judge(user: str):
    """Scores 9 when the answer holds the reference, 2 otherwise; prefers the answer holding it, in either order;
    garbage for question 4, a refusal (HTTP 400) for question 5."""
    reference = user.split("정답: ", 1)[1].split("\n", 1)[0]
    if "질문 4?" in user:
        return "평가를 완료했습니다."
    if "질문 5?" in user:
        return 400, "content policy"
    if "답변 A: " in user:
        a = user.split("답변 A: ", 1)[1].split("\n\n", 1)[0]
        b = user.split("답변 B: ", 1)[1].split("\n\n", 1)[0]
        return "[[C]]" if (reference in a) == (reference in b) else ("[[A]]" if reference in a else "[[B]]")
    answer = user.split("평가할 답변: ", 1)[1].split("\n\n", 1)[0]
    return f"근거를 확인했습니다.\n[[{9 if reference in answer else 2}]]"


def test_a_judge_on_loopback_grades_pairs_and_counts_every_failure(tmp_path):
    f1 = {"base": np.array([0.8, 0.0, 0.0, 0.0, 1.0, 0.0]), "finetuned": np.ones(6)}
    with TeacherServer(reply=fair_judge) as server:
        report, review = judge(ROWS, ANSWERS, f1, settings_for(server.url), REQUESTS, tmp_path / "calls.jsonl", 42)
        asked = server.requests
        again, _ = judge(ROWS, ANSWERS, f1, settings_for(server.url), REQUESTS, tmp_path / "calls.jsonl", 42)
        # Every reply is cached, refusals too (asking again gives the same): the rerun calls nothing.
        assert server.requests == asked and again == report
    base, tuned = report["single"]["base"], report["single"]["finetuned"]
    # base: r0 holds the reference (9), r1 does not (2), r2 is not Korean (1, no call), r3 is empty (1, no call),
    # r4 is garbage (unparsed), r5 refused (failed)
    assert base == {"mean_score": round((9 + 2 + 1 + 1) / 4, 3), "scored": 4, "unparsed": 1, "failed": 1,
                    "empty": 1, "not_korean": 1}
    assert tuned["scored"] == 4 and tuned["mean_score"] == 9.0
    pair = report["pairwise"]["finetuned_vs_base"]
    assert pair["judged"] == 4 and pair["unparsed"] == 1 and pair["failed"] == 1
    # r0: both hold the reference (tie); r1, r2, r3: the fine-tuned answer wins in both orders
    assert pair["finetuned_wins"] == 0.75 and pair["ties"] == 0.25 and pair["base_wins"] == 0.0
    assert pair["position_consistency"] == 1.0 and pair["agrees_with_f1"] == 1.0
    assert report["agreement"]["spearman_score_f1"] > 0.5
    assert review["r1"] == {"base": 2.0, "finetuned": 9.0, "finetuned_vs_base": "finetuned"}
    assert all("key" not in line or "sk-" not in line for line in (tmp_path / "calls.jsonl").read_text().splitlines())


def test_a_judge_sample_is_seeded_and_an_unknown_system_is_one_line(tmp_path):
    from koraft.core.errors import KoraftError
    from koraft.evaluation.judge import sample_records

    assert sample_records([f"r{i}" for i in range(10)], 4, 42) == sample_records([f"r{i}" for i in range(10)], 4, 42)
    assert len(sample_records([f"r{i}" for i in range(10)], 4, 42)) == 4
    with pytest.raises(KoraftError, match="eval.judge: 'distilled' was not evaluated"):
        judge(ROWS, ANSWERS, {}, settings_for("http://127.0.0.1:9/v1", systems=("distilled",)), REQUESTS,
              tmp_path / "calls.jsonl", 42)


def test_an_unreachable_judge_is_one_line(tmp_path):
    from koraft.core.errors import KoraftError

    with TeacherServer() as server:
        url = server.url
    with pytest.raises(KoraftError, match="unreachable"):
        judge(ROWS, ANSWERS, {"base": np.zeros(6), "finetuned": np.zeros(6)}, settings_for(url), REQUESTS,
              tmp_path / "calls.jsonl", 42)
