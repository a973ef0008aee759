"""What a model's output answers, and whether its chain of thought quotes the documents it was given.

A RAFT target ends in `<ANSWER>: answer` after any reasoning (docs/design.md §2). Models drift in
spacing and case (`<ANSWER> : `, `<answer>:`, a full-width colon), so the marker is matched
tolerantly; the answer is the first non-empty line after its last occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from koraft.core.formats import quotes

ANSWER_PATTERN = re.compile(r"<\s*answer\s*>\s*[:：]", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    text: str  # what is scored against the reference
    extracted: bool  # a marker was found (or none was asked for)


def extract_answer(output: str, expects_reasoning: bool) -> Answer:
    """The final answer of `output`; without a marker, the whole output, unless a marker was asked for."""
    markers = list(ANSWER_PATTERN.finditer(output))
    if markers:
        rest = output[markers[-1].end():]
        line = next((line.strip() for line in rest.splitlines() if line.strip()), "")
        return Answer(line, True)
    if expects_reasoning:  # asked to end in <ANSWER>: and did not: no answer was given
        return Answer("", False)
    return Answer(output.strip(), True)


@dataclass(frozen=True)
class QuoteCheck:
    quotes: int
    verbatim: int  # quotes found character for character in one of the documents given


def check_quotes(output: str, documents: list[str]) -> QuoteCheck:
    found = quotes(output)
    return QuoteCheck(len(found), sum(1 for quote in found if any(quote in document for document in documents)))
