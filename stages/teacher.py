"""teacher: the fine-tuned teacher's top-k log-probs over the train and val completions (offline distillation).

Output: the cache folder ({train,val}.safetensors and manifest.json). Computed once per teacher, data and
temperature, then reused by every student run (`dvc exp run -S distill.student...` reruns only distill).
With distill.teacher.mode: online it writes just the manifest.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl
from koraft.training.config import load_distill
from koraft.training.distill import build_teacher_cache


def main() -> None:
    args = stage_paths("teacher", "train", "val", "teacher", "out")
    settings = load_distill(load_params())
    summary = build_teacher_cache(list(read_jsonl(args.train)), list(read_jsonl(args.val)), settings,
                                  args.teacher, args.out, str(args.train))
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
