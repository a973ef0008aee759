"""Scores of the test conditions (koraft.evaluation.conditions): EM and F1 per variant, with intervals,
hits and misses of the retriever, the budget's cost, abstention, and the paper's comparisons.

Only the two headline metrics: each condition is a comparison of variants on a sample of questions,
and the full metric set of the oracle run stays in the top-level blocks of metrics/eval.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from koraft.evaluation.answers import extract_answer
from koraft.evaluation.bootstrap import mean_of, paired_difference
from koraft.evaluation.conditions import CLOSED_BOOK, ORACLE, ConditionRows, ConditionSettings
from koraft.evaluation.labels import CONDITION_COMPARISONS, VARIANTS
from koraft.evaluation.metrics import char_f1, exact_match, korquad_normalize
from koraft.evaluation.scoring import intervals
from koraft.evaluation.systems import SystemOutput

HEADLINE = ("exact_match", "f1")
PLOTTED = ("base", "finetuned", "distilled")


def per_record(rows: list[dict[str, Any]], outputs: dict[str, str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """EM and F1 per row (an unanswered row scores 0), and the answers extracted."""
    answers = [extract_answer(outputs.get(row["id"], ""), bool(row.get("cot"))).text for row in rows]
    scores = {"exact_match": np.array([exact_match(a, row["answer"]) for a, row in zip(answers, rows, strict=True)]),
              "f1": np.array([char_f1(a, row["answer"]) for a, row in zip(answers, rows, strict=True)])}
    return scores, answers


def headline(scores: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, Any]:
    if len(indices) == 0:
        return {"samples": 0}
    return {"samples": int(len(indices)), **{metric: round(float(scores[metric][indices].mean()), 4)
                                             for metric in HEADLINE}}


def with_intervals(scores: dict[str, np.ndarray], bootstrap: dict[str, Any]) -> dict[str, Any]:
    result = headline(scores, np.arange(len(scores["f1"])))
    # EM and F1 are means over records: scoring's interval needs neither corpus statistics nor the scorers.
    result["intervals"] = intervals(scores, {}, None, len(scores["f1"]), bootstrap)
    return result


def abstention(answers: list[str], golden_shown: np.ndarray, abstain_answer: str) -> dict[str, Any]:
    """How often a variant abstains without the golden document (right) and with it (wrong): precision and
    recall of abstaining, with "the golden document was not in the prompt" as the positive class."""
    abstained = np.array([korquad_normalize(answer) == korquad_normalize(abstain_answer) for answer in answers])
    absent = ~golden_shown
    right = int((abstained & absent).sum())
    return {"golden_absent": int(absent.sum()), "golden_present": int(golden_shown.sum()),
            "abstained_when_absent": right, "abstained_when_present": int((abstained & golden_shown).sum()),
            "precision": round(right / abstained.sum(), 4) if abstained.sum() else None,
            "recall": round(right / absent.sum(), 4) if absent.sum() else None}


def golden_shown(condition: str, rows: list[dict[str, Any]], system: SystemOutput) -> np.ndarray:
    """Whether each row's prompt showed its golden document, after the budget dropped what did not fit.

    An oracle row's golden document is never dropped, only trimmed. The budget drops the lowest-ranked
    retrieved documents first, so a retrieved prompt that kept n documents shows the first n retrieved.
    A closed-book prompt shows none.
    """
    if condition == ORACLE:
        unfit = {entry["id"] for entry in system.unfit}
        return np.array([bool(row.get("oracle_included")) and row["id"] not in unfit for row in rows], dtype=bool)
    if condition == CLOSED_BOOK:
        return np.zeros(len(rows), dtype=bool)
    return np.array([row["golden_retrieved_at"] is not None
                     and row["golden_retrieved_at"] < len(system.documents.get(row["id"], [])) for row in rows],
                    dtype=bool)


def score_condition(condition: str, rows: list[dict[str, Any]], systems: dict[str, SystemOutput],
                    settings: ConditionSettings, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """One condition: every variant's EM and F1, hits and misses, abstention, and the comparisons."""
    result: dict[str, Any] = {}
    scored = {}
    everything = np.arange(len(rows))
    for name, system in systems.items():
        scores, answers = per_record(rows, system.outputs)
        scored[name] = scores
        shown = golden_shown(condition, rows, system)
        values = with_intervals(scores, bootstrap)
        if condition != CLOSED_BOOK:
            values["by_golden"] = {"shown": headline(scores, everything[shown]),
                                   "not_shown": headline(scores, everything[~shown])}
        if condition not in (ORACLE, CLOSED_BOOK):
            retrieved = np.array([row["golden_retrieved_at"] is not None for row in rows], dtype=bool)
            values["golden_dropped_by_budget"] = int((retrieved & ~shown).sum())
        values["unanswered"] = len(system.unfit)  # prompts that could not fit: scored 0
        if settings.abstain_answer is not None:
            values["abstention"] = abstention(answers, shown, settings.abstain_answer)
        result[name] = values
    result["comparisons"] = {}
    for label, (a, b) in CONDITION_COMPARISONS.items():
        if a in scored and b in scored:
            result["comparisons"][label] = {
                metric: paired_difference(mean_of(scored[a][metric]), mean_of(scored[b][metric]), len(rows),
                                          bootstrap["resamples"], bootstrap["seed"], bootstrap["confidence"]
                                          ).as_dict()
                for metric in HEADLINE}
    return result


def condition_review(built: ConditionRows, systems: dict[str, SystemOutput], variants: tuple[str, ...]
                     ) -> dict[str, dict[str, Any]]:
    """Per sampled record id, each generated condition's answers for review (metrics/eval/predictions.jsonl):
    where the retriever put the golden document, and each variant's output, answer, whether its prompt
    showed the golden document, and EM and F1."""
    review: dict[str, dict[str, Any]] = {}
    for condition, rows in built.rows.items():
        per_variant = {}
        for name in variants:
            system = systems[name].conditions[condition]
            per_variant[name] = (system, *per_record(rows, system.outputs), golden_shown(condition, rows, system))
        for i, row in enumerate(rows):
            entry = {"golden_retrieved_at": row["golden_retrieved_at"]} if condition != CLOSED_BOOK else {}
            entry["outputs"] = {name: {"output": system.outputs.get(row["id"], ""), "answer": answers[i],
                                       "golden_shown": bool(shown[i]),
                                       "scores": {metric: round(float(scores[metric][i]), 4) for metric in HEADLINE}}
                                for name, (system, scores, answers, shown) in per_variant.items()}
            review.setdefault(row["id"], {})[condition] = entry
    return review


def score_conditions(test_rows: list[dict[str, Any]], oracle: dict[str, SystemOutput], built: ConditionRows,
                     questions: list[dict[str, Any]], settings: ConditionSettings, bootstrap: dict[str, Any]
                     ) -> dict[str, Any]:
    """metrics/eval.json's `conditions`: the oracle rescored on the sample, then each generated condition."""
    sampled = {record["id"] for record in questions}
    oracle_rows = [row for row in test_rows if row["id"] in sampled]
    result: dict[str, Any] = {"questions": len(questions), "variants": list(settings.variants)}
    if built.retrieval:
        result["retrieval"] = built.retrieval
    result[ORACLE] = score_condition(ORACLE, oracle_rows, {name: oracle[name] for name in settings.variants},
                                     settings, bootstrap)
    for condition, rows in built.rows.items():
        result[condition] = score_condition(condition, rows, {name: oracle[name].conditions[condition]
                                                              for name in settings.variants}, settings, bootstrap)
    return result


def condition_points(conditions: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics/eval/conditions.json, the data of the EM and F1 against k plots: one row per k (closed book is
    k = 0), one column per variant and metric; the paper's three variants always have theirs (null where
    one did not run), so dvc.yaml's plot definitions hold whichever variants run."""
    variants = [name for name in VARIANTS if name in PLOTTED or name in conditions.get("variants", [])]
    points = []
    for condition, values in conditions.items():
        if condition == CLOSED_BOOK:
            k = 0
        elif condition.startswith("retrieved_k"):
            k = int(condition.removeprefix("retrieved_k"))
        else:
            continue
        point: dict[str, Any] = {"k": k, "condition": condition}
        for name in variants:
            for metric in HEADLINE:
                point[f"{name}_{metric}"] = values.get(name, {}).get(metric)
        points.append(point)
    return sorted(points, key=lambda point: point["k"])
