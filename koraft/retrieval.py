"""BM25 over Kiwi morphemes (koraft.morphemes), for hard-negative distractors.

The index is a sparse matrix built while the documents stream in, and queries are scored in
chunks, so memory holds term counts, never the documents' token lists.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable

import numpy as np
from scipy import sparse

_QUERY_CHUNK = 256


class BM25Index:
    """Okapi BM25 with Lucene's non-negative idf."""

    def __init__(self, documents: Iterable[list[str]], k1: float, b: float) -> None:
        """`documents` may be a generator: each one's term counts go into compact arrays as it comes."""
        self.vocabulary: dict[str, int] = {}
        rows, cols, counts = array("q"), array("q"), array("f")
        size = 0
        for row, tokens in enumerate(documents):
            size = row + 1
            for term, count in Counter(tokens).items():
                rows.append(row)
                cols.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                counts.append(count)
        shape = (size, max(len(self.vocabulary), 1))
        tf = sparse.csr_matrix((np.frombuffer(counts, np.float32),
                                (np.frombuffer(rows, np.int64), np.frombuffer(cols, np.int64))), shape=shape)
        doc_freq = np.bincount(tf.indices, minlength=shape[1])
        idf = np.log1p((shape[0] - doc_freq + 0.5) / (doc_freq + 0.5)).astype(np.float32)
        lengths = np.asarray(tf.sum(axis=1)).ravel()
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))
        row_of_entry = np.repeat(np.arange(shape[0]), np.diff(tf.indptr))
        tf.data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm[row_of_entry])
        self._term_by_doc = tf.T.tocsr()  # (terms x documents): a query row times this gives scores

    def rank(self, queries: list[list[str]], exclude: list[int], k: int) -> list[list[int]]:
        """For each query, up to k document indices with a positive score, best first.

        `exclude[i]` is a document index query i must never get (its golden document).
        Ties are broken by document index, so results are deterministic.
        """
        rows, cols = [], []
        for row, tokens in enumerate(queries):
            terms = {self.vocabulary[t] for t in tokens if t in self.vocabulary}
            rows.extend([row] * len(terms))
            cols.extend(sorted(terms))
        matrix = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(queries), self._term_by_doc.shape[0])
        )
        ranked: list[list[int]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            scores = (matrix[start : start + _QUERY_CHUNK] @ self._term_by_doc).toarray()
            for offset, row_scores in enumerate(scores):
                row_scores[exclude[start + offset]] = 0.0
                take = min(k, len(row_scores))
                top = np.argpartition(-row_scores, take - 1)[:take] if take else np.array([], int)
                top = top[np.lexsort((top, -row_scores[top]))]
                ranked.append([int(i) for i in top if row_scores[i] > 0])
        return ranked
