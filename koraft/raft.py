"""The raft stage's logic: validated records -> RAFT records (golden document + distractors).

Each record draws from its own random stream, seeded by (seed, record id), so a record's
documents do not depend on the order of the others. Distractors come only from documents
of the record's own split, so no test document is ever shown in training, even as a distractor.
"""

from __future__ import annotations

import json
import mmap
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from koraft.errors import KoraftError
from koraft.jsonl import jsonl_line, read_jsonl, write_jsonl
from koraft.neardup import text_hash
from koraft.params import SPLITS
from koraft.split import assign_split

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


def document_store(records_path: str | Path, scratch: Path) -> tuple[DocumentStore, Counter]:
    """One text per doc_id: the group member with the smallest content hash (order-independent);
    and the number of records of each doc_id."""
    best: dict[str, tuple[str, int]] = {}  # doc_id -> (content hash, offset of a record holding that text)
    records_per_doc: Counter = Counter()
    with open(records_path, "rb") as handle:
        offset = 0
        for raw in handle:
            if raw.strip():
                record = json.loads(raw)
                records_per_doc[record["doc_id"]] += 1
                candidate = (text_hash(record["context"]), offset)
                current = best.get(record["doc_id"])
                if current is None or candidate[0] < current[0]:
                    best[record["doc_id"]] = candidate
            offset += len(raw)
        store = DocumentStore(scratch)
        for doc_id, (_, where) in sorted(best.items(), key=lambda item: item[1][1]):
            handle.seek(where)
            store.add(doc_id, json.loads(handle.readline())["context"])
    return store, records_per_doc


def write_raft(records_path: str | Path, raft_path: str | Path, raft: dict[str, Any], split: dict[str, Any],
               seed: int) -> dict[str, Any]:
    """Stream validated records to RAFT rows (same order); returns the metrics.

    Memory holds the doc ids, the BM25 index's term counts and one chunk of records; document
    texts stay in a scratch file next to raft_path.
    """
    raft_path = Path(raft_path)
    raft_path.parent.mkdir(parents=True, exist_ok=True)
    texts, records_per_doc = document_store(records_path, raft_path.with_name(raft_path.name + ".documents"))
    try:
        split_of = {doc_id: assign_split(doc_id, split["ratios"], split["seed"]) for doc_id in texts}
        docs_by_split = {name: sorted(d for d in texts if split_of[d] == name) for name in SPLITS}
        records_per_split = Counter()
        for doc_id, count in records_per_doc.items():
            records_per_split[split_of[doc_id]] += count
        num = raft["num_distractors"]
        needed = num + 1 if raft["p_golden"] == 1 else num + 2  # a record without its golden doc shows num + 1
        for name in SPLITS:
            have = len(docs_by_split[name])
            if records_per_split[name] and have < needed:
                raise KoraftError(
                    f"split '{name}' has {have} documents but raft.num_distractors={num} with "
                    f"raft.p_golden={raft['p_golden']} needs at least {needed}: lower raft.num_distractors, "
                    f"change split.ratios, or add data"
                )
        ranker = _BM25Ranker(texts, docs_by_split, raft) if raft["distractor_source"] == "bm25" else None
        counts = Counter()
        with open(raft_path, "w", encoding="utf-8", newline="\n") as out:
            for chunk in _chunks(read_jsonl(records_path), RANK_CHUNK):
                names = [split_of[record["doc_id"]] for record in chunk]
                ranked = ranker.rank(chunk, names, num + 1) if ranker else [[] for _ in chunk]
                for record, name, hits in zip(chunk, names, ranked, strict=True):
                    rng = random.Random(f"{seed}:{record['id']}")
                    keep_golden = rng.random() < raft["p_golden"]
                    count = num if keep_golden else num + 1
                    chosen = hits[:count]
                    counts["hard"] += len(chosen)
                    chosen += _random_distractors(rng, docs_by_split[name], exclude={record["doc_id"], *chosen},
                                                  count=count - len(chosen))
                    row = _raft_row(record, chosen, texts, keep_golden, raft, rng, name)
                    out.write(jsonl_line(row))
                    _count(counts, row)
    finally:
        texts.close()
    pools = {name: index.pools for name, index in ranker.indexes.items()} if ranker else {}
    return _metrics(counts, docs_by_split, pools, raft)


def build_raft(
    records: list[dict[str, Any]], raft: dict[str, Any], split: dict[str, Any], seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """write_raft on records in memory (small inputs, tests)."""
    with tempfile.TemporaryDirectory(prefix="koraft-raft-") as scratch:
        records_path, raft_path = Path(scratch) / "records.jsonl", Path(scratch) / "raft.jsonl"
        write_jsonl(records_path, records)
        metrics = write_raft(records_path, raft_path, raft, split, seed)
        return list(read_jsonl(raft_path)), metrics


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
    """Per split, a BM25 index of the split's documents; ranks a chunk of records' questions against it
    (each within its golden document's pool of at most raft.bm25.pool documents)."""

    def __init__(self, texts: DocumentStore, docs_by_split: dict[str, list[str]], raft: dict[str, Any]) -> None:
        from koraft.morphemes import MorphemeTokenizer
        from koraft.retrieval import BM25Index

        self.tokenize = MorphemeTokenizer()
        self.doc_ids = docs_by_split
        self.position = {doc_id: i for pool in docs_by_split.values() for i, doc_id in enumerate(pool)}
        self.indexes = {}
        for name, pool in docs_by_split.items():
            tokens = (tokens for chunk in _chunks((texts[d] for d in pool), RANK_CHUNK)
                      for tokens in self.tokenize(chunk))
            self.indexes[name] = BM25Index(tokens, raft["bm25"]["k1"], raft["bm25"]["b"], raft["bm25"]["pool"])

    def rank(self, records: list[dict[str, Any]], names: list[str], k: int) -> list[list[str]]:
        """For each record, the documents of its split best matching its question, golden excluded."""
        questions = self.tokenize([record["question"] for record in records])
        ranked: list[list[str]] = [[] for _ in records]
        for name in SPLITS:
            members = [i for i, split_name in enumerate(names) if split_name == name]
            if not members:
                continue
            golden = [self.position[records[i]["doc_id"]] for i in members]
            hits = self.indexes[name].rank([questions[i] for i in members], golden, k)
            for i, found in zip(members, hits, strict=True):
                ranked[i] = [self.doc_ids[name][hit] for hit in found]
        return ranked


def _raft_row(
    record: dict[str, Any],
    distractors: list[str],
    texts: DocumentStore,
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


def _count(counts: Counter, row: dict[str, Any]) -> None:
    counts[("records", row["split"])] += 1
    counts[("golden", row["split"])] += row["oracle_included"]
    counts["with_cot"] += bool(row["cot"])
    counts["distractors"] += len(row["distractor_doc_ids"])


def _metrics(counts: Counter, docs_by_split: dict[str, list[str]], pools: dict[str, int], raft: dict) -> dict:
    """`pools`: per split, how many BM25 pools its documents were dealt into (empty for random)."""
    records = sum(counts[("records", name)] for name in SPLITS)
    with_golden = sum(counts[("golden", name)] for name in SPLITS)
    omitted = records - with_golden
    return {
        "records": records,
        "distractor_source": raft["distractor_source"],
        "golden_included_share": round(with_golden / max(records, 1), 4),
        "abstain_targets": omitted if raft["omitted_golden_target"] == "abstain" else 0,
        "with_cot": counts["with_cot"],
        "distractors": counts["distractors"],
        "bm25_hard_negative_share": round(counts["hard"] / max(counts["distractors"], 1), 4),
        "splits": {
            name: {
                "records": counts[("records", name)],
                "documents": len(docs_by_split[name]),
                "bm25_pools": pools.get(name, 0),
                "golden_included": counts[("golden", name)],
            }
            for name in SPLITS
        },
    }
