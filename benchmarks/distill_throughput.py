"""Distillation throughput: packed vs padded student batches and full logits, online teacher vs the offline cache.

    python benchmarks/distill_throughput.py [--steps 16] [--synthetic]

On a CPU the teacher is tiny-m and the student tiny-s (LoRA), on the shipped sample as the train
stage renders it (`dvc repro raft base` first; `--synthetic` for random RAFT-shaped samples). Every
configuration trains through koraft's own code (koraft.training.train.fit with the KDTrainer, batch
8, max_length 512), in its own process so that peak memory is its own:

- online: the teacher runs a forward pass on every batch (packed like the student's);
- offline k=100: the teacher's top-k log-probs are computed once (timed apart) and read back.

Each runs three ways: `all`, padded with student and teacher logits at every position, then the
completion positions taken (a distillation loop as usually written, and koraft's own path for modeling
code that has no `logits_to_keep`); `padded`, koraft's trainer with `train.packing: false` (logits at
the completion positions only); `packed`, the default. Tokens/s counts the student's real tokens from
the end of step 2 on. The cache size is measured on disk (safetensors).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import BATCH, ROOT, in_processes, load, measure, shipped_samples, synthetic_samples  # noqa: E402

RECIPES = ("all", "padded", "packed")


def run_one(mode: str, recipe: str, steps: int, synthetic: bool) -> dict:
    from koraft.models.tiny import build_tiny_model
    from koraft.training.distill import with_cache_rows
    from koraft.training.distill_loss import KDSettings
    from koraft.training.distill_trainer import KDTrainer
    from koraft.training.teacher_cache import save_top_k, teacher_top_k

    class EveryPosition(KDTrainer):  # the `all` recipe: full logits, the completion positions taken after
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.keeps_logits = False

    max_length, top_k = 512, 100
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: ROOT / "models/base" / name for name in ("tiny-m", "tiny-s")}
        if synthetic or not all(folder.exists() for folder in folders.values()):
            for name in folders:
                folders[name] = Path(scratch) / name
                build_tiny_model(name, folders[name])
        teacher, student = (load(folders[name], "tiny", "lora") for name in ("tiny-m", "tiny-s"))
        tokenizer = AutoTokenizer.from_pretrained(folders["tiny-s"])
        vocabulary = len(tokenizer)
        samples = synthetic_samples(steps * BATCH, max_length, vocabulary, 0) if synthetic \
            else shipped_samples(tokenizer, max_length)[:steps * BATCH * 2]
        settings = KDSettings(alpha=0.5, divergence="forward_kl", temperature=1.0)
        kwargs: dict = {"kd": settings, "vocabulary": vocabulary}
        cache, same_batches = {}, ()
        if mode == "offline":
            started = time.perf_counter()
            top = teacher_top_k(teacher.eval(), samples, top_k, settings.temperature, vocabulary, batch_size=BATCH)
            cache["build_s"] = round(time.perf_counter() - started, 2)
            save_top_k(Path(scratch) / "train.safetensors", top)
            size = (Path(scratch) / "train.safetensors").stat().st_size
            cache.update(bytes_per_token=round(size / int(top.offsets[-1]), 1))
            samples = with_cache_rows(samples, top, 0)
            kwargs["top_k"] = top
        else:
            kwargs["teacher"] = teacher.eval().requires_grad_(False)
            same_batches = (teacher,)
        row = measure(student, tokenizer, samples, recipe, "lora", max_length, steps, Path(scratch),
                      trainer_class=EveryPosition if recipe == "all" else KDTrainer, trainer_kwargs=kwargs,
                      same_batches=same_batches)
    return {**row, "mode": mode if mode == "online" else f"offline k={top_k}", **cache}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--synthetic", action="store_true", help="random RAFT-shaped samples, not the shipped sample")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.steps, args.synthetic)))
        return
    results = in_processes(__file__, [(mode, recipe) for mode in ("online", "offline") for recipe in RECIPES],
                           args.steps, args.synthetic)
    data = "synthetic samples" if args.synthetic else "the shipped sample"
    print(f"tiny-m -> tiny-s (LoRA) on {data}, max_length 512, batch {BATCH}, {args.steps} steps on "
          f"{results[0]['device']}")
    print(f"{'teacher':14} {'recipe':7} {'student tok/s':>13} {'peak MiB':>9} {'mean loss':>10} {'cache build s':>13} "
          f"{'B/token':>8}")
    for row in results:
        print(f"{row['mode']:14} {row['recipe']:7} {row['tokens_per_s']:>13} {row['peak_mib']:>9} "
              f"{row['mean_loss']:>10.4f} {row.get('build_s', '-'):>13} {row.get('bytes_per_token', '-'):>8}")
    for mode in dict.fromkeys(row["mode"] for row in results):
        rows = {row["recipe"]: row for row in results if row["mode"] == mode}
        for baseline in ("all", "padded"):
            print(f"{mode}: packed / {baseline} student tokens/s = "
                  f"{rows['packed']['tokens_per_s'] / rows[baseline]['tokens_per_s']:.2f}x, "
                  f"peak memory {rows['packed']['peak_mib'] / rows[baseline]['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
