"""Bootstrap confidence intervals: of one system's metric, and paired for "system B minus system A".

Each resample draws the test samples with replacement and scores both systems on the same
draw, so the interval reflects the difference on this test set rather than two independent
spreads. Per-sample metrics are averaged; corpus metrics (BLEU, chrF) are recomputed from the
summed per-sample statistics of the drawn samples, as sacrebleu's own paired bootstrap does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]  # sample indices (with repeats) -> the metric on them


@dataclass(frozen=True)
class Difference:
    delta: float  # metric(B) - metric(A) on the full test set
    low: float
    high: float
    share_better: float  # share of resamples in which B scored higher than A

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {"delta": round(self.delta, digits), "low": round(self.low, digits), "high": round(self.high, digits),
                "share_better": round(self.share_better, 4)}


def resample_indices(samples: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, samples) draws with replacement; the same seed gives the same draws."""
    return np.random.default_rng(seed).integers(0, samples, size=(resamples, samples))


def paired_difference(a: Statistic, b: Statistic, samples: int, resamples: int, seed: int,
                      confidence: float = 0.95) -> Difference:
    """Percentile interval of metric(B) - metric(A) over paired resamples."""
    draws = resample_indices(samples, resamples, seed)
    everything = np.arange(samples)
    deltas = np.array([b(draw) - a(draw) for draw in draws])
    low, high = percentile_interval(deltas, confidence)
    return Difference(b(everything) - a(everything), low, high, float((deltas > 0).mean()))


def interval(statistic: Statistic, samples: int, resamples: int, seed: int,
             confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of one system's metric: how far it could move on another test set of this size."""
    return percentile_interval(np.array([statistic(draw) for draw in resample_indices(samples, resamples, seed)]),
                               confidence)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_of(scores: np.ndarray) -> Statistic:
    return lambda indices: float(scores[indices].mean())
