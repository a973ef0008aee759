"""teacher: the fine-tuned teacher's top-k log-probs over the train and val completions (offline distillation).

Output: data/distill/teacher/ ({train,val}.safetensors and manifest.json). Computed once per
teacher, data and temperature, then reused by every student run (`dvc exp run -S distill.student...`
reruns only distill). With distill.teacher.mode: online it writes just the manifest.
"""

from pathlib import Path

from koraft.cli import run_stage
from koraft.distill import build_teacher_cache
from koraft.jsonl import read_jsonl
from koraft.params import load_params, section

TRAIN = "data/split/train.jsonl"
VAL = "data/split/val.jsonl"
TEACHER = Path("models/train/adapter")
CACHE = Path("data/distill/teacher")


def main() -> None:
    summary = build_teacher_cache(list(read_jsonl(TRAIN)), list(read_jsonl(VAL)), section(load_params(), "distill"),
                                  TEACHER, CACHE, TRAIN)
    if summary["mode"] == "online":
        print("teacher: distill.teacher.mode is online, nothing cached")
        return
    for split, info in summary["splits"].items():
        mass = info["mass_in_top_k"]
        print(f"teacher: {split}: {info['samples']} samples, {info['tokens']} completion tokens, "
              f"top-{summary['top_k']} at T={summary['temperature']}, {info['bytes'] / 2**20:.2f} MiB"
              + (f", mean mass in top-k {mass['mean']}" if mass else ""))


if __name__ == "__main__":
    run_stage("teacher", main)
