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

from typing import Any

import numpy as np

from koraft.core.config import check_inside
from koraft.core.errors import KoraftError, ParamError
from koraft.evaluation.answers import extract_answer
from koraft.evaluation.condition_scores import abstention, condition_review, golden_shown, score_conditions
from koraft.evaluation.conditions import ORACLE, build_conditions, sample_questions
from koraft.evaluation.config import EvalSettings
from koraft.evaluation.judge import judge
from koraft.evaluation.labels import METRIC_ORDER
from koraft.evaluation.perplexity import held_out_texts, perplexity_report, rise_warnings
from koraft.evaluation.predictions import read_predictions
from koraft.evaluation.scoring import Scorers, compare, distractor_answers, intervals, reasoning_report, summary
from koraft.evaluation.served import parity, run_endpoint, run_served
from koraft.evaluation.systems import EvalPaths, SystemOutput
from koraft.evaluation.variants import run_variant


def evaluate(test_rows: list[dict], settings: EvalSettings, paths: EvalPaths,
             split_records: list[dict] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics for metrics/eval.json, one review row per scored test record).

    `split_records`, the test split's validated records, feed the retrieved and closed-book conditions
    (koraft.evaluation.conditions): their questions, answers and the only documents a retriever sees.
    """
    systems: dict[str, SystemOutput] = {}
    built, questions, held_out = None, [], {}
    if settings.conditions is not None and not settings.predictions_file:
        if split_records is None:
            raise KoraftError("eval.conditions: the retrieved and closed-book conditions need the test split's "
                              "records (data/split/test.jsonl)")
        questions = sample_questions(split_records, settings.conditions.questions, settings.bootstrap["seed"])
        built = build_conditions(split_records, questions, settings.conditions, settings.requests)
    if settings.perplexity is not None and "test_documents" in settings.perplexity.sources and split_records is None \
            and not settings.predictions_file:
        raise KoraftError("eval.perplexity: the test_documents source needs the test split's records "
                          "(data/split/test.jsonl)")
    if settings.predictions_file:
        path = check_inside(settings.predictions_file, [paths.predictions], "eval.predictions_file")
        if path.stem in ("comparisons", "scoring", "warnings"):
            raise ParamError("eval.predictions_file", f"{path.name}: the system is named after the file, and "
                                                      f"{path.stem!r} is a section of metrics/eval.json; rename it")
        systems[path.stem] = SystemOutput(outputs=read_predictions(path, [row["id"] for row in test_rows]))
    else:
        if settings.perplexity is not None:
            held_out = held_out_texts(split_records or [], settings.perplexity.sources)
        for name in settings.variants:
            answers_conditions = built is not None and name in settings.conditions.variants
            scores_text = settings.perplexity is not None and name in settings.perplexity.variants
            systems[name] = run_variant(name, test_rows, settings, paths, built.rows if answers_conditions else None,
                                        held_out if scores_text else None)
        for name, kind in settings.served_systems.items():
            systems[name] = run_served(name, kind, test_rows, settings, paths)
        for endpoint in settings.endpoints:
            systems[endpoint.name] = run_endpoint(endpoint, test_rows, settings, paths)
    # Every system is scored on every test record: one whose prompt did not fit counts as a failure.
    rows = test_rows
    for system in systems.values():
        if len(system.unfit) == len(rows):
            raise KoraftError(f"eval: no test prompt fits {settings.prompt_budget} tokens (train.args.max_length "
                              f"minus eval.max_new_tokens): {system.unfit[0]['reason']}")
        system.outputs.update({unfit["id"]: "" for unfit in system.unfit})
    references = [row["answer"] for row in rows]
    scorers = Scorers(settings.bertscore, settings.cosine, settings.encoder_family, base_folder(settings, paths))
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
            "intervals": intervals(scores, stats, scorers, len(rows), settings.bootstrap),
            "reasoning": reasoning_report(rows, system, [answer.extracted for answer in answers[name]]),
            "distractor_answers": distractor_answers(rows, [answer.text for answer in answers[name]],
                                                     scores["exact_match"]),
        }
        if settings.abstain_answer is not None:
            metrics[name]["abstention"] = abstention([answer.text for answer in answers[name]],
                                                     golden_shown(ORACLE, rows, system), settings.abstain_answer)
        if system.cost is not None:
            cut = sum(1 for row in rows if not system.stopped.get(row["id"], True))
            metrics[name]["generation"] = {
                "max_new_tokens": settings.max_new_tokens, "cut": cut, "cut_share": round(cut / len(rows), 4),
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
    metrics["comparisons"] = compare(per_system, scorers, len(rows), settings.bootstrap)
    judged: dict[str, dict] = {}
    if settings.judge is not None:
        if paths.judge_calls is None:
            raise KoraftError("eval.judge: the evaluate stage needs --judge-calls, the judge's call cache")
        metrics["judge"], judged = judge(rows, {name: [answer.text for answer in found] for name, found in
                                                answers.items()}, {name: per_system[name][0]["f1"] for name in systems},
                                         settings.judge, settings.requests, paths.judge_calls,
                                         settings.bootstrap["seed"])
    if built is not None:
        metrics["conditions"] = score_conditions(rows, systems, built, questions, settings.conditions,
                                                 settings.bootstrap)
    if settings.perplexity is not None and not settings.predictions_file:
        metrics["perplexity"] = {**perplexity_report({name: system.perplexity for name, system in systems.items()
                                                      if system.perplexity}, held_out, settings.bootstrap),
                                 "max_tokens": settings.perplexity.max_tokens}
    metrics["scoring"] = {"samples": len(rows), "test_records": len(test_rows), **scorers.report(),
                          "bootstrap": settings.bootstrap}
    warnings = [f"{metric}: {metrics['scoring'][metric]['warning']}" for metric in ("bertscore", "cosine")
                if "warning" in metrics["scoring"][metric]]
    warnings += rise_warnings(metrics.get("perplexity", {}))
    warnings += [f"{name}: {system.long_targets} test targets are longer than eval.max_new_tokens "
                 f"({settings.max_new_tokens} tokens): no output can match them whole"
                 for name, system in systems.items() if system.long_targets]
    if warnings:
        metrics["warnings"] = warnings
    review = review_rows(rows, systems, answers, per_system)
    for row in review:
        if judged.get(row["id"]):
            row["judge"] = judged[row["id"]]
    if built is not None:
        by_id = condition_review(built, systems, settings.conditions.variants)
        for row in review:
            if row["id"] in by_id:
                row["conditions"] = by_id[row["id"]]
    return metrics, review


def base_folder(settings: EvalSettings, paths: EvalPaths) -> str:
    """Where the `model:` preset's weights are: the base stage's folder for a local preset, else its hub id."""
    from koraft.models.presets import resolve_model

    return resolve_model(settings.model, paths.tiny_models).source


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
