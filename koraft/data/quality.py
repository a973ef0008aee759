"""The raft stage's checks and statistics of its rows: leakage between splits, lengths, coverage."""

from __future__ import annotations

from array import array
from collections import Counter
from itertools import permutations
from typing import Any

from koraft.core.formats import completion, user_message
from koraft.core.measure import length_stats
from koraft.data.neardup import text_hash
from koraft.data.split import SPLITS


class QualityReport:
    """The raft rows' statistics, fed one row at a time: memory holds ids, hashes and lengths, not rows."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.documents: dict[str, set[str]] = {name: set() for name in SPLITS}  # golden doc ids
        self.distractors: dict[str, set[str]] = {name: set() for name in SPLITS}
        self.texts: dict[str, set[str]] = {name: set() for name in SPLITS}  # hashes of every document shown
        self.lengths = {name: {"prompt": array("q"), "completion": array("q")} for name in SPLITS}

    def add(self, row: dict[str, Any], name: str) -> None:
        self.counts[("records", name)] += 1
        self.counts[("with_cot", name)] += bool(row["cot"])
        if row["oracle_included"]:
            self.counts[("golden", name)] += 1
            self.counts[("answer_found", name)] += row["answer"] in row["documents"][row["oracle_index"]]
        self.documents[name].add(row["doc_id"])
        self.distractors[name].update(row["distractor_doc_ids"])
        self.texts[name].update(text_hash(text) for text in row["documents"])
        self.lengths[name]["prompt"].append(len(user_message(row)))
        self.lengths[name]["completion"].append(len(completion(row)))

    def leakage(self) -> dict[str, int]:
        """Documents seen in more than one split, counted per kind; all must be 0."""
        golden_shared, distractor_shared, text_shared = set(), set(), set()
        for a, b in permutations(SPLITS, 2):
            golden_shared |= self.documents[a] & self.documents[b]
            distractor_shared |= self.distractors[a] & (self.documents[b] | self.distractors[b])
            text_shared |= self.texts[a] & self.texts[b]
        return {
            "golden_docs_shared": len(golden_shared),
            "distractor_docs_shared": len(distractor_shared),
            "document_texts_shared": len(text_shared),
        }

    def report(self) -> dict[str, Any]:
        count = self.counts
        report: dict[str, Any] = {
            "records": {name: count[("records", name)] for name in SPLITS},
            "documents": {name: len(self.documents[name]) for name in SPLITS},
            "golden_included_share": {name: round(count[("golden", name)] / max(count[("records", name)], 1), 4)
                                      for name in SPLITS},
            "with_cot": {name: count[("with_cot", name)] for name in SPLITS},
            "answer_in_golden_share": {name: round(count[("answer_found", name)] / max(count[("golden", name)], 1), 4)
                                       for name in SPLITS},
        }
        report["lengths"] = {"unit": "characters", **{
            name: {kind: length_stats(values) for kind, values in self.lengths[name].items()} for name in SPLITS}}
        report["leakage"] = self.leakage()
        return report
