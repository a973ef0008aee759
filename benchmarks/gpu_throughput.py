"""GPU throughput, peak memory and MFU: the plain notebook recipe against koraft's default and koraft with Liger.

    python benchmarks/gpu_throughput.py [--steps 6] [--lengths 2048 8192] [--peak-tflops N]
    python benchmarks/gpu_throughput.py --smoke      # the same code paths, tiny shapes, on a CPU (the tests)

Built for one H100/H200 in under 8 minutes. No weights can be downloaded, so the models are random
weights in the published architectures: EXAONE-4.0-1.2B (LoRA and QLoRA, at each length) and
Gemma-2-9B (QLoRA at 2048, peak memory). Samples are RAFT-shaped token sequences (prompts of a
third to the whole max_length, completions a twelfth of that). Every run trains through koraft's own
code (koraft.training.train.fit, the model loaded as the train stage loads it), 4 per batch:

- (a) plain: every batch padded to max_length, sdpa (what the seed notebooks do);
- (b) koraft: the default, samples packed padding-free, attention `auto` (EXAONE: sdpa, one call per
  packed sample; Gemma-2: flash_attention_2 if installed, else flex_attention);
- (c) koraft + Liger: (b) with `use_liger_kernel` (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU);
- (d) koraft + flash_attention_2, where flash-attn is installed.

Runs share one process; peak memory is CUDA's max allocated since the run started. Tokens/s counts
real tokens from the end of step 2. MFU = tokens/s x model FLOPs per token / the GPU's dense bf16
peak, with PaLM's count: 6 x (matmul parameters) + 12 x layers x heads x head_dim x mean sample
length. LoRA skips the frozen weights' gradients (about 4N, not 6N), so this MFU is the usual
convention, not the FLOPs the GPU ran. A configuration that fails prints its error and the rest go on.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import EXAONE_4_1_2B, load, measure, synthetic_samples  # noqa: E402

GEMMA_2_9B = {"vocab_size": 256000, "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "query_pre_attn_scalar": 256,
              "sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
              "max_position_embeddings": 8192}
SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}
BATCH = 4


def build(kind: str, folder: Path, smoke: bool, vocab: int) -> Path:
    """Random weights of an architecture, saved as a Hugging Face folder (loaded back like a real preset)."""
    import torch
    from transformers import AutoModelForCausalLM, Exaone4Config, Gemma2Config

    config_class, shape = (Exaone4Config, EXAONE_4_1_2B) if kind == "exaone4" else (Gemma2Config, GEMMA_2_9B)
    if smoke:
        shape = {**shape, **SMOKE, "vocab_size": vocab}
        if "layer_types" in shape:
            shape["layer_types"] = shape["layer_types"][:SMOKE["num_hidden_layers"]]
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialised on the GPU: a 9B model's random init on the CPU takes minutes
        model = AutoModelForCausalLM.from_config(config_class(**shape),
                                                 dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def flops_per_token(config, samples: list[dict]) -> float:
    """PaLM's model FLOPs per token: 6 N (matmul parameters, the LM head included) + the attention term."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    layer = (text.hidden_size * head_dim * (2 * text.num_attention_heads + 2 * text.num_key_value_heads)
             + 3 * text.hidden_size * text.intermediate_size)
    matmul = text.num_hidden_layers * layer + text.hidden_size * text.vocab_size
    mean_length = sum(len(sample["input_ids"]) for sample in samples) / len(samples)
    return 6 * matmul + 12 * text.num_hidden_layers * text.num_attention_heads * head_dim * mean_length


def peak_tflops(given: float | None) -> float | None:
    import torch

    if given or not torch.cuda.is_available():
        return given
    name = torch.cuda.get_device_name(0)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def run(label: str, folder: Path, family: str, method: str, recipe: str, attention: str, length: int, steps: int,
        samples: list[dict], peak: float | None, extra_args: dict | None = None) -> None:
    import torch

    from koraft.models.tiny import build_tokenizer

    try:
        model = load(folder, family, method, attention)
        with tempfile.TemporaryDirectory() as scratch:
            row = measure(model, build_tokenizer(), samples, recipe, method, length, steps, Path(scratch),
                          batch=BATCH, extra_args=extra_args)
        mfu = f"{row['tokens_per_s'] * flops_per_token(model.config, samples) / (peak * 1e12):.1%}" if peak else "n/a"
        packing = row["packing"]
        note = f"packed, {packing['attention']}" if packing["enabled"] else f"padded, {packing['attention']}"
        print(f"{label:34} {method:6} {length:>6} {row['tokens_per_s']:>10} {row['peak_mib']:>10} {mfu:>6}  {note}",
              flush=True)
        RESULTS[(label, method, length)] = row["tokens_per_s"]
    except Exception as exc:  # one failed configuration must not cost the others' figures
        print(f"{label:34} {method:6} {length:>6} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
              flush=True)
        traceback.print_exc(limit=3, file=sys.stderr)
    finally:
        model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


RESULTS: dict[tuple[str, str, int], float] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 3 steps at length 128: runs on a CPU")
    args = parser.parse_args()
    import torch

    from koraft.models.tiny import build_tokenizer

    steps, lengths = (3, [128]) if args.smoke else (args.steps, args.lengths)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --smoke for the CPU form, or benchmarks/train_throughput.py")
    peak = peak_tflops(args.peak_tflops)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    liger = importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available()
    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    print(f"{device}, batch {BATCH}, {steps} steps per run, bf16 peak {peak or 'unknown'} TFLOPS; "
          f"liger-kernel {'yes' if liger else 'no'}, flash-attn {'yes' if flash else 'no'}", flush=True)
    print(f"{'configuration':34} {'method':6} {'length':>6} {'tokens/s':>10} {'peak MiB':>10} {'MFU':>6}  batches")
    vocab = len(build_tokenizer()) if args.smoke else None
    with tempfile.TemporaryDirectory() as scratch:
        exaone = build("exaone4", Path(scratch) / "exaone4", args.smoke,
                       vocab or EXAONE_4_1_2B["vocab_size"])
        for length in lengths:
            samples = synthetic_samples(steps * BATCH * 3, length, vocab or EXAONE_4_1_2B["vocab_size"], seed=0)
            for method in ("lora", "qlora"):
                common = (exaone, "exaone4", method)
                run("(a) plain: pad to max_length, sdpa", *common, "plain", "sdpa", length, steps, samples, peak)
                run("(b) koraft default", *common, "packed", "auto", length, steps, samples, peak)
                if liger:
                    run("(c) koraft + Liger", *common, "packed", "auto", length, steps, samples, peak,
                        {"use_liger_kernel": True})
                else:
                    print(f"{'(c) koraft + Liger':34} {method:6} {length:>6} skipped: liger-kernel not installed "
                          f"or no CUDA GPU (pip install liger-kernel)")
                if flash:
                    run("(d) koraft + flash_attention_2", *common, "packed", "flash_attention_2", length, steps,
                        samples, peak)
        for method in ("lora", "qlora"):
            plain, ours = (RESULTS.get((label, method, lengths[0])) for label in
                           ("(a) plain: pad to max_length, sdpa", "(b) koraft default"))
            if plain and ours:
                print(f"{method} at {lengths[0]}: koraft / plain tokens/s = {ours / plain:.2f}x (target 2x)")
        gemma_length = 128 if args.smoke else 2048
        gemma = build("gemma2", Path(scratch) / "gemma2", args.smoke, vocab or GEMMA_2_9B["vocab_size"])
        samples = synthetic_samples(steps * BATCH * 3, gemma_length, vocab or GEMMA_2_9B["vocab_size"], seed=0)
        run("Gemma-2-9B: koraft default", gemma, "gemma2", "qlora", "packed", "auto", gemma_length, steps, samples,
            peak)


if __name__ == "__main__":
    main()
