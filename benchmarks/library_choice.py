"""koraft's MinHash LSH and BM25 against the well-kept libraries for each job: datasketch and bm25s.

    python benchmarks/library_choice.py [--documents 25000] [--queries 5000]

On the same synthetic Korean documents (and their near-duplicate copies) and the same Kiwi
morphemes, it prints for each job seconds, documents/s, the ratio, and how far the results agree:
- near-duplicates: koraft.data.neardup.DocumentGrouper vs datasketch MinHash (update_batch per
  document) + MinHashLSH with the same num_perm, bands and threshold; agreement is the share of
  documents whose group is the same set of documents;
- BM25: koraft.data.bm25.BM25Index (one pool) vs bm25s.BM25(method="lucene") with the same k1 and
  b; agreement is the share of queries with the same top-k documents (golden excluded).
Tokenization is shared and not timed. 25,000 documents is about one BM25 pool (raft.bm25.pool:
20,000), the unit the raft stage ranks in at any size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import yaml

from koraft.core.morphemes import morpheme_tokenizer
from koraft.data.bm25 import BM25Index
from koraft.data.neardup import DocumentGrouper, MinHasher, text_hash
from koraft.data.synth import synthetic_corpus

TOP_K = 4  # the raft stage asks for num_distractors + 1 (3 + 1 by default)


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def corpus(documents: int, queries: int) -> tuple[list[str], list[str], list[int]]:
    """Documents, with a near-duplicate copy (one sentence added) after every tenth; questions with their golden."""
    texts, questions, golden = [], [], []
    for document, qas in synthetic_corpus(documents, 1, seed=4):
        golden.append(len(texts))
        questions.append(qas[0].question)
        texts.append(document.text)
        if len(golden) % 10 == 0:
            texts.append(document.text + " 이 문서는 2024년에 개정되었다.")
    return texts, questions[:queries], golden[:queries]


def shingles(text: str, size: int) -> list[bytes]:
    padded = text if len(text) >= size else text + "\0" * (size - len(text))
    return sorted({padded[i:i + size].encode("utf-8") for i in range(len(padded) - size + 1)})


def groups_ours(texts: list[str], near: dict) -> dict[str, frozenset[str]]:
    grouper = DocumentGrouper(near["threshold"], near["shingle_size"], near["num_perm"], near["bands"])
    for text in texts:
        grouper.add(text)
    return _members(grouper.group_ids())


def groups_datasketch(texts: list[str], near: dict, verify: bool) -> dict[str, frozenset[str]]:
    """datasketch's MinHash and LSH; `verify` checks each LSH candidate's estimated Jaccard, as koraft does."""
    from datasketch import MinHash, MinHashLSH

    rows = near["num_perm"] // near["bands"]
    lsh = MinHashLSH(threshold=near["threshold"], num_perm=near["num_perm"], params=(near["bands"], rows))
    keys = [text_hash(text) for text in texts]
    parent = {key: key for key in keys}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    signatures = {}
    for key, text in zip(keys, texts, strict=True):
        signature = MinHash(num_perm=near["num_perm"])
        signature.update_batch(shingles(text, near["shingle_size"]))
        for other in lsh.query(signature):  # candidates: a shared band, not yet a similar document
            if not verify or signature.jaccard(signatures[other]) >= near["threshold"]:
                a, b = find(key), find(other)
                parent[max(a, b)] = min(a, b)
        lsh.insert(key, signature)
        signatures[key] = signature
    return _members({key: find(key) for key in keys})


def jaccards(pairs: list[tuple[str, str]], near: dict) -> tuple[float, float, float]:
    """Mean Jaccard similarity of the pairs' shingle sets: exact, and as each library's MinHash estimates it."""
    from datasketch import MinHash

    ours = MinHasher(near["shingle_size"], near["num_perm"])
    exact, koraft, datasketch = [], [], []
    for a, b in pairs:
        sets = [set(shingles(text, near["shingle_size"])) for text in (a, b)]
        exact.append(len(sets[0] & sets[1]) / len(sets[0] | sets[1]))
        koraft.append(np.mean(ours(a) == ours(b)))
        signatures = [MinHash(num_perm=near["num_perm"]) for _ in sets]
        for signature, shingle_set in zip(signatures, sets, strict=True):
            signature.update_batch(sorted(shingle_set))
        datasketch.append(signatures[0].jaccard(signatures[1]))
    return float(np.mean(exact)), float(np.mean(koraft)), float(np.mean(datasketch))


def _members(group_of: dict[str, str]) -> dict[str, frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for key, group in group_of.items():
        groups.setdefault(group, set()).add(key)
    return {key: frozenset(groups[group]) for key, group in group_of.items()}


def rank_ours(doc_tokens: list[list[str]], query_tokens: list[list[str]], golden: list[int], bm25: dict):
    index = BM25Index(iter(doc_tokens), bm25["k1"], bm25["b"], pool=len(doc_tokens))
    return index.rank(query_tokens, golden, TOP_K)


def rank_bm25s(doc_tokens: list[list[str]], query_tokens: list[list[str]], golden: list[int], bm25: dict):
    import bm25s

    retriever = bm25s.BM25(k1=bm25["k1"], b=bm25["b"], method="lucene")
    vocabulary: dict[str, int] = {}
    ids = [[vocabulary.setdefault(t, len(vocabulary)) for t in tokens] for tokens in doc_tokens]
    retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocabulary), show_progress=False)
    queries = [[t for t in dict.fromkeys(tokens) if t in vocabulary] or [next(iter(vocabulary))]
               for tokens in query_tokens]
    hits, scores = retriever.retrieve(queries, k=TOP_K + 1, show_progress=False, n_threads=0)
    ranked = []
    for row, gold in zip(range(len(queries)), golden, strict=True):
        ranked.append([int(d) for d, s in zip(hits[row], scores[row], strict=True) if d != gold and s > 0][:TOP_K])
    return ranked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=25_000)
    parser.add_argument("--queries", type=int, default=5_000)
    args = parser.parse_args()
    params = yaml.safe_load(open("params.yaml", encoding="utf-8"))
    near, bm25 = params["validate"]["near_duplicates"], params["raft"]["bm25"]
    texts, questions, golden = corpus(args.documents, args.queries)
    print(f"{len(texts):,} documents ({len(texts) - args.documents:,} near-duplicate copies), "
          f"{len(questions):,} questions")

    print(f"\nnear-duplicate groups ({near['num_perm']} permutations, {near['bands']} bands, "
          f"threshold {near['threshold']}; {args.documents:,} distinct texts and their copies)")
    planted = [(texts[i - 1], text) for i, text in enumerate(texts) if text.endswith("개정되었다.")]
    copies = [(text_hash(original), text_hash(copy)) for original, copy in planted]

    def found(groups: dict[str, frozenset[str]]) -> str:
        return f"{np.mean([copy in groups[original] for original, copy in copies]):.2%} of the copies found"

    ours_s, ours = timed(lambda: groups_ours(texts, near))
    print(f"  koraft                 {ours_s:7.1f}s {len(texts) / ours_s:9,.0f} documents/s "
          f"{len(set(ours.values())):8,} groups; {found(ours)}")
    for verify in (False, True):
        theirs_s, theirs = timed(lambda: groups_datasketch(texts, near, verify))  # noqa: B023 - called at once
        same = np.mean([ours[key] == theirs[key] for key in ours])
        label = "datasketch, verified" if verify else "datasketch LSH only"
        print(f"  {label:<22} {theirs_s:7.1f}s {len(texts) / theirs_s:9,.0f} documents/s "
              f"{len(set(theirs.values())):8,} groups; {found(theirs)}; {theirs_s / ours_s:.1f}x koraft's time, "
              f"same group as koraft for {same:.2%} of documents")

    tokenize = morpheme_tokenizer()
    doc_tokens, query_tokens = tokenize(texts), tokenize(questions)
    ours_s, ours = timed(lambda: rank_ours(doc_tokens, query_tokens, golden, bm25))
    theirs_s, theirs = timed(lambda: rank_bm25s(doc_tokens, query_tokens, golden, bm25))
    same = np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
    exact = BM25Index(iter(doc_tokens), bm25["k1"], bm25["b"], pool=len(doc_tokens))
    tied = np.mean([np.allclose(np.sort(exact.scores(q)[a]), np.sort(exact.scores(q)[b]), rtol=1e-5)
                    for q, a, b in zip(query_tokens, ours, theirs, strict=True) if len(a) == len(b)])
    exact, ours_estimate, theirs_estimate = jaccards(planted, near)
    print(f"  Jaccard of a copy and its original, mean: exact {exact:.3f}, koraft's estimate {ours_estimate:.3f}, "
          f"datasketch's {theirs_estimate:.3f}")

    print(f"\nBM25 top-{TOP_K} of {len(questions):,} questions over {len(texts):,} documents (index + ranking)")
    print(f"  koraft     {ours_s:8.1f}s {len(questions) / ours_s:10,.0f} questions/s")
    print(f"  bm25s      {theirs_s:8.1f}s {len(questions) / theirs_s:10,.0f} questions/s")
    print(f"  bm25s / koraft time: {theirs_s / ours_s:.1f}x; same top-{TOP_K} in order for {same:.2%} of questions; "
          f"same top-{TOP_K} scores (the rest are ties broken another way) for {tied:.2%}")


if __name__ == "__main__":
    main()
