"""Is a metric change between two runs signal or noise? A paired bootstrap over the records both scored.

Two runs of the pipeline (main and a pull request, or two experiments) each commit their per-record
scores in metrics/eval/predictions.jsonl. Pairing the records by id and resampling them asks whether
the change would survive another test set of this size: when the interval of the change covers 0,
the change is within noise, and the report and the pull-request comment say so in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from koraft.evaluation.bootstrap import Difference, mean_of, paired_difference

PER_RECORD = ("f1", "exact_match", "rougeL", "bertscore_f1", "cosine")  # metrics that are a mean over records


@dataclass(frozen=True)
class Change:
    variant: str
    metric: str
    records: int  # records both runs scored
    difference: Difference
    confidence: float

    @property
    def verdict(self) -> str:
        if self.difference.low > 0:
            return "better"
        if self.difference.high < 0:
            return "worse"
        return "within noise"

    def words(self) -> str:
        """One sentence: the change, its interval and what it means."""
        d = self.difference
        interval = f"{self.confidence:.0%} interval [{d.low:+.4f}, {d.high:+.4f}] over {self.records} paired records"
        if self.verdict == "within noise":
            return f"{d.delta:+.4f}, within noise: the {interval} covers 0"
        return f"{d.delta:+.4f}, {self.verdict}: the {interval} excludes 0"


def paired_scores(old: list[dict[str, Any]], new: list[dict[str, Any]], variant: str, metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The metric per record for the records both runs scored with this variant, in one order."""
    def by_id(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {row["id"]: row["outputs"][variant]["scores"][metric] for row in rows
                if metric in row.get("outputs", {}).get(variant, {}).get("scores", {})}

    before, after = by_id(old), by_id(new)
    common = sorted(before.keys() & after.keys())
    return np.array([before[i] for i in common]), np.array([after[i] for i in common])


def run_change(old: list[dict[str, Any]], new: list[dict[str, Any]], variant: str, metric: str,
               bootstrap: dict[str, Any]) -> Change | None:
    """The change of one variant's metric from `old` to `new` predictions, or None without common records."""
    before, after = paired_scores(old, new, variant, metric)
    if len(before) == 0:
        return None
    difference = paired_difference(mean_of(before), mean_of(after), len(before), bootstrap["resamples"],
                                   bootstrap["seed"], bootstrap["confidence"])
    return Change(variant, metric, len(before), difference, bootstrap["confidence"])


def change_lines(old: list[dict[str, Any]], new: list[dict[str, Any]], variants: list[str] | tuple[str, ...],
                 bootstrap: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """One markdown bullet per variant and headline metric (F1, EM): the change, signal or within noise."""
    lines = []
    for variant in variants:
        for metric in ("f1", "exact_match"):
            change = run_change(old, new, variant, metric, bootstrap)
            if change is not None:
                lines.append(f"- {variant} {labels[metric]}: {change.words()}")
    return lines
