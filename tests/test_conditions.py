"""RAFT's test protocol: retrieval over the test split, the retrieved and closed-book conditions, their scores."""

from __future__ import annotations

import copy
import json
import subprocess

import numpy as np
import pytest
import yaml
from helpers import ROOT, env
from teacher_server import TeacherServer
from test_evaluate import eval_params, eval_paths  # noqa: F401 - the trained variants, as a fixture

from koraft.core.errors import KoraftError, ParamError
from koraft.data.bm25 import BM25Index, character_bigrams
from koraft.data.config import BM25Settings
from koraft.evaluation.condition_scores import abstention, condition_points
from koraft.evaluation.conditions import CLOSED_BOOK, build_conditions, closed_book_row, sample_questions
from koraft.evaluation.config import load_eval
from koraft.evaluation.embeddings import packaged_folder
from koraft.evaluation.evaluate import evaluate
from koraft.evaluation.retrieval import Corpus, RetrievalSettings, retrieval_scores, retrieve, split_corpus
from koraft.inference.endpoints import Endpoint

BM25 = BM25Settings(k1=1.5, b=0.75, pool=20000, terms="bigrams")
CORPUS = Corpus(doc_ids=["d0", "d1", "d2", "d3"],
                texts=["서울은 한국의 수도이다.", "부산은 바다가 있는 항구 도시이다.",
                       "한라산은 제주도에 있는 산이다.", "경주는 신라의 수도였다."])
REQUESTS = {"concurrency": 2, "timeout_s": 10.0, "retries": 0}


def with_conditions(params: dict, k: list[int], **conditions) -> dict:
    result = eval_params(params)
    result["eval"]["conditions"].update({"retrieved": True, "closed_book": True, "questions": None, **conditions})
    result["eval"]["retrieval"]["k"] = k
    return result


def test_recall_and_mrr_by_hand():
    ranked = [[2, 0, 1], [0, 1, 2], [1, 2, 0], [3, 2, 1]]
    golden = [0, 0, 0, 0]  # at rank 2, rank 1, rank 3, absent
    assert retrieval_scores(ranked, golden, 1) == {"recall": 0.25, "mrr": 0.25}
    assert retrieval_scores(ranked, golden, 2) == {"recall": 0.5, "mrr": round((0.5 + 1) / 4, 4)}
    assert retrieval_scores(ranked, golden, 3) == {"recall": 0.75, "mrr": round((0.5 + 1 + 1 / 3) / 4, 4)}


def test_bm25_search_ranks_the_whole_corpus_and_keeps_the_golden_document():
    questions = ["한국의 수도는 어디인가?", "제주도에 있는 산은?", "신라의 수도는?"]
    settings = RetrievalSettings("bm25", (2,), BM25)
    ranked = retrieve(CORPUS, questions, 2, settings, REQUESTS)
    assert [hits[0] for hits in ranked] == [0, 2, 3]  # nothing is excluded, unlike the raft stage's hard negatives
    # Pools change nothing for a retriever: every document is scored.
    pooled = BM25Index(character_bigrams(CORPUS.texts), 1.5, 0.75, pool=1)
    assert pooled.pools == 4 and pooled.search(character_bigrams(questions), 2) == ranked
    exhaustive = [np.argsort(-pooled.scores(terms), kind="stable")[:2].tolist()
                  for terms in character_bigrams(questions)]
    assert ranked == exhaustive


@pytest.mark.slow
def test_a_local_sentence_transformers_folder_retrieves(tmp_path):
    settings = RetrievalSettings("sentence_transformers", (1,), BM25, folder=packaged_folder())
    ranked = retrieve(CORPUS, list(CORPUS.texts), 1, settings, REQUESTS)
    assert ranked == [[0], [1], [2], [3]]  # each document is its own nearest neighbour


def test_an_openai_compatible_embeddings_endpoint_retrieves():
    with TeacherServer() as server:
        settings = RetrievalSettings("embeddings", (2,), BM25, endpoint=Endpoint("retrieval", server.url, "embedder"),
                                     batch_size=3)  # two requests for the four documents
        ranked = retrieve(CORPUS, ["제주도에 있는 산은?", "신라의 수도는?"], 2, settings, REQUESTS)
        assert [hits[0] for hits in ranked] == [2, 3]
        assert server.requests >= 3
    settings = RetrievalSettings("embeddings", (2,), BM25, endpoint=Endpoint("retrieval", server.url, "embedder"))
    with pytest.raises(KoraftError, match="unreachable"):  # the server is gone: one line
        retrieve(CORPUS, ["신라의 수도는?"], 2, settings, REQUESTS)


def test_retrieval_sees_only_the_test_split(params, split_records):
    settings = load_eval(with_conditions(params, [1, 4])).conditions
    test, train = split_records["test"], split_records["train"] + split_records["val"]
    built = build_conditions(test, test, settings, REQUESTS)
    test_texts = {record["context"] for record in test}
    other_texts = {record["context"] for record in train}
    assert test_texts.isdisjoint(other_texts)  # so a leak would show
    shown = {text for rows in built.rows.values() for row in rows for text in row["documents"]}
    assert shown and shown <= test_texts
    assert built.retrieval["documents"] == len(split_corpus(test).doc_ids)
    assert set(built.rows) == {"retrieved_k1", "retrieved_k4", CLOSED_BOOK}
    # BM25 returns documents that share a term with the question, at most k of them.
    sizes = [len(row["documents"]) for row in built.rows["retrieved_k4"]]
    assert max(sizes) == 4 and min(sizes) >= 1
    recall = [built.retrieval[f"k{k}"]["recall"] for k in (1, 4)]
    assert 0 < recall[0] <= recall[1] <= 1
    found = sum(row["golden_retrieved_at"] is not None for row in built.rows["retrieved_k4"])
    assert found / len(test) == pytest.approx(recall[1], abs=1e-4)


def test_the_closed_book_prompt_holds_no_document(params, split_records):
    from koraft.core.formats import user_message

    settings = load_eval(with_conditions(params, [1])).conditions
    record = split_records["test"][0]
    row = closed_book_row(record, settings)
    message = user_message(row)  # what every chat template wraps: the prompt's only text
    assert "<DOCUMENT>" not in message and record["context"] not in message and row["cot"] is None
    assert record["question"] in message and message.startswith(settings.closed_book_instruction)


def test_the_sample_is_seeded_and_in_file_order(split_records):
    records = split_records["test"]
    first, again = sample_questions(records, 5, 7), sample_questions(records, 5, 7)
    assert first == again and len(first) == 5
    assert [records.index(record) for record in first] == sorted(records.index(record) for record in first)
    assert sample_questions(records, 5, 8) != first and sample_questions(records, None, 7) == records


def test_abstention_precision_and_recall_by_hand():
    answers = ["모름", "경기도", "모름", "서울", "모름."]  # "모름." normalises to the abstain answer
    shown = np.array([False, False, True, True, False])
    result = abstention(answers, shown, "모름")
    assert result == {"golden_absent": 3, "golden_present": 2, "abstained_when_absent": 2,
                      "abstained_when_present": 1, "precision": round(2 / 3, 4), "recall": round(2 / 3, 4)}


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("retrieval.k", 3, "eval.retrieval.k"),
    ("retrieval.k", [0, 3], "eval.retrieval.k"),
    ("retrieval.retriever", "dense", "eval.retrieval.retriever"),
    ("retrieval.retriever", "sentence_transformers", "eval.retrieval.folder"),
    ("retrieval.retriever", "embeddings", "eval.retrieval.endpoint"),
    ("conditions.variants", ["served"], "eval.conditions.variants"),
    ("conditions.variants", ["fintuned"], "eval.conditions.variants"),
    ("conditions.questions", 0, "eval.conditions.questions"),
    ("conditions.closed_book", "yes", "eval.conditions.closed_book"),
])
def test_a_bad_condition_param_is_one_line(params, key, value, expected):
    changed = copy.deepcopy(params)
    part, name = key.split(".")
    changed["eval"][part][name] = value
    with pytest.raises(ParamError, match=expected.replace(".", r"\.")) as error:
        load_eval(changed)
    assert "\n" not in str(error.value)


def test_conditions_run_for_the_listed_variants_that_are_switched_on(params):
    changed = with_conditions(params, [3])
    changed["eval"]["variants"].update({"base": False, "preferred": False, "distilled": False})
    assert load_eval(changed).conditions.variants == ("finetuned",)
    changed["eval"]["conditions"]["variants"] = ["base"]
    assert load_eval(changed).conditions is None  # nothing to answer them: no condition runs
    changed["eval"]["conditions"].update({"variants": ["finetuned"], "retrieved": False, "closed_book": False})
    assert load_eval(changed).conditions is None


@pytest.fixture(scope="module")
def conditioned(params, split_records, raft_rows, eval_paths):  # noqa: F811 - the imported fixture
    rows = raft_rows["test"][:10]
    ids = {row["id"] for row in rows}
    questions = [record for record in split_records["test"] if record["id"] in ids]
    settings = with_conditions(params, [1, 2], variants=["base", "finetuned", "distilled"])
    metrics, review = evaluate(rows, load_eval(settings), eval_paths, questions)
    return rows, questions, metrics, review, settings


@pytest.mark.slow
def test_every_condition_is_scored_for_every_listed_variant(conditioned):
    rows, questions, metrics, _, _ = conditioned
    conditions = metrics["conditions"]
    assert conditions["questions"] == len(questions) == len(rows)
    assert set(conditions) >= {"oracle", "retrieved_k1", "retrieved_k2", CLOSED_BOOK, "retrieval"}
    for name in ("oracle", "retrieved_k1", "retrieved_k2", CLOSED_BOOK):
        for variant in ("base", "finetuned", "distilled"):
            values = conditions[name][variant]
            assert values["samples"] == len(rows) and 0 <= values["f1"] <= 1
            assert values["intervals"]["f1"]["low"] <= values["f1"] <= values["intervals"]["f1"]["high"]
            if name != CLOSED_BOOK:
                golden = values["by_golden"]
                assert golden["shown"]["samples"] + golden["not_shown"]["samples"] == len(rows)
        for label in ("finetuned_vs_base", "distilled_vs_base"):
            change = conditions[name]["comparisons"][label]["f1"]
            assert change["low"] <= change["delta"] <= change["high"]
    # The oracle condition is the headline run rescored: on every test row, the same F1.
    assert conditions["oracle"]["finetuned"]["f1"] == metrics["finetuned"]["f1"]
    assert conditions["oracle"]["finetuned"]["by_golden"]["shown"]["samples"] == sum(r["oracle_included"] for r in rows)
    retrieval = conditions["retrieval"]
    hits = conditions["retrieved_k2"]["finetuned"]["by_golden"]["shown"]["samples"]
    dropped = conditions["retrieved_k2"]["finetuned"]["golden_dropped_by_budget"]
    assert hits + dropped == round(retrieval["k2"]["recall"] * len(rows))
    assert "student_base" not in conditions["oracle"]  # not listed: no extra generation
    assert set(metrics["finetuned"]["cost"]["conditions_seconds"]) == {"retrieved_k1", "retrieved_k2", CLOSED_BOOK}
    # For review, each record's answers per condition, whose scores average to the condition's.
    _, _, _, review, _ = conditioned
    f1 = [row["conditions"]["retrieved_k2"]["outputs"]["distilled"]["scores"]["f1"] for row in review]
    assert sum(f1) / len(f1) == pytest.approx(conditions["retrieved_k2"]["distilled"]["f1"], abs=1e-3)
    shown = sum(row["conditions"]["retrieved_k2"]["outputs"]["finetuned"]["golden_shown"] for row in review)
    assert shown == hits


@pytest.mark.slow
def test_conditions_leave_the_headline_answers_as_they_were(params, conditioned, eval_paths):  # noqa: F811
    rows, _, metrics, review, _ = conditioned
    plain, plain_review = evaluate(rows, load_eval(eval_params(params)), eval_paths)
    assert "conditions" not in plain
    for name in ("base", "finetuned", "distilled"):
        assert [r["outputs"][name] for r in plain_review] == [r["outputs"][name] for r in review]


@pytest.mark.slow
def test_condition_prompts_never_depend_on_the_reference(params, conditioned, split_records, eval_paths):  # noqa: F811
    from koraft.evaluation.variants import run_variant

    rows, questions, _, _, settings = conditioned
    tight = copy.deepcopy(settings)
    tight["train"]["args"]["max_length"] = 200  # the budget drops retrieved documents: the fitting really runs
    tight["eval"]["max_new_tokens"] = 16
    loaded = load_eval(tight)

    def answered(records: list[dict]) -> dict:
        built = build_conditions(split_records["test"], records, loaded.conditions, REQUESTS)
        return run_variant("finetuned", rows, loaded, eval_paths, built.rows).conditions

    before = answered(questions)
    assert before["retrieved_k2"].prompts["documents_dropped"] > 0
    for reference in ("예", "아주 길고 자세한 참고 답변입니다. " * 40):
        changed = [{**record, "answer": reference, "cot": f"##Reason: {reference}" if record.get("cot") else None}
                   for record in questions]
        after = answered(changed)
        for condition in ("retrieved_k1", "retrieved_k2", CLOSED_BOOK):
            assert after[condition].outputs == before[condition].outputs, condition
            assert after[condition].documents == before[condition].documents, condition
            assert after[condition].prompts == before[condition].prompts, condition


@pytest.mark.slow
def test_the_plot_file_renders_with_dvc_plots_show(conditioned, tmp_path):
    _, _, metrics, _, _ = conditioned
    points = condition_points(metrics["conditions"])
    assert [point["k"] for point in points] == [0, 1, 2]
    assert points[1]["finetuned_f1"] == metrics["conditions"]["retrieved_k1"]["finetuned"]["f1"]
    project = tmp_path / "project"
    (project / "metrics/eval").mkdir(parents=True)
    (project / "metrics/eval/conditions.json").write_text(json.dumps(points), encoding="utf-8")
    plots = [plot for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["plots"]
             if "retrieved documents" in next(iter(plot))]
    (project / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, allow_unicode=True), encoding="utf-8")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=project, check=True, env=env())
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=project, capture_output=True, text=True,
                           env=env(), check=True)
    rendered = json.loads(shown.stdout)
    assert "errors" not in rendered, rendered.get("errors")
    assert len(rendered["data"]) == 2
    for title, renders in rendered["data"].items():
        content = renders[0]["content"]
        values = content["data"]["values"]
        assert {row["k"] for row in values} == {0, 1, 2}, title
        # one line per variant: the y fields become the series
        assert {row["field"] for row in values} >= {"finetuned_f1" if title.startswith("F1") else
                                                     "finetuned_exact_match"}, title
