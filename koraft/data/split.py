"""The split stage's logic: validated records -> one file per split, by document.

A document's split is a hash bucket of its `doc_id`, so it is known before any stage runs and
adding data never moves an existing document: its bucket depends only on its own id, the salt
and the ratios.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from koraft.core.errors import KoraftError
from koraft.core.jsonl import jsonl_line, read_jsonl
from koraft.core.measure import length_stats
from koraft.data.neardup import text_hash
from koraft.data.outputs import written_whole

if TYPE_CHECKING:  # koraft.data.config imports SPLITS from here
    from koraft.data.config import SplitSettings

SPLITS = ("train", "val", "test")


def assign_split(doc_id: str, ratios: dict[str, float], salt: int) -> str:
    digest = hashlib.sha256(f"{salt}:{doc_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += ratios[name]
        if bucket < edge:
            return name
    return [name for name in SPLITS if ratios[name] > 0][-1]  # float rounding at the top edge


def write_splits(records_path: str | Path, outputs: dict[str, Path], split: SplitSettings) -> dict[str, Any]:
    """Stream validated records into one file per split (same order); returns metrics/split.json.

    Every record of a document lands in the document's split, so no golden document is in two
    splits; the report also checks that no document text (near-duplicates merged by validate into
    one doc_id) appears in two splits. The files appear together, once every record is written.
    """
    with written_whole(*outputs.values()) as temporary:
        return _write_splits(records_path, dict(zip(outputs, temporary, strict=True)), split)


def _write_splits(records_path: str | Path, outputs: dict[str, Path], split: dict[str, Any]) -> dict[str, Any]:
    counts: Counter = Counter()
    documents: dict[str, set[str]] = {name: set() for name in SPLITS}
    texts: dict[str, set[str]] = {name: set() for name in SPLITS}
    lengths = {name: {field: array("q") for field in ("question", "context", "answer")} for name in SPLITS}
    handles = {name: open(outputs[name], "w", encoding="utf-8", newline="\n") for name in SPLITS}
    try:
        for record in read_jsonl(records_path):
            name = assign_split(record["doc_id"], split.ratios, split.salt)
            handles[name].write(jsonl_line(record))
            counts[name] += 1
            counts[("with_cot", name)] += record.get("cot") is not None
            documents[name].add(record["doc_id"])
            texts[name].add(text_hash(record["context"]))
            for field, values in lengths[name].items():
                values.append(len(record[field]))
    finally:
        for handle in handles.values():
            handle.close()
    if not sum(counts[name] for name in SPLITS):
        raise KoraftError(f"{records_path}: no records to split (did validate keep any?)")
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]]
    return {
        "records": {name: counts[name] for name in SPLITS},
        "documents": {name: len(documents[name]) for name in SPLITS},
        "with_cot": {name: counts[("with_cot", name)] for name in SPLITS},
        "lengths": {"unit": "characters", **{
            name: {field: length_stats(values) for field, values in lengths[name].items()} for name in SPLITS}},
        "leakage": {"golden_docs_shared": sum(len(documents[a] & documents[b]) for a, b in pairs),
                    "document_texts_shared": sum(len(texts[a] & texts[b]) for a, b in pairs)},
    }

