"""train: LoRA / QLoRA / full fine-tuning of the `model:` preset on the train split, validated on val.

Outputs: models/train/adapter/ (PEFT adapter, tokenizer, prompt manifest, model card), metrics/train.json,
metrics/train/ (DVCLive loss curves). Checkpoints in models/train/checkpoints/ survive an
interrupted run, so the next `dvc repro` resumes; they are removed once training finishes.
"""

from pathlib import Path

from koraft.card import write_card
from koraft.cli import run_stage
from koraft.jsonl import read_jsonl, write_json
from koraft.params import load_params, section
from koraft.train import TrainPaths, train

TRAIN = "data/split/train.jsonl"
VAL = "data/split/val.jsonl"
METRICS = "metrics/train.json"
PATHS = TrainPaths(adapter=Path("models/train/adapter"), checkpoints=Path("models/train/checkpoints"),
                   plots=Path("metrics/train"))


def main() -> None:
    params = load_params()
    metrics = train(list(read_jsonl(TRAIN)), list(read_jsonl(VAL)), section(params, "model"),
                    section(params, "train"), PATHS, TRAIN)
    write_json(METRICS, metrics)
    write_card(PATHS.adapter, metrics, section(params, "train"), TRAIN)
    samples = metrics["samples"]["train"]
    print(f"train: {metrics['steps']} steps, eval loss {metrics['loss']['eval_final']} "
          f"(best {metrics['loss']['eval_best']} at step {metrics['loss']['eval_best_step']}), "
          f"{samples['samples']}/{samples['records']} samples, {samples['samples_trimmed']} trimmed, "
          f"{samples['documents_dropped']} documents dropped, {samples['samples_skipped']} skipped")


if __name__ == "__main__":
    run_stage("train", main)
