"""BM25 terms compared: character bigrams against Kiwi morphemes, for raft.bm25.terms.

    python benchmarks/bm25_terms.py [--synthetic-docs 3000] [--questions 2000]

On the shipped KorQuAD sample (real Wikipedia paragraphs) and on synthetic documents it indexes
every document with each kind of term, ranks each question against all of them (the golden one
included) and prints how often the golden document comes first (P@1) and in the top 4 (R@4),
with the seconds spent turning texts into terms. A ranker that finds the golden document is one
whose next-best documents are the questions' hardest negatives.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from koraft.data.bm25 import TERMS, BM25Index, term_tokenizer
from koraft.data.readers import InputSpec, read_records
from koraft.data.synth import synthetic_corpus

ROOT = Path(__file__).resolve().parent.parent


def korquad_sample() -> tuple[list[str], list[tuple[str, int]]]:
    """The shipped KorQuAD sample through validate's own SQuAD reader: paragraphs and their questions."""
    documents: dict[str, int] = {}
    questions = []
    for record in read_records(InputSpec(str(ROOT / "data/raw/sample_korquad.json"), "squad")):
        index = documents.setdefault(record.fields["context"], len(documents))
        questions.append((record.fields["question"], index))
    return list(documents), questions


def synthetic(num_docs: int, num_questions: int) -> tuple[list[str], list[tuple[str, int]]]:
    corpus = synthetic_corpus(num_docs, 4, seed=1)
    questions = [(qa.question, index) for index, (_, qas) in enumerate(corpus) for qa in qas]
    random.Random(0).shuffle(questions)
    return [document.text for document, _ in corpus], questions[:num_questions]


def measure(documents: list[str], questions: list[tuple[str, int]], terms: str) -> tuple[float, float, float]:
    """(P@1, R@4, seconds to analyse documents and questions) for one kind of term."""
    tokenize = term_tokenizer(terms)
    tokenize(documents[:10])  # load Kiwi outside the timing
    start = time.perf_counter()
    document_terms, question_terms = tokenize(documents), tokenize([q for q, _ in questions])
    seconds = time.perf_counter() - start
    index = BM25Index(document_terms, k1=1.5, b=0.75, pool=len(documents))
    first = top4 = 0
    for (_, golden), tokens in zip(questions, question_terms, strict=True):
        order = np.argsort(-index.scores(tokens), kind="stable")
        first += order[0] == golden
        top4 += golden in order[:4]
    return first / len(questions), top4 / len(questions), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic-docs", type=int, default=3000)
    parser.add_argument("--questions", type=int, default=2000)
    args = parser.parse_args()
    corpora = {"KorQuAD sample": korquad_sample(), "synthetic": synthetic(args.synthetic_docs, args.questions)}
    print(f"{'corpus':<16}{'terms':<11}{'docs':>6}{'questions':>10}{'P@1':>7}{'R@4':>7}{'analysis s':>12}")
    for name, (documents, questions) in corpora.items():
        figures = {terms: measure(documents, questions, terms) for terms in TERMS}
        for terms, (p1, r4, seconds) in figures.items():
            print(f"{name:<16}{terms:<11}{len(documents):>6}{len(questions):>10}{p1:>7.3f}{r4:>7.3f}{seconds:>12.2f}")
        ratio = figures["morphemes"][2] / max(figures["bigrams"][2], 1e-9)
        print(f"{'':<16}morphemes take {ratio:.0f}x the analysis time of bigrams")


if __name__ == "__main__":
    main()
