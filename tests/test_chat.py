"""Prompt rendering per family, through each family's chat template in a small local model folder."""

from __future__ import annotations

import time

import pytest
from family_models import TEMPLATES, build_family_model, family_tokenizer
from transformers import AutoTokenizer

from koraft.core.errors import KoraftError, ParamError
from koraft.models.chat import render_prompt, render_target
from koraft.models.loading import attention_implementation, check_target_modules, load_model, load_tokenizer
from koraft.models.presets import FAMILIES, resolve_model
from koraft.models.samples import SampleTokenizer, build_samples
from koraft.training.train import lora_settings

SYSTEM = "문서를 근거로 답하세요."
RECORD = {"id": "q-1", "instruction": "지시문", "documents": ["첫 문서.", "정답은 한결시이다."], "oracle_index": 1,
          "question": "어디인가?", "answer": "한결시", "cot": None}
USER = "지시문\n\n<DOCUMENT>첫 문서.</DOCUMENT>\n<DOCUMENT>정답은 한결시이다.</DOCUMENT>\n\n질문: 어디인가?"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_family_model(family, root / family)
            for family in ("gemma2", "gemma3", "llama3", "qwen2", "exaone4")}


def load(folders, family):
    resolved = resolve_model({"name": str(folders[family]), "family": family})
    return resolved, load_tokenizer(resolved)


def test_gemma2_folds_the_system_prompt_into_the_first_user_turn(folders):
    resolved, tokenizer = load(folders, "gemma2")
    with pytest.raises(Exception, match="System role not supported"):  # why folding is needed
        tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}], tokenize=False)
    prompt = render_prompt(tokenizer, resolved.family, SYSTEM, RECORD)
    assert prompt == f"<bos><start_of_turn>user\n{SYSTEM}\n\n{USER}<end_of_turn>\n<start_of_turn>model\n"
    assert render_target(tokenizer, resolved.family, RECORD) == "한결시<end_of_turn>"
    assert attention_implementation(resolved) == "eager"  # on a CPU: soft-capped attention, no flash kernel
    assert load_model(resolved).config._attn_implementation == "eager"


def test_gemma3_folds_the_system_prompt_as_its_template_does_and_ends_turns_with_end_of_turn(folders):
    resolved, tokenizer = load(folders, "gemma3")
    prompt = render_prompt(tokenizer, resolved.family, SYSTEM, RECORD)
    assert prompt == f"<bos><start_of_turn>user\n{SYSTEM}\n\n{USER}<end_of_turn>\n<start_of_turn>model\n"
    # An engine that sends the system turn as such (llama.cpp's server, vLLM) renders the same text.
    as_sent = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert tokenizer.apply_chat_template(as_sent, tokenize=False, add_generation_prompt=True) == prompt
    turns = [{"role": "user", "content": "질문"}, {"role": "assistant", "content": " 답 "},
             {"role": "user", "content": "또"}]
    assert tokenizer.apply_chat_template(turns, tokenize=False) == (
        "<bos><start_of_turn>user\n질문<end_of_turn>\n<start_of_turn>model\n답<end_of_turn>\n"
        "<start_of_turn>user\n또<end_of_turn>\n")
    with pytest.raises(Exception, match="roles must alternate"):
        tokenizer.apply_chat_template(turns[:1] * 2, tokenize=False)
    assert render_target(tokenizer, resolved.family, RECORD) == "한결시<end_of_turn>"
    # The pretrained checkpoints (the packaged 270M) never learned <end_of_turn>: their answers end with <eos>.
    pretrained = resolve_model({"name": str(folders["gemma3"]), "family": "gemma3_pt"})
    assert render_prompt(tokenizer, pretrained.family, SYSTEM, RECORD) == prompt
    assert render_target(tokenizer, pretrained.family, RECORD) == "한결시<eos>"
    assert tokenizer.pad_token == "<pad>" != tokenizer.eos_token
    assert attention_implementation(resolved) == "sdpa"  # no soft-capping: sdpa is exact
    assert load_model(resolved).config._attn_implementation == "sdpa"


def test_llama3_date_is_pinned_and_pad_is_not_eos(folders):
    resolved, tokenizer = load(folders, "llama3")
    prompt = render_prompt(tokenizer, resolved.family, SYSTEM, RECORD)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                             "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + SYSTEM)
    assert prompt.endswith(f"{USER}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    unpinned = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert time.strftime("%d %b %Y") in unpinned  # left alone, the template writes today's date
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>" != tokenizer.eos_token == "<|eot_id|>"


def test_qwen2_never_gets_its_default_system_prompt(folders):
    resolved, tokenizer = load(folders, "qwen2")
    for system in (SYSTEM, ""):
        prompt = render_prompt(tokenizer, resolved.family, system, RECORD)
        assert "You are Qwen" not in prompt
        assert prompt == f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{USER}<|im_end|>\n" \
                         "<|im_start|>assistant\n"


def test_exaone4_think_block_is_the_same_in_training_and_generation(folders):
    resolved, tokenizer = load(folders, "exaone4")
    prompt = render_prompt(tokenizer, resolved.family, SYSTEM, RECORD)
    assert prompt == f"[|system|]\n{SYSTEM}[|endofturn|]\n[|user|]\n{USER}[|endofturn|]\n" \
                     "[|assistant|]\n<think>\n\n</think>\n\n"
    # Training sees exactly the generation prompt's tokens, then the target.
    samples = build_samples([RECORD], SampleTokenizer(tokenizer, resolved.family, SYSTEM), max_length=512).samples
    generation_ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], tokenize=True,
        add_generation_prompt=True, enable_thinking=False, return_dict=True)["input_ids"]
    prompt_length = samples[0]["completion_mask"].index(1)
    assert samples[0]["input_ids"][:prompt_length] == list(generation_ids)
    assert tokenizer.decode(samples[0]["input_ids"][prompt_length:]) == "한결시[|endofturn|]"


def test_exaone3_template_ends_turns_with_endofturn():
    # EXAONE-3's modeling code is remote, so only its template is exercised, on another tokenizer.
    tokenizer = family_tokenizer("qwen2")
    tokenizer.chat_template = (TEMPLATES / "exaone3.jinja").read_text(encoding="utf-8")
    family = FAMILIES["exaone3"]
    assert render_prompt(tokenizer, family, SYSTEM, RECORD) == f"[|system|]{SYSTEM}[|endofturn|]\n[|user|]{USER}\n" \
                                                               "[|assistant|]"
    assert render_target(tokenizer, family, RECORD) == "한결시[|endofturn|]"


def test_label_mask_covers_only_the_completion(folders):
    resolved, tokenizer = load(folders, "llama3")
    record = {**RECORD, "cot": "##begin_quote##정답은 한결시이다.##end_quote## 그러므로 한결시이다."}
    sample = build_samples([record], SampleTokenizer(tokenizer, resolved.family, SYSTEM), 512).samples[0]
    mask = sample["completion_mask"]
    start = mask.index(1)
    assert set(mask[:start]) == {0} and set(mask[start:]) == {1}
    target = tokenizer.decode(sample["input_ids"][start:])
    assert target == f"{record['cot']}\n<ANSWER>: 한결시<|eot_id|>"
    assert sample["input_ids"][-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>") != tokenizer.pad_token_id


def test_target_modules_are_checked_against_the_architecture(folders):
    resolved = resolve_model({"name": str(folders["exaone4"]), "family": "exaone4"})
    check_target_modules(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], resolved)
    exaone3_names = list(FAMILIES["exaone3"].target_modules)
    with pytest.raises(ParamError, match=r"train.lora.target_modules: \['out_proj', 'c_fc_0'.*its linear layers "
                                         r"are down_proj, gate_proj") as error:
        check_target_modules(exaone3_names, resolved)
    assert "\n" not in str(error.value)


def test_lora_targets_default_to_the_family_modules():
    assert lora_settings({}, FAMILIES["exaone3"])["target_modules"] == list(FAMILIES["exaone3"].target_modules)
    assert lora_settings({}, FAMILIES["llama3"])["target_modules"] == "all-linear"
    assert lora_settings({"target_modules": ["q_proj"]}, FAMILIES["exaone3"])["target_modules"] == ["q_proj"]


def test_a_tokenizer_without_chat_template_is_refused(folders, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(folders["qwen2"])
    tokenizer.chat_template = None
    with pytest.raises(KoraftError, match="has no chat template"):
        render_prompt(tokenizer, FAMILIES["qwen2"], SYSTEM, RECORD)


def test_attention_implementation_is_a_param_with_family_defaults(folders):
    llama = resolve_model({"name": str(folders["llama3"]), "family": "llama3"})
    assert attention_implementation(llama) == "sdpa"
    eager = resolve_model({"name": str(folders["llama3"]), "family": "llama3", "attn_implementation": "eager"})
    assert load_model(eager).config._attn_implementation == "eager"
    with pytest.raises(ParamError, match=r"model.attn_implementation: .*sdpa cannot"):
        resolve_model({"name": str(folders["gemma2"]), "family": "gemma2", "attn_implementation": "sdpa"})
    with pytest.raises(ParamError, match=r"distill.student.attn_implementation: must be one of auto, sdpa"):
        resolve_model({"preset": "tiny-s", "attn_implementation": "fast"}, key="distill.student")
    flash = resolve_model({"name": str(folders["gemma2"]), "family": "gemma2",
                           "attn_implementation": "flash_attention_2"})
    with pytest.raises(ParamError, match=r"model.attn_implementation: flash_attention_2 needs a CUDA GPU"):
        load_model(flash)  # this machine has no GPU: one line before any weight loads
