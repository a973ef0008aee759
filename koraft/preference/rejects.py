"""Rejected answers written from a RAFT record by rule: the classic failures of a RAG model.

Each rule takes one record (its documents, which one is golden, its answer and chain of thought) and
returns the rejected completion, or the reason it cannot build one for that record:

- distractor: an answer taken from a distractor document, a span of the answer's own type (a number for
  a number, a noun phrase otherwise) and of the closest length;
- sentence: the golden document's whole sentence around the answer instead of the span;
- abstain: where the golden document is absent and the target abstains, an answer anyway (the
  distractor sentence that shares most with the question, which is what a model that must answer copies);
- quote: the chain of thought with its first quote replaced by a distractor sentence the golden document
  does not contain, the answer unchanged.

Ties are broken by a generator seeded per record, so a record's rejected side does not depend on the others.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from koraft.core.formats import QUOTE, completion, quotes
from koraft.core.morphemes import kiwi, sentences
from koraft.data.bm25 import character_bigrams
from koraft.evaluation.metrics import korquad_normalize

# Kiwi tags a span may be made of: nouns, numerals, numbers, foreign words, hanja, and dependent nouns / noun
# suffixes that carry units (원, 명, 년).
SPAN_TAGS = ("NNG", "NNP", "NNB", "NR", "SN", "SL", "SH", "XSN")


@dataclass(frozen=True)
class Skipped:
    reason: str  # why a rule builds no rejected side for this record (counted per source)


def golden_document(record: dict[str, Any]) -> str | None:
    index = record.get("oracle_index")
    return record["documents"][index] if index is not None else None


def distractors(record: dict[str, Any]) -> list[str]:
    return [text for index, text in enumerate(record["documents"]) if index != record.get("oracle_index")]


def record_rng(seed: int, record: dict[str, Any], source: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{record['id']}\0{source}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def answer_kind(text: str) -> tuple[str, str]:
    """("number", the unit after its last digit) or ("text", ""): 120명 is ("number", "명")."""
    digits = [index for index, ch in enumerate(text) if ch.isdigit()]
    return ("number", text[digits[-1] + 1:].strip()) if digits else ("text", "")


def noun_spans(document: str, longest: int = 4) -> list[str]:
    """Every run of up to `longest` adjacent noun, number and foreign-word morphemes, as written in the document
    (안전요원 85명 gives 안전요원, 85, 명, 85명, 안전요원 85명...)."""
    runs, current = [], []
    for token in kiwi().tokenize(document):
        if token.tag in SPAN_TAGS and (not current or document[current[-1][1]:token.start].strip() == ""):
            current.append((token.start, token.start + token.len))
            continue
        runs.append(current)
        current = [(token.start, token.start + token.len)] if token.tag in SPAN_TAGS else []
    runs.append(current)
    return [document[run[first][0]:run[last][1]] for run in runs for first in range(len(run))
            for last in range(first, min(first + longest, len(run)))]


def is_abstain_target(record: dict[str, Any], abstain_answer: str | None) -> bool:
    return abstain_answer is not None and korquad_normalize(record["answer"]) == korquad_normalize(abstain_answer)


def distractor_answer(record: dict[str, Any], seed: int, abstain_answer: str | None = None) -> str | Skipped:
    """The answer swapped for a same-kind span of a distractor document, or the reason there is none."""
    if is_abstain_target(record, abstain_answer):
        return Skipped("the target abstains (source abstain)")
    others = distractors(record)
    if not others:
        return Skipped("no distractor document")
    answer = record["answer"]
    kind, wanted = answer_kind(answer), korquad_normalize(answer)
    spans = {span for text in others for span in noun_spans(text) if korquad_normalize(span) != wanted}
    # the same kind and unit (85명 for 120명); else the same kind (85 for 120명)
    candidates = sorted(s for s in spans if answer_kind(s) == kind) or sorted(
        s for s in spans if answer_kind(s)[0] == kind[0])
    if not candidates:
        return Skipped(f"no {kind[0]} span in the distractors")
    closest = min(abs(len(span) - len(answer)) for span in candidates)
    nearest = [span for span in candidates if abs(len(span) - len(answer)) == closest]
    span = record_rng(seed, record, "distractor").choice(nearest)
    return completion({**record, "answer": span})


def sentence_answer(record: dict[str, Any]) -> str | Skipped:
    """The answer swapped for the golden document's sentence that contains it, or the reason there is none."""
    golden = golden_document(record)
    if golden is None:
        return Skipped("the golden document is absent")
    answer = record["answer"].strip()
    around = next((sentence.strip() for sentence, _ in sentences(golden) if answer in sentence), None)
    if around is None:
        return Skipped("the answer is not inside one sentence of the golden document")
    return completion({**record, "answer": around})


def abstain_answer_anyway(record: dict[str, Any], abstain_answer: str | None) -> str | Skipped:
    """For an abstaining target, the distractor sentence closest to the question given as the answer."""
    if not is_abstain_target(record, abstain_answer):
        return Skipped("the target does not abstain")
    candidates = [sentence.strip() for text in distractors(record) for sentence, _ in sentences(text)]
    if not candidates:
        return Skipped("no distractor sentence")
    # the raft stage's BM25 terms (Hangul character bigrams): what the question and a sentence share
    question, *terms = (set(found) for found in character_bigrams([record["question"], *candidates]))
    best = max(zip(candidates, terms, strict=True), key=lambda pair: (len(question & pair[1]), -len(pair[0])))[0]
    return completion({**record, "answer": best})


def false_quote(record: dict[str, Any], seed: int) -> str | Skipped:
    """The chain of thought with its first quote replaced by a distractor sentence the golden document lacks."""
    cot, golden = record.get("cot"), golden_document(record)
    if not cot or not quotes(cot):
        return Skipped("no quote in a chain of thought")
    if golden is None:
        return Skipped("the golden document is absent")
    candidates = sorted({sentence.strip() for text in distractors(record) for sentence, _ in sentences(text)
                         if sentence.strip() not in golden})
    if not candidates:
        return Skipped("no distractor sentence outside the golden document")
    replacement = record_rng(seed, record, "quote").choice(candidates)
    match = QUOTE.search(cot)
    swapped = f"{cot[:match.start(1)]}{replacement}{cot[match.end(1):]}"
    return completion({**record, "cot": swapped})


def rule_rejects(record: dict[str, Any], source: str, seed: int, abstain_answer: str | None) -> str | Skipped:
    """The rejected completion of one rule-based source, or why this record has none."""
    if source == "distractor":
        return distractor_answer(record, seed, abstain_answer)
    if source == "sentence":
        return sentence_answer(record)
    if source == "abstain":
        return abstain_answer_anyway(record, abstain_answer)
    if source == "quote":
        return false_quote(record, seed)
    raise ValueError(f"not a rule-based source: {source}")
