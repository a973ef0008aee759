"""RAFT invariants for both distractor sources, P, targets, BM25 ranking and determinism."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from helpers import build_raft, synthetic_records

from koraft.core.errors import KoraftError
from koraft.core.morphemes import morpheme_tokenizer
from koraft.data.bm25 import BM25Index, character_bigrams
from koraft.data.neardup import text_hash
from koraft.data.split import assign_split
from koraft.data.synth import synthetic_corpus


@pytest.fixture(scope="module")
def records(tmp_path_factory, validate_params):
    return synthetic_records(tmp_path_factory.mktemp("raft"), validate_params, num_docs=200)


@pytest.mark.parametrize(("source", "pool", "terms"), [
    ("random", 20000, "bigrams"), ("bm25", 20000, "bigrams"), ("bm25", 40, "bigrams"), ("bm25", 20000, "morphemes")])
def test_raft_invariants(records, raft_params, split_params, source, pool, terms):
    raft = {**raft_params, "distractor_source": source, "num_distractors": 4,
            "bm25": {**raft_params["bm25"], "pool": pool, "terms": terms}}
    rows, metrics = build_raft(records, raft, split_params, seed=7)
    texts = {}  # one text per doc_id: the member with the smallest content hash
    for record in sorted(records, key=lambda r: text_hash(r["context"]), reverse=True):
        texts[record["doc_id"]] = record["context"]
    assert len(rows) == len(records) == metrics["records"]
    by_id = {r["id"]: r for r in records}
    for row in rows:
        record = by_id[row["id"]]
        distractors = row["distractor_doc_ids"]
        assert len(distractors) == len(set(distractors)), "distractors repeat"
        assert row["doc_id"] not in distractors
        assert len(row["documents"]) == 5  # the context size is constant, golden or not
        assert all(assign_split(d, split_params["ratios"], split_params["salt"]) == row["split"] for d in distractors)
        assert row["split"] == assign_split(row["doc_id"], split_params["ratios"], split_params["salt"])
        if row["oracle_included"]:
            assert len(distractors) == 4 and row["documents"][row["oracle_index"]] == record["context"]
            others = [t for i, t in enumerate(row["documents"]) if i != row["oracle_index"]]
        else:
            assert row["oracle_index"] is None and len(distractors) == 5
            others = row["documents"]
        assert record["context"] not in others
        assert sorted(others) == sorted(texts[d] for d in distractors)
    if source == "bm25":
        assert metrics["bm25_hard_negative_share"] > 0.5
    for split in metrics["splits"].values():
        assert split["bm25_pools"] == (math.ceil(split["documents"] / pool) if source == "bm25" else 0)
    assert pool > 100 or metrics["splits"]["train"]["bm25_pools"] > 1  # the small pool really splits train


def test_p_golden_within_sampling_tolerance(records, raft_params, split_params):
    for p in (0.0, 0.6, 1.0):
        rows, _ = build_raft(records, {**raft_params, "distractor_source": "random", "p_golden": p}, split_params, 1)
        share = sum(r["oracle_included"] for r in rows) / len(rows)
        sigma = (p * (1 - p) / len(rows)) ** 0.5
        assert abs(share - p) <= 4 * sigma + 1e-9, (p, share)


def test_abstain_target_replaces_answer_and_drops_cot(records, raft_params, split_params):
    raft = {**raft_params, "distractor_source": "random", "p_golden": 0.5, "omitted_golden_target": "abstain"}
    rows, metrics = build_raft(records, raft, split_params, seed=3)
    omitted = [r for r in rows if not r["oracle_included"]]
    assert omitted and metrics["abstain_targets"] == len(omitted)
    assert all(r["answer"] == raft["abstain_answer"] and r["cot"] is None for r in omitted)
    assert all(r["answer"] != raft["abstain_answer"] for r in rows if r["oracle_included"])
    assert all(r["instruction"] == raft["cot_instruction"] for r in rows if r["cot"])


def test_too_few_documents_in_a_split_is_a_clear_error(records, raft_params, split_params):
    with pytest.raises(KoraftError, match=r"split '(val|test)' has \d+ documents .* needs at least 52"):
        build_raft(records, {**raft_params, "num_distractors": 50, "distractor_source": "random"}, split_params, 0)


def test_deterministic_and_independent_of_record_order(records, raft_params, split_params):
    first, _ = build_raft(records, raft_params, split_params, seed=11)
    again, _ = build_raft(records, raft_params, split_params, seed=11)
    assert first == again
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    reordered, _ = build_raft(shuffled, raft_params, split_params, seed=11)
    assert sorted(reordered, key=lambda r: r["id"]) == sorted(first, key=lambda r: r["id"])
    other_seed, _ = build_raft(records, raft_params, split_params, seed=12)
    assert other_seed != first


def test_bm25_over_morphemes_finds_inflected_matches():
    tokenize = morpheme_tokenizer()
    documents = [
        "한결시는 강원도에 있는 도시이며 인구는 약 12만 명이다.",
        "누리전자는 부산에 본사를 둔 반도체 기업이다.",
        "솔빛산은 높이 900미터의 산으로 등산로가 많다.",
        "한결시에서는 매년 사과 축제가 열린다.",
    ]
    index = BM25Index(tokenize(documents), k1=1.5, b=0.75, pool=10)
    queries = tokenize(["한결시의 인구는 몇 명인가요?", "반도체를 만드는 기업은?"])
    ranked = index.rank(queries, golden=[0, 2], k=3)
    # Query 0 excludes its own document 0; the other 한결시 document must come first.
    assert ranked[0][0] == 3 and 0 not in ranked[0]
    assert ranked[1][0] == 1 and 2 not in ranked[1]
    assert all(hit != 2 for hit in ranked[1])  # zero-score documents are not returned


def test_character_bigrams_cut_hangul_runs_and_keep_other_words_whole():
    assert character_bigrams(["2020년 기준 한결시의 인구는, 약 12만 명!", "iPhone 15는 東京에서 산다", ""]) == [
        ["2020", "년", "기준", "한결", "결시", "시의", "인구", "구는", "약", "12", "만", "명"],
        ["iphone", "15", "는", "東京", "京에", "에서", "산다"],
        [],
    ]


def test_bm25_over_bigrams_matches_names_a_morpheme_analyser_splits():
    """Invented names (솔가온시) share bigrams with the question however Kiwi would cut them."""
    documents = ["솔가온시는 강원도 북부에 위치한 도시이다.", "누리가온시는 경기도 남부에 위치한 도시이다.",
                 "솔가온산은 높이 900미터의 산이다.", "솔가온시의 인구는 약 12만 명이다."]
    index = BM25Index(character_bigrams(documents), k1=1.5, b=0.75, pool=10)
    ranked = index.rank(character_bigrams(["솔가온시는 어느 도에 속해 있나요?"]), golden=[3], k=3)
    assert ranked[0][0] == 0 and 3 not in ranked[0]


def test_bm25_scores_follow_okapi_with_lucene_idf():
    documents = [["사과", "축제", "사과"], ["사과", "기업"], ["산", "등산로", "산", "높이"], ["축제"]]
    k1, b = 1.2, 0.6
    index = BM25Index(documents, k1=k1, b=b, pool=2)
    average = sum(map(len, documents)) / len(documents)
    for query in (["사과", "축제"], ["산"], ["없는말"], ["사과", "사과"]):
        expected = []
        for doc in documents:
            score = 0.0
            for term in set(query):
                tf, df = doc.count(term), sum(term in d for d in documents)
                if tf:
                    idf = math.log(1 + (len(documents) - df + 0.5) / (df + 0.5))
                    score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / average))
            expected.append(score)
        assert index.scores(query) == pytest.approx(expected, rel=1e-6)


def test_bm25_ties_go_to_the_lower_document_index():
    documents = [["a", "b"]] * 6 + [["c"]]
    index = BM25Index(documents, k1=1.5, b=0.75, pool=100)
    assert index.rank([["a"], ["a"], ["c"]], golden=[1, 6, 0], k=3) == [[0, 2, 3], [0, 1, 2], [6]]


@pytest.mark.parametrize("pool", [1000, 70, 1])
def test_bm25_rank_is_the_exhaustive_top_k_of_the_golden_pool(pool):
    """rank() against every document's score: the top k of the golden document's pool, golden
    excluded, positive scores only, ties by index; on a corpus with many exactly tied scores."""
    documents = 300 if pool > 1 else 60  # one pool per document: the exhaustive check costs 5x more per query
    corpus = synthetic_corpus(documents, seed=3)
    tokenize = morpheme_tokenizer()
    index = BM25Index(tokenize([doc.text for doc, _ in corpus]), k1=1.5, b=0.75, pool=pool)
    assert index.pools == math.ceil(documents / pool)
    golden = [d for d, (_, qas) in enumerate(corpus) for _ in qas]
    questions = tokenize([qa.question for _, qas in corpus for qa in qas])
    ranked = index.rank(questions, golden, k=4)
    ties = 0
    for tokens, gold, got in zip(questions, golden, ranked, strict=True):
        scores = index.scores(tokens)
        scores[gold] = 0.0
        scores[np.arange(len(scores)) % index.pools != gold % index.pools] = 0.0
        order = np.lexsort((np.arange(len(scores)), -scores))
        assert got == [int(d) for d in order[:4] if scores[d] > 0]
        ties += scores[order[3]] > 0 and scores[order[3]] == scores[order[4]]
    assert pool == 1 or ties > 10  # the tie rule was exercised
