"""The generate stage's logic: documents -> chunks -> questions -> chains of thought -> RAFT records.

Two rounds of teacher calls, like RAFT's own generator: one per chunk for `questions_per_chunk`
questions, then one per surviving question for a chain of thought that quotes the chunk and ends
in `<ANSWER>: ...`. Questions are judged before any answer is paid for. Every requested item (each
chunk has questions_per_chunk of them) is either written as a record or written to the rejects
file with its reason, and the counts add up; a file that cannot be read is a reject of its own.
Replies come from the call cache when they can (koraft.inference.call_cache).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from koraft.core.errors import ParamError
from koraft.core.jsonl import jsonl_line
from koraft.data.neardup import DocumentGrouper
from koraft.data.outputs import written_whole
from koraft.generation.chunking import Chunk, chunk_document
from koraft.generation.config import GenerateSettings
from koraft.generation.documents import DocumentReject, find_documents, read_document
from koraft.generation.replies import judge_answer, parse_questions, question_problem
from koraft.generation.teachers import Call, ask_teacher, teacher_identity
from koraft.inference.call_cache import CallCache, Reply, call_key

_OUTPUT_PREVIEW = 300  # characters of a rejected reply kept in the rejects file


def generate_to_files(settings: GenerateSettings, records_path: Path, rejects_path: Path, calls_path: Path
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the records and rejects (whole or not at all); returns (metrics, this run's cost figures)."""
    started = time.perf_counter()
    cache = CallCache(calls_path)
    try:
        with written_whole(records_path, rejects_path) as (records_tmp, rejects_tmp), \
                records_tmp.open("w", encoding="utf-8", newline="\n") as records, \
                rejects_tmp.open("w", encoding="utf-8", newline="\n") as rejects:
            run = _Run(settings, cache, records, rejects)
            metrics = run.metrics() if not settings.inputs else run.all()
    finally:
        cache.close()
    seconds = round(time.perf_counter() - started, 2) if settings.inputs else 0.0  # nothing to do: a fixed file
    cost = {"seconds": seconds, "teacher_calls_made": run.calls_made,
            "cache_hits": run.cache_hits, "cache_torn_lines": cache.torn_lines}
    for warning in run.warnings:
        print(f"generate: warning: {warning}")
    return metrics, cost


class _Run:
    def __init__(self, settings: GenerateSettings, cache: CallCache, records, rejects) -> None:
        self.settings, self.cache, self.records, self.rejects = settings, cache, records, rejects
        self.filters, self.prompts = settings.filters, settings.prompts
        self.reasons: Counter = Counter()
        self.file_reasons: Counter = Counter()
        self.formats: Counter = Counter()
        self.unconverted: Counter = Counter()  # .hwp parts python-hwpx could not convert, by kind
        self.warnings: list[str] = []
        self.files = {"found": 0, "read": 0, "hidden_skipped": 0}
        self.chunks: list[Chunk] = []
        self.kept = 0
        self.tokens = Counter()
        self.calls_made = self.cache_hits = 0
        self._identity: dict[str, Any] | None = None

    def all(self) -> dict[str, Any]:
        self.read_and_chunk()
        questions = self.ask_questions()
        self.answer(questions)
        return self.metrics()

    def read_and_chunk(self) -> None:
        files, hidden = find_documents(self.settings.inputs)
        self.files["found"], self.files["hidden_skipped"] = len(files), len(hidden)
        chunking = self.settings.chunking
        measure = _measure(chunking, self.settings.teacher)
        for path in files:
            document = read_document(path)
            if isinstance(document, DocumentReject):
                self.file_reasons[document.reason] += 1
                self.reject({"source": document.path, "step": "document", "reason": document.reason,
                             "detail": document.detail})
                continue
            self.files["read"] += 1
            self.formats[document.format] += 1
            if document.unconverted:
                self.unconverted.update(document.unconverted)
                parts = ", ".join(f"{kind} x{count}" for kind, count in document.unconverted.items())
                self.warnings.append(f"{document.path}: python-hwpx did not convert {parts}; its text is read "
                                     f"without them")
            self.chunks += chunk_document(document, chunking["size"], chunking["overlap"], measure)

    def ask_questions(self) -> list[tuple[Chunk, int, str]]:
        """(chunk, slot, question) for every question that passed its checks, in chunk order."""
        count = self.settings.questions_per_chunk
        calls = [self.call(_fill(self.prompts["questions"], chunk=chunk.text, count=str(count)))
                 for chunk in self.chunks]
        replies = self.replies(calls)
        candidates = []
        for chunk, (key, _) in zip(self.chunks, calls, strict=True):
            reply = replies[key]
            found = [] if reply.refused else parse_questions(reply.text, count)
            for slot in range(count):
                item = {"source": chunk.source, "chunk_id": chunk.chunk_id, "slot": slot, "step": "question"}
                if slot >= len(found):
                    reason = "teacher_refused" if reply.refused else "no_question"
                    detail = reply.refused or f"the reply holds {len(found)} of {count} questions"
                    self.reject({**item, "reason": reason, "detail": detail, "output": reply.text[:_OUTPUT_PREVIEW]})
                    continue
                problem = question_problem(found[slot], self.filters)
                if problem:
                    self.reject({**item, "reason": problem[0], "detail": problem[1], "question": found[slot]})
                    continue
                candidates.append((chunk, slot, found[slot]))
        return self.without_near_duplicates(candidates)

    def without_near_duplicates(self, candidates: list[tuple[Chunk, int, str]]) -> list[tuple[Chunk, int, str]]:
        """The first question of each near-duplicate group (MinHash over character 3-grams), in chunk order."""
        grouper = DocumentGrouper(self.filters["near_duplicate_questions"], shingle_size=3, num_perm=128, bands=32)
        keys = [grouper.add(question) for _, _, question in candidates]
        groups = grouper.group_ids() if candidates else {}
        first_of: dict[str, str] = {}
        unique = []
        for (chunk, slot, question), key in zip(candidates, keys, strict=True):
            group = groups[key]
            if group in first_of:
                self.reject({"source": chunk.source, "chunk_id": chunk.chunk_id, "slot": slot, "step": "question",
                             "reason": "near_duplicate_question", "detail": f"like {first_of[group][:80]!r}",
                             "question": question})
                continue
            first_of[group] = question
            unique.append((chunk, slot, question))
        return unique

    def answer(self, questions: list[tuple[Chunk, int, str]]) -> None:
        calls = [self.call(_fill(self.prompts["answer"], chunk=chunk.text, question=question))
                 for chunk, _, question in questions]
        replies = self.replies(calls)
        for (chunk, slot, question), (key, _) in zip(questions, calls, strict=True):
            reply = replies[key]
            item = {"source": chunk.source, "chunk_id": chunk.chunk_id, "slot": slot, "step": "answer",
                    "question": question}
            verdict = ("teacher_refused", reply.refused) if reply.refused else judge_answer(reply.text, chunk.text,
                                                                                            self.filters)
            if len(verdict) == 2:
                self.reject({**item, "reason": verdict[0], "detail": verdict[1],
                             "output": reply.text[:_OUTPUT_PREVIEW]})
                continue
            cot, answer, _ = verdict
            self.kept += 1
            self.records.write(jsonl_line({"id": f"gen-{chunk.chunk_id.removeprefix('chunk-')}-{slot}",
                                           "question": question, "context": chunk.text, "answer": answer,
                                           "cot": cot, "provenance": chunk.source}))

    def call(self, user: str) -> Call:
        messages = [{"role": "system", "content": self.prompts.get("system") or ""}, {"role": "user", "content": user}]
        return call_key(self.identity(), messages, self.settings.sampling), messages

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = teacher_identity(self.settings.teacher)
        return self._identity

    def replies(self, calls: list[Call]) -> dict[str, Reply]:
        """Every call's reply: from the cache, else from the teacher (and into the cache as it arrives)."""
        found = {key: reply for key, _ in calls if (reply := self.cache.get(key)) is not None}
        self.cache_hits += len(found)
        missing = list({key: (key, messages) for key, messages in calls if key not in found}.values())
        if missing:
            for key, reply in ask_teacher(self.settings.teacher, self.settings.sampling, missing):
                self.cache.put(key, reply)
                found[key] = reply
                self.calls_made += 1
        for key in {key for key, _ in calls}:  # tokens of every call the data rests on, cached or not
            self.tokens["in"] += found[key].tokens_in
            self.tokens["out"] += found[key].tokens_out
            self.tokens["calls"] += 1
        return found

    def reject(self, row: dict[str, Any]) -> None:
        if row["step"] != "document":
            self.reasons[row["reason"]] += 1
        self.rejects.write(jsonl_line(row))

    def metrics(self) -> dict[str, Any]:
        requested = len(self.chunks) * self.settings.questions_per_chunk
        rejected = sum(self.reasons.values())
        if requested != self.kept + rejected:
            raise AssertionError("generate lost items: requested != kept + rejected")  # a bug, never input
        prices = self.settings.prices
        cost = (self.tokens["in"] * prices["input_per_million"]
                + self.tokens["out"] * prices["output_per_million"]) / 1e6
        teacher = self.settings.teacher
        return {
            "files": {**self.files, "rejected": sum(self.file_reasons.values()),
                      "rejected_by_reason": dict(sorted(self.file_reasons.items())),
                      "by_format": dict(sorted(self.formats.items())),
                      "hwp_unconverted": dict(sorted(self.unconverted.items()))},
            "chunks": {"count": len(self.chunks), "unit": self.settings.chunking["unit"],
                       "mean_length": round(sum(c.length for c in self.chunks) / len(self.chunks), 1)
                       if self.chunks else 0},
            "items": {"requested": requested, "kept": self.kept, "rejected": rejected,
                      "rejected_by_reason": dict(sorted(self.reasons.items()))},
            "teacher": {"backend": teacher["backend"], "calls": self.tokens["calls"],
                        "tokens_in": self.tokens["in"], "tokens_out": self.tokens["out"],
                        "estimated_cost": round(cost, 6), "currency": prices.get("currency", "USD")},
        }


def _fill(template: str, **values: str) -> str:
    """The prompt with its placeholders filled in one pass: a chunk that contains "{question}" stays as written."""
    return re.sub(r"\{(chunk|count|question)\}", lambda match: values.get(match.group(1), match.group(0)), template)


def _measure(chunking: dict[str, Any], teacher: dict[str, Any]):
    """A text's length in the chunking unit: characters, or tokens of the tokenizer named in params."""
    if chunking["unit"] == "characters":
        return len
    source = chunking.get("tokenizer") or (teacher["resolved"].source if "resolved" in teacher else None)
    if not source:
        raise ParamError("generate.chunking.tokenizer", "unit: tokens needs the teacher's tokenizer: a model folder "
                                                        "or hub id (the transformers teacher's is the default)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
