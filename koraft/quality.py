"""The split stage's checks and statistics: split membership, leakage, lengths, coverage."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np

from koraft.errors import KoraftError
from koraft.neardup import text_hash
from koraft.params import SPLITS
from koraft.prompts import completion, user_message
from koraft.split import assign_split


def split_rows(rows: list[dict[str, Any]], split: dict[str, Any], path: str) -> dict[str, list[dict[str, Any]]]:
    """Group RAFT rows by split, checking each against the doc_id hash bucket of the current params."""
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for number, row in enumerate(rows, start=1):
        expected = assign_split(row["doc_id"], split["ratios"], split["seed"])
        if row.get("split") != expected:
            raise KoraftError(
                f"{path}:{number}: record {row['id']} is in split {row.get('split')!r} but split params put "
                f"its document in {expected!r}; rerun the raft stage (dvc repro)"
            )
        by_split[expected].append(row)
    return by_split


def leakage(by_split: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Documents seen in more than one split, counted per kind; all must be 0."""
    golden = {name: {row["doc_id"] for row in rows} for name, rows in by_split.items()}
    distractor = {
        name: {doc for row in rows for doc in row["distractor_doc_ids"]} for name, rows in by_split.items()
    }
    texts = {name: {text_hash(t) for row in rows for t in row["documents"]} for name, rows in by_split.items()}
    golden_shared, distractor_shared, text_shared = set(), set(), set()
    for a, b in permutations(SPLITS, 2):
        golden_shared |= golden[a] & golden[b]
        distractor_shared |= distractor[a] & (golden[b] | distractor[b])
        text_shared |= texts[a] & texts[b]
    return {
        "golden_docs_shared": len(golden_shared),
        "distractor_docs_shared": len(distractor_shared),
        "document_texts_shared": len(text_shared),
    }


def length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p95": 0.0, "max": 0}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 2), "p95": round(float(np.percentile(array, 95)), 2),
            "max": int(array.max())}


def quality_report(by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    report: dict[str, Any] = {"records": {}, "documents": {}, "golden_included_share": {}, "with_cot": {},
                              "answer_in_golden_share": {}}
    lengths: dict[str, Any] = {"unit": "characters"}
    for name, rows in by_split.items():
        count = max(len(rows), 1)
        report["records"][name] = len(rows)
        report["documents"][name] = len({row["doc_id"] for row in rows})
        report["golden_included_share"][name] = round(sum(r["oracle_included"] for r in rows) / count, 4)
        report["with_cot"][name] = sum(1 for row in rows if row["cot"])
        with_golden = [row for row in rows if row["oracle_included"]]
        found = sum(row["answer"] in row["documents"][row["oracle_index"]] for row in with_golden)
        report["answer_in_golden_share"][name] = round(found / max(len(with_golden), 1), 4)
        lengths[name] = {
            "prompt": length_stats([len(user_message(row)) for row in rows]),
            "completion": length_stats([len(completion(row)) for row in rows]),
        }
    report["lengths"] = lengths
    report["leakage"] = leakage(by_split)
    return report

