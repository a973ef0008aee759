"""Fitting samples into max_length: distractors go first, then the golden document shrinks around
the answer; the target is never cut; every change is counted."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from koraft.models.chat import render_prompt, text_sha256
from koraft.models.presets import FAMILIES
from koraft.models.samples import SampleTokenizer, build_samples

FILLER = "이 문단은 질문과 관계가 없는 긴 설명을 담고 있으며 여러 번 되풀이된다. " * 8
GOLDEN = FILLER + "한결시의 인구는 약 12만 명이다. " + FILLER
RECORD = {"id": "q-1", "instruction": "답하세요.", "question": "한결시의 인구는?", "answer": "약 12만 명",
          "documents": [FILLER + "가", GOLDEN, FILLER + "나", FILLER + "다"], "oracle_index": 1,
          "cot": "##begin_quote##한결시의 인구는 약 12만 명이다.##end_quote## 따라서 답은 약 12만 명이다."}


@pytest.fixture(scope="module")
def encoder(tiny_models):
    return SampleTokenizer(AutoTokenizer.from_pretrained(tiny_models / "tiny-s"), FAMILIES["tiny"], "시스템")


def lengths(encoder, record):
    return len(encoder.prompt(record)[1]), len(encoder.target(record)[1])


def test_a_sample_that_fits_is_untouched(encoder):
    prompt, target = lengths(encoder, RECORD)
    result = build_samples([RECORD], encoder, prompt + target)
    assert result.counts["samples"] == 1 and result.counts["documents_dropped"] == 0
    assert result.manifest[0]["prompt_sha256"] == text_sha256(encoder.prompt(RECORD)[0])
    assert len(result.samples[0]["input_ids"]) == prompt + target


def test_distractors_are_dropped_before_the_golden_document_is_trimmed(encoder):
    prompt, target = lengths(encoder, RECORD)
    one_distractor = {**RECORD, "documents": RECORD["documents"][:2]}
    budget = sum(lengths(encoder, one_distractor))
    result = build_samples([RECORD], encoder, budget)
    assert result.counts == {"records": 1, "samples": 1, "samples_with_dropped_documents": 1,
                             "documents_dropped": 2, "samples_trimmed": 0, "samples_skipped": 0}
    assert result.manifest[0]["prompt_sha256"] == text_sha256(encoder.prompt(one_distractor)[0])
    assert len(result.samples[0]["input_ids"]) <= budget


def test_golden_document_is_trimmed_around_the_answer_and_quote(encoder):
    _, target = lengths(encoder, RECORD)
    budget = target + 120
    result = build_samples([RECORD], encoder, budget)
    assert result.counts["documents_dropped"] == 3 and result.counts["samples_trimmed"] == 1
    sample = result.samples[0]
    assert len(sample["input_ids"]) <= budget
    text = encoder.tokenizer.decode(sample["input_ids"])
    golden = text.split("<DOCUMENT>")[1].split("</DOCUMENT>")[0]
    assert "한결시의 인구는 약 12만 명이다." in golden and len(golden) < len(GOLDEN) / 2
    start = sample["completion_mask"].index(1)
    assert encoder.tokenizer.decode(sample["input_ids"][start:]).endswith("<ANSWER>: 약 12만 명<|end|>")


def test_a_target_longer_than_max_length_is_skipped_and_counted(encoder):
    long = {**RECORD, "id": "q-2", "answer": "아주 긴 답 " * 200, "cot": None}
    result = build_samples([RECORD, long], encoder, 300)
    assert result.counts["records"] == 2 == result.counts["samples"] + result.counts["samples_skipped"]
    assert result.skipped[0]["id"] == "q-2" and "target alone is" in result.skipped[0]["reason"]


def test_without_golden_only_distractors_can_go(encoder):
    record = {**RECORD, "documents": [FILLER + "가", FILLER + "나"], "oracle_index": None}
    prompt_alone = len(encoder.prompt({**record, "documents": []})[1])
    _, target = lengths(encoder, record)
    result = build_samples([record], encoder, prompt_alone + target)
    assert result.counts["documents_dropped"] == 2 and result.counts["samples"] == 1
    result = build_samples([record], encoder, prompt_alone + target - 1)
    assert result.counts["samples_skipped"] == 1


def test_rendering_is_deterministic_and_template_sensitive(encoder, tiny_models):
    first = build_samples([RECORD], encoder, 2048).manifest
    assert build_samples([RECORD], encoder, 2048).manifest == first
    changed = AutoTokenizer.from_pretrained(tiny_models / "tiny-s")
    changed.chat_template = changed.chat_template.replace("<|end|>", "<|end|>\n")
    other = build_samples([RECORD], SampleTokenizer(changed, FAMILIES["tiny"], "시스템"), 2048).manifest
    assert other[0]["prompt_sha256"] != first[0]["prompt_sha256"]
    assert render_prompt(changed, FAMILIES["tiny"], "시스템", RECORD).startswith("<|system|>시스템<|end|>\n")
