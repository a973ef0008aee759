"""The raft stage's logic: one split's validated records -> RAFT rows (golden document + distractors).

Each record draws from its own random stream, seeded by (seed, record id), so a record's
documents do not depend on the order of the others. The stage runs once per split file that the
split stage wrote, so distractors come only from the record's own split by construction: no test
document is ever shown in training, even as a distractor.
"""

from __future__ import annotations

import json
import mmap
import random
from collections import Counter
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.jsonl import jsonl_line, read_jsonl
from koraft.data.bm25 import BM25Index, term_tokenizer
from koraft.data.config import RaftSettings
from koraft.data.neardup import text_hash
from koraft.data.quality import QualityReport

RANK_CHUNK = 2048  # records whose questions are analysed and ranked together


class DocumentStore:
    """Document texts in a scratch file, one per doc_id; memory holds their byte offsets only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "w+b")
        self._spans: dict[str, tuple[int, int]] = {}
        self._map: mmap.mmap | None = None

    def add(self, doc_id: str, text: str) -> None:
        data = text.encode("utf-8", errors="surrogateescape")
        self._spans[doc_id] = (self._file.tell(), len(data))
        self._file.write(data)

    def __getitem__(self, doc_id: str) -> str:
        if self._map is None:
            self._file.flush()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self._file.tell() else b""
        start, length = self._spans[doc_id]
        return self._map[start : start + length].decode("utf-8", errors="surrogateescape")

    def __iter__(self):
        return iter(self._spans)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()
        self.path.unlink(missing_ok=True)


def document_store(records_path: str | Path, scratch: Path) -> DocumentStore:
    """One text per doc_id: the group member with the smallest content hash (order-independent)."""
    best: dict[str, tuple[str, int]] = {}  # doc_id -> (content hash, offset of a record holding that text)
    with open(records_path, "rb") as handle:
        offset = 0
        for raw in handle:
            if raw.strip():
                record = json.loads(raw)
                candidate = (text_hash(record["context"]), offset)
                current = best.get(record["doc_id"])
                if current is None or candidate[0] < current[0]:
                    best[record["doc_id"]] = candidate
            offset += len(raw)
        store = DocumentStore(scratch)
        for doc_id, (_, where) in sorted(best.items(), key=lambda item: item[1][1]):
            handle.seek(where)
            store.add(doc_id, json.loads(handle.readline())["context"])
    return store


def write_raft(records_path: str | Path, raft_path: str | Path, raft: RaftSettings, split_name: str,
               quality: QualityReport) -> dict[str, Any]:
    """Stream one split's validated records to its RAFT rows (same order); returns the split's counts.

    Distractors come only from the documents of `records_path`, which the split stage wrote for one
    split, so they never cross splits. Memory holds the doc ids, the BM25 index's term counts and
    one chunk of records; document texts stay in a scratch file next to raft_path.
    """
    raft_path = Path(raft_path)
    raft_path.parent.mkdir(parents=True, exist_ok=True)
    texts = document_store(records_path, raft_path.with_name(raft_path.name + ".documents"))
    try:
        doc_ids = sorted(texts)
        num = raft.num_distractors
        needed = num + 1 if raft.p_golden == 1 else num + 2  # a record without its golden doc shows num + 1
        if doc_ids and len(doc_ids) < needed:  # an empty split needs none
            raise KoraftError(
                f"{records_path}: split '{split_name}' has {len(doc_ids)} documents but raft.num_distractors={num} "
                f"with raft.p_golden={raft.p_golden} needs at least {needed}: lower raft.num_distractors, "
                f"change split.ratios, or add data"
            )
        ranker = _BM25Ranker(texts, doc_ids, raft) if raft.distractor_source == "bm25" and doc_ids else None
        counts = Counter()
        with open(raft_path, "w", encoding="utf-8", newline="\n") as out:
            for chunk in _chunks(read_jsonl(records_path), RANK_CHUNK):
                ranked = ranker.rank(chunk, num + 1) if ranker else [[] for _ in chunk]
                for record, hits in zip(chunk, ranked, strict=True):
                    rng = random.Random(f"{raft.seed}:{record['id']}")
                    keep_golden = rng.random() < raft.p_golden
                    count = num if keep_golden else num + 1
                    chosen = hits[:count]
                    counts["hard"] += len(chosen)
                    chosen += _random_distractors(rng, doc_ids, exclude={record["doc_id"], *chosen},
                                                  count=count - len(chosen))
                    row = _raft_row(record, chosen, texts, keep_golden, raft, rng, split_name)
                    out.write(jsonl_line(row))
                    _count(counts, row)
                    quality.add(row, split_name)
    finally:
        texts.close()
    return {"records": counts["records"], "documents": len(doc_ids), "bm25_pools": ranker.index.pools if ranker else 0,
            "golden_included": counts["golden"], "with_cot": counts["with_cot"], "distractors": counts["distractors"],
            "hard": counts["hard"]}


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _random_distractors(rng: random.Random, split_docs: list[str], exclude: set[str], count: int) -> list[str]:
    """Draw until `count` new documents: O(count) per record, where copying "split minus exclude" is O(split).

    Terminates because write_raft checked the split holds at least count + len(exclude) documents.
    """
    picked: list[str] = []
    while len(picked) < count:
        candidate = split_docs[rng.randrange(len(split_docs))]
        if candidate not in exclude:
            picked.append(candidate)
            exclude.add(candidate)
    return picked


class _BM25Ranker:
    """A BM25 index of one split's documents; ranks a chunk of records' questions against it
    (each within its golden document's pool of at most raft.bm25.pool documents)."""

    def __init__(self, texts: DocumentStore, doc_ids: list[str], raft: RaftSettings) -> None:
        self.tokenize = term_tokenizer(raft.bm25.terms)
        self.doc_ids = doc_ids
        self.position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        chunks = _chunks((texts[d] for d in doc_ids), RANK_CHUNK)
        tokens = (tokens for chunk in chunks for tokens in self.tokenize(chunk))
        self.index = BM25Index(tokens, raft.bm25.k1, raft.bm25.b, raft.bm25.pool)

    def rank(self, records: list[dict[str, Any]], k: int) -> list[list[str]]:
        """For each record, the documents of the split best matching its question, golden excluded."""
        questions = self.tokenize([record["question"] for record in records])
        golden = [self.position[record["doc_id"]] for record in records]
        return [[self.doc_ids[hit] for hit in found] for found in self.index.rank(questions, golden, k)]


def _raft_row(
    record: dict[str, Any],
    distractors: list[str],
    texts: DocumentStore,
    keep_golden: bool,
    raft: RaftSettings,
    rng: random.Random,
    split_name: str,
) -> dict[str, Any]:
    documents = [(doc_id, texts[doc_id]) for doc_id in distractors]
    if keep_golden:
        documents.append((record["doc_id"], record["context"]))
    rng.shuffle(documents)
    abstain = not keep_golden and raft.omitted_golden_target == "abstain"
    cot = None if abstain else record.get("cot")  # its quotes come from the document left out
    return {
        "id": record["id"],
        "doc_id": record["doc_id"],
        "instruction": raft.cot_instruction if cot else raft.instruction,
        "question": record["question"],
        "documents": [text for _, text in documents],
        "oracle_index": [d for d, _ in documents].index(record["doc_id"]) if keep_golden else None,
        "oracle_included": keep_golden,
        "distractor_doc_ids": list(distractors),
        "answer": raft.abstain_answer if abstain else record["answer"],
        "cot": cot,
        "split": split_name,
    }


def _count(counts: Counter, row: dict[str, Any]) -> None:
    counts["records"] += 1
    counts["golden"] += row["oracle_included"]
    counts["with_cot"] += bool(row["cot"])
    counts["distractors"] += len(row["distractor_doc_ids"])


def raft_metrics(splits: dict[str, dict[str, Any]], quality: QualityReport, raft: RaftSettings) -> dict[str, Any]:
    """metrics/raft.json from each split's counts (write_raft) and the rows' quality report."""
    total = {key: sum(split[key] for split in splits.values())
             for key in ("records", "golden_included", "with_cot", "distractors", "hard")}
    omitted = total["records"] - total["golden_included"]
    return {
        "records": total["records"],
        "distractor_source": raft.distractor_source,
        "golden_included_share": round(total["golden_included"] / max(total["records"], 1), 4),
        "abstain_targets": omitted if raft.omitted_golden_target == "abstain" else 0,
        "with_cot": total["with_cot"],
        "distractors": total["distractors"],
        "bm25_hard_negative_share": round(total["hard"] / max(total["distractors"], 1), 4),
        "splits": {name: {key: split[key] for key in ("records", "documents", "bm25_pools", "golden_included")}
                   for name, split in splits.items()},
        "quality": quality.report(),
    }
