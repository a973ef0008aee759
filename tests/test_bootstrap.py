"""Paired bootstrap intervals: they cover the true difference as often as they claim."""

from __future__ import annotations

import numpy as np
import pytest

from koraft.evaluation.bootstrap import mean_of, paired_difference


def test_interval_contains_the_true_difference_and_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)
    better = base + 0.1 + rng.normal(0, 0.05, 400)  # true mean difference 0.1
    difference = paired_difference(mean_of(base), mean_of(better), 400, resamples=2000, seed=1)
    assert difference.low < 0.1 < difference.high
    assert difference.low > 0 and difference.share_better == 1.0
    assert difference.delta == pytest.approx((better - base).mean())


def test_coverage_is_close_to_the_confidence_level():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(200):
        a = rng.binomial(1, 0.4, 80).astype(float)  # e.g. exact match of two systems
        b = np.where(rng.uniform(size=80) < 0.5, a, rng.binomial(1, 0.55, 80))  # true difference 0.075
        difference = paired_difference(mean_of(a), mean_of(b), 80, resamples=400, seed=trial)
        covered += difference.low <= 0.075 <= difference.high
    assert 0.88 <= covered / 200 <= 0.99


def test_identical_systems_give_a_zero_interval_and_the_same_seed_the_same_interval():
    scores = np.random.default_rng(3).uniform(size=50)
    same = paired_difference(mean_of(scores), mean_of(scores), 50, resamples=500, seed=4)
    assert (same.delta, same.low, same.high, same.share_better) == (0.0, 0.0, 0.0, 0.0)
    other = np.random.default_rng(5).uniform(size=50)
    first = paired_difference(mean_of(scores), mean_of(other), 50, resamples=500, seed=4)
    assert first == paired_difference(mean_of(scores), mean_of(other), 50, resamples=500, seed=4)
    assert first != paired_difference(mean_of(scores), mean_of(other), 50, resamples=500, seed=5)


def test_corpus_statistics_are_recomputed_per_resample():
    from koraft.evaluation.metrics import LexicalScorer

    scorer = LexicalScorer()
    references = ["서울에서 만나요", "봄에 먹습니다", "1997년에 발사되었다", "경기도에 속해 있습니다"] * 5
    good = scorer.score(references, references).corpus_stats["bleu"]
    bad = scorer.score(["부산", "여름", "2001년", "강원도"] * 5, references).corpus_stats["bleu"]
    difference = paired_difference(lambda i: scorer.corpus_score("bleu", bad[i]),
                                   lambda i: scorer.corpus_score("bleu", good[i]), 20, resamples=200, seed=0)
    assert difference.delta == pytest.approx(100.0) and difference.low > 90
