"""Write the shipped Korean sample into data/raw/, in four of the formats the validate stage reads.

    python scripts/make_sample_data.py

Deterministic: the same seed gives byte-identical files. The sample also carries a few
records that real exports contain (NFD text typed on macOS, stray whitespace and zero-width
spaces, exact duplicates, an empty answer, a missing field, near-duplicate documents), so the
validate stage's cleanup and rejects are visible on the first run.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

from koraft.data.synth import chain_of_thought, synthetic_corpus

OUT = Path("data/raw")
SEED = 20261121
NUM_DOCS = 360  # ~1,080 records: a test split of ~300, so the F1 interval is about +/-0.05
QUESTIONS_PER_DOC = 3


def main() -> None:
    corpus = synthetic_corpus(NUM_DOCS, QUESTIONS_PER_DOC, seed=SEED)
    jsonl, korquad, table, gorilla = [], [], [], []
    for index, (document, qas) in enumerate(corpus):
        kind = index % 10  # 60% JSONL, 20% KorQuAD JSON, 10% CSV, 10% gorilla RAFT output
        for number, qa in enumerate(qas):
            qid = f"sample-{index:03d}-{number}"
            if kind < 6:
                jsonl.append({"id": qid, **qa.as_record()})
            elif kind < 8:
                korquad.append((document.topic, qa.context, qid, qa))
            elif kind == 8:
                table.append((qa.question, qa.context, qa.answer))
            else:
                gorilla.append({
                    "id": qid, "type": "general", "question": qa.question,
                    "context": {"title": [["placeholder_title"]], "sentences": [[qa.context]]},
                    "oracle_context": qa.context,
                    "cot_answer": f"{chain_of_thought(qa.sentence, qa.span)}\n<ANSWER>: {qa.answer}",
                })
    jsonl += _dirty_records(jsonl)
    OUT.mkdir(parents=True, exist_ok=True)
    _write_jsonl(OUT / "sample_qa.jsonl", jsonl)
    _write_jsonl(OUT / "sample_gorilla_raft.jsonl", gorilla)
    _write_korquad(OUT / "sample_korquad.json", korquad)
    with open(OUT / "sample_faq.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["질문", "문서", "답변"])
        writer.writerows(table)
    total = len(jsonl) + len(korquad) + len(table) + len(gorilla)
    print(f"wrote {total} raw records over {NUM_DOCS} documents (+ near-duplicates) to {OUT}/")


def _dirty_records(clean: list[dict]) -> list[dict]:
    """Defects seen in real exports; validate must fix or reject each one, never drop it."""
    dirty = [dict(clean[i]) for i in (3, 10, 25)]  # exact duplicates -> rejected as duplicates
    for row in dirty:
        row["id"] = row["id"] + "-copy"
    nfd = dict(clean[40], id="sample-nfd-1")  # macOS input: decomposed jamo -> kept after NFC
    nfd["question"] = unicodedata.normalize("NFD", nfd["question"]) + " 꼭 알려주세요"
    spaced = dict(clean[41], id="sample-spaces-1")  # stray spaces, a tab, a zero-width space -> kept
    spaced["question"] = "  " + spaced["question"].replace(" ", "\u200b  \t", 1) + "  (간단히)"
    empty = dict(clean[42], id="sample-empty-answer", answer="   ")  # -> rejected: empty_field
    missing = {k: v for k, v in clean[43].items() if k != "context"} | {"id": "sample-no-context"}
    # The same document republished with one line added: grouped with the original (one doc_id).
    republished = []
    for i in (0, 30, 60):
        row = dict(clean[i], id=f"{clean[i]['id']}-republished", cot=None)
        row["context"] = row["context"] + " 이 문서는 2024년에 개정되었다."
        row["question"] = row["question"].replace("?", "? (개정판 기준)")
        republished.append(row)
    return dirty + [nfd, spaced, empty, missing] + republished


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_korquad(path: Path, items: list) -> None:
    paragraphs: dict[str, dict] = {}
    for topic, context, qid, qa in items:
        paragraph = paragraphs.setdefault(context, {"topic": topic, "context": context, "qas": []})
        paragraph["qas"].append({"id": qid, "question": qa.question,
                                 "answers": [{"text": qa.span, "answer_start": context.index(qa.span)}]})
    data = [{"title": p["topic"], "paragraphs": [{"context": p["context"], "qas": p["qas"]}]}
            for p in paragraphs.values()]
    path.write_text(json.dumps({"version": "KorQuAD_v1.0_sample", "data": data}, ensure_ascii=False, indent=1) + "\n",
                    encoding="utf-8")


if __name__ == "__main__":
    main()
