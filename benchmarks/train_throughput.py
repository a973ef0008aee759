"""Training throughput and peak memory: LoRA vs QLoRA, koraft's batching vs the plain notebook recipe.

    python benchmarks/train_throughput.py [--steps 12] [--model tiny-m|exaone-4.0-1.2b] [--seq N]

Without a GPU it trains the tiny-m preset (seq 384 by default); with CUDA it trains random
weights built from the EXAONE-4.0-1.2B architecture (seq 2048), since no weights can be
downloaded. Both recipes see the same samples, batch 4, through trl's SFTTrainer:

- plain: every batch padded to max_length (what the seed notebooks do: padding="max_length");
- koraft: every batch padded only to its longest sample (trl's default collator).

Padding tokens are masked out of the loss, so both give the same loss on the same batch (the
first-step losses are printed to show it); only the wasted compute differs. Tokens/s counts
real (non-padding) tokens. Each configuration runs in its own process, so peak memory (CUDA
max allocated, or the process's max RSS on CPU) is its own.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# EXAONE-4.0-1.2B as published on its model card (1.28B parameters, all layers global attention).
EXAONE_4_1_2B = {
    "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 4096, "num_hidden_layers": 30,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 65536,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "sliding_window": None,
}
BATCH = 4
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def synthetic_samples(count: int, max_length: int, vocab_size: int, seed: int) -> list[dict]:
    """Token sequences with RAFT-like shape: long prompts of varied length, a short completion."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        length = rng.randint(max_length // 3, max_length)
        completion = max(4, length // 12)
        ids = [rng.randrange(10, vocab_size) for _ in range(length)]
        samples.append({"input_ids": ids, "completion_mask": [0] * (length - completion) + [1] * completion})
    return samples


def build_model(name: str, method: str, folder: Path):
    import torch
    from transformers import AutoModelForCausalLM, Exaone4Config

    from koraft.models.loading import quantization_config

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    if name == "exaone-4.0-1.2b":
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(Exaone4Config(**EXAONE_4_1_2B), dtype=dtype).save_pretrained(folder)
    else:
        from koraft.models.tiny import build_tiny_model

        build_tiny_model(name, folder)
    quantization = None
    if method == "qlora":  # koraft's QLoRA: NF4 with double quantization
        quantization = quantization_config({"bnb_4bit_compute_dtype": str(dtype).removeprefix("torch.")})
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=quantization,
                                                device_map={"": 0} if cuda else None)


def timed_train(trainer) -> tuple[float, int]:
    """(seconds in trainer.train, non-padding input tokens seen), peak GPU memory counted from here."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, trainer.state.num_input_tokens_seen


def run_one(name: str, method: str, recipe: str, steps: int, max_length: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from koraft.core.measure import peak_memory_mib
    from koraft.models.tiny import build_tokenizer

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        model = build_model(name, method, Path(scratch) / "model")
        tokenizer = AutoTokenizer.from_pretrained(Path(scratch) / "model") if name.startswith("tiny") \
            else build_tokenizer()  # any tokenizer with a pad token: samples are already token ids
        samples = synthetic_samples(steps * BATCH, max_length, model.config.vocab_size, seed=0)
        losses: list[float] = []

        class FirstLoss(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs and not losses:
                    losses.append(float(logs["loss"]))

        config = SFTConfig(
            output_dir=str(Path(scratch) / "out"), max_steps=steps, per_device_train_batch_size=BATCH,
            learning_rate=1.0e-4, logging_steps=1, save_strategy="no", report_to="none", seed=0,
            max_length=max_length, completion_only_loss=True, use_cpu=not cuda, bf16=cuda,
            gradient_checkpointing=cuda, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
            pad_to_multiple_of=max_length if recipe == "plain" else None,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(samples),
                             processing_class=tokenizer, callbacks=[FirstLoss()],
                             peft_config=LoraConfig(**LORA))
        seconds, tokens = timed_train(trainer)
    peak = peak_memory_mib()
    return {"model": name, "method": method, "recipe": recipe, "steps": steps, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "peak_mib": peak, "first_loss": losses[0],
            "device": torch.cuda.get_device_name(0) if cuda else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--model", default=None, help="tiny-s, tiny-m or exaone-4.0-1.2b (default: by device)")
    parser.add_argument("--seq", type=int, default=None, help="max_length (default 2048 on CUDA, 384 on CPU)")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    name = args.model or ("exaone-4.0-1.2b" if cuda else "tiny-m")
    seq = args.seq or (2048 if cuda else 384)
    if args.one:
        print(json.dumps(run_one(name, *args.one, args.steps, seq)))
        return
    results = []
    for method in ("lora", "qlora"):
        for recipe in ("plain", "koraft"):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--model", name, "--seq", str(seq),
                       "--one", method, recipe]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"{name}, seq {seq}, batch {BATCH}, {args.steps} steps on {results[0]['device']}")
    print(f"{'method':6} {'recipe':7} {'tokens/s':>10} {'peak MiB':>9} {'first loss':>10}")
    for row in results:
        print(f"{row['method']:6} {row['recipe']:7} {row['tokens_per_s']:>10} {row['peak_mib']:>9} "
              f"{row['first_loss']:>10.4f}")
    for method in ("lora", "qlora"):
        plain, ours = (next(r for r in results if r["method"] == method and r["recipe"] == recipe)
                       for recipe in ("plain", "koraft"))
        print(f"{method}: koraft / plain tokens/s = {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x, "
              f"peak memory {ours['peak_mib'] / plain['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
