"""The train stage's trainer scores only completion positions, and its loss and gradients are trl's."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from family_models import build_family_model
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import SFTTrainer

from koraft.training.completion import CompletionPositions, CompletionSFTTrainer
from koraft.training.packing import pack, packing_plan, padding_free_collator, restore_attention, use_packed_attention
from koraft.training.train import sft_config

MAX_LENGTH = 96


def samples(vocabulary: int, count: int = 6, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        length, completion = rng.randint(12, 60), rng.randint(2, 8)
        rows.append({"input_ids": [rng.randrange(10, vocabulary) for _ in range(length)],
                     "completion_mask": [0] * (length - completion) + [1] * completion})
    return rows


def test_positions_take_the_same_rows_from_kept_and_full_logits():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, -100, -100]])
    logits = torch.randn(2, 5, 11)
    kept = CompletionPositions.of(labels, keeps_logits=True)
    assert kept.keep.tolist() == [0, 1, 2]  # columns predicting a label in some row
    full = CompletionPositions.of(labels, keeps_logits=False)
    assert torch.equal(kept.take(logits[:, kept.keep]), full.take(logits))
    assert kept.labels().tolist() == [5, 6, 7, 8]  # row by row, as the logits rows


def loss_and_grads(trainer, model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


# tiny-m (Llama, pretrained) and each other family's architecture; Gemma-2 soft-caps its final logits,
# which trl's fused head applies itself and the model's own forward applies to the kept logits
MODELS = [("tiny-m", "sdpa"), ("tiny-m-nf4", "sdpa"), ("qwen2", "sdpa"), ("exaone4", "sdpa"), ("gemma2", "eager")]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(("name", "attention"), MODELS, ids=[name for name, _ in MODELS])
def test_completion_trainer_equals_trl_and_projects_only_completion_positions(tiny_models, tmp_path, packing,
                                                                              name, attention):
    tiny = name.startswith("tiny-m")
    folder = tiny_models / "tiny-m" if tiny else build_family_model(name, tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    quantized = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.float32)
                 } if name.endswith("nf4") else {}  # QLoRA: bitsandbytes NF4 on the CPU
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32,
                                                 **quantized)
    if name == "gemma2":
        assert model.config.final_logit_softcapping
    rows = samples(len(tokenizer))
    config = sft_config({"max_length": MAX_LENGTH, "per_device_train_batch_size": 6, "seed": 0}, tmp_path / "o",
                        has_eval=False, early_stopping=False)
    data = pack(rows, MAX_LENGTH) if packing else Dataset.from_list(rows)
    collator = padding_free_collator(tokenizer.pad_token_id) if packing else None
    peft = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear")
    ours = CompletionSFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                                data_collator=collator, peft_config=peft)
    assert ours.scores_completions_only  # a CPU: trl would score every position
    trl = SFTTrainer(model=ours.model, args=config, train_dataset=data, processing_class=tokenizer,
                     data_collator=collator)
    batch = ours._prepare_inputs(next(iter(ours.get_train_dataloader())))
    plan = packing_plan(ours.model, packing, MAX_LENGTH)
    if packing:
        use_packed_attention(ours.model, plan)
    projected = []
    hook = ours.model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: projected.append(args[0].shape[:-1].numel()))
    try:
        loss, grads = loss_and_grads(ours, ours.model, batch)
        hook.remove()
        reference, reference_grads = loss_and_grads(trl, ours.model, batch)
    finally:
        hook.remove()
        restore_attention(ours.model, plan)
    completion_tokens = int((batch["labels"] != -100).sum())
    assert projected == [CompletionPositions.of(batch["labels"], True).keep.numel() * batch["labels"].shape[0]]
    if packing:
        assert projected[0] == completion_tokens  # one row: exactly the completion positions
    else:  # padded rows: the columns where some row predicts a completion token
        assert completion_tokens <= projected[0] < batch["labels"].numel()
    assert loss == pytest.approx(reference, abs=1e-5)
    assert grads.keys() == reference_grads.keys() and grads
    for name, grad in grads.items():
        if grad.dtype == torch.bfloat16:  # trl keeps QLoRA adapters in bf16 (the QLoRA paper's choice)
            torch.testing.assert_close(grad, reference_grads[name], msg=name)  # bf16's own tolerance
        else:
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=0, msg=name)


def test_trls_other_losses_stay_trls(tiny_models, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "tiny-m")
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-m")
    config = sft_config({"max_length": MAX_LENGTH, "seed": 0, "loss_type": "dft"}, tmp_path / "o",
                        has_eval=False, early_stopping=False)
    trainer = CompletionSFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(samples(len(tokenizer))),
                                   processing_class=tokenizer)
    assert not trainer.scores_completions_only
