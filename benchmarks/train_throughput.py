"""Training throughput and peak memory: koraft's packed batches vs padded ones and the plain notebook recipe.

    python benchmarks/train_throughput.py [--steps 16] [--methods lora qlora] [--synthetic]

On a CPU it trains tiny-m (LoRA and QLoRA) on the shipped sample as the train stage renders it
(data/raft/train.jsonl and models/base from `dvc repro raft base`; `--synthetic` for random
RAFT-shaped token samples instead). Every configuration goes through koraft's own training code
(koraft.training.train.fit: trl's SFTTrainer, the model loaded as the stage loads it), batch 8 of
max_length 512, in its own process so that peak memory (max RSS) is its own:

- plain: trl's SFTTrainer as it comes, every batch padded to max_length (what the seed notebooks do:
  padding="max_length");
- trl: trl's SFTTrainer as it comes, every batch padded to its longest sample;
- padded: koraft's trainer, padded to the longest sample (`train.packing: false`);
- packed: koraft's default, samples best-fit into max_length bins, a batch flattened into one row
  (`train.packing: true`).

koraft's trainer (koraft.training.completion) projects only the completion positions through the LM
head where trl's fused head scores every position (any device but CUDA and XPU), so on a CPU
trl -> padded is that saving and padded -> packed is packing's.

Tokens/s counts real (non-padding) tokens, from the end of step 2 on (the first steps warm up).
The packed and padded runs see the same samples in other batches, so their losses are close, not
equal; tests/test_packing.py proves the per-token loss of a packed batch equal to the padded one.
benchmarks/gpu_throughput.py runs the same configurations on a GPU with EXAONE-4 and Gemma-2 shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
# EXAONE-4.0-1.2B as published on its model card (1.28B parameters, all layers global attention).
EXAONE_4_1_2B = {
    "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 4096, "num_hidden_layers": 30,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 65536,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "sliding_window": None,
    "layer_types": ["full_attention"] * 30,  # explicit: transformers 5.23 divides by zero deriving them (no window)
}
BATCH = 8
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
RECIPES = ("plain", "trl", "padded", "packed")
TRL_AS_IT_COMES = ("plain", "trl")


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


def shipped_samples(tokenizer, max_length: int) -> list[dict]:
    """data/raft/train.jsonl rendered and fitted exactly as the train stage does."""
    from koraft.core.config import load_params
    from koraft.core.jsonl import read_jsonl
    from koraft.models.presets import FAMILIES
    from koraft.training.train import encode_splits

    path = ROOT / "data/raft/train.jsonl"
    if not path.exists():
        sys.exit(f"{path}: not found; run `dvc repro raft base` first, or pass --synthetic")
    system_prompt = load_params(ROOT / "params.yaml")["model"]["system_prompt"]
    train_set, _ = encode_splits(tokenizer, FAMILIES["tiny"], system_prompt, max_length, list(read_jsonl(path)), [],
                                 str(path))
    return train_set.samples


class StepClock(TrainerCallback):
    """Time and tokens seen at the end of every optimizer step, and the logged losses."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []
        self.losses: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def tokens_per_s(self, warmup: int = 2) -> float:
        (start, seen), (end, total) = self.marks[warmup - 1], self.marks[-1]
        return (total - seen) / (end - start)


def load(folder: Path, family: str, method: str, attention: str = "auto"):
    """The model as the train stage loads it (koraft.models.loading): bf16 on a GPU, float32 on a CPU."""
    import torch

    from koraft.models.loading import load_model
    from koraft.models.presets import resolve_model

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    resolved = resolve_model({"name": str(folder), "family": family, "dtype": dtype,
                              "attn_implementation": attention})
    return load_model(resolved, {"bnb_4bit_compute_dtype": dtype} if method == "qlora" else None)


def measure(model, tokenizer, samples: list[dict], recipe: str, method: str, max_length: int, steps: int,
            scratch: Path, batch: int = BATCH, extra_args: dict | None = None, trainer_class=None,
            trainer_kwargs: dict | None = None, same_batches: tuple = ()) -> dict[str, Any]:
    """Train `steps` steps through koraft's fit; tokens/s after warm-up, peak memory, mean loss."""
    import torch
    from peft import LoraConfig
    from trl import SFTTrainer

    from koraft.core.measure import peak_memory_mib
    from koraft.training.config import TrainSettings
    from koraft.training.train import FitOptions, TrainPaths, fit

    cuda = torch.cuda.is_available()
    args = {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 1.0e-4, "logging_steps": 1,
            "save_steps": 10**6, "seed": 0, "max_length": max_length, "disable_tqdm": True,
            "gradient_checkpointing": cuda, **(extra_args or {})}
    if recipe == "plain":
        args["pad_to_multiple_of"] = max_length
    if recipe in TRL_AS_IT_COMES:
        trainer_class = trainer_class or SFTTrainer
    settings = TrainSettings(model={}, system_prompt="", method=method, args=args, lora=LORA, quantization={},
                             packing=recipe == "packed")
    paths = TrainPaths(adapter=scratch / "adapter", checkpoints=scratch / "checkpoints", plots=None,
                       tiny_models=scratch)
    clock = StepClock()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every log line without tqdm
        options = FitOptions(settings, paths, [recipe, method], callbacks=(clock,), trainer_class=trainer_class,
                             trainer_kwargs=trainer_kwargs or {}, same_batches=same_batches)
        fitted = fit(model, tokenizer, LoraConfig(task_type="CAUSAL_LM", **LORA), samples, [], options)
    return {"recipe": recipe, "method": method, "steps": steps, "tokens_per_s": round(clock.tokens_per_s(), 1),
            "peak_mib": peak_memory_mib(), "mean_loss": round(sum(clock.losses) / len(clock.losses), 4),
            "packing": fitted.packing, "device": torch.cuda.get_device_name(0) if cuda else "cpu"}


def run_one(method: str, recipe: str, steps: int, synthetic: bool) -> dict[str, Any]:
    from koraft.models.tiny import build_tiny_model

    max_length = 512
    with tempfile.TemporaryDirectory() as scratch:
        folder = ROOT / "models/base/tiny-m"
        if synthetic or not folder.exists():
            folder = Path(scratch) / "tiny-m"
            build_tiny_model("tiny-m", folder)
        model, tokenizer = load(folder, "tiny", method), AutoTokenizer.from_pretrained(folder)
        samples = synthetic_samples(steps * BATCH, max_length, len(tokenizer), 0) if synthetic \
            else shipped_samples(tokenizer, max_length)
        row = measure(model, tokenizer, samples, recipe, method, max_length, steps, Path(scratch))
        return {**row, "padding_ceiling": round(padding_ceiling(samples, BATCH), 3),
                "max_length_ceiling": round(max_length * len(samples) / sum(len(s["input_ids"]) for s in samples), 3)}


def padding_ceiling(samples: list[dict], batch: int, seed: int = 0, draws: int = 20) -> float:
    """Tokens a pad-to-longest batch computes per real token, over random batches: what packing can save."""
    rng = random.Random(seed)
    lengths = [len(sample["input_ids"]) for sample in samples]
    computed = real = 0
    for _ in range(draws):
        rng.shuffle(lengths)
        for start in range(0, len(lengths) - batch + 1, batch):
            chunk = lengths[start:start + batch]
            computed += max(chunk) * len(chunk)
            real += sum(chunk)
    return computed / real


def print_table(results: list[dict], baseline: str = "padded") -> None:
    print(f"{'method':6} {'recipe':8} {'tokens/s':>10} {'peak MiB':>9} {'mean loss':>10}  packing")
    for row in results:
        packing = row["packing"]
        note = f"{packing['bins']} bins, fill {packing['bin_fill']}" if packing["enabled"] else \
            (packing["fallback_reason"] or "off")
        print(f"{row['method']:6} {row['recipe']:8} {row['tokens_per_s']:>10} {row['peak_mib']:>9} "
              f"{row['mean_loss']:>10.4f}  {note}")
    for method in dict.fromkeys(row["method"] for row in results):
        rows = {row["recipe"]: row for row in results if row["method"] == method}
        for recipe in ("plain", "trl", baseline):
            if recipe in rows and "packed" in rows and recipe != "packed":
                print(f"{method}: packed / {recipe} tokens/s = "
                      f"{rows['packed']['tokens_per_s'] / rows[recipe]['tokens_per_s']:.2f}x, peak memory "
                      f"{rows['packed']['peak_mib'] / rows[recipe]['peak_mib']:.2f}x")


def in_processes(script: str, configurations: list[tuple[str, str]], steps: int, synthetic: bool) -> list[dict]:
    """Run `script --one A B` for each configuration in its own process (its peak memory its own); the rows."""
    results = []
    for first, recipe in configurations:
        command = [sys.executable, script, "--steps", str(steps), "--one", first, recipe]
        command += ["--synthetic"] if synthetic else []
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"], choices=["lora", "qlora"])
    parser.add_argument("--synthetic", action="store_true", help="random RAFT-shaped samples, not the shipped sample")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.steps, args.synthetic)))
        return
    results = in_processes(__file__, [(method, recipe) for method in args.methods for recipe in RECIPES],
                           args.steps, args.synthetic)
    data = "synthetic samples" if args.synthetic else "the shipped sample"
    print(f"tiny-m on {data}, max_length 512, batch {BATCH}, {args.steps} steps on {results[0]['device']}")
    print_table(results)
    print(f"what packing can save here: a pad-to-longest batch computes {results[0]['padding_ceiling']}x the real "
          f"tokens, a pad-to-max_length one {results[0]['max_length_ceiling']}x")


if __name__ == "__main__":
    main()
