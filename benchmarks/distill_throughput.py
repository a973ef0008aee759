"""Distillation throughput: student tokens/s with an online teacher vs an offline top-k cache, and cache size.

    python benchmarks/distill_throughput.py [--steps 12] [--seq N]

Without a GPU the teacher is tiny-m and the student tiny-s (seq 384). With CUDA both are random
weights built from EXAONE-4 configurations (teacher: EXAONE-4.0-1.2B; student: the same vocabulary
at half the width and depth), seq 2048, bf16. Every configuration trains the same samples through
koraft's KDTrainer (trl's SFTTrainer, LoRA on the student, batch 4) in its own process:

- online: the teacher runs a forward pass on every batch;
- offline k=20, k=100: the teacher's top-k log-probs are computed once (timed apart) and read back.

Tokens/s counts the student's real (non-padding) tokens over the training loop only. The cache
size is measured on disk (safetensors) and given per 1,000 samples and per completion token.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import BATCH, EXAONE_4_1_2B, LORA, synthetic_samples, timed_train  # noqa: E402

STUDENT_OF_1_2B = {**EXAONE_4_1_2B, "hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 15,
                   "num_attention_heads": 16, "num_key_value_heads": 4}


def build_pair(folder: Path):
    """(teacher, student, tokenizer, vocabulary) on the benchmark's device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Exaone4Config

    from koraft.models.tiny import build_tiny_model, build_tokenizer

    if torch.cuda.is_available():
        models = []
        for name, config in (("teacher", EXAONE_4_1_2B), ("student", STUDENT_OF_1_2B)):
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(Exaone4Config(**config), dtype=torch.bfloat16).save_pretrained(
                folder / name)
            models.append(AutoModelForCausalLM.from_pretrained(folder / name, dtype=torch.bfloat16,
                                                               device_map={"": 0}))
        # Samples are token ids already: any tokenizer with a pad token will do for the collator.
        return models[0], models[1], build_tokenizer(), EXAONE_4_1_2B["vocab_size"]
    for name in ("tiny-m", "tiny-s"):
        build_tiny_model(name, folder / name)
    teacher, student = (AutoModelForCausalLM.from_pretrained(folder / name) for name in ("tiny-m", "tiny-s"))
    tokenizer = AutoTokenizer.from_pretrained(folder / "tiny-s")
    return teacher, student, tokenizer, len(tokenizer)


def run_one(mode: str, top_k: int, steps: int, max_length: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    from koraft.core.measure import peak_memory_mib
    from koraft.training.distill import with_cache_rows
    from koraft.training.distill_loss import KDSettings
    from koraft.training.distill_trainer import KDTrainer
    from koraft.training.teacher_cache import save_top_k, teacher_top_k
    from koraft.training.train import sft_config

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        teacher, student, tokenizer, vocabulary = build_pair(Path(scratch))
        samples = synthetic_samples(steps * BATCH, max_length, vocabulary, seed=0)
        settings = KDSettings(alpha=0.5, divergence="forward_kl", temperature=1.0)
        kwargs: dict = {"teacher": teacher}
        cache = {}
        if mode == "offline":
            started = time.perf_counter()
            top = teacher_top_k(teacher, samples, top_k, settings.temperature, vocabulary, batch_size=BATCH)
            cache["build_s"] = round(time.perf_counter() - started, 2)
            save_top_k(Path(scratch) / "train.safetensors", top)
            size = (Path(scratch) / "train.safetensors").stat().st_size
            tokens = int(top.offsets[-1])
            cache.update(bytes_per_1000_samples=round(size / len(samples) * 1000),
                         bytes_per_token=round(size / tokens, 1), completion_tokens_per_sample=tokens / len(samples))
            del teacher
            if cuda:
                torch.cuda.empty_cache()
            samples = with_cache_rows(samples, top, 0)
            kwargs = {"top_k": top}
        args = {"max_steps": steps, "per_device_train_batch_size": BATCH, "learning_rate": 1.0e-4,
                "logging_steps": 1, "seed": 0, "max_length": max_length, "disable_tqdm": True,
                "gradient_checkpointing": cuda}
        config = sft_config(args, Path(scratch) / "out", has_eval=False, early_stopping=False)
        config.save_strategy = "no"
        trainer = KDTrainer(model=student, args=config, train_dataset=Dataset.from_list(samples),
                            processing_class=tokenizer, kd=settings, vocabulary=vocabulary,
                            peft_config=LoraConfig(**LORA), **kwargs)
        seconds, tokens = timed_train(trainer)
    return {"mode": mode if mode == "online" else f"offline k={top_k}", "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "peak_mib": peak_memory_mib(), **cache,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seq", type=int, default=None, help="max_length (default 2048 on CUDA, 384 on CPU)")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    seq = args.seq or (2048 if torch.cuda.is_available() else 384)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.steps, seq)))
        return
    results = []
    for mode, k in (("online", 0), ("offline", 20), ("offline", 100)):
        command = [sys.executable, __file__, "--steps", str(args.steps), "--seq", str(seq), "--one", mode, str(k)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"seq {seq}, batch {BATCH}, {args.steps} steps, LoRA student, on {results[0]['device']}")
    print(f"{'teacher':14} {'student tok/s':>13} {'peak MiB':>9} {'cache build s':>13} {'cache/1k samples':>16} "
          f"{'B/token':>8}")
    for row in results:
        size = f"{row['bytes_per_1000_samples'] / 2**20:.2f} MiB" if "bytes_per_1000_samples" in row else "-"
        print(f"{row['mode']:14} {row['tokens_per_s']:>13} {row['peak_mib']:>9} {row.get('build_s', '-'):>13} "
              f"{size:>16} {row.get('bytes_per_token', '-'):>8}")
    online = results[0]["tokens_per_s"]
    for row in results[1:]:
        print(f"{row['mode']}: {row['tokens_per_s'] / online:.2f}x the online student tokens/s "
              f"({row['completion_tokens_per_sample']:.1f} completion tokens per sample)")


if __name__ == "__main__":
    main()
