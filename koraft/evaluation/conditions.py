"""RAFT's test protocol: the same questions answered with retrieved documents, and with none.

The oracle condition is the raft stage's test rows (the golden document among distractors, 80% of the
time): the headline metrics. The RAFT paper tests the way a model is deployed instead, so evaluate also
builds, from the test split's records (data/split/test.jsonl):
- `retrieved_k<k>`: the question with the top-k documents a retriever returns from the test split's
  documents only (koraft.evaluation.retrieval), best first. The prompt budget drops the lowest-ranked
  documents first and trims the top one last, the way the oracle's budget treats distractors and the
  golden document, but by rank: the golden document's place is never used to build a prompt.
- `closed_book`: the question alone, under eval.conditions.closed_book_instruction: what the model
  answers from memory.
Every condition answers the same seeded sample of test questions (eval.conditions.questions), and the
oracle is rescored on that sample, so a row of the table compares like with like.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from koraft.evaluation.retrieval import Corpus, RetrievalSettings, retrieval_scores, retrieve, split_corpus

ORACLE, CLOSED_BOOK = "oracle", "closed_book"


def retrieved_name(k: int) -> str:
    return f"retrieved_k{k}"


@dataclass(frozen=True)
class ConditionSettings:
    variants: tuple[str, ...]  # the in-process variants that answer every condition
    retrieved: bool
    closed_book: bool
    questions: int | None  # the sample's size; None: every test question
    closed_book_instruction: str
    retrieval: RetrievalSettings | None  # None without the retrieved condition
    instruction: str  # raft.instruction and raft.cot_instruction: the prompts the model was trained on
    cot_instruction: str
    abstain_answer: str | None  # raft.abstain_answer where raft.omitted_golden_target is abstain


@dataclass
class ConditionRows:
    """Each generated condition's rows (golden_retrieved_at: the golden document's place among the
    documents retrieved, or None), and the retrieval metrics per k."""

    rows: dict[str, list[dict[str, Any]]]
    retrieval: dict[str, Any]


def sample_questions(records: list[dict[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of the test split's records, in file order; all of them when size is None or larger."""
    if size is None or size >= len(records):
        return list(records)
    chosen = sorted(random.Random(f"{seed}:conditions").sample(range(len(records)), size))
    return [records[i] for i in chosen]


def build_conditions(split_records: list[dict[str, Any]], questions: list[dict[str, Any]],
                     settings: ConditionSettings, requests: dict[str, Any]) -> ConditionRows:
    """The rows each condition's variants answer; documents come from `split_records` only."""
    result = ConditionRows(rows={}, retrieval={})
    if settings.retrieved:
        corpus = split_corpus(split_records)
        ranked = retrieve(corpus, [record["question"] for record in questions], max(settings.retrieval.k),
                          settings.retrieval, requests)
        position = {doc_id: i for i, doc_id in enumerate(corpus.doc_ids)}
        golden = [position[record["doc_id"]] for record in questions]
        result.retrieval = {"retriever": settings.retrieval.retriever, "documents": len(corpus.doc_ids),
                            "questions": len(questions)}
        for k in settings.retrieval.k:
            result.retrieval[f"k{k}"] = retrieval_scores(ranked, golden, k)
            result.rows[retrieved_name(k)] = [retrieved_row(record, hits[:k], corpus, settings)
                                              for record, hits in zip(questions, ranked, strict=True)]
    if settings.closed_book:
        result.rows[CLOSED_BOOK] = [closed_book_row(record, settings) for record in questions]
    return result


def retrieved_row(record: dict[str, Any], hits: list[int], corpus: Corpus, settings: ConditionSettings
                  ) -> dict[str, Any]:
    """The record with its retrieved documents, best first, as the model was trained to read them.

    oracle_index marks the top-ranked document, the one the prompt budget trims instead of dropping:
    the retriever's choice, not the golden document's place.
    """
    documents = [corpus.texts[hit] for hit in hits]
    doc_ids = [corpus.doc_ids[hit] for hit in hits]
    golden = doc_ids.index(record["doc_id"]) if record["doc_id"] in doc_ids else None
    return {"id": record["id"], "doc_id": record["doc_id"],
            "instruction": settings.cot_instruction if record.get("cot") else settings.instruction,
            "question": record["question"], "documents": documents, "oracle_index": 0 if documents else None,
            "golden_retrieved_at": golden, "answer": record["answer"], "cot": record.get("cot")}


def closed_book_row(record: dict[str, Any], settings: ConditionSettings) -> dict[str, Any]:
    """The question alone; the answer without a chain of thought, which would have nothing to quote."""
    return {"id": record["id"], "doc_id": record["doc_id"], "instruction": settings.closed_book_instruction,
            "question": record["question"], "documents": [], "oracle_index": None, "golden_retrieved_at": None,
            "answer": record["answer"], "cot": None}
