"""Scoring: every metric per system, on all records or a subset, with bootstrap intervals and comparisons."""

from __future__ import annotations

from typing import Any

import numpy as np

from koraft.evaluation.answers import check_quotes
from koraft.evaluation.bootstrap import Statistic, interval, mean_of, paired_difference
from koraft.evaluation.embeddings import (
    AUTO_BERTSCORE,
    AUTO_BERTSCORE_LAYERS,
    AUTO_COSINE,
    BertScore,
    CosineSimilarity,
    for_family,
    resolve_encoder,
)
from koraft.evaluation.labels import COMPARISONS, INTERVAL_METRICS, MAIN_METRICS, METRIC_ORDER
from koraft.evaluation.metrics import CORPUS_METRICS, LexicalScorer, korquad_normalize
from koraft.evaluation.systems import SystemOutput


class Scorers:
    """The lexical scorer and the two encoders, loaded once for every system."""

    def __init__(self, bertscore: dict[str, Any], cosine: dict[str, Any], family: str,
                 model_folder: str | None = None):
        """`model_folder`: the `model:` preset's weights, which BERTScore embeds with where it names `model`."""
        encoder = resolve_encoder(bertscore["model"], family, AUTO_BERTSCORE, "eval.bertscore",
                                  model_folder=model_folder)
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


def distractor_answers(rows: list[dict], answers: list[str], exact: np.ndarray) -> dict[str, Any]:
    """Wrong answers taken from a distractor, the failure preference tuning targets: a wrong, non-empty answer
    counts when its normalised text is in a distractor document of the record and not in the golden one."""
    wrong = taken = 0
    for row, answer, right in zip(rows, answers, exact, strict=True):
        text = korquad_normalize(answer)
        if right or not text:
            continue
        wrong += 1
        golden = row.get("oracle_index")
        in_golden = golden is not None and text in korquad_normalize(row["documents"][golden])
        taken += not in_golden and any(text in korquad_normalize(document)
                                       for index, document in enumerate(row["documents"]) if index != golden)
    return {"wrong": wrong, "from_distractor": taken, "share": share(taken, wrong)}


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
