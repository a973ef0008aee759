"""Padding-free packing is exact: a packed batch gives every token the loss it has unpacked.

Each family's real architecture class (tiny dimensions, random weights, fp32) scores random samples
once each on its own and once packed by koraft's code (trl's best-fit decreasing bins, trl's
padding-free collator, the attention the train stage would use); per-token losses must agree to 1e-5.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from family_models import build_family_model
from transformers import AutoModelForCausalLM
from trl import SFTTrainer

from koraft.training.packing import (
    PACKED_SDPA,
    bin_report,
    joint_plan,
    labelled,
    pack,
    packing_plan,
    padding_free_collator,
    restore_attention,
    use_packed_attention,
)
from koraft.training.train import sft_config

MAX_LENGTH = 96


def random_samples(vocabulary: int, count: int = 7, seed: int = 0) -> list[dict]:
    """RAFT-shaped token samples: a long prompt, a short completion (the sample's suffix)."""
    rng = random.Random(seed)
    samples = []
    for index in range(count):
        length = rng.randint(12, 60)
        completion = rng.randint(2, 8)
        samples.append({"input_ids": [rng.randrange(10, vocabulary) for _ in range(length)],
                        "completion_mask": [0] * (length - completion) + [1] * completion,
                        "sample_id": [index] * length})  # packed alongside: which sample each token is
    return samples


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token loss per position whose label is kept (the flattened order of the batch)."""
    targets = labels[:, 1:]
    positions = targets != -100
    return F.cross_entropy(logits[:, :-1][positions].float(), targets[positions], reduction="none")


def alone(model, sample: dict) -> torch.Tensor:
    ids = torch.tensor([sample["input_ids"]])
    labels = torch.tensor([labelled(sample)["labels"]])
    with torch.no_grad():
        return token_losses(model(input_ids=ids, use_cache=False).logits, labels)


def packed(model, samples: list[dict], pad_token_id: int) -> tuple[dict[int, torch.Tensor], dict]:
    """Per-sample token losses from one packed, flattened batch of every bin."""
    plan = packing_plan(model, True, MAX_LENGTH)
    assert plan.enabled, plan.reason
    bins = pack(samples, MAX_LENGTH)
    batch = padding_free_collator(pad_token_id)(list(bins))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "sample_id")}
    use_packed_attention(model, plan)
    try:
        with torch.no_grad():
            losses = token_losses(model(**inputs, use_cache=False).logits, batch["labels"])
    finally:
        restore_attention(model, plan)
    owners = torch.cat([torch.tensor(b["sample_id"]) for b in bins])[1:][batch["labels"][0, 1:] != -100]
    return {index: losses[owners == index] for index in range(len(samples))}, bin_report(bins, MAX_LENGTH)


FAMILY_ATTENTION = [("llama3", "sdpa", {}), ("qwen2", "sdpa", {}), ("exaone4", "sdpa", {}),
                    ("gemma2", "eager", {}),  # soft-capped attention: sdpa refuses it (koraft and transformers)
                    ("gemma2", "eager", {"sliding_window": 8}),  # its sliding layers, windows inside samples
                    ("exaone4", "eager", {}),
                    # Gemma-2's GPU default without flash-attn; compiled by inductor here (about 35 s)
                    pytest.param("gemma2", "flex_attention", {}, marks=pytest.mark.slow)]


@pytest.mark.parametrize(("family", "attention", "overrides"), FAMILY_ATTENTION)
def test_packed_token_losses_equal_unpacked(family, attention, overrides, tmp_path):
    folder = build_family_model(family, tmp_path / family)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32,
                                                 **overrides).eval()
    samples = random_samples(model.config.vocab_size)
    by_sample, (bins, count, fill) = packed(model, samples, model.config.pad_token_id or 0)
    assert count == len(samples) and bins < len(samples)  # several samples really share a row
    assert 0 < fill <= 1
    for index, sample in enumerate(samples):
        reference = alone(model, sample)
        assert reference.numel() == sum(sample["completion_mask"])
        torch.testing.assert_close(by_sample[index], reference, atol=1e-5, rtol=0)
    assert model.config._attn_implementation == attention  # restored after the packed forward


def test_cross_sample_attention_would_show(tmp_path):
    """The comparison above can fail: plain sdpa on the same flattened row, with a mask built from an
    attention mask of ones (so transformers sees one long sequence), changes the later samples' losses."""
    folder = build_family_model("llama3", tmp_path / "llama3")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).eval()
    samples = random_samples(model.config.vocab_size)
    bins = pack(samples, MAX_LENGTH)
    batch = padding_free_collator(0)(list(bins))
    with torch.no_grad():
        leaked = token_losses(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                    attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits,
                              batch["labels"])
    exact, _ = packed(model, samples, 0)
    owners = torch.cat([torch.tensor(b["sample_id"]) for b in bins])[1:][batch["labels"][0, 1:] != -100]
    differences = [(leaked[owners == i] - exact[i]).abs().max().item() for i in range(len(samples))]
    assert max(differences) > 1e-3


def test_sdpa_with_sliding_windows_shorter_than_max_length_pads_and_says_why(tmp_path):
    folder = build_family_model("qwen2", tmp_path / "qwen2")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", use_sliding_window=True,
                                                 sliding_window=16, layer_types=["sliding_attention"] * 2)
    plan = packing_plan(model, True, MAX_LENGTH)
    assert not plan.enabled and "sliding-window" in plan.reason and "16" in plan.reason
    assert packing_plan(model, True, 16).enabled  # a window no sample can exceed never slides
    assert not packing_plan(model, False, MAX_LENGTH).enabled and packing_plan(model, False, 8).reason is None
    report = plan.report()
    assert report["enabled"] is False and report["attention"] == "sdpa" and report["bins"] is None


def test_packed_sdpa_refuses_padded_batches(tmp_path):
    folder = build_family_model("llama3", tmp_path / "llama3")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    use_packed_attention(model, packing_plan(model, True, MAX_LENGTH))
    assert model.config._attn_implementation == PACKED_SDPA
    with pytest.raises(RuntimeError, match="padding-free batches only"):
        model(input_ids=torch.tensor([[5, 6, 7], [8, 9, 10]]), use_cache=False)


@pytest.mark.slow
def test_sft_trainer_loss_on_a_packed_batch_equals_the_padded_batch(tiny_models, tmp_path):
    """Through trl's own SFTTrainer.compute_loss (its fused LM head): the same samples, padded or packed."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "tiny-m")
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-m", attn_implementation="sdpa")
    samples = [{k: v for k, v in s.items() if k != "sample_id"} for s in random_samples(len(tokenizer), 6)]
    config = sft_config({"max_length": MAX_LENGTH, "per_device_train_batch_size": 6, "seed": 0}, tmp_path / "o",
                        has_eval=False, early_stopping=False)
    padded = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(samples), processing_class=tokenizer)
    plan = packing_plan(model, True, MAX_LENGTH)
    flat = SFTTrainer(model=model, args=config, train_dataset=pack(samples, MAX_LENGTH), processing_class=tokenizer,
                      data_collator=padding_free_collator(tokenizer.pad_token_id))
    losses = []
    for a_trainer, packing in ((padded, False), (flat, True)):
        batch = a_trainer._prepare_inputs(next(iter(a_trainer.get_train_dataloader())))
        assert ("position_ids" in batch) == packing
        if packing:
            use_packed_attention(model, plan)
        with torch.no_grad():
            losses.append(a_trainer.compute_loss(model, batch).item())
        restore_attention(model, plan)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_a_model_on_the_same_batches_that_cannot_pack_turns_packing_off_for_both(tmp_path):
    student = AutoModelForCausalLM.from_pretrained(build_family_model("llama3", tmp_path / "s"),
                                                   attn_implementation="sdpa")
    teacher = AutoModelForCausalLM.from_pretrained(build_family_model("qwen2", tmp_path / "t"),
                                                   attn_implementation="sdpa", use_sliding_window=True,
                                                   sliding_window=16, layer_types=["sliding_attention"] * 2)
    plans = [packing_plan(model, True, MAX_LENGTH) for model in (student, teacher)]
    plan = joint_plan(plans)
    assert not plan.enabled and plan.attention == "sdpa" and plan.reason.startswith("the online teacher: sdpa with")
    assert joint_plan(plans[:1]) is plans[0] and joint_plan([plans[1], plans[0]]) is plans[1]
