"""The evaluate stage's logic on the tiny presets: four variants, generation, scoring, predictions files."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
from family_models import build_family_model
from helpers import distill_params, where
from transformers import AutoModelForCausalLM, AutoTokenizer

from koraft.core.config import load_params
from koraft.core.errors import KoraftError, ParamError
from koraft.evaluation.config import load_eval
from koraft.evaluation.evaluate import evaluate
from koraft.evaluation.labels import COMPARISONS, MAIN_METRICS, VARIANTS
from koraft.evaluation.systems import EvalPaths
from koraft.inference.decoding import greedy_generate
from koraft.models.chat import stop_token_ids
from koraft.models.presets import FAMILIES
from koraft.models.samples import SampleTokenizer, build_samples
from koraft.training.config import distill_settings
from koraft.training.distill import build_teacher_cache, distill

pytestmark = [pytest.mark.slow]


def judge_section(params: dict, url: str) -> dict:
    """The shipped eval.judge section, pointed at `url`."""
    return {**params["eval"]["judge"], "endpoint": {"base_url": url, "model": "judge"}}


JUDGE = judge_section(load_params(), "http://127.0.0.1:8000/v1")


def eval_params(params: dict, **changes) -> dict:
    result = copy.deepcopy(params)
    result["model"]["preset"] = "tiny-m"  # the tests' teacher and student (the shipped params name Gemma 3's)
    result["distill"]["student"] = {"preset": "tiny-s"}
    result["eval"]["bootstrap"]["resamples"] = 200
    result["eval"]["variants"]["served"] = False  # tests/test_export.py serves the exported model
    result["eval"]["conditions"]["retrieved"] = False  # tests/test_conditions.py runs the test conditions
    result["eval"]["conditions"]["closed_book"] = False
    result["eval"]["perplexity"]["variants"] = []  # test_held_out_perplexity_... switches it on
    for key, value in changes.items():
        result["eval"][key] = value
    return result


@pytest.fixture(scope="module")
def eval_paths(params, raft_rows, teacher_adapter, tiny_models, tmp_path_factory) -> EvalPaths:
    """The train stage's teacher and a briefly distilled tiny-s student, where the evaluate stage reads them."""
    root = tmp_path_factory.mktemp("evaluate")
    settings = distill_params(params, steps=4)
    rows, val = raft_rows["train"][:8], raft_rows["val"][:4]
    located = where(root, teacher_adapter, tiny_models)
    build_teacher_cache(rows, val, distill_settings(settings), teacher_adapter, located.cache)
    distill(rows, val, distill_settings(settings), located)
    # The preferred variant loads any trained folder as evaluate loads the prefer stage's (tests/test_prefer.py
    # trains one): here the teacher's again, so every variant's code path runs without another training run.
    return EvalPaths(adapter=teacher_adapter, student=located.student.adapter, tiny_models=tiny_models,
                     predictions=root, preferred=teacher_adapter)


@pytest.fixture(scope="module")
def evaluated(params, raft_rows, eval_paths):
    rows = raft_rows["test"][:12]
    metrics, review = evaluate(rows, load_eval(eval_params(params)), eval_paths)
    return rows, metrics, review


def test_every_variant_is_generated_scored_and_compared(evaluated):
    rows, metrics, review = evaluated
    assert metrics["scoring"]["samples"] == len(rows) == len(review)
    for name in VARIANTS:
        variant = metrics[name]
        assert 0.0 <= variant["f1"] <= 1.0 and 0.0 <= variant["chrf"] <= 100.0
        golden = variant["by_golden"]
        assert golden["present"]["samples"] + golden["absent"]["samples"] == len(rows)
        assert golden["present"]["samples"] == sum(row["oracle_included"] for row in rows)
        assert variant["reasoning"]["samples"] == sum(bool(row.get("cot")) for row in rows)
        cut = sum(not row["outputs"][name]["stopped"] for row in review)
        assert variant["generation"]["cut"] == cut
        assert variant["generation"]["targets_over_max_new_tokens"] == 0  # the shipped budget holds every target
        assert variant["cost"]["latency_per_sample_s"] > 0 and variant["cost"]["generated_tokens_per_s"] > 0
        assert variant["prompts"]["prompts"] + variant["prompts"]["prompts_unfit"] == len(rows)
        assert variant["prompts"]["tokens"]["max"] <= variant["prompts"]["budget"]
        own = variant["intervals"]["f1"]
        assert own["low"] <= variant["f1"] <= own["high"] and own["half_width"] == pytest.approx(
            (own["high"] - own["low"]) / 2, abs=1e-4)
    assert metrics["base"]["cost"]["adapter_bytes"] == 0 and metrics["finetuned"]["cost"]["adapter_bytes"] > 0
    for label in COMPARISONS:
        for metric in MAIN_METRICS:
            interval = metrics["comparisons"][label][metric]
            assert interval["low"] <= interval["delta"] <= interval["high"], (label, metric)
    # The trained teacher answers differently from its random base.
    assert any(row["outputs"]["finetuned"]["output"] != row["outputs"]["base"]["output"] for row in review)
    assert "tok:none" in metrics["scoring"]["bleu_signature"]
    assert any("all-MiniLM-L6-v2" in warning for warning in metrics["warnings"])  # it cannot read Hangul


def test_review_rows_carry_question_reference_outputs_and_scores(evaluated):
    rows, metrics, review = evaluated
    first = review[0]
    assert first["question"] == rows[0]["question"] and first["reference"] == rows[0]["answer"]
    assert set(first["outputs"]) == set(VARIANTS)
    assert set(first["outputs"]["finetuned"]["scores"]) >= {"f1", "exact_match", "rougeL", "bertscore_f1", "cosine"}
    mean_f1 = sum(row["outputs"]["distilled"]["scores"]["f1"] for row in review) / len(review)
    assert mean_f1 == pytest.approx(metrics["distilled"]["f1"], abs=1e-3)


def test_same_params_give_the_same_answers_and_metrics(params, raft_rows, eval_paths, evaluated):
    rows, metrics, review = evaluated
    params = eval_params(params, variants={"base": False, "finetuned": True, "student_base": False,
                                           "distilled": False})
    again, again_review = evaluate(rows, load_eval(params), eval_paths)
    assert [row["outputs"]["finetuned"] for row in again_review] == [row["outputs"]["finetuned"] for row in review]
    without_cost = lambda m: {k: v for k, v in m.items() if k != "cost"}  # noqa: E731
    assert without_cost(again["finetuned"]) == without_cost(metrics["finetuned"])
    assert set(again) == {"finetuned", "comparisons", "scoring", "warnings"} and again["comparisons"] == {}


def with_max_length(params: dict, max_length: int) -> dict:
    result = copy.deepcopy(params)
    result["train"]["args"]["max_length"] = max_length
    return result


def test_test_prompts_never_depend_on_the_reference(params, raft_rows, eval_paths):
    """Any reference, long or short, leaves every variant's prompts and outputs as they were."""
    rows = raft_rows["test"][:8]
    # A budget that forces distractors out and golden documents to be trimmed: the fitting really runs.
    settings = with_max_length(eval_params(params, max_new_tokens=16), 176)
    metrics, review = evaluate(rows, load_eval(settings), eval_paths)
    for name in VARIANTS:
        prompts = metrics[name]["prompts"]
        assert prompts["documents_dropped"] > 0 and prompts["prompts_trimmed"] > 0 and prompts["prompts_unfit"] == 0
    for reference in ("예", "아주 길고 자세한 참고 답변입니다. " * 40):
        changed = [{**row, "answer": reference, "cot": f"##Reason: {reference}" if row.get("cot") else None}
                   for row in rows]
        again, again_review = evaluate(changed, load_eval(settings), eval_paths)
        for name in VARIANTS:
            assert [r["outputs"][name]["output"] for r in again_review] == \
                   [r["outputs"][name]["output"] for r in review], name
            assert again[name]["prompts"] == metrics[name]["prompts"]


def test_a_prompt_that_cannot_fit_is_scored_as_a_failure_and_counted(params, raft_rows, eval_paths):
    rows = [dict(row) for row in raft_rows["test"][:4]]
    rows[1]["question"] = "이 질문은 아주 깁니다 " * 60  # longer than the budget with no document at all
    settings = eval_params(params, max_new_tokens=16, variants={"base": False, "finetuned": True,
                                                                "student_base": False, "distilled": False})
    metrics, review = evaluate(rows, load_eval(settings), eval_paths)
    prompts = metrics["finetuned"]["prompts"]
    assert prompts["records"] == 4 and prompts["prompts"] == 3 and prompts["prompts_unfit"] == 1
    assert metrics["scoring"]["samples"] == len(review) == 4  # scored, not dropped
    unfit = review[1]["outputs"]["finetuned"]
    assert unfit["prompt_unfit"] and unfit["output"] == "" and unfit["scores"]["f1"] == 0.0


def test_batched_generation_gives_the_one_at_a_time_answers(params, raft_rows, eval_paths):
    from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info

    manifest, resolved = trained_model_info(eval_paths.adapter)
    tokenizer = load_trained_tokenizer(eval_paths.adapter, resolved)
    model = load_trained(eval_paths.adapter)
    encoder = SampleTokenizer(tokenizer, resolved.family, manifest["system_prompt"])
    samples = build_samples(raft_rows["test"][:8], encoder, 384).samples
    prompts = [sample["input_ids"][:sample["completion_mask"].index(1)] for sample in samples]
    assert len({len(prompt) for prompt in prompts}) > 1  # the batch really is left-padded
    stops = stop_token_ids(model, tokenizer, resolved.family)
    batched = greedy_generate(model, tokenizer, prompts, stops, max_new_tokens=24, batch_size=8)
    single = greedy_generate(model, tokenizer, prompts, stops, max_new_tokens=24, batch_size=1)
    assert batched.texts == single.texts and batched.new_tokens == single.new_tokens


def test_a_generation_that_never_stops_is_cut_and_counted(params, raft_rows, eval_paths):
    rows = raft_rows["test"][:6]
    params = eval_params(params, max_new_tokens=2, variants={"base": True, "finetuned": False,
                                                             "student_base": False, "distilled": False})
    metrics, review = evaluate(rows, load_eval(params), eval_paths)
    cut = [row for row in review if not row["outputs"]["base"]["stopped"]]
    assert metrics["base"]["generation"]["cut"] == len(cut) > 0  # a random model rarely says <|end|> in 2 tokens
    assert metrics["base"]["generation"]["mean_new_tokens"] <= 2
    # no target fits in 2 tokens with its end-of-turn token: each is counted, and the stage warns
    assert metrics["base"]["generation"]["targets_over_max_new_tokens"] == len(rows)
    assert any(warning.startswith(f"base: {len(rows)} test targets are longer than eval.max_new_tokens")
               for warning in metrics["warnings"])


@pytest.mark.parametrize("family, stop", [("gemma2", "<end_of_turn>"), ("llama3", "<|eot_id|>"),
                                          ("exaone4", "[|endofturn|]")])
def test_stop_tokens_include_the_family_end_of_turn(family, stop, tmp_path):
    from koraft.models.loading import load_model, load_tokenizer
    from koraft.models.presets import resolve_model

    folder = build_family_model(family, tmp_path / family)
    resolved = resolve_model({"name": str(folder), "family": family, "dtype": "float32"})
    tokenizer = load_tokenizer(resolved)
    stops = stop_token_ids(load_model(resolved), tokenizer, FAMILIES[family])
    assert tokenizer.convert_tokens_to_ids(stop) in stops
    assert tokenizer.eos_token_id in stops and tokenizer.pad_token_id not in stops


def test_a_missing_trained_model_is_a_clear_error(params, raft_rows, eval_paths, tmp_path):
    missing = dataclasses.replace(eval_paths, student=tmp_path / "nowhere")
    with pytest.raises(KoraftError, match=r"eval.variants.distilled: .*nowhere has no trained model; run `dvc "
                                          r"repro distill` first, or set eval.variants.distilled: false"):
        evaluate(raft_rows["test"][:2], load_eval(eval_params(params)), missing)


def write_predictions(path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def test_predictions_file_is_scored_without_a_model(params, raft_rows, tmp_path):
    rows = raft_rows["test"][:10]
    # Even rows answered right; chain-of-thought rows must end in the answer marker (spacing drifts).
    right = [f"##Reason: 문서를 보면 그렇다.\n<ANSWER> : {row['answer']}" if row.get("cot") else row["answer"]
             for row in rows]
    answers = [{"id": row["id"], "prediction": right[i] if i % 2 == 0 else "모르겠습니다"}
               for i, row in enumerate(rows)]
    path = tmp_path / "api_model.jsonl"
    write_predictions(path, answers)
    # No model folder exists at these paths: nothing may be loaded.
    metrics, review = evaluate(rows, load_eval(eval_params(params, predictions_file=str(path))), unused_paths(tmp_path))
    assert metrics["api_model"]["exact_match"] == 0.5 and "cost" not in metrics["api_model"]
    assert review[0]["outputs"]["api_model"]["answer"] == rows[0]["answer"]
    cot_rows = [i for i, row in enumerate(rows) if row.get("cot")]
    assert cot_rows and metrics["api_model"]["reasoning"]["answer_extraction_rate"] == pytest.approx(
        sum(i % 2 == 0 for i in cot_rows) / len(cot_rows), abs=1e-4)
    assert set(metrics) == {"api_model", "comparisons", "scoring", "warnings"}


@pytest.mark.parametrize("lines, message", [
    (['{"id": "?", "prediction": "봄"}'], r"api.jsonl:1: field 'id': '\?' is not a record of the test split"),
    (['{"id": "ID0", "prediction": 3}'], r"api.jsonl:1: field 'prediction': must be a string, got 3"),
    (['{"id": "ID0", "prediction": "a"}', '{"id": "ID0", "prediction": "b"}'], r"api.jsonl:2: field 'id': .*twice"),
    (['{"id": "ID0", "prediction": "a"}', "{not json"], r"api.jsonl:2: invalid JSON"),
    (['{"id": "ID0", "prediction": "a"}'], r"api.jsonl: 1 of 2 test records have no prediction \(first: ID1\)"),
])
def test_bad_predictions_file_names_file_line_and_field(lines, message, params, raft_rows, tmp_path):
    rows = raft_rows["test"][:2]
    text = "\n".join(lines).replace("ID0", rows[0]["id"]).replace("ID1", rows[1]["id"])
    (tmp_path / "api.jsonl").write_text(text + "\n", encoding="utf-8")
    with pytest.raises(KoraftError, match=message.replace("ID1", rows[1]["id"])):
        evaluate(rows, load_eval(eval_params(params, predictions_file=str(tmp_path / "api.jsonl"))),
                 unused_paths(tmp_path))


def test_a_predictions_file_with_many_bad_lines_reports_the_first_twenty_at_once(params, raft_rows, tmp_path):
    rows = raft_rows["test"][:3]
    lines = [json.dumps({"id": rows[0]["id"], "prediction": "a"}), "{not json", '{"id": "nope", "prediction": "b"}']
    lines += [json.dumps({"id": rows[1]["id"], "prediction": i}) for i in range(25)]
    (tmp_path / "api.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KoraftError) as raised:
        evaluate(rows, load_eval(eval_params(params, predictions_file=str(tmp_path / "api.jsonl"))),
                 unused_paths(tmp_path))
    message = str(raised.value)
    assert message.splitlines()[0] == f"{tmp_path / 'api.jsonl'}: 27 bad lines; 2 test records have no prediction:"
    assert "api.jsonl:2: invalid JSON" in message and "api.jsonl:3: field 'id': 'nope'" in message
    assert message.count("field 'prediction': must be a string") == 18  # 20 shown, 2 of them above
    assert message.splitlines()[-1] == "  ... and 7 more"


@pytest.mark.parametrize("change, message", [
    ({"variants": {"base": True, "tuned": True}}, r"eval.variants: unknown keys \['tuned'\]"),
    ({"variants": {"base": False, "finetuned": False, "student_base": False, "distilled": False}},
     "nothing to evaluate"),
    ({"bertscore": {"model": "klue/roberta-large", "num_layers": "auto", "batch_size": 8}},
     "eval.bertscore.num_layers: must be a number when eval.bertscore.model names a model"),
    ({"max_new_tokens": 0}, r"eval.max_new_tokens: must be in \[1, 32768\]"),
    ({"bootstrap": {"resamples": 1000, "confidence": 95}}, r"eval.bootstrap.confidence: must be in"),
    ({"bootstrap": {"resamples": 1000, "confidence": 0.9, "seed": 1}}, r"eval.bootstrap: unknown keys \['seed'\]"),
    ({"predictions_file": "/etc/hostname"}, r"eval.predictions_file: /etc/hostname is outside .*, which dvc.yaml"),
    ({"endpoints": [{"name": "vllm", "base_url": "localhost:8000", "model": "m"}]},
     r"eval.endpoints\[0\].base_url: must start with http:// or https://"),
    ({"endpoints": [{"name": "finetuned", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}]},
     r"eval.endpoints\[0\].name: 'finetuned' is already the name of another system"),
    ({"endpoints": [{"name": "e", "base_url": "http://127.0.0.1:8000/v1", "model": "m", "compare_to": "distilled"}],
      "variants": {"finetuned": True}}, r"eval.endpoints\[0\].compare_to: 'distilled' is not an evaluated variant"),
    ({"endpoints": [{"name": "e", "base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key": "sk-1"}]},
     r"eval.endpoints\[0\]: unknown keys \['api_key'\]"),
    ({"requests": {"concurrency": 0, "timeout_s": 1.0, "retries": 0}}, r"eval.requests.concurrency: must be in"),
    # Knowable from params and the environment: refused before any variant generates, not after.
    ({"endpoints": [{"name": "e", "base_url": "http://127.0.0.1:8000/v1", "model": "m",
                     "api_key_env": "KORAFT_TEST_UNSET_KEY"}]},
     r"eval.endpoints\[0\].api_key_env: names KORAFT_TEST_UNSET_KEY, which is not set in this environment"),
    ({"variants": {"finetuned": True, "served": True}, "served": {"gguf": [], "compare_to": "finetuned",
                                                                  "threads": 2}}, r"eval.served.gguf: a list of"),
    ({"perplexity": {"variants": ["base"], "sources": ["wikipedia"], "max_tokens": 64}},
     r"eval.perplexity.sources: a list of distinct text sources \(general, test_documents\)"),
    ({"perplexity": {"variants": ["served"], "sources": ["general"], "max_tokens": 64}},
     r"eval.perplexity.variants: a list of distinct model variants"),
    ({"judge": {**JUDGE, "single_prompt": "{question} {answer}"}},
     r"eval.judge.single_prompt: must use exactly the placeholders \{question\}, \{reference\}, \{answer\}, got "),
    ({"judge": {**JUDGE, "pairs": [["base", "gpt4"]]}}, r"eval.judge.pairs: a list of \[before, after\] pairs"),
    ({"judge": {**JUDGE, "endpoint": {"base_url": "http://127.0.0.1:8000/v1", "model": "j",
                                      "api_key_env": "KORAFT_TEST_UNSET_KEY"}}},
     r"eval.judge.endpoint.api_key_env: names KORAFT_TEST_UNSET_KEY, which is not set"),
])
def test_bad_eval_params_are_one_line(change, message, params, raft_rows, tmp_path):
    with pytest.raises(ParamError, match=message):
        evaluate(raft_rows["test"][:2], load_eval(eval_params(params, **change)), unused_paths(tmp_path))


@pytest.mark.parametrize("pasted", ["sk-proj-Zx81kQ2mVb7R", "sk_live_51Hq8e2K", "hf_AbCdEfGh1234", "Bearer 9f8e7d"])
def test_a_key_pasted_as_api_key_env_is_refused_without_echoing_it(pasted, params, raft_rows, tmp_path):
    endpoint = {"name": "e", "base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key_env": pasted}
    with pytest.raises(ParamError) as raised:
        evaluate(raft_rows["test"][:2], load_eval(eval_params(params, endpoints=[endpoint])), unused_paths(tmp_path))
    message = str(raised.value)
    assert message.startswith("params.yaml: eval.endpoints[0].api_key_env: ") and "(the value is not shown)" in message
    assert pasted not in message and pasted[3:9] not in message


def unused_paths(root) -> EvalPaths:
    """Folders holding no model: a test using them must fail before loading one."""
    return EvalPaths(adapter=root / "a", student=root / "b", tiny_models=root / "c", predictions=root)


def test_tiny_tokenizer_round_trips_generated_korean(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "tiny-s")
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    text = "정답은 서울입니다"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert stop_token_ids(model, tokenizer, FAMILIES["tiny"]) == [tokenizer.convert_tokens_to_ids("<|end|>")]


@pytest.mark.slow
def test_held_out_perplexity_is_scored_per_variant_and_compared(params, raft_rows, split_records, eval_paths):
    from koraft.evaluation.perplexity import held_out_texts

    settings = eval_params(params, perplexity={"variants": ["base", "finetuned"],
                                               "sources": ["general", "test_documents"], "max_tokens": 48})
    settings["eval"]["variants"] = {"base": True, "finetuned": True}
    metrics, _ = evaluate(raft_rows["test"][:4], load_eval(settings), eval_paths, split_records["test"])
    texts = held_out_texts(split_records["test"], ("general", "test_documents"))
    for source in ("general", "test_documents"):
        block = metrics["perplexity"][source]
        assert block["texts"] == len(texts[source]) > 0
        for name in ("base", "finetuned"):
            assert block[name]["perplexity"] == pytest.approx(math.exp(block[name]["loss"]), rel=1e-3)
            assert block[name]["tokens"] > block["texts"]  # every text has tokens after its <bos>
        comparison = block["finetuned_vs_base"]
        assert comparison["loss"]["low"] <= comparison["loss"]["delta"] <= comparison["loss"]["high"]
        assert comparison["rose"] == (comparison["loss"]["low"] > 0)
    assert metrics["perplexity"]["max_tokens"] == 48
    assert "student_base" not in metrics["perplexity"]["general"]  # not listed: not scored
    with pytest.raises(KoraftError, match="test_documents source needs the test split"):
        evaluate(raft_rows["test"][:4], load_eval(settings), eval_paths)


@pytest.mark.slow
def test_the_judge_grades_the_evaluated_answers_through_a_cached_endpoint(params, raft_rows, eval_paths, tmp_path):
    from teacher_server import TeacherServer

    def strict_judge(user: str) -> str:  # 9 for an answer that holds the reference, 2 otherwise; prefers A
        reference = user.split("정답: ", 1)[1].split("\n", 1)[0]
        if "답변 A: " in user:
            return "둘 다 비슷합니다. [[A]]"
        answer = user.split("평가할 답변: ", 1)[1].split("\n\n", 1)[0]
        return f"평가: ... [[{9 if reference in answer else 2}]]"

    rows = raft_rows["test"][:6]
    with TeacherServer(reply=strict_judge) as server:
        settings = eval_params(params, judge={**judge_section(params, server.url), "questions": 4})
        settings["eval"]["variants"] = {"base": True, "finetuned": True}
        paths = dataclasses.replace(eval_paths, judge_calls=tmp_path / "calls.jsonl")
        metrics, review = evaluate(rows, load_eval(settings), paths)
        asked = server.requests
        again, _ = evaluate(rows, load_eval(settings), paths)
        assert server.requests == asked  # every call came from the cache
    judged = metrics["judge"]
    assert again["judge"] == judged and judged["questions"] == 4
    for name in ("base", "finetuned"):
        single = judged["single"][name]
        assert single["scored"] + single["failed"] + single["unparsed"] == 4
        assert set(single) >= {"mean_score", "empty", "not_korean"}
    # The scripted judge always says A: both orders disagree, so every pair is a tie and never consistent.
    pair = judged["pairwise"]["finetuned_vs_base"]
    assert pair["ties"] == 1.0 and pair["position_consistency"] == 0.0 and pair["judged"] == 4
    assert sum("judge" in row for row in review) == 4
