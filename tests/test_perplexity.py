"""Held-out perplexity: token losses by hand, the paired comparison and its flag."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from koraft.evaluation.perplexity import TokenLosses, held_out_texts, perplexity_report, rise_warnings, token_losses

BOOTSTRAP = {"resamples": 300, "confidence": 0.95, "seed": 42}


def test_token_losses_equal_the_log_likelihood_by_hand(tiny_models):
    from koraft.models.loading import load_model, load_tokenizer
    from koraft.models.presets import resolve_model

    resolved = resolve_model({"preset": "tiny-m"}, tiny_models)
    model, tokenizer = load_model(resolved).eval(), load_tokenizer(resolved)
    texts = ["서울은 한국의 수도이다.", "오늘은 비가 온다. 우산을 챙기세요."]  # two lengths: one batch, padded
    got = token_losses(model, tokenizer, texts, max_tokens=64)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if ids[0] != tokenizer.bos_token_id:
            ids = [tokenizer.bos_token_id, *ids]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
        expected = -torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum()
        assert got.tokens[i] == len(ids) - 1
        assert got.nll[i] == pytest.approx(float(expected), rel=1e-5)
    short = token_losses(model, tokenizer, texts, max_tokens=4)  # cut to 4 tokens: 3 predicted
    assert short.tokens.tolist() == [3, 3]
    assert got.loss() == pytest.approx(got.nll.sum() / got.tokens.sum())


def test_a_rise_beyond_noise_is_flagged_and_noise_is_not():
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 30, size=40).astype(float)
    base = TokenLosses(tokens * 3.0, tokens)
    worse = TokenLosses(tokens * 3.0 + tokens * rng.uniform(0.2, 0.4, size=40), tokens)  # every text worse
    noisy = TokenLosses(tokens * 3.0 + tokens * rng.normal(0, 0.3, size=40), tokens)
    texts = {"general": ["x"] * 40}
    report = perplexity_report({"base": {"general": base}, "finetuned": {"general": worse}}, texts, BOOTSTRAP)
    block = report["general"]
    assert block["base"] == {"loss": 3.0, "perplexity": round(math.exp(3.0), 3), "tokens": int(tokens.sum())}
    assert block["finetuned_vs_base"]["rose"] and block["finetuned_vs_base"]["loss"]["low"] > 0
    assert block["finetuned_vs_base"]["perplexity_ratio"] == pytest.approx(
        math.exp(worse.loss() - base.loss()), rel=1e-3)
    [line] = rise_warnings(report)
    assert line.startswith("perplexity on general: finetuned") and "beyond" not in line
    calm = perplexity_report({"base": {"general": base}, "finetuned": {"general": noisy}}, texts, BOOTSTRAP)
    assert not calm["general"]["finetuned_vs_base"]["rose"] and rise_warnings(calm) == []


def test_held_out_texts_are_the_shipped_sentences_and_the_test_documents(split_records):
    texts = held_out_texts(split_records["test"], ("general", "test_documents"))
    assert len(texts["general"]) == 120 and len(set(texts["general"])) == 120
    training = {record["context"] for record in split_records["train"]}
    assert texts["test_documents"] and not set(texts["test_documents"]) & training
    assert held_out_texts(split_records["test"], ("general",)).keys() == {"general"}
