"""BM25 for hard-negative distractors, over character bigrams (default) or Kiwi morphemes.

Terms: `bigrams` splits text into runs of Hangul/CJK characters, each cut into overlapping
character bigrams (a lone character stays a unigram), and runs of other letters and digits, kept
whole and lowercased: Lucene's CJK bigram analysis, Elasticsearch's standard analyzer for Korean
besides a morphological one. It is the default because it was both better and faster here
(docs/data.md): on the shipped KorQuAD sample it ranks the golden paragraph first for 100% of
questions against 84% for Kiwi's content morphemes, and it needs no analyser, which bounds the
stage at a million records (Kiwi analyses about 180,000 characters a second on 2 cores).
`morphemes` (koraft.core.morphemes) matches stems across particles instead (서울 in 서울에서).

The index is a sparse matrix built while the documents stream in, so memory holds term weights,
never the documents' token lists. Exact top-k over a whole split costs every question a pass over
every document, which grows with records x documents; so documents are dealt into pools of at most
`pool` documents, and a question is ranked within its golden document's pool. Scores still use
the idf and average length of all documents, so a pool only limits where distractors come from.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from scipy import sparse

TERMS = ("bigrams", "morphemes")
_CJK = "\u3040-\u30ff\u3131-\u318e\u3400-\u9fff\uac00-\ud7a3\uf900-\ufaff"  # kana, jamo, hanja, syllables
_RUNS = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
_SCORES_PER_CHUNK = 1 << 20  # queries x pool documents scored at once: 4 MiB of float32, in cache


def character_bigrams(texts: list[str]) -> list[list[str]]:
    """texts -> terms: CJK runs as overlapping bigrams (a lone character as itself), other words whole."""
    analysed = []
    for text in texts:
        terms: list[str] = []
        for cjk, other in _RUNS.findall(text.lower()):
            if other:
                terms.append(other)
            elif len(cjk) == 1:
                terms.append(cjk)
            else:
                terms.extend([cjk[i:i + 2] for i in range(len(cjk) - 1)])
        analysed.append(terms)
    return analysed


def term_tokenizer(terms: str) -> Callable[[list[str]], list[list[str]]]:
    """raft.bm25.terms -> the function that turns a batch of texts into BM25 terms."""
    if terms == "bigrams":
        return character_bigrams
    from koraft.core.morphemes import morpheme_tokenizer

    return morpheme_tokenizer()


class BM25Index:
    """Okapi BM25 with Lucene's non-negative idf, ranked within pools of documents."""

    def __init__(self, documents: Iterable[list[str]], k1: float, b: float, pool: int) -> None:
        """`documents` may be a generator: each one's term counts go into compact arrays as it comes.

        Document i belongs to pool i % pools, with pools = ceil(documents / pool): pools differ in
        size by at most one, and documents in sorted order are spread over all of them.
        """
        self.vocabulary: dict[str, int] = {}
        rows, cols, counts = array("i"), array("i"), array("f")
        size = 0
        for row, tokens in enumerate(documents):
            size = row + 1
            for term, count in Counter(tokens).items():
                rows.append(row)
                cols.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                counts.append(count)
        self.size = size
        self.pools = max(1, -(-size // pool))
        # Terms x documents, holding term counts and then BM25 weights: a query row times it gives scores.
        matrix = sparse.csr_matrix((np.frombuffer(counts, np.float32),
                                    (np.frombuffer(cols, np.int32), np.frombuffer(rows, np.int32))),
                                   shape=(max(len(self.vocabulary), 1), size))
        del rows, cols, counts
        doc_freq = np.diff(matrix.indptr)
        idf = np.log1p((size - doc_freq + 0.5) / (doc_freq + 0.5)).astype(np.float32)
        lengths = np.bincount(matrix.indices, weights=matrix.data, minlength=size)
        norm = (k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))).astype(np.float32)
        tf = matrix.data
        term_of_entry = np.repeat(np.arange(len(doc_freq)), doc_freq)
        # float32 weights and scores: half the memory traffic of float64, the bound of ranking (measured
        # 1.2x faster). A query adds each document's matching weights in the query's term order, the
        # same for every document, so documents matching with equal weights tie exactly; ties fall to
        # the document index.
        matrix.data = (idf[term_of_entry] * tf * np.float32(k1 + 1) / (tf + norm[matrix.indices])).astype(np.float32)
        self._terms = matrix.shape[0]
        self._pool_weights = [matrix[:, pool_index::self.pools].tocsr() for pool_index in range(self.pools)]

    def scores(self, tokens: list[str]) -> np.ndarray:
        """One query's score for every document, whatever its pool: the exhaustive reference for `rank`."""
        total = np.zeros(self.size, np.float32)
        query = self._query_matrix([tokens])
        for pool_index, pool_weights in enumerate(self._pool_weights):
            total[pool_index::self.pools] = query.dot(pool_weights).toarray().ravel()
        return total

    def rank(self, queries: list[list[str]], golden: list[int], k: int) -> list[list[int]]:
        """For each query, up to k document indices with a positive score, best first.

        Query i is ranked among the documents of golden[i]'s pool, never golden[i] itself.
        Ties are broken by document index, so results are deterministic.
        """
        ranked: list[list[int]] = [[] for _ in queries]
        golden_array = np.asarray(golden, np.int64)
        for pool_index, pool_weights in enumerate(self._pool_weights):
            members = np.flatnonzero(golden_array % self.pools == pool_index)
            chunk = max(1, _SCORES_PER_CHUNK // max(pool_weights.shape[1], 1))
            for start in range(0, len(members), chunk):
                part = members[start:start + chunk]
                scores = self._query_matrix([queries[i] for i in part]).dot(pool_weights).toarray()
                scores[np.arange(len(part)), golden_array[part] // self.pools] = 0.0
                for i, local in zip(part, _top_k(scores, k), strict=True):
                    ranked[i] = (local * self.pools + pool_index).tolist()
        return ranked

    def search(self, queries: list[list[str]], k: int) -> list[list[int]]:
        """For each query, up to k document indices with a positive score among all documents, best first.

        A retriever's view: no document is excluded and no pool limits the search. Ties fall to the
        document index, as in `rank`.
        """
        ranked: list[list[int]] = []
        chunk = max(1, _SCORES_PER_CHUNK // max(self.size, 1))
        for start in range(0, len(queries), chunk):
            part = queries[start:start + chunk]
            query = self._query_matrix(part)
            scores = np.zeros((len(part), self.size), np.float32)
            for pool_index, pool_weights in enumerate(self._pool_weights):
                scores[:, pool_index::self.pools] = query.dot(pool_weights).toarray()
            ranked += [found.tolist() for found in _top_k(scores, k)]
        return ranked

    def _query_matrix(self, queries: list[list[str]]) -> sparse.csr_matrix:
        """Queries x terms, 1 where the query holds the term (a repeated term counts once)."""
        rows, cols = [], []
        for row, tokens in enumerate(queries):
            terms = sorted({self.vocabulary[t] for t in tokens if t in self.vocabulary})
            rows.extend([row] * len(terms))
            cols.extend(terms)
        return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(queries), self._terms))


def _top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row of `scores`, the column indices of its k best positive scores, ties by column index.

    argmax returns the first of equal maxima, so knocking the row maximum out k times yields the
    top k already ordered by score, then column: k vectorised passes, several times faster than
    np.partition over the row plus a sort. Overwrites `scores`.
    """
    if k == 0 or scores.shape[1] == 0:
        return [np.empty(0, np.int64) for _ in scores]
    everyone = np.arange(len(scores))
    best = np.empty((len(scores), min(k, scores.shape[1])), np.int64)
    positive = np.empty(best.shape, bool)
    for rank in range(best.shape[1]):
        best[:, rank] = scores.argmax(axis=1)
        positive[:, rank] = scores[everyone, best[:, rank]] > 0
        scores[everyone, best[:, rank]] = -np.inf
    return [row[keep] for row, keep in zip(best, positive, strict=True)]
