"""train: LoRA / QLoRA / full fine-tuning of the `model:` preset on the train split, validated on val.

Outputs: the adapter folder (PEFT adapter, tokenizer, prompt manifest, model card), the metrics file and
DVCLive loss curves. Checkpoints survive an interrupted run, so the next `dvc repro` resumes; they are
removed once training finishes. With train.launcher: accelerate this script starts `accelerate launch`
on itself (see koraft.training.launch).
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl, write_json
from koraft.models.card import write_card
from koraft.training.config import load_train
from koraft.training.launch import launched_elsewhere
from koraft.training.train import TrainPaths, train

OPTIONS = ("train", "val", "base_models", "adapter", "checkpoints", "plots", "metrics", "cost")


def main() -> None:
    args = stage_paths("train", *OPTIONS)
    settings = load_train(load_params())  # the model and train sections, with the top-level seed
    if launched_elsewhere(settings.launcher, settings.accelerate, "train", "stages.train"):
        return
    paths = TrainPaths(adapter=args.adapter, checkpoints=args.checkpoints, plots=args.plots,
                       tiny_models=args.base_models)
    metrics = train(list(read_jsonl(args.train)), list(read_jsonl(args.val)), settings, paths, str(args.train))
    if metrics is None:  # not rank 0: rank 0 writes the metrics and the card
        return
    write_json(args.cost, metrics.pop("cost"))  # timings differ run to run: kept out of the compared metrics
    write_json(args.metrics, metrics)
    write_card(paths.adapter, metrics, settings, str(args.train))
    samples = metrics["samples"]["train"]
    print(f"train: {metrics['steps']} steps, eval loss {metrics['loss']['eval_final']} "
          f"(best {metrics['loss']['eval_best']} at step {metrics['loss']['eval_best_step']}), "
          f"{samples['samples']}/{samples['records']} samples, {samples['samples_trimmed']} trimmed, "
          f"{samples['documents_dropped']} documents dropped, {samples['samples_skipped']} skipped")


if __name__ == "__main__":
    run_stage("train", main)
