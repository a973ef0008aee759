"""A teacher's replies read and judged: questions from a list, chains of thought in RAFT's format.

Every check has a named reason, so each requested item ends up either kept or counted under why.
"""

from __future__ import annotations

import re
from typing import Any

from koraft.core.formats import ANSWER_MARKER, quotes
from koraft.core.hangul import hangul_share
from koraft.data.quotes import check_quotes, locate

# Leading list marks a teacher puts before each question: "1.", "2)", "-", "Q3:", "질문 1:".
_NUMBERING = re.compile(r"^\s*(?:[-*\u2022\u00b7]|\(?\d{1,3}[.)]|Q\d*\s*[:.)]|질문\s*\d*\s*[:.)])\s*")


def parse_questions(text: str, count: int) -> list[str]:
    """Up to `count` questions, one per line; lines ending in '?' when the reply has any (a preamble has none)."""
    lines = [_NUMBERING.sub("", line).strip().strip('"\u201c\u201d') for line in text.splitlines()]
    lines = [line for line in lines if line]
    asked = [line for line in lines if line.endswith("?")]
    return (asked or lines)[:count]


def question_problem(question: str, filters: dict[str, Any]) -> tuple[str, str] | None:
    low, high = filters["question_chars"]
    if len(question) < low:
        return "question_too_short", f"{len(question)} characters, below {low}"
    if len(question) > high:
        return "question_too_long", f"{len(question)} characters, above {high}"
    share = hangul_share(question) or 0.0  # no letters at all: not Korean
    if share < filters["min_hangul_share"]:
        return "question_not_korean", f"Hangul share {share:.2f}, below {filters['min_hangul_share']}"
    return None


def judge_answer(text: str, chunk: str, filters: dict[str, Any]) -> tuple[str, str] | tuple[str, str, str]:
    """(cot, answer, "kept") for an acceptable reply, else (reason, detail)."""
    if ANSWER_MARKER not in text:
        return "no_answer_marker", f"no '{ANSWER_MARKER}' line"
    cot, _, rest = text.rpartition(ANSWER_MARKER)
    answer, cot = rest.strip().split("\n")[0].strip(), cot.strip()
    for name, value in (("answer", answer), ("cot", cot)):
        low, high = filters[f"{name}_chars"]
        if not low <= len(value) <= high:
            side = "short" if len(value) < low else "long"
            return f"{name}_too_{side}", f"{len(value)} characters, outside [{low}, {high}]"
    if not quotes(cot):
        return "no_quote", "the chain of thought quotes nothing between ##begin_quote## and ##end_quote##"
    checked = check_quotes(cot, chunk)
    if checked.outcome == "unverified":
        return "quote_not_in_chunk", f"not in the chunk: {checked.missing[:80]!r}"
    if filters["span_answers"]:
        span = locate(answer, chunk)  # the chunk's own words when only quote marks or spacing differ
        if span is None:
            return "answer_not_in_chunk", f"{answer[:80]!r} is not a span of the chunk"
        answer = span
    share = hangul_share(cot.replace("##begin_quote##", " ").replace("##end_quote##", " ")) or 0.0
    if share < filters["min_hangul_share"]:
        return "cot_not_korean", f"Hangul share {share:.2f}, below {filters['min_hangul_share']}"
    return checked.cot, answer, "kept"
