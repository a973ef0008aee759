"""RAFT records -> tokenized prompt/completion samples that fit `max_length`, and test prompts that fit a budget.

An over-long sample first loses distractor documents (last listed first), then has its golden
document trimmed to a window around the answer and the quotes of its chain of thought. The
target (chain of thought, answer, end of turn) is never cut: a sample whose target cannot fit
is skipped. Every drop, trim and skip is counted, and every kept sample's rendered prompt is
hashed for the manifest.

A test prompt (`build_prompts`) is fitted by the same rules to a budget that never depends on the
reference: it drops distractors the same way, and a trimmed golden document keeps its beginning,
since centring on the answer would tell the model where the answer is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from koraft.core.formats import quotes
from koraft.core.measure import length_stats
from koraft.models.chat import render_prompt, render_target, text_sha256
from koraft.models.presets import Family


@dataclass
class SampleSet:
    samples: list[dict[str, Any]] = field(default_factory=list)  # input_ids, completion_mask
    manifest: list[dict[str, str]] = field(default_factory=list)  # id, prompt and target hashes
    counts: dict[str, int] = field(default_factory=lambda: {
        "records": 0, "samples": 0, "samples_with_dropped_documents": 0, "documents_dropped": 0,
        "samples_trimmed": 0, "samples_skipped": 0,
    })
    skipped: list[dict[str, Any]] = field(default_factory=list)  # id and reason
    documents: list[list[str]] = field(default_factory=list)  # each kept sample's documents as fitted, when asked for
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {**self.counts, "tokens": {"prompt": length_stats(self.prompt_tokens),
                                          "completion": length_stats(self.completion_tokens)}}


class SampleTokenizer:
    """Renders and tokenizes records for one tokenizer, family and system prompt."""

    def __init__(self, tokenizer: Any, family: Family, system_prompt: str):
        self.tokenizer, self.family, self.system_prompt = tokenizer, family, system_prompt

    def prompt(self, record: dict[str, Any]) -> tuple[str, list[int]]:
        return self._tokenized(render_prompt(self.tokenizer, self.family, self.system_prompt, record))

    def target(self, record: dict[str, Any]) -> tuple[str, list[int]]:
        return self._tokenized(render_target(self.tokenizer, self.family, record))

    def _tokenized(self, text: str) -> tuple[str, list[int]]:
        return text, self.tokenizer(text, add_special_tokens=False)["input_ids"]  # templates add bos themselves


@dataclass
class PromptSet:
    """Test prompts fitted to a token budget, in the order of the records that fit."""

    ids: list[str] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)
    documents: list[list[str]] = field(default_factory=list)  # the documents each fitted prompt shows
    counts: dict[str, int] = field(default_factory=lambda: {
        "records": 0, "prompts": 0, "prompts_with_dropped_documents": 0, "documents_dropped": 0,
        "prompts_trimmed": 0, "prompts_unfit": 0,
    })
    unfit: list[dict[str, Any]] = field(default_factory=list)  # id and reason

    def report(self, budget: int, tokens: list[int]) -> dict[str, Any]:
        return {"budget": budget, **self.counts, "tokens": length_stats(tokens)}


def build_prompts(rows: list[dict[str, Any]], encoder: SampleTokenizer, budget: int) -> PromptSet:
    """Each record's prompt fitted to `budget` tokens without looking at its answer or chain of thought."""
    result = PromptSet()
    for record in rows:
        result.counts["records"] += 1
        fitted = fit_documents(record, encoder, budget, around_evidence=False)
        if isinstance(fitted, str):
            result.counts["prompts_unfit"] += 1
            result.unfit.append({"id": record["id"], "reason": fitted})
            continue
        (_, prompt_ids), dropped, trimmed, documents = fitted
        result.counts["prompts"] += 1
        result.counts["documents_dropped"] += dropped
        result.counts["prompts_with_dropped_documents"] += dropped > 0
        result.counts["prompts_trimmed"] += trimmed
        result.ids.append(record["id"])
        result.prompts.append(prompt_ids)
        result.documents.append(documents)
    return result


def build_samples(rows: list[dict[str, Any]], encoder: SampleTokenizer, max_length: int,
                  keep_documents: bool = False) -> SampleSet:
    result = SampleSet()
    for record in rows:
        result.counts["records"] += 1
        fitted = fit_record(record, encoder, max_length)
        if isinstance(fitted, str):
            result.counts["samples_skipped"] += 1
            result.skipped.append({"id": record["id"], "reason": fitted})
            continue
        (prompt_text, prompt_ids), (target_text, target_ids), dropped, trimmed, documents = fitted
        result.counts["samples"] += 1
        result.counts["documents_dropped"] += dropped
        result.counts["samples_with_dropped_documents"] += dropped > 0
        result.counts["samples_trimmed"] += trimmed
        result.samples.append({"input_ids": prompt_ids + target_ids,
                               "completion_mask": [0] * len(prompt_ids) + [1] * len(target_ids)})
        result.manifest.append({"id": record["id"], "prompt_sha256": text_sha256(prompt_text),
                                "target_sha256": text_sha256(target_text)})
        if keep_documents:
            result.documents.append(documents)
        result.prompt_tokens.append(len(prompt_ids))
        result.completion_tokens.append(len(target_ids))
    return result


def fit_record(record: dict[str, Any], encoder: SampleTokenizer, max_length: int):
    """(prompt, target, documents dropped, golden trimmed, documents shown) that fit, or the reason it cannot."""
    target = encoder.target(record)
    if len(target[1]) >= max_length:
        return f"target alone is {len(target[1])} tokens, max_length is {max_length}"
    fitted = fit_documents(record, encoder, max_length - len(target[1]), around_evidence=True)
    if isinstance(fitted, str):
        return f"{fitted} (max_length minus the {len(target[1])}-token target)"
    prompt, dropped, trimmed, documents = fitted
    return prompt, target, dropped, trimmed, documents


def fit_documents(record: dict[str, Any], encoder: SampleTokenizer, budget: int, around_evidence: bool):
    """(prompt, documents dropped, golden trimmed, documents shown) within `budget` tokens, or why it cannot.

    Distractors go first, last listed first; then the golden document shrinks to a window, centred on
    the answer and quotes when `around_evidence` (training), else its beginning (a test prompt)."""
    prompt = encoder.prompt(record)
    dropped = 0
    while len(prompt[1]) > budget:
        distractors = [i for i in range(len(record["documents"])) if i != record.get("oracle_index")]
        if not distractors:
            break
        record = without_document(record, distractors[-1])
        dropped += 1
        prompt = encoder.prompt(record)
    if len(prompt[1]) <= budget:
        return prompt, dropped, False, record["documents"]
    if record.get("oracle_index") is None:
        return f"prompt without any document is {len(prompt[1])} tokens, {budget} left"
    trimmed = trim_golden(record, encoder, budget, around_evidence)
    if trimmed is None:
        where = "around its answer" if around_evidence else "from its end"
        return f"golden document cannot shrink {where} to fit {budget} prompt tokens"
    prompt, documents = trimmed
    return prompt, dropped, True, documents


def without_document(record: dict[str, Any], index: int) -> dict[str, Any]:
    documents = record["documents"][:index] + record["documents"][index + 1:]
    oracle = record.get("oracle_index")
    if oracle is not None and oracle > index:
        oracle -= 1
    return {**record, "documents": documents, "oracle_index": oracle}


def evidence_span(document: str, record: dict[str, Any]) -> tuple[int, int]:
    """Character span covering the answer and the CoT quotes found in the document; (0, 0) if none is."""
    spans = []
    for text in [record["answer"], *quotes(record.get("cot") or "")]:
        start = document.find(text)
        if start >= 0:
            spans.append((start, start + len(text)))
    if not spans:
        return 0, 0
    return min(s for s, _ in spans), max(e for _, e in spans)


def trim_golden(record: dict[str, Any], encoder: SampleTokenizer, budget: int, around_evidence: bool = True
                ) -> tuple[tuple[str, list[int]], list[str]] | None:
    """The longest window of the golden document whose prompt fits, centred on its evidence (or its
    beginning); with the documents that prompt shows."""
    oracle = record["oracle_index"]
    document = record["documents"][oracle]
    start, end = evidence_span(document, record) if around_evidence else (0, 0)

    def documents_for(width: int) -> list[str]:
        left = max(0, min(start - (width - (end - start)) // 2, len(document) - width))
        documents = list(record["documents"])
        documents[oracle] = document[left:left + width]
        return documents

    low, high, best = end - start, len(document) - 1, None
    while low <= high:  # binary search on the window width in characters
        width = (low + high) // 2
        documents = documents_for(width)
        prompt = encoder.prompt({**record, "documents": documents})
        if len(prompt[1]) <= budget:
            best, low = (prompt, documents), width + 1
        else:
            high = width - 1
    return best
