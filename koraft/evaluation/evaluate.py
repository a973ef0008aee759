"""Evaluate: answer the test split with each variant, score the answers, compare the variants.

Variants (docs/design.md §6): `base` (the `model:` preset as it is), `finetuned` (+ the train
stage's adapter), `student_base` (`distill.student` as it is) and `distilled` (the distill
stage's student). Each one renders the test records through its own chat template exactly as
training did (same system prompt, same document dropping), fits each prompt to `max_length -
max_new_tokens` tokens, a budget the reference answer plays no part in, answers greedily, and has
its final answer extracted. A record whose prompt cannot fit is scored as a failure and counted.
Or, with `eval.predictions_file`, a file of any system's answers is scored instead and no model
is loaded.

Every metric is reported overall and split by whether the golden document was among the
documents given; fine-tuned vs base and distilled vs student base get paired bootstrap
confidence intervals.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from koraft.core.config import check_inside, check_number, check_seed, reject_unknown_keys, section
from koraft.core.errors import KoraftError, ParamError
from koraft.evaluation.answers import check_quotes, extract_answer
from koraft.evaluation.bootstrap import Statistic, interval, mean_of, paired_difference
from koraft.evaluation.embeddings import (
    AUTO_BERTSCORE,
    AUTO_BERTSCORE_LAYERS,
    AUTO_COSINE,
    LOCAL,
    BertScore,
    CosineSimilarity,
    for_family,
    resolve_encoder,
)
from koraft.evaluation.endpoints import check_endpoints, check_requests
from koraft.evaluation.metrics import CORPUS_METRICS, LexicalScorer
from koraft.evaluation.predictions import read_predictions
from koraft.evaluation.served import check_served, parity, run_endpoint, run_served, served_systems
from koraft.models.samples import SampleTokenizer, build_prompts

VARIANTS = ("base", "finetuned", "student_base", "distilled")
INTERVAL_METRICS = ("exact_match", "f1")  # each system's own bootstrap interval, next to its value
COMPARISONS = {"finetuned_vs_base": ("base", "finetuned"), "distilled_vs_student_base": ("student_base", "distilled")}
MAIN_METRICS = ("f1", "exact_match", "rougeL", "bleu", "chrf", "bertscore_f1", "cosine")
METRIC_ORDER = ("exact_match", "f1", "rouge1", "rouge2", "rougeL", "rouge1_char", "rouge2_char", "rougeL_char",
                "bleu", "chrf", "bertscore_precision", "bertscore_recall", "bertscore_f1", "cosine")
# Short display names, shared by the report and the pull-request comment.
METRIC_LABELS = {"exact_match": "EM", "f1": "F1", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                 "rouge1_char": "ROUGE-1 (char)", "rouge2_char": "ROUGE-2 (char)", "rougeL_char": "ROUGE-L (char)",
                 "bleu": "BLEU", "chrf": "chrF", "bertscore_precision": "BERTScore-P",
                 "bertscore_recall": "BERTScore-R", "bertscore_f1": "BERTScore-F1", "cosine": "cosine"}
KEYS = {"variants", "max_new_tokens", "batch_size", "bertscore", "cosine", "bootstrap", "predictions_file", "served",
        "endpoints", "requests"}
SERVED = "served"  # the variant that serves the exported GGUFs on llama.cpp (koraft.evaluation.served)


@dataclass(frozen=True)
class EvalPaths:
    adapter: Path  # the train stage's output
    student: Path  # the distill stage's output
    tiny_models: Path  # the base stage's output
    predictions: Path  # the folder eval.predictions_file must lie in
    exports: Path | None = None  # the export stage's output, for the served variant


@dataclass
class SystemOutput:
    """One system's raw answers to the scored records, and what producing them cost."""

    outputs: dict[str, str]  # record id -> raw output
    documents: dict[str, list[str]] = field(default_factory=dict)  # record id -> documents the fitted prompt showed
    stopped: dict[str, bool] = field(default_factory=dict)
    new_tokens: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    unfit: list[dict[str, Any]] = field(default_factory=list)  # id and reason: scored as failures
    prompts: dict[str, Any] | None = None  # how the prompts were fitted
    cost: dict[str, Any] | None = None
    failures: dict[str, str] | None = None  # an endpoint's failed requests: record id -> reason
    compare_to: str | None = None  # the variant an endpoint's parity is measured against
    long_targets: int | None = None  # test targets longer than max_new_tokens: they cannot be generated whole


def check_eval(params: dict[str, Any]) -> dict[str, Any]:
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
    served = served_systems(check_served(settings)) if variants.get(SERVED) else {}
    endpoints = check_endpoints(settings, {*VARIANTS, *served})
    requests = check_requests(settings)
    enabled = [name for name in VARIANTS if variants.get(name, False)]
    if predictions is None and not (enabled or served or endpoints):
        raise ParamError("eval.variants", "every variant is switched off and no predictions_file or endpoint is "
                                          "set: nothing to evaluate")
    references = [(f"eval.endpoints[{i}].compare_to", endpoint.compare_to) for i, endpoint in enumerate(endpoints)]
    if served:
        references.append(("eval.served.compare_to", settings["served"].get("compare_to", "finetuned")))
    for key, compare_to in references:
        if compare_to is not None and compare_to not in enabled:
            raise ParamError(key, f"{compare_to!r} is not an evaluated variant ({', '.join(enabled) or 'none'})")
    # Prompt and answer share train's max_length; the bootstrap draws from the one seed.
    train_args = section(section(params, "train"), "args", "train.")
    max_length = check_number(train_args, "max_length", "train.args", 8, 10**6, integer=True)
    if settings["max_new_tokens"] >= max_length:
        raise ParamError("eval.max_new_tokens", f"is {settings['max_new_tokens']}, which leaves no room for a prompt "
                                                f"within train.args.max_length {max_length}")
    return {**settings, "max_length": max_length, "prompt_budget": max_length - settings["max_new_tokens"],
            "bootstrap": {**bootstrap, "seed": check_seed(params)}, "served_systems": served,
            "endpoints": endpoints, "requests": requests}


def trained_folder(name: str, paths: EvalPaths) -> tuple[Path, str] | None:
    """The folder a trained variant loads, and the stage that writes it."""
    return {"finetuned": (paths.adapter, "train"), "distilled": (paths.student, "distill")}.get(name)


def load_variant(name: str, params: dict[str, Any], paths: EvalPaths):
    """(model, tokenizer, resolved model, system prompt, folder with trained weights or None)."""
    from koraft.models.loading import load_model, load_tokenizer
    from koraft.models.manifest import MANIFEST, check_system_prompt
    from koraft.models.presets import ensure_available, resolve_model
    from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info

    trained = trained_folder(name, paths)
    if trained is None:
        key = "model" if name == "base" else "distill.student"
        model_section = section(params, "model") if name == "base" else section(section(params, "distill"),
                                                                                 "student", "distill.")
        resolved = resolve_model(model_section, paths.tiny_models, key=key)
        ensure_available(resolved, key=key)
        system_prompt = check_system_prompt(section(params, "model").get("system_prompt", ""))
        return load_model(resolved, key=key).eval(), load_tokenizer(resolved), resolved, system_prompt, None
    folder, stage = trained
    if not (folder / MANIFEST).exists():
        raise KoraftError(f"eval.variants.{name}: {folder} has no trained model; run `dvc repro {stage}` first, "
                          f"or set eval.variants.{name}: false")
    manifest, resolved = trained_model_info(folder)
    model = load_trained(folder, key=f"eval.variants.{name}")
    return model, load_trained_tokenizer(folder, resolved), resolved, manifest["system_prompt"], folder


def run_variant(name: str, rows: list[dict], params: dict[str, Any], settings: dict[str, Any],
                paths: EvalPaths) -> SystemOutput:
    import torch

    from koraft.core.measure import directory_bytes, peak_memory_mib
    from koraft.evaluation.decoding import greedy_generate
    from koraft.models.chat import stop_token_ids

    model, tokenizer, resolved, system_prompt, folder = load_variant(name, params, paths)
    if torch.cuda.is_available():
        model.to("cuda")
        torch.cuda.reset_peak_memory_stats()
    encoder = SampleTokenizer(tokenizer, resolved.family, system_prompt)
    fitted = build_prompts(rows, encoder, settings["prompt_budget"])
    kept = fitted.ids
    # Counted, never used for the prompts: a budget too small for the references caps every score.
    long_targets = sum(len(encoder.target(row)[1]) > settings["max_new_tokens"] for row in rows)
    result = greedy_generate(model, tokenizer, fitted.prompts, stop_token_ids(model, tokenizer, resolved.family),
                             settings["max_new_tokens"], settings["batch_size"])
    generated = sum(result.new_tokens)
    cost = {
        "latency_per_sample_s": round(result.seconds / max(len(kept), 1), 4),
        "generated_tokens_per_s": round(generated / result.seconds, 1) if result.seconds else None,
        "peak_memory_mib": peak_memory_mib(),
        "adapter_bytes": directory_bytes(folder) if folder else 0,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    del model
    gc.collect()
    return SystemOutput(outputs=dict(zip(kept, result.texts, strict=True)),
                        documents=dict(zip(kept, fitted.documents, strict=True)),
                        stopped=dict(zip(kept, result.stopped, strict=True)),
                        new_tokens=dict(zip(kept, result.new_tokens, strict=True)),
                        seconds=result.seconds, unfit=fitted.unfit, cost=cost, long_targets=long_targets,
                        prompts=fitted.report(settings["prompt_budget"], [len(ids) for ids in fitted.prompts]))


class Scorers:
    """The lexical scorer and the two encoders, loaded once for every system."""

    def __init__(self, settings: dict[str, Any], family: str):
        bertscore, cosine = settings["bertscore"], settings["cosine"]
        encoder = resolve_encoder(bertscore["model"], family, AUTO_BERTSCORE, "eval.bertscore")
        layers = bertscore["num_layers"]
        self.lexical = LexicalScorer()
        self.bertscore = BertScore(encoder, for_family(AUTO_BERTSCORE_LAYERS, family) if layers == "auto" else layers,
                                   bertscore["batch_size"])
        self.cosine = CosineSimilarity(resolve_encoder(cosine["model"], family, AUTO_COSINE, "eval.cosine",
                                                       cosine.get("revision")), cosine["batch_size"])

    def score_all(self, answers: dict[str, list[str]], references: list[str]
                  ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Each system's (per-sample scores, corpus statistics). The encoders see every system's answers in
        one call, so each reference, and an answer two systems share (a served GGUF and the fine-tuned
        model), is embedded once: on the shipped sample 520 distinct texts, against 2,178 system by system."""
        every = [text for texts in answers.values() for text in texts]
        repeated = references * len(answers)
        encoded = {**self.bertscore.score(every, repeated), **self.cosine.score(every, repeated)}
        result = {}
        for index, (name, texts) in enumerate(answers.items()):
            lexical = self.lexical.score(texts, references)
            window = slice(index * len(references), (index + 1) * len(references))
            result[name] = ({**lexical.per_sample, **{metric: values[window] for metric, values in encoded.items()}},
                            lexical.corpus_stats)
        return result

    def report(self) -> dict[str, Any]:
        signatures = self.lexical.signatures()
        return {"bleu_signature": signatures["bleu"], "chrf_signature": signatures["chrf"],
                "bertscore": self.bertscore.report(), "cosine": self.cosine.report()}


def statistic(metric: str, scores: dict[str, np.ndarray], stats: dict[str, np.ndarray], scorers: Scorers
              ) -> Statistic:
    """The metric on any subset of record indices: a mean, or a corpus score from summed statistics."""
    if metric in CORPUS_METRICS:
        return lambda indices: scorers.lexical.corpus_score(metric, stats[metric][indices])
    return mean_of(scores[metric])


def summary(scores: dict[str, np.ndarray], stats: dict[str, np.ndarray], scorers: Scorers,
            indices: np.ndarray) -> dict[str, Any]:
    """Every metric on a subset of the records: [0, 1] scores, BLEU and chrF on sacrebleu's 0-100 scale."""
    if len(indices) == 0:
        return {"samples": 0}
    values = {"samples": int(len(indices))}
    for name in METRIC_ORDER:
        value = statistic(name, scores, stats, scorers)(indices)
        values[name] = round(value, 2 if name in CORPUS_METRICS else 4)
    return values


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def reasoning_report(rows: list[dict], system: SystemOutput, extracted: list[bool]) -> dict[str, Any]:
    """Chain-of-thought records: how often an answer could be extracted, and how many quotes are verbatim."""
    expecting = [i for i, row in enumerate(rows) if row.get("cot")]
    checks = []
    for i in expecting:
        record_id = rows[i]["id"]
        # The documents the prompt gave (dropped or trimmed to fit); a predictions file saw them all.
        given = system.documents.get(record_id, rows[i]["documents"])
        checks.append(check_quotes(system.outputs[record_id], given))
    quotes = sum(check.quotes for check in checks)
    return {"samples": len(expecting),
            "answer_extraction_rate": share(sum(extracted[i] for i in expecting), len(expecting)),
            "outputs_with_quotes": share(sum(check.quotes > 0 for check in checks), len(expecting)),
            "quotes": quotes, "quote_validity": share(sum(check.verbatim for check in checks), quotes)}


def evaluate(test_rows: list[dict], params: dict[str, Any], paths: EvalPaths
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics for metrics/eval.json, one review row per scored test record)."""
    from koraft.models.presets import is_local, resolve_model

    settings = check_eval(params)
    resolved = resolve_model(section(params, "model"), paths.tiny_models)
    family = LOCAL if resolved.preset and is_local(resolved.preset) else resolved.family.name  # picks `auto` encoders
    systems: dict[str, SystemOutput] = {}
    if settings.get("predictions_file"):
        path = check_inside(settings["predictions_file"], [paths.predictions], "eval.predictions_file")
        if path.stem in ("comparisons", "scoring", "warnings"):
            raise ParamError("eval.predictions_file", f"{path.name}: the system is named after the file, and "
                                                      f"{path.stem!r} is a section of metrics/eval.json; rename it")
        systems[path.stem] = SystemOutput(outputs=read_predictions(path, [row["id"] for row in test_rows]))
    else:
        for name in VARIANTS:
            if settings["variants"].get(name, False):
                systems[name] = run_variant(name, test_rows, params, settings, paths)
        for name, kind in settings["served_systems"].items():
            if paths.exports is None:
                raise KoraftError("eval.variants.served: this run has no export folder (--exports)")
            systems[name] = run_served(name, kind, test_rows, params, settings, paths.adapter, paths.tiny_models,
                                       paths.exports)
        for endpoint in settings["endpoints"]:
            systems[endpoint.name] = run_endpoint(endpoint, test_rows, params, settings, paths.adapter,
                                                  paths.tiny_models)
    # Every system is scored on every test record: one whose prompt did not fit counts as a failure.
    rows = test_rows
    for system in systems.values():
        if len(system.unfit) == len(rows):
            raise KoraftError(f"eval: no test prompt fits {settings['prompt_budget']} tokens (train.args.max_length "
                              f"minus eval.max_new_tokens): {system.unfit[0]['reason']}")
        system.outputs.update({unfit["id"]: "" for unfit in system.unfit})
    references = [row["answer"] for row in rows]
    scorers = Scorers(settings, family)
    golden = np.array([bool(row.get("oracle_included")) for row in rows])
    everything = np.arange(len(rows))
    metrics: dict[str, Any] = {}
    answers = {name: [extract_answer(system.outputs[row["id"]], bool(row.get("cot"))) for row in rows]
               for name, system in systems.items()}
    per_system = scorers.score_all({name: [answer.text for answer in found] for name, found in answers.items()},
                                   references)
    for name, system in systems.items():
        scores, stats = per_system[name]
        metrics[name] = {
            **summary(scores, stats, scorers, everything),
            "by_golden": {"present": summary(scores, stats, scorers, everything[golden]),
                          "absent": summary(scores, stats, scorers, everything[~golden])},
            "intervals": intervals(scores, stats, scorers, len(rows), settings["bootstrap"]),
            "reasoning": reasoning_report(rows, system, [answer.extracted for answer in answers[name]]),
        }
        if system.cost is not None:
            cut = sum(1 for row in rows if not system.stopped.get(row["id"], True))
            metrics[name]["generation"] = {
                "max_new_tokens": settings["max_new_tokens"], "cut": cut, "cut_share": round(cut / len(rows), 4),
                "mean_new_tokens": round(sum(system.new_tokens.get(row["id"], 0) for row in rows) / len(rows), 2)}
            if system.long_targets is not None:
                metrics[name]["generation"]["targets_over_max_new_tokens"] = system.long_targets
            metrics[name]["prompts"] = system.prompts
            metrics[name]["cost"] = system.cost
        if system.failures is not None:
            metrics[name]["requests"] = {"failed": len(system.failures),
                                         "failures": dict(sorted(system.failures.items())[:10])}
        if system.compare_to is not None:
            reference = systems[system.compare_to]
            metrics[name]["parity"] = parity(system.outputs, reference.outputs, answers[name],
                                             answers[system.compare_to], rows, system.compare_to)
    metrics["comparisons"] = compare(per_system, scorers, len(rows), settings["bootstrap"])
    metrics["scoring"] = {"samples": len(rows), "test_records": len(test_rows), **scorers.report(),
                          "bootstrap": settings["bootstrap"]}
    warnings = [f"{metric}: {metrics['scoring'][metric]['warning']}" for metric in ("bertscore", "cosine")
                if "warning" in metrics["scoring"][metric]]
    warnings += [f"{name}: {system.long_targets} test targets are longer than eval.max_new_tokens "
                 f"({settings['max_new_tokens']} tokens): no output can match them whole"
                 for name, system in systems.items() if system.long_targets]
    if warnings:
        metrics["warnings"] = warnings
    return metrics, review_rows(rows, systems, answers, per_system)


def intervals(scores: dict[str, np.ndarray], stats: dict[str, np.ndarray], scorers: Scorers, samples: int,
              bootstrap: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The bootstrap interval of each headline metric of one system: the test split's own noise."""
    result = {}
    for metric in INTERVAL_METRICS:
        low, high = interval(statistic(metric, scores, stats, scorers), samples, bootstrap["resamples"],
                             bootstrap["seed"], bootstrap["confidence"])
        result[metric] = {"low": round(low, 4), "high": round(high, 4), "half_width": round((high - low) / 2, 4)}
    return result


def compare(per_system: dict, scorers: Scorers, samples: int, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap intervals of B - A for each comparison whose two systems were evaluated."""
    result: dict[str, Any] = {}
    for label, (a, b) in COMPARISONS.items():
        if a not in per_system or b not in per_system:
            continue
        result[label] = {}
        for metric in MAIN_METRICS:
            difference = paired_difference(statistic(metric, *per_system[a], scorers),
                                           statistic(metric, *per_system[b], scorers), samples,
                                           bootstrap["resamples"], bootstrap["seed"], bootstrap["confidence"])
            result[label][metric] = difference.as_dict(2 if metric in CORPUS_METRICS else 4)
    return result


def systems(metrics: dict[str, Any]) -> list[str]:
    """The evaluated systems of a metrics/eval.json (variants, or a predictions file), in order."""
    return [name for name, values in metrics.items() if isinstance(values, dict) and "f1" in values]


def variant_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per evaluated system with its headline metrics: the data of the per-variant bar charts."""
    return [{"variant": name, **{metric: metrics[name][metric] for metric in MAIN_METRICS}}
            for name in systems(metrics)]


def review_rows(rows: list[dict], systems: dict[str, SystemOutput], answers: dict[str, list],
                per_system: dict) -> list[dict[str, Any]]:
    """metrics/eval/predictions.jsonl: question, reference and each system's output and scores, per record."""
    review = []
    for i, row in enumerate(rows):
        outputs = {}
        for name, system in systems.items():
            scores = per_system[name][0]
            outputs[name] = {"output": system.outputs[row["id"]], "answer": answers[name][i].text,
                             "answer_extracted": answers[name][i].extracted,
                             **({"stopped": system.stopped.get(row["id"], True)} if system.stopped else {}),
                             **({"prompt_unfit": True} if row["id"] in {u["id"] for u in system.unfit} else {}),
                             "scores": {metric: round(float(scores[metric][i]), 4) for metric in METRIC_ORDER
                                        if metric in scores}}
        review.append({"id": row["id"], "question": row["question"], "reference": row["answer"],
                       "golden_document_given": bool(row.get("oracle_included")),
                       "expects_reasoning": bool(row.get("cot")), "outputs": outputs})
    return review
