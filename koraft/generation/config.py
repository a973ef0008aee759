"""The generate section of params.yaml, checked before any document is read or any teacher called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koraft.core.config import check_choice, check_number, check_text, reject_unknown_keys, section
from koraft.core.errors import ParamError
from koraft.inference.endpoints import check_base_url, check_key_env

KEYS = {"inputs", "chunking", "questions_per_chunk", "teacher", "sampling", "prices", "prompts", "filters"}
TEACHER_KEYS = {"backend", "model", "base_url", "api_key_env", "revision", "concurrency", "timeout_s", "retries",
                "batch_size", "extra_body"}
FILTER_KEYS = {"question_chars", "answer_chars", "cot_chars", "min_hangul_share", "span_answers",
               "near_duplicate_questions"}
PLACEHOLDERS = {"questions": ("{chunk}", "{count}"), "answer": ("{chunk}", "{question}")}


@dataclass(frozen=True)
class GenerateSettings:
    inputs: tuple[str, ...]  # files or folders under the stage's documents folder
    chunking: dict[str, Any]  # unit, size, overlap, tokenizer
    questions_per_chunk: int
    teacher: dict[str, Any]  # as written, with `resolved` (a ResolvedModel) for the transformers backend
    sampling: dict[str, Any]  # temperature, max_tokens, top_p, seed
    prices: dict[str, Any]  # input_per_million, output_per_million, currency
    prompts: dict[str, str]  # system, questions, answer
    filters: dict[str, Any]


def load_generate(params: dict[str, Any]) -> GenerateSettings:
    generate = section(params, "generate")
    reject_unknown_keys(generate, KEYS, "generate")
    inputs = generate.get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(path, str) and path for path in inputs):
        raise ParamError("generate.inputs", f"must be a list of files or folders, got {inputs!r}")
    chunking = section(generate, "chunking", "generate.")
    reject_unknown_keys(chunking, {"unit", "size", "overlap", "tokenizer"}, "generate.chunking")
    check_choice(chunking, "unit", "generate.chunking", ("characters", "tokens"))
    check_number(chunking, "size", "generate.chunking", 16, 1_000_000, integer=True)
    check_number(chunking, "overlap", "generate.chunking", 0, chunking["size"] - 1, integer=True)
    check_number(generate, "questions_per_chunk", "generate", 1, 100, integer=True)
    teacher = dict(section(generate, "teacher", "generate."))
    reject_unknown_keys(teacher, TEACHER_KEYS, "generate.teacher")
    backend = check_choice(teacher, "backend", "generate.teacher", ("openai", "transformers"))
    check_number(teacher, "concurrency", "generate.teacher", 1, 256, integer=True)
    check_number(teacher, "timeout_s", "generate.teacher", 0.1, 3600)
    check_number(teacher, "retries", "generate.teacher", 0, 20, integer=True)
    check_number(teacher, "batch_size", "generate.teacher", 1, 1024, integer=True)
    check_key_env(teacher.get("api_key_env"), "generate.teacher.api_key_env")
    if backend == "openai":
        check_text(teacher, "model", "generate.teacher")
        teacher["base_url"] = check_base_url(check_text(teacher, "base_url", "generate.teacher"),
                                             "generate.teacher.base_url")
    elif inputs:  # resolved only when there is work: an empty generate stage loads nothing
        teacher["resolved"] = _resolved_model(teacher.get("model"))
    sampling = section(generate, "sampling", "generate.")
    reject_unknown_keys(sampling, {"temperature", "max_tokens", "top_p", "seed"}, "generate.sampling")
    check_number(sampling, "temperature", "generate.sampling", 0.0, 2.0)
    check_number(sampling, "max_tokens", "generate.sampling", 1, 65536, integer=True)
    if backend == "transformers" and (sampling["temperature"] != 0 or "top_p" in sampling):
        raise ParamError("generate.sampling.temperature", "the transformers teacher decodes greedily: set 0.0 "
                                                          "(serve the model with vLLM for sampled generation)")
    prices = section(generate, "prices", "generate.")
    reject_unknown_keys(prices, {"input_per_million", "output_per_million", "currency"}, "generate.prices")
    for key in ("input_per_million", "output_per_million"):
        check_number(prices, key, "generate.prices", 0.0, 1.0e6)
    prompts = section(generate, "prompts", "generate.")
    reject_unknown_keys(prompts, {"system", *PLACEHOLDERS}, "generate.prompts")
    for name, needed in PLACEHOLDERS.items():
        text = check_text(prompts, name, "generate.prompts")
        missing = [placeholder for placeholder in needed if placeholder not in text]
        if missing:
            raise ParamError(f"generate.prompts.{name}", f"must contain {' and '.join(missing)}")
    filters = section(generate, "filters", "generate.")
    reject_unknown_keys(filters, FILTER_KEYS, "generate.filters")
    for name in ("question_chars", "answer_chars", "cot_chars"):
        bounds = filters.get(name)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) for b in bounds)
                and 0 <= bounds[0] <= bounds[1]):
            raise ParamError(f"generate.filters.{name}", f"must be [min, max] characters, got {bounds!r}")
    check_number(filters, "min_hangul_share", "generate.filters", 0.0, 1.0)
    check_number(filters, "near_duplicate_questions", "generate.filters", 0.0, 1.0)
    if not isinstance(filters.get("span_answers"), bool):
        raise ParamError("generate.filters.span_answers", f"must be true or false, got {filters.get('span_answers')!r}")
    return GenerateSettings(inputs=tuple(inputs), chunking=chunking,
                            questions_per_chunk=generate["questions_per_chunk"],
                            teacher=teacher, sampling=sampling, prices=prices, prompts=prompts, filters=filters)


def _resolved_model(model: Any):
    from koraft.models.presets import resolve_model

    if not isinstance(model, dict):
        raise ParamError("generate.teacher.model", "the transformers teacher is a model section: {preset: ...} or "
                                                   f"{{name: folder-or-hub-id, family: ...}}, got {model!r}")
    return resolve_model(model, key="generate.teacher.model")
