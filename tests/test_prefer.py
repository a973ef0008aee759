"""Preference tuning: the rejected sides each rule writes, the on-policy sides, and every method for real on
the tiny presets (trl's DPO, ORPO, KTO and SimPO trainers continuing a LoRA adapter)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
from helpers import ROOT, model_params, paths, quick

from koraft.core.errors import ParamError
from koraft.core.formats import completion
from koraft.evaluation.metrics import korquad_normalize
from koraft.preference.config import OnPolicySettings, PairSettings, load_pairs, load_prefer
from koraft.preference.pairs import answer_sample, build_pairs, on_policy_sample, policy_reject
from koraft.preference.prefer import PreferPaths, bos_free, completion_positions_only, prefer
from koraft.preference.rejects import Skipped, rule_rejects

ABSTAIN = "주어진 문서에서 답을 찾을 수 없습니다."
GOLDEN = "부산시는 올해 해운대 해수욕장을 6월 1일에 개장한다. 개장 기간에는 안전요원 120명이 배치된다."
DISTRACTOR = "강릉시는 경포 해수욕장에 안전요원 85명을 둔다. 강릉 단오제는 매년 음력 5월 5일 무렵 열린다."


def record(**changes) -> dict:
    base = {"id": "r1", "doc_id": "d1", "instruction": "답하세요.",
            "question": "해운대 해수욕장에 안전요원 몇 명이 배치되나?",
            "documents": [DISTRACTOR, GOLDEN], "oracle_index": 1, "oracle_included": True,
            "distractor_doc_ids": ["d2"], "answer": "120명", "cot": None, "split": "train"}
    return {**base, **changes}


def answer_of(rejected: str) -> str:
    return rejected.rsplit("<ANSWER>:", 1)[-1].strip()


def pair_settings(params, sources=("distractor", "sentence", "abstain", "quote", "on_policy"), abstain=None,
                  f1_below=0.5, records=None) -> PairSettings:
    settings = load_pairs(params)
    return PairSettings(sources=tuple(sources), on_policy=OnPolicySettings(records, f1_below, 16, 4), seed=7,
                        train=settings.train, abstain_answer=abstain)


def test_distractor_rule_takes_a_span_of_the_answers_kind_from_a_distractor():
    number = rule_rejects(record(), "distractor", 7, None)
    assert number == "85명"  # a number with its unit, from the distractor, never the golden document's 120명
    text = rule_rejects(record(answer="해운대 해수욕장", question="부산시가 6월 1일에 여는 곳은?"), "distractor", 7,
                        None)
    assert not any(ch.isdigit() for ch in text) and text in DISTRACTOR and text not in GOLDEN
    assert rule_rejects(record(answer="해운대 해수욕장"), "distractor", 7, None) == text  # seeded per record
    with_cot = rule_rejects(record(cot="##begin_quote##안전요원 120명이 배치된다##end_quote##"), "distractor", 7, None)
    assert with_cot.startswith("##begin_quote##안전요원 120명") and answer_of(with_cot) == "85명"
    assert rule_rejects(record(documents=[GOLDEN], oracle_index=0), "distractor", 7, None) == Skipped(
        "no distractor document")


def test_sentence_rule_answers_with_the_golden_sentence_around_the_span():
    assert rule_rejects(record(), "sentence", 7, None) == "개장 기간에는 안전요원 120명이 배치된다."
    assert rule_rejects(record(oracle_index=None, documents=[DISTRACTOR], oracle_included=False), "sentence", 7,
                        None) == Skipped("the golden document is absent")
    assert isinstance(rule_rejects(record(answer="6월 1일에 개장한다. 개장 기간"), "sentence", 7, None), Skipped)


def test_abstain_rule_answers_anyway_where_the_target_abstains():
    absent = record(documents=[DISTRACTOR], oracle_index=None, oracle_included=False, answer=ABSTAIN)
    rejected = rule_rejects(absent, "abstain", 7, ABSTAIN)
    assert rejected == "강릉시는 경포 해수욕장에 안전요원 85명을 둔다."  # the sentence sharing most with the question
    assert rule_rejects(absent, "abstain", 7, None) == Skipped("the target does not abstain")  # recall mode
    assert rule_rejects(record(), "abstain", 7, ABSTAIN) == Skipped("the target does not abstain")
    assert rule_rejects(absent, "distractor", 7, ABSTAIN) == Skipped("the target abstains (source abstain)")


def test_quote_rule_swaps_a_quote_for_a_sentence_the_golden_document_lacks():
    cot = "##begin_quote##개장 기간에는 안전요원 120명이 배치된다.##end_quote## 따라서 120명이다."
    rejected = rule_rejects(record(cot=cot), "quote", 7, None)
    quoted = rejected.split("##begin_quote##")[1].split("##end_quote##")[0]
    assert quoted in DISTRACTOR and quoted not in GOLDEN
    assert rejected.endswith("따라서 120명이다.\n<ANSWER>: 120명")  # the answer stays: only the quote is false
    assert rule_rejects(record(), "quote", 7, None) == Skipped("no quote in a chain of thought")


def test_pairs_count_every_record_per_source_and_drop_equal_sides(params):
    rows = [record(), record(id="r2", answer="개장 기간에는 안전요원 120명이 배치된다."),  # sentence == answer
            record(id="r3", documents=[GOLDEN], oracle_index=0)]
    outputs = {"r1": "85명", "r2": "개장 기간에는 안전요원 120명이 배치된다.", "r3": "120 명"}
    built = build_pairs(rows, pair_settings(params, ("distractor", "sentence", "on_policy")), outputs)
    report = built.report()
    for counts in report["sources"].values():
        assert counts["records"] == counts["kept"] + counts["skipped"] + counts["equal"] + counts["duplicate"]
    assert report["sources"]["sentence"]["equal"] == 1  # r2's sentence is its answer
    assert report["sources"]["distractor"]["skip_reasons"] == {"no distractor document": 1}
    # r1's on-policy answer is the distractor's 85명, already a pair: a duplicate; r2 and r3 answered right
    assert report["sources"]["on_policy"] == {"records": 3, "kept": 0, "skipped": 2, "equal": 0, "duplicate": 1,
                                              "skip_reasons": {"the model's answer is right (EM 1 or F1 >= 0.5)": 2}}
    assert all(pair["chosen"] == completion(next(r for r in rows if r["id"] == pair["id"])) for pair in built.pairs)
    assert all(korquad_normalize(p["chosen"]) != korquad_normalize(p["rejected"]) for p in built.pairs)


def test_on_policy_reject_needs_a_wrong_answer():
    cot_record = record(cot="##begin_quote##안전요원 120명##end_quote##")
    assert policy_reject(cot_record, "근거가 없다.\n<ANSWER>: 85명", 0.5) == "근거가 없다.\n<ANSWER>: 85명"
    assert isinstance(policy_reject(cot_record, "<ANSWER>: 120명", 0.5), Skipped)
    assert isinstance(policy_reject(cot_record, "120명", 0.5), str)  # no marker where one was asked: no answer
    assert isinstance(policy_reject(record(), "안전요원 120명", 0.5), Skipped)  # F1 0.67: close enough


def test_on_policy_sample_is_seeded_and_keeps_split_order():
    rows = [record(id=f"r{i}") for i in range(20)]
    first = on_policy_sample(rows, OnPolicySettings(5, 0.5, 16, 4), 3)
    assert first == on_policy_sample(rows, OnPolicySettings(5, 0.5, 16, 4), 3) and len(first) == 5
    assert [r["id"] for r in first] == sorted((r["id"] for r in first), key=lambda name: int(name[1:]))
    assert on_policy_sample(rows, OnPolicySettings(None, 0.5, 16, 4), 3) == rows


def test_bad_prefer_params_are_one_line_before_any_model(params):
    bad = copy.deepcopy(params)
    bad["prefer"]["args"]["betta"] = 0.1
    with pytest.raises(ParamError, match=r"prefer\.args.*betta.*DPOConfig"):
        load_prefer(bad)
    bad = copy.deepcopy(params)
    bad["prefer"]["method"] = "ppo"
    with pytest.raises(ParamError, match="prefer.method"):
        load_prefer(bad)
    bad = copy.deepcopy(params)
    bad["prefer"]["args"]["max_length"] = 64
    with pytest.raises(ParamError, match="set by koraft"):
        load_prefer(bad)
    bad = copy.deepcopy(params)
    bad["prefer"]["args"]["learning_rate"] = "5e-5"
    with pytest.raises(ParamError, match="YAML reads"):
        load_prefer(bad)
    bad = copy.deepcopy(params)
    bad["prefer"]["sources"] = ["distractor", "sycophancy"]
    with pytest.raises(ParamError, match="prefer.sources"):
        load_pairs(bad)
    bad = copy.deepcopy(params)
    bad["train"]["method"] = "full"
    with pytest.raises(ParamError, match="train.method"):
        load_prefer(bad)


@pytest.fixture(scope="module")
def sft(tmp_path_factory, params, raft_rows, tiny_models):
    """tiny-s with a LoRA adapter from a few train steps: the SFT model preference tuning continues."""
    from koraft.training.config import train_settings
    from koraft.training.train import train

    root = tmp_path_factory.mktemp("sft")
    train(raft_rows["train"][:16], raft_rows["val"][:4],
          train_settings(model_params(params, "tiny-s"), quick(params, "lora", steps=2)), paths(root, tiny_models))
    return root / "adapter"


def tiny_params(params, method: str) -> dict:
    result = copy.deepcopy(params)
    result["model"] = model_params(params, "tiny-s")
    result["prefer"]["method"] = method
    args = {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 5.0e-3, "logging_steps": 1}
    if method == "kto":
        args["per_device_train_batch_size"] = 4  # KTO's KL term pairs each example with another of its batch
    result["prefer"]["args"] = args
    return result


def test_completion_positions_only_scores_as_every_position_does(tiny_models):
    """trl's fused LM head on the compact path gives the same log-probabilities, loss and gradients as its CPU
    path over every position; trl's own device check is back afterwards."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils as trl_utils

    model = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s", dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, model.config.vocab_size, (2, 24), generator=generator)
    labels = input_ids.clone()
    labels[0, :15], labels[1, :9] = -100, -100  # prompts of two lengths; only the completions are scored

    def scored() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        outputs = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        outputs.log_probs.sum().backward()
        return outputs.log_probs.detach(), outputs.loss.detach(), [p.grad.clone() for p in model.parameters()
                                                                   if p.grad is not None]

    check = trl_utils._use_triton
    assert not check(torch.device("cpu"))  # trl's own path on CPU projects every position
    every_position = scored()
    with completion_positions_only():
        assert trl_utils._use_triton(torch.device("cpu"))
        compact = scored()
    assert trl_utils._use_triton is check
    torch.testing.assert_close(compact[0], every_position[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compact[1], every_position[1], rtol=1e-5, atol=1e-5)
    assert len(compact[2]) == len(every_position[2]) > 0
    for ours, theirs in zip(compact[2], every_position[2], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert (compact[0][0, :14] == 0).all() and (compact[0][0, 14:] != 0).all()


@pytest.mark.slow
def test_on_policy_rejects_are_the_models_own_outputs_on_the_train_split(params, raft_rows, sft, tiny_models):
    settings = pair_settings(params, ("on_policy",), records=6, f1_below=1.01)
    settings = PairSettings(settings.sources, settings.on_policy, settings.seed,
                            load_pairs(tiny_params(params, "dpo")).train, None)
    outputs, generation, seconds = answer_sample(raft_rows["train"], settings, sft)
    sample_ids = {row["id"] for row in on_policy_sample(raft_rows["train"], settings.on_policy, settings.seed)}
    assert set(outputs) <= sample_ids and generation["answered"] == len(outputs) > 0
    # the counts go into data/prefer (cached): no clock in them, so a rerun writes the same bytes
    assert set(generation) == {"records", "answered", "unfit", "cut_at_token_limit"} and seconds > 0
    built = build_pairs(raft_rows["train"], settings, outputs)
    assert {pair["source"] for pair in built.pairs} <= {"on_policy"}
    assert all(pair["rejected"] == outputs[pair["id"]].strip() for pair in built.pairs)
    assert built.counts["on_policy"]["records"] == len(outputs)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo", "kto", "simpo"])
def test_each_method_trains_the_sft_adapter_a_few_steps(tmp_path, params, raft_rows, sft, method):
    from safetensors.torch import load_file

    settings = load_prefer(tiny_params(params, method))
    pair_rules = pair_settings(params, ("distractor", "sentence"))
    pairs = build_pairs(raft_rows["train"][:12], pair_rules).pairs
    records = {row["id"]: row for row in raft_rows["train"]}
    out = tmp_path / "preferred"
    trained = prefer(pairs, records, settings, PreferPaths(sft, out, tmp_path / "scratch"))
    assert trained["steps"] == 2 and math.isfinite(trained["loss"]["first"]) and math.isfinite(trained["loss"]["final"])
    assert trained["adapter_change"]["changed"] > 0 and trained["adapter_change"]["max_abs"] > 0
    before, after = load_file(sft / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()  # the same adapter, continued; trl's "ref" copy is not saved
    assert any((before[name] - after[name]).abs().max() > 0 for name in before)
    manifest = json.loads((out / "koraft_manifest.json").read_text())
    assert manifest["preference"]["method"] == method and manifest["method"] == "lora"
    assert not (tmp_path / "scratch").exists()


@pytest.mark.slow
def test_dpo_continues_a_qlora_adapter_on_the_4_bit_base(tmp_path, params, raft_rows, tiny_models):
    """QLoRA as in train: the policy's base is NF4 (bitsandbytes on the CPU), the SFT adapter on it trains, and
    the saved adapter keeps QLoRA's manifest."""
    import bitsandbytes as bnb

    from koraft.preference.prefer import load_policy
    from koraft.training.config import train_settings
    from koraft.training.train import train

    train(raft_rows["train"][:8], [], train_settings(model_params(params, "tiny-s"), quick(params, "qlora", steps=1)),
          paths(tmp_path / "sft", tiny_models))
    sft_adapter = tmp_path / "sft" / "adapter"
    qlora_params = tiny_params(params, "dpo")
    qlora_params["train"]["method"] = "qlora"
    settings = load_prefer(qlora_params)
    model, manifest, _ = load_policy(settings, sft_adapter)
    layers = [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert manifest["method"] == "qlora" and layers
    assert {layer.weight.quant_type for layer in layers} == {"nf4"}
    del model
    pairs = build_pairs(raft_rows["train"][:12], pair_settings(params, ("distractor", "sentence"))).pairs
    out = tmp_path / "preferred"
    trained = prefer(pairs, {row["id"]: row for row in raft_rows["train"]}, settings,
                     PreferPaths(sft_adapter, out, tmp_path / "scratch"))
    assert trained["steps"] == 2 and math.isfinite(trained["loss"]["final"])
    assert trained["adapter_change"]["changed"] > 0
    assert json.loads((out / "koraft_manifest.json").read_text())["method"] == "qlora"


def test_prompts_reach_trl_as_sft_tokenized_them(params, raft_rows, sft):
    """The trainer's prompt ids are SFT's: one bos, the same template and system prompt, the same fitting."""
    from koraft.models.samples import SampleTokenizer, fit_documents
    from koraft.models.trained import load_trained_tokenizer, trained_model_info
    from koraft.preference.prefer import training_rows

    manifest, resolved = trained_model_info(sft)
    tokenizer = load_trained_tokenizer(sft, resolved)
    encoder = SampleTokenizer(tokenizer, resolved.family, manifest["system_prompt"])
    row = raft_rows["train"][0]
    pair = {"id": row["id"], "source": "distractor", "chosen": completion(row), "rejected": "엉뚱한 답"}
    rows, counts = training_rows([pair], {row["id"]: row}, encoder, 512, "dpo")
    assert counts == {"pairs": 1, "unfit": 0, "rows": 1}
    (prompt_text, prompt_ids), *_ = fit_documents(row, encoder, 512 - len(encoder.target(row)[1]), True)
    assert tokenizer(rows[0]["prompt"])["input_ids"] == prompt_ids  # as DPOTrainer and KTOTrainer tokenize it
    assert bos_free(prompt_text, tokenizer) == rows[0]["prompt"]
    kto_rows, _ = training_rows([pair, {**pair, "rejected": "또 다른 답"}], {row["id"]: row}, encoder, 512, "kto")
    assert [r["label"] for r in kto_rows] == [True, False, False]  # the chosen side once, each rejected side


def test_evaluate_counts_wrong_answers_taken_from_a_distractor():
    import numpy as np

    from koraft.evaluation.scoring import distractor_answers

    rows = [record(), record(id="r2"), record(id="r3"), record(id="r4"), record(id="r5")]
    answers = ["120명", "85명", "6월 1일", "", "외계인"]  # right; a distractor's; the golden's own; none; invented
    counted = distractor_answers(rows, answers, np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert counted == {"wrong": 3, "from_distractor": 1, "share": 0.3333}


@pytest.mark.parametrize(("sweep", "sorted_by"), [("prefer_methods", "preferred.f1"), ("divergences", "finetuned.f1")])
def test_a_sweep_over_the_prefer_section_is_shown_sorted_by_the_preferred_model(sweep, sorted_by):
    """Such a sweep leaves the fine-tuned model as it is, so sorting by its F1 would order nothing."""
    printed = subprocess.run([sys.executable, "scripts/sweep.py", sweep, "--dry-run"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    show = printed.splitlines()[-1]
    assert show.startswith("$ dvc exp show")
    assert show.endswith(f"--sort-by metrics/eval.json:{sorted_by} --sort-order desc")
    assert "preferred_vs_finetuned" in show and "(finetuned|preferred)\\.distractor_answers" in show
