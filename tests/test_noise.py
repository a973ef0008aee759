"""Signal or noise between two runs: a paired bootstrap over the records both scored, said in words."""

from __future__ import annotations

import numpy as np

from koraft.publish.noise import run_change

BOOTSTRAP = {"resamples": 500, "seed": 7, "confidence": 0.95}


def predictions(f1: list[float], ids: list[str] | None = None) -> list[dict]:
    ids = ids or [f"q{i}" for i in range(len(f1))]
    return [{"id": record_id, "outputs": {"finetuned": {"scores": {"f1": value}}}}
            for record_id, value in zip(ids, f1, strict=True)]


def test_an_unchanged_run_is_within_noise():
    scores = list(np.random.default_rng(0).uniform(0, 1, 200))
    change = run_change(predictions(scores), predictions(scores), "finetuned", "f1", BOOTSTRAP)
    assert change.difference.delta == 0 and change.verdict == "within noise"
    assert "within noise" in change.words() and "covers 0" in change.words() and "200 paired records" in change.words()


def test_a_small_mixed_change_is_noise_and_a_consistent_one_is_signal():
    rng = np.random.default_rng(1)
    old = rng.uniform(0, 1, 200)
    mixed = old + rng.normal(0, 0.3, 200) * 0.1  # moves each record a little, both ways
    assert run_change(predictions(list(old)), predictions(list(mixed)), "finetuned", "f1", BOOTSTRAP).verdict \
        == "within noise"
    better = run_change(predictions(list(old)), predictions(list(old + 0.05)), "finetuned", "f1", BOOTSTRAP)
    assert better.verdict == "better" and better.difference.low > 0 and "excludes 0" in better.words()
    worse = run_change(predictions(list(old)), predictions(list(old - 0.05)), "finetuned", "f1", BOOTSTRAP)
    assert worse.verdict == "worse" and worse.difference.high < 0


def test_only_records_both_runs_scored_are_paired():
    old = predictions([0.0, 1.0, 0.5], ["a", "b", "c"])
    new = predictions([1.0, 1.0, 0.0], ["b", "c", "d"])  # b and c in common
    change = run_change(old, new, "finetuned", "f1", BOOTSTRAP)
    assert change.records == 2 and change.difference.delta == 0.25  # b: 1 -> 1, c: 0.5 -> 1
    assert run_change(old, predictions([0.3], ["z"]), "finetuned", "f1", BOOTSTRAP) is None
    assert run_change(old, new, "distilled", "f1", BOOTSTRAP) is None  # a variant neither run has
