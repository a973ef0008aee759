"""The retriever of the `retrieved` test condition: the test split's documents, ranked for each test question.

The corpus is the documents of data/split/test.jsonl and nothing else, so no training document can be
retrieved (docs/evaluation.md). Three retrievers:
- `bm25`: koraft's own BM25 (koraft.data.bm25) with the raft stage's terms, k1 and b, over all
  documents at once (no pools: a retriever sees the whole corpus);
- `sentence_transformers`: a local sentence-transformers folder, cosine similarity of normalised
  embeddings;
- `embeddings`: any OpenAI-compatible /v1/embeddings endpoint (vLLM, llama.cpp's server, an API; its key
  from the environment), cosine similarity as well.
Ties fall to the document's position in the corpus, so a ranking is deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from koraft.core.errors import KoraftError
from koraft.data.config import BM25Settings
from koraft.data.neardup import text_hash
from koraft.inference.endpoints import Endpoint

RETRIEVERS = ("bm25", "sentence_transformers", "embeddings")


@dataclass(frozen=True)
class RetrievalSettings:
    retriever: str  # one of RETRIEVERS
    k: tuple[int, ...]  # top-k per pass: one test condition each
    bm25: BM25Settings  # raft.bm25: the same terms, k1 and b as the raft stage's hard negatives
    folder: str | None = None  # sentence_transformers: the local folder
    endpoint: Endpoint | None = None  # embeddings: the OpenAI-compatible server
    batch_size: int = 64  # texts embedded per call


@dataclass(frozen=True)
class Corpus:
    doc_ids: list[str]
    texts: list[str]


def split_corpus(records: list[dict[str, Any]]) -> Corpus:
    """One text per doc_id of a split's records, as the raft stage picks it (the smallest content hash)."""
    best: dict[str, tuple[str, str]] = {}
    for record in records:
        candidate = (text_hash(record["context"]), record["context"])
        if record["doc_id"] not in best or candidate < best[record["doc_id"]]:
            best[record["doc_id"]] = candidate
    doc_ids = sorted(best)
    return Corpus(doc_ids, [best[doc_id][1] for doc_id in doc_ids])


def retrieve(corpus: Corpus, questions: list[str], k: int, settings: RetrievalSettings,
             requests: dict[str, Any]) -> list[list[int]]:
    """For each question, the corpus positions of its top-k documents, best first."""
    if settings.retriever == "bm25":
        from koraft.data.bm25 import BM25Index, term_tokenizer

        tokenize = term_tokenizer(settings.bm25.terms)
        index = BM25Index(tokenize(corpus.texts), settings.bm25.k1, settings.bm25.b, max(len(corpus.texts), 1))
        return index.search(tokenize(questions), k)
    if settings.retriever == "sentence_transformers":
        documents, queries = _local_embeddings(settings.folder, corpus.texts, questions, settings.batch_size)
    else:
        documents = endpoint_embeddings(settings.endpoint, corpus.texts, settings.batch_size, requests)
        queries = endpoint_embeddings(settings.endpoint, questions, settings.batch_size, requests)
    return top_k_by_similarity(queries @ documents.T, k)


def top_k_by_similarity(similarity: np.ndarray, k: int) -> list[list[int]]:
    """Per row, the k columns of highest similarity, ties by column (a stable sort of the negated row)."""
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return [row.tolist() for row in order]


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _local_embeddings(folder: str, documents: list[str], questions: list[str], batch_size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from koraft.evaluation.embeddings import device

    encoder = SentenceTransformer(folder, device=device())
    encode = lambda texts: _normalised(encoder.encode(texts, batch_size=batch_size,  # noqa: E731
                                                      convert_to_numpy=True, show_progress_bar=False))
    return encode(documents), encode(questions)


def endpoint_embeddings(endpoint: Endpoint, texts: list[str], batch_size: int, requests: dict[str, Any]
                        ) -> np.ndarray:
    """Normalised embeddings of `texts` from an OpenAI-compatible /v1/embeddings endpoint, in order."""
    import openai

    from koraft.inference.endpoints import check_reachable, client_for

    client = client_for(endpoint, requests)
    check_reachable(client, endpoint)
    vectors: list[list[float]] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            try:
                response = client.embeddings.create(model=endpoint.model, input=batch)
                data = sorted(response.data, key=lambda item: item.index)
                if len(data) != len(batch):
                    raise ValueError(f"{len(data)} embeddings for {len(batch)} texts")
                vectors += [list(item.embedding) for item in data]
            except (openai.OpenAIError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as exc:
                raise KoraftError(f"eval.retrieval.endpoint: {endpoint.base_url}/embeddings failed on texts "
                                  f"{start}-{start + len(batch) - 1}: {type(exc).__name__}: "
                                  f"{str(exc)[:200]}") from None
    finally:
        client.close()
    if len({len(vector) for vector in vectors}) > 1:
        raise KoraftError(f"eval.retrieval.endpoint: {endpoint.base_url} returned embeddings of different sizes")
    return _normalised(np.array(vectors, np.float32))


def retrieval_scores(ranked: list[list[int]], golden: list[int], k: int) -> dict[str, float]:
    """recall@k (the golden document among the first k) and MRR@k (1/rank of it, 0 beyond k)."""
    reciprocal = [1.0 / (row[:k].index(gold) + 1) if gold in row[:k] else 0.0
                  for row, gold in zip(ranked, golden, strict=True)]
    hits = [value > 0 for value in reciprocal]
    return {"recall": round(sum(hits) / max(len(hits), 1), 4), "mrr": round(sum(reciprocal) / max(len(hits), 1), 4)}
