"""The eval section of params.yaml, checked once into the EvalSettings the evaluate stage passes down.

Prompt and answer share train's max_length and the bootstrap draws from the one top-level seed, so the
settings carry those too; the base and student_base variants load the `model:` and `distill.student`
sections, which they carry as given (koraft.models.presets resolves them against the base stage's folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.config import check_choice, check_number, check_seed, check_text, reject_unknown_keys, section
from koraft.core.errors import ParamError
from koraft.data.config import BM25Settings, RaftSettings, load_raft
from koraft.evaluation.conditions import ConditionSettings
from koraft.evaluation.embeddings import LOCAL, PACKAGED
from koraft.evaluation.judge import check_judge
from koraft.evaluation.labels import SERVED, VARIANTS
from koraft.evaluation.perplexity import SOURCES, PerplexitySettings
from koraft.evaluation.retrieval import RETRIEVERS, RetrievalSettings
from koraft.inference.endpoints import Endpoint, check_base_url, check_key_env
from koraft.models.manifest import check_system_prompt
from koraft.models.presets import is_local, resolve_model

KEYS = {"variants", "max_new_tokens", "batch_size", "bertscore", "cosine", "bootstrap", "predictions_file", "served",
        "endpoints", "requests", "conditions", "retrieval", "perplexity", "judge"}
CONDITION_KEYS = {"variants", "retrieved", "closed_book", "questions", "closed_book_instruction"}
PERPLEXITY_KEYS = {"variants", "sources", "max_tokens"}
RETRIEVAL_KEYS = {"retriever", "k", "folder", "endpoint", "batch_size"}
SERVED_KEYS = {"gguf", "compare_to", "threads"}
REQUEST_KEYS = {"concurrency", "timeout_s", "retries"}
ENDPOINT_KEYS = {"name", "base_url", "model", "api_key_env", "compare_to", "extra_body"}


@dataclass(frozen=True)
class EvalSettings:
    variants: tuple[str, ...]  # the model variants switched on, in VARIANTS order
    max_new_tokens: int
    batch_size: int
    max_length: int  # train.args.max_length: every prompt and its answer fit in it
    prompt_budget: int  # max_length - max_new_tokens, the tokens a prompt may take
    bertscore: dict[str, Any]  # model, num_layers, batch_size
    cosine: dict[str, Any]  # model, batch_size, revision
    bootstrap: dict[str, Any]  # resamples, confidence and the top-level seed
    requests: dict[str, Any]  # concurrency, timeout_s, retries of every endpoint
    model: dict[str, Any]  # the `model:` section: the base variant, and the fitting of endpoint prompts
    system_prompt: str  # model.system_prompt
    encoder_family: str  # picks the `auto` encoders: PACKAGED or LOCAL for a preset koraft builds, else the family
    student: dict[str, Any] | None  # distill.student, when the student_base variant is on
    predictions_file: str | None = None
    served: dict[str, Any] | None = None  # eval.served, when the served variant is on
    served_systems: dict[str, str] = field(default_factory=dict)  # system name -> GGUF type
    endpoints: tuple[Endpoint, ...] = ()
    conditions: ConditionSettings | None = None  # the retrieved and closed-book test conditions, when any is on
    abstain_answer: str | None = None  # raft.abstain_answer where raft.omitted_golden_target is abstain
    perplexity: PerplexitySettings | None = None  # held-out perplexity, when a variant it lists is switched on
    judge: Any = None  # the LLM judge's JudgeSettings, when eval.judge.endpoint is set


def load_eval(params: dict[str, Any]) -> EvalSettings:
    settings = section(params, "eval")
    reject_unknown_keys(settings, KEYS, "eval")
    variants = section(settings, "variants", "eval.")
    reject_unknown_keys(variants, {*VARIANTS, SERVED}, "eval.variants",
                        f"variants are {', '.join((*VARIANTS, SERVED))}")
    for name, enabled in variants.items():
        if not isinstance(enabled, bool):
            raise ParamError(f"eval.variants.{name}", f"must be true or false, got {enabled!r}")
    check_number(settings, "max_new_tokens", "eval", 1, 32768, integer=True)
    check_number(settings, "batch_size", "eval", 1, 4096, integer=True)
    bertscore, cosine = section(settings, "bertscore", "eval."), section(settings, "cosine", "eval.")
    reject_unknown_keys(bertscore, {"model", "num_layers", "batch_size"}, "eval.bertscore",
                        "bert-score loads by name: pin a version by downloading it to a folder")
    reject_unknown_keys(cosine, {"model", "batch_size", "revision"}, "eval.cosine")
    if bertscore.get("num_layers") == "auto":
        if bertscore.get("model") != "auto":
            raise ParamError("eval.bertscore.num_layers", "must be a number when eval.bertscore.model names a "
                                                          "model: the layer matters as much as the model")
    else:
        check_number(bertscore, "num_layers", "eval.bertscore", 1, 1000, integer=True)
    for part, key in ((bertscore, "eval.bertscore"), (cosine, "eval.cosine")):
        check_number(part, "batch_size", key, 1, 4096, integer=True)
    bootstrap = section(settings, "bootstrap", "eval.")
    reject_unknown_keys(bootstrap, {"resamples", "confidence"}, "eval.bootstrap", "the top-level seed drives it")
    check_number(bootstrap, "resamples", "eval.bootstrap", 100, 10**6, integer=True)
    check_number(bootstrap, "confidence", "eval.bootstrap", 0.5, 0.999)
    predictions = settings.get("predictions_file")
    if predictions is not None and (not isinstance(predictions, str) or not predictions.strip()):
        raise ParamError("eval.predictions_file", f"must be a path or null, got {predictions!r}")
    served = check_served(settings) if variants.get(SERVED) else None
    served_names = served_systems(served) if served else {}
    endpoints = check_endpoints(settings, {*VARIANTS, *served_names})
    requests = check_requests(settings)
    enabled = tuple(name for name in VARIANTS if variants.get(name, False))
    if predictions is None and not (enabled or served_names or endpoints):
        raise ParamError("eval.variants", "every variant is switched off and no predictions_file or endpoint is "
                                          "set: nothing to evaluate")
    references = [(f"eval.endpoints[{i}].compare_to", endpoint.compare_to) for i, endpoint in enumerate(endpoints)]
    if served:
        references.append(("eval.served.compare_to", served.get("compare_to", "finetuned")))
    for key, compare_to in references:
        if compare_to is not None and compare_to not in enabled:
            raise ParamError(key, f"{compare_to!r} is not an evaluated variant ({', '.join(enabled) or 'none'})")
    # Prompt and answer share train's max_length; the bootstrap draws from the one seed.
    train_args = section(section(params, "train"), "args", "train.")
    max_length = check_number(train_args, "max_length", "train.args", 8, 10**6, integer=True)
    if settings["max_new_tokens"] >= max_length:
        raise ParamError("eval.max_new_tokens", f"is {settings['max_new_tokens']}, which leaves no room for a prompt "
                                                f"within train.args.max_length {max_length}")
    raft = load_raft(params)
    abstain = raft.abstain_answer if raft.omitted_golden_target == "abstain" else None
    conditions = check_conditions(settings, raft, abstain, enabled) if predictions is None else None
    model = section(params, "model")
    student = dict(section(section(params, "distill"), "student", "distill.")) if "student_base" in enabled else None
    resolved = resolve_model(model)  # loads nothing: a bad model key is one line now, not after variants ran
    if student is not None:
        resolve_model(student, key="distill.student")
    return EvalSettings(
        variants=enabled, max_new_tokens=settings["max_new_tokens"], batch_size=settings["batch_size"],
        max_length=max_length, prompt_budget=max_length - settings["max_new_tokens"], bertscore=dict(bertscore),
        cosine=dict(cosine), bootstrap={**bootstrap, "seed": check_seed(params)}, requests=dict(requests),
        model=dict(model), system_prompt=check_system_prompt(model.get("system_prompt", "")),
        encoder_family=encoder_family(resolved),
        student=student, predictions_file=predictions,
        served=dict(served) if served else None, served_systems=served_names, endpoints=tuple(endpoints),
        conditions=conditions, abstain_answer=abstain,
        perplexity=check_perplexity(settings, enabled) if predictions is None else None,
        judge=check_judge(settings, (*enabled, *served_names, *(endpoint.name for endpoint in endpoints)))
        if predictions is None else None)


def check_perplexity(settings: dict[str, Any], enabled: tuple[str, ...]) -> PerplexitySettings | None:
    """eval.perplexity; None when it lists no variant that is switched on (an empty list switches it off)."""
    perplexity = section(settings, "perplexity", "eval.")
    reject_unknown_keys(perplexity, PERPLEXITY_KEYS, "eval.perplexity")
    variants, sources = perplexity.get("variants"), perplexity.get("sources")
    if not isinstance(variants, list) or len(set(variants)) != len(variants) or any(
            name not in VARIANTS for name in variants):
        raise ParamError("eval.perplexity.variants", f"a list of distinct model variants ({', '.join(VARIANTS)}), "
                                                     f"[] for none, got {variants!r}")
    if not isinstance(sources, list) or not sources or len(set(sources)) != len(sources) or any(
            source not in SOURCES for source in sources):
        raise ParamError("eval.perplexity.sources", f"a list of distinct text sources ({', '.join(SOURCES)}), "
                                                    f"got {sources!r}")
    check_number(perplexity, "max_tokens", "eval.perplexity", 2, 10**6, integer=True)
    running = tuple(name for name in VARIANTS if name in variants and name in enabled)
    if not running:
        return None
    return PerplexitySettings(variants=running, sources=tuple(source for source in SOURCES if source in sources),
                              max_tokens=perplexity["max_tokens"])


def encoder_family(resolved) -> str:
    """The key of the `auto` encoder tables: PACKAGED for the Gemma 3 270M presets, LOCAL for the tiny ones,
    else the model family."""
    from koraft.models.packaged import PRESET, STUDENT_PRESET

    if resolved.preset in (PRESET, STUDENT_PRESET):
        return PACKAGED
    return LOCAL if resolved.preset and is_local(resolved.preset) else resolved.family.name


def check_conditions(settings: dict[str, Any], raft: RaftSettings, abstain: str | None, enabled: tuple[str, ...]
                     ) -> ConditionSettings | None:
    """eval.conditions and eval.retrieval; None when neither the retrieved nor the closed-book condition is on,
    or no variant it lists is switched on in eval.variants."""
    conditions = section(settings, "conditions", "eval.")
    reject_unknown_keys(conditions, CONDITION_KEYS, "eval.conditions")
    for key in ("retrieved", "closed_book"):
        if not isinstance(conditions.get(key), bool):
            raise ParamError(f"eval.conditions.{key}", f"must be true or false, got {conditions.get(key)!r}")
    if not (conditions["retrieved"] or conditions["closed_book"]):
        return None
    variants = conditions.get("variants")
    if not isinstance(variants, list) or not variants or len(set(variants)) != len(variants):
        raise ParamError("eval.conditions.variants", f"a list of distinct model variants, got {variants!r}")
    for name in variants:
        if name not in VARIANTS:
            raise ParamError("eval.conditions.variants", f"{name!r} is not a model variant ({', '.join(VARIANTS)}: "
                                                         f"endpoints and served GGUFs answer the oracle only)")
    # A listed variant switched off in eval.variants answers nothing; metrics/eval.json lists those that ran.
    running = tuple(name for name in VARIANTS if name in variants and name in enabled)
    if not running:
        return None
    if conditions.get("questions") is not None:
        check_number(conditions, "questions", "eval.conditions", 1, 10**7, integer=True)
    check_text(conditions, "closed_book_instruction", "eval.conditions")
    return ConditionSettings(
        variants=running, retrieved=conditions["retrieved"],
        closed_book=conditions["closed_book"], questions=conditions.get("questions"),
        closed_book_instruction=conditions["closed_book_instruction"],
        retrieval=check_retrieval(settings, raft.bm25) if conditions["retrieved"] else None,
        instruction=raft.instruction, cot_instruction=raft.cot_instruction, abstain_answer=abstain)


def check_retrieval(settings: dict[str, Any], bm25: BM25Settings) -> RetrievalSettings:
    retrieval = section(settings, "retrieval", "eval.")
    reject_unknown_keys(retrieval, RETRIEVAL_KEYS, "eval.retrieval")
    check_choice(retrieval, "retriever", "eval.retrieval", RETRIEVERS)
    ks = retrieval.get("k")
    if not isinstance(ks, list) or not ks or len(set(ks)) != len(ks) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 100 for k in ks):
        raise ParamError("eval.retrieval.k", f"a list of distinct integers from 1 to 100 (one test condition each), "
                                             f"got {ks!r}")
    check_number(retrieval, "batch_size", "eval.retrieval", 1, 4096, integer=True)
    folder, endpoint = retrieval.get("folder"), None
    if retrieval["retriever"] == "sentence_transformers":
        if not isinstance(folder, str) or not (Path(folder) / "config.json").is_file():
            raise ParamError("eval.retrieval.folder", f"must be a local sentence-transformers folder (with a "
                                                      f"config.json) for retriever sentence_transformers, "
                                                      f"got {folder!r}")
    if retrieval["retriever"] == "embeddings":
        entry = retrieval.get("endpoint")
        if not isinstance(entry, dict):
            raise ParamError("eval.retrieval.endpoint", f"must be a mapping with base_url and model for retriever "
                                                        f"embeddings, got {entry!r}")
        reject_unknown_keys(entry, {"base_url", "model", "api_key_env"}, "eval.retrieval.endpoint")
        check_text(entry, "model", "eval.retrieval.endpoint")
        base_url = check_base_url(str(entry.get("base_url")), "eval.retrieval.endpoint.base_url")
        check_key_env(entry.get("api_key_env"), "eval.retrieval.endpoint.api_key_env")
        endpoint = Endpoint("retrieval", base_url, entry["model"], entry.get("api_key_env"))
    return RetrievalSettings(retriever=retrieval["retriever"], k=tuple(sorted(ks)), bm25=bm25, folder=folder,
                             endpoint=endpoint, batch_size=retrieval["batch_size"])


def check_served(settings: dict[str, Any]) -> dict[str, Any]:
    served = section(settings, "served", "eval.")
    reject_unknown_keys(served, SERVED_KEYS, "eval.served")
    kinds = served.get("gguf")
    if not isinstance(kinds, list) or not kinds or not all(isinstance(kind, str) for kind in kinds) \
            or len(set(kinds)) != len(kinds):
        raise ParamError("eval.served.gguf", f"a list of distinct exported GGUF types (the first is `served`, "
                                             f"the others served_<type>), got {kinds!r}")
    check_number(served, "threads", "eval.served", 1, 1024, integer=True)
    return served


def served_systems(served: dict[str, Any]) -> dict[str, str]:
    """System name -> GGUF type: `served` for the first type, `served_<type>` for the others."""
    return {("served" if index == 0 else f"served_{kind}"): kind for index, kind in enumerate(served["gguf"])}


def check_requests(settings: dict[str, Any]) -> dict[str, Any]:
    requests = section(settings, "requests", "eval.")
    reject_unknown_keys(requests, REQUEST_KEYS, "eval.requests")
    check_number(requests, "concurrency", "eval.requests", 1, 256, integer=True)
    check_number(requests, "timeout_s", "eval.requests", 0.1, 3600)
    check_number(requests, "retries", "eval.requests", 0, 20, integer=True)
    return requests


def check_endpoints(settings: dict[str, Any], taken: set[str]) -> list[Endpoint]:
    """eval.endpoints: a list of {name, base_url, model, api_key_env?, compare_to?}."""
    entries = settings.get("endpoints") or []
    if not isinstance(entries, list):
        raise ParamError("eval.endpoints", f"must be a list of endpoints, got {entries!r}")
    endpoints = []
    for index, entry in enumerate(entries):
        key = f"eval.endpoints[{index}]"
        if not isinstance(entry, dict):
            raise ParamError(key, f"must be a mapping with name, base_url and model, got {entry!r}")
        reject_unknown_keys(entry, ENDPOINT_KEYS, key)
        for name in ("name", "base_url", "model"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise ParamError(f"{key}.{name}", f"must be a non-empty string, got {entry.get(name)!r}")
        base_url = check_base_url(entry["base_url"], f"{key}.base_url")
        if entry["name"] in taken:
            raise ParamError(f"{key}.name", f"{entry['name']!r} is already the name of another system")
        check_key_env(entry.get("api_key_env"), f"{key}.api_key_env")
        if entry.get("api_key_env") and not os.environ.get(entry["api_key_env"]):  # known now, not after generating
            raise ParamError(f"{key}.api_key_env", f"names {entry['api_key_env']}, which is not set in this "
                                                   f"environment: export it before the run")
        extra = entry.get("extra_body")
        if extra is not None and not isinstance(extra, dict):
            raise ParamError(f"{key}.extra_body", f"must be a mapping of request fields, got {extra!r}")
        taken.add(entry["name"])
        endpoints.append(Endpoint(entry["name"], base_url, entry["model"], entry.get("api_key_env"),
                                  entry.get("compare_to"), extra))
    return endpoints
