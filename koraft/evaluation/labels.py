"""The names metrics/eval.json is read by: variants, comparisons, metrics and their display labels.

The evaluate stage writes with them; the report, the hub card and the pull-request comment read with them.
"""

from __future__ import annotations

from typing import Any

VARIANTS = ("base", "finetuned", "preferred", "student_base", "distilled")
SERVED = "served"  # the variant that serves the exported GGUFs on llama.cpp (koraft.evaluation.served)
# In each test condition, the paper's comparison (does training beat giving the base model the same documents?)
# and what preference tuning adds to SFT.
CONDITION_COMPARISONS = {"finetuned_vs_base": ("base", "finetuned"),
                         "preferred_vs_finetuned": ("finetuned", "preferred"),
                         "distilled_vs_base": ("base", "distilled")}
INTERVAL_METRICS = ("exact_match", "f1")  # each system's own bootstrap interval, next to its value
COMPARISONS = {"finetuned_vs_base": ("base", "finetuned"), "preferred_vs_finetuned": ("finetuned", "preferred"),
               "distilled_vs_student_base": ("student_base", "distilled")}
MAIN_METRICS = ("f1", "exact_match", "rougeL", "bleu", "chrf", "bertscore_f1", "cosine")
METRIC_ORDER = ("exact_match", "f1", "rouge1", "rouge2", "rougeL", "rouge1_char", "rouge2_char", "rougeL_char",
                "bleu", "chrf", "bertscore_precision", "bertscore_recall", "bertscore_f1", "cosine")
# Short display names, shared by the report and the pull-request comment.
METRIC_LABELS = {"exact_match": "EM", "f1": "F1", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                 "rouge1_char": "ROUGE-1 (char)", "rouge2_char": "ROUGE-2 (char)", "rougeL_char": "ROUGE-L (char)",
                 "bleu": "BLEU", "chrf": "chrF", "bertscore_precision": "BERTScore-P",
                 "bertscore_recall": "BERTScore-R", "bertscore_f1": "BERTScore-F1", "cosine": "cosine"}


def systems(metrics: dict[str, Any]) -> list[str]:
    """The evaluated systems of a metrics/eval.json (variants, or a predictions file), in order."""
    return [name for name, values in metrics.items() if isinstance(values, dict) and "f1" in values]


def variant_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per evaluated system with its headline metrics: the data of the per-variant bar charts."""
    return [{"variant": name, **{metric: metrics[name][metric] for metric in MAIN_METRICS}}
            for name in systems(metrics)]
