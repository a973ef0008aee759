"""Lexical answer metrics that are correct for Korean: KorQuAD EM/F1, ROUGE, BLEU and chrF.

- EM and F1 follow the KorQuAD 1.0 evaluation script: strip quotes, brackets and ASCII
  punctuation, lowercase, fold whitespace; EM compares the normalized strings (spaces
  included), F1 counts characters with spaces removed.
- ROUGE uses rouge-score with Kiwi morphemes as tokens (its default tokenizer keeps only
  [a-z0-9] and scores every Korean pair 0), plus a character variant.
- BLEU runs on the same Kiwi morphemes (sacrebleu's `tokenize="none"`: the input is already
  tokenized); chrF on the raw text, whose character n-grams need no tokenizer.

Per-sample scores are arrays in input order; BLEU and chrF are corpus scores, kept as
per-sample sufficient statistics so that any subset (golden document present, a bootstrap
resample) is scored exactly as sacrebleu would score it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from koraft.core.morphemes import morpheme_tokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
CORPUS_METRICS = ("bleu", "chrf")
_KORQUAD_MARKS = re.compile("['\"《》<>〈〉()‘’]")
_ASCII_PUNCTUATION = set(string.punctuation)


def korquad_normalize(text: str) -> str:
    text = _KORQUAD_MARKS.sub(" ", text).lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(korquad_normalize(prediction) == korquad_normalize(reference))


def char_f1(prediction: str, reference: str) -> float:
    """KorQuAD's F1: precision and recall over the characters of the normalized texts, spaces removed."""
    predicted = [ch for ch in korquad_normalize(prediction) if ch != " "]
    expected = [ch for ch in korquad_normalize(reference) if ch != " "]
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def characters(text: str) -> list[str]:
    """The character tokens of the ROUGE character variant: no whitespace, no punctuation, lowercase."""
    return [ch for ch in text.lower() if not ch.isspace() and not unicodedata.category(ch).startswith("P")]


class _TokenTable:
    """rouge-score's tokenizer interface (`tokenize(text)`) over tokens computed beforehand in one batch."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table

    def tokenize(self, text: str) -> list[str]:
        return self.table[text]


@dataclass
class LexicalScores:
    per_sample: dict[str, np.ndarray]  # metric -> one score in [0, 1] per pair
    corpus_stats: dict[str, np.ndarray]  # bleu, chrf -> (pairs, statistics) to sum over any subset


class LexicalScorer:
    """Scores prediction/reference pairs; load once (Kiwi takes about a second), score many systems."""

    def __init__(self) -> None:
        from sacrebleu.metrics import BLEU, CHRF

        self.morphemes = morpheme_tokenizer(content_only=False)
        self.bleu = BLEU(tokenize="none", force=True)  # input is Kiwi morphemes joined by spaces
        self.chrf = CHRF()

    def tokenize(self, texts: Sequence[str]) -> dict[str, list[str]]:
        unique = sorted(set(texts))
        return dict(zip(unique, self.morphemes(unique), strict=True))

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> LexicalScores:
        from rouge_score.rouge_scorer import RougeScorer

        morphemes = self.tokenize([*predictions, *references])
        by_morpheme = RougeScorer(list(ROUGE_TYPES), tokenizer=_TokenTable(morphemes))
        by_character = RougeScorer(list(ROUGE_TYPES), tokenizer=_TokenTable(
            {text: characters(text) for text in {*predictions, *references}}))
        per_sample: dict[str, list[float]] = {name: [] for name in (
            "exact_match", "f1", *ROUGE_TYPES, *(f"{name}_char" for name in ROUGE_TYPES))}
        for prediction, reference in zip(predictions, references, strict=True):
            per_sample["exact_match"].append(exact_match(prediction, reference))
            per_sample["f1"].append(char_f1(prediction, reference))
            for scorer, suffix in ((by_morpheme, ""), (by_character, "_char")):
                rouge = scorer.score(reference, prediction)
                for name in ROUGE_TYPES:
                    per_sample[name + suffix].append(rouge[name].fmeasure)
        joined = [" ".join(morphemes[text]) for text in predictions], [" ".join(morphemes[t]) for t in references]
        corpus_stats = {
            "bleu": np.array(self.bleu._extract_corpus_statistics(joined[0], [joined[1]]), dtype=np.int64),
            "chrf": np.array(self.chrf._extract_corpus_statistics(list(predictions), [list(references)]),
                             dtype=np.int64),
        }
        return LexicalScores({name: np.array(values) for name, values in per_sample.items()}, corpus_stats)

    def corpus_score(self, metric: str, stats: np.ndarray) -> float:
        """BLEU or chrF in [0, 100] from summed per-sample statistics, as sacrebleu computes it."""
        scorer = self.bleu if metric == "bleu" else self.chrf
        if len(stats) == 0:
            return float("nan")
        return float(scorer._compute_score_from_stats(stats.sum(0).tolist()).score)

    def signatures(self) -> dict[str, str]:
        import kiwipiepy

        return {"bleu": f"{self.bleu.get_signature()}|pretok:kiwi-{kiwipiepy.__version__}",
                "chrf": str(self.chrf.get_signature())}
