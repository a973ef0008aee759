"""train: LoRA / QLoRA / full fine-tuning of the `model:` preset on the train split, validated on val.

Outputs: models/train/adapter/ (PEFT adapter, tokenizer, prompt manifest, model card), metrics/train.json,
metrics/train/ (DVCLive loss curves). Checkpoints in checkpoints/train/ survive an
interrupted run, so the next `dvc repro` resumes; they are removed once training finishes.
With train.launcher: accelerate this script starts `accelerate launch` on itself (see koraft.launch).
"""

from pathlib import Path

from koraft.card import write_card
from koraft.cli import run_stage
from koraft.jsonl import read_jsonl, write_json
from koraft.launch import launched_elsewhere
from koraft.params import load_params, section
from koraft.train import TrainPaths, train

TRAIN = "data/split/train.jsonl"
VAL = "data/split/val.jsonl"
METRICS = "metrics/train.json"
PATHS = TrainPaths(adapter=Path("models/train/adapter"), checkpoints=Path("checkpoints/train"),
                   plots=Path("metrics/train"))


def main() -> None:
    params = load_params()
    if launched_elsewhere(section(params, "train"), "train", __file__):
        return
    metrics = train(list(read_jsonl(TRAIN)), list(read_jsonl(VAL)), section(params, "model"),
                    section(params, "train"), PATHS, TRAIN)
    if metrics is None:  # not rank 0: rank 0 writes the metrics and the card
        return
    write_json(METRICS, metrics)
    write_card(PATHS.adapter, metrics, section(params, "train"), TRAIN)
    samples = metrics["samples"]["train"]
    print(f"train: {metrics['steps']} steps, eval loss {metrics['loss']['eval_final']} "
          f"(best {metrics['loss']['eval_best']} at step {metrics['loss']['eval_best_step']}), "
          f"{samples['samples']}/{samples['records']} samples, {samples['samples_trimmed']} trimmed, "
          f"{samples['documents_dropped']} documents dropped, {samples['samples_skipped']} skipped")


if __name__ == "__main__":
    run_stage("train", main)
