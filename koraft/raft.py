"""The raft stage's logic: validated records -> RAFT records (golden document + distractors).

Each record draws from its own random stream, seeded by (seed, record id), so a record's
documents do not depend on the order of the others. Distractors come only from documents
of the record's own split, so no test document is ever shown in training, even as a distractor.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from koraft.errors import KoraftError
from koraft.neardup import text_hash
from koraft.params import SPLITS
from koraft.split import assign_split


def document_texts(records: list[dict[str, Any]]) -> dict[str, str]:
    """One text per doc_id: the group member with the smallest content hash (order-independent)."""
    best: dict[str, tuple[str, str]] = {}
    for record in records:
        candidate = (text_hash(record["context"]), record["context"])
        current = best.get(record["doc_id"])
        if current is None or candidate < current:
            best[record["doc_id"]] = candidate
    return {doc_id: text for doc_id, (_, text) in best.items()}


def build_raft(
    records: list[dict[str, Any]], raft: dict[str, Any], split: dict[str, Any], seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    texts = document_texts(records)
    split_of = {doc_id: assign_split(doc_id, split["ratios"], split["seed"]) for doc_id in texts}
    docs_by_split = {name: sorted(d for d in texts if split_of[d] == name) for name in SPLITS}
    records_by_split = defaultdict(list)
    for index, record in enumerate(records):
        records_by_split[split_of[record["doc_id"]]].append(index)

    num = raft["num_distractors"]
    needed = num + 1 if raft["p_golden"] == 1 else num + 2  # a record without its golden doc shows num + 1
    for name in SPLITS:
        have = len(docs_by_split[name])
        if records_by_split[name] and have < needed:
            raise KoraftError(
                f"split '{name}' has {have} documents but raft.num_distractors={num} with "
                f"raft.p_golden={raft['p_golden']} needs at least {needed}: lower raft.num_distractors, "
                f"change split.ratios, or add data"
            )

    ranked: dict[int, list[str]] = {}
    if raft["distractor_source"] == "bm25":
        ranked = _bm25_candidates(records, records_by_split, docs_by_split, texts, raft, num + 1)

    rows_by_index: dict[int, dict[str, Any]] = {}
    hard = 0
    for name in SPLITS:
        pool = docs_by_split[name]
        for index in records_by_split[name]:
            record = records[index]
            rng = random.Random(f"{seed}:{record['id']}")
            keep_golden = rng.random() < raft["p_golden"]
            count = num if keep_golden else num + 1
            chosen = ranked.get(index, [])[:count]
            hard += len(chosen)
            chosen += _random_distractors(rng, pool, exclude={record["doc_id"], *chosen}, count=count - len(chosen))
            rows_by_index[index] = _raft_row(record, chosen, texts, keep_golden, raft, rng, name)

    rows = [rows_by_index[index] for index in range(len(records))]  # every record is in exactly one split
    return rows, _metrics(rows, docs_by_split, raft, hard)


def _random_distractors(rng: random.Random, pool: list[str], exclude: set[str], count: int) -> list[str]:
    """Draw until `count` new documents: O(count) per record, where copying "pool minus exclude" is O(pool).

    Terminates because build_raft checked the pool holds at least count + len(exclude) documents.
    """
    picked: list[str] = []
    while len(picked) < count:
        candidate = pool[rng.randrange(len(pool))]
        if candidate not in exclude:
            picked.append(candidate)
            exclude.add(candidate)
    return picked


def _bm25_candidates(
    records: list[dict[str, Any]],
    records_by_split: dict[str, list[int]],
    docs_by_split: dict[str, list[str]],
    texts: dict[str, str],
    raft: dict[str, Any],
    k: int,
) -> dict[int, list[str]]:
    """Per record, the split's documents that best match its question under BM25, golden excluded."""
    from koraft.morphemes import MorphemeTokenizer
    from koraft.retrieval import BM25Index

    tokenize = MorphemeTokenizer()
    ranked: dict[int, list[str]] = {}
    for name in SPLITS:
        pool, indices = docs_by_split[name], records_by_split[name]
        if not indices:
            continue
        index = BM25Index(tokenize([texts[d] for d in pool]), raft["bm25"]["k1"], raft["bm25"]["b"])
        position = {doc_id: i for i, doc_id in enumerate(pool)}
        questions = tokenize([records[i]["question"] for i in indices])
        exclude = [position[records[i]["doc_id"]] for i in indices]
        for record_index, hits in zip(indices, index.rank(questions, exclude, k), strict=True):
            ranked[record_index] = [pool[hit] for hit in hits]
    return ranked


def _raft_row(
    record: dict[str, Any],
    distractors: list[str],
    texts: dict[str, str],
    keep_golden: bool,
    raft: dict[str, Any],
    rng: random.Random,
    split_name: str,
) -> dict[str, Any]:
    documents = [(doc_id, texts[doc_id]) for doc_id in distractors]
    if keep_golden:
        documents.append((record["doc_id"], record["context"]))
    rng.shuffle(documents)
    abstain = not keep_golden and raft["omitted_golden_target"] == "abstain"
    cot = None if abstain else record.get("cot")  # its quotes come from the document left out
    return {
        "id": record["id"],
        "doc_id": record["doc_id"],
        "instruction": raft["cot_instruction"] if cot else raft["instruction"],
        "question": record["question"],
        "documents": [text for _, text in documents],
        "oracle_index": [d for d, _ in documents].index(record["doc_id"]) if keep_golden else None,
        "oracle_included": keep_golden,
        "distractor_doc_ids": list(distractors),
        "answer": raft["abstain_answer"] if abstain else record["answer"],
        "cot": cot,
        "split": split_name,
    }


def _metrics(rows: list[dict[str, Any]], docs_by_split: dict[str, list[str]], raft: dict, hard: int) -> dict:
    per_split = Counter(row["split"] for row in rows)
    with_golden = Counter(row["split"] for row in rows if row["oracle_included"])
    distractors = sum(len(row["distractor_doc_ids"]) for row in rows)
    omitted = len(rows) - sum(with_golden.values())
    return {
        "records": len(rows),
        "distractor_source": raft["distractor_source"],
        "golden_included_share": round(sum(with_golden.values()) / max(len(rows), 1), 4),
        "abstain_targets": omitted if raft["omitted_golden_target"] == "abstain" else 0,
        "with_cot": sum(1 for row in rows if row["cot"]),
        "distractors": distractors,
        "bm25_hard_negative_share": round(hard / max(distractors, 1), 4),
        "splits": {
            name: {
                "records": per_split[name],
                "documents": len(docs_by_split[name]),
                "golden_included": with_golden[name],
            }
            for name in SPLITS
        },
    }
