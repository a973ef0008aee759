"""distill: logit distillation of the fine-tuned teacher (the train stage's adapter) into distill.student.

Outputs: the student folder (adapter or full weights, tokenizer, manifest, model card), the metrics file
and DVCLive curves (total, CE and KD losses). Offline mode reads the teacher stage's cache; online mode
runs the teacher every step. With launcher: accelerate this script starts `accelerate launch` on itself.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl, write_json
from koraft.models.card import write_card
from koraft.training.config import load_distill
from koraft.training.distill import DistillPaths, distill
from koraft.training.launch import launched_elsewhere
from koraft.training.train import TrainPaths

OPTIONS = ("train", "val", "base_models", "teacher", "cache", "student", "checkpoints", "plots", "metrics", "cost")


def main() -> None:
    args = stage_paths("distill", *OPTIONS)
    settings = load_distill(load_params())
    if launched_elsewhere(settings.training.launcher, settings.training.accelerate, "distill", "stages.distill"):
        return
    paths = DistillPaths(teacher=args.teacher, cache=args.cache,
                         student=TrainPaths(adapter=args.student, checkpoints=args.checkpoints, plots=args.plots,
                                            tiny_models=args.base_models))
    metrics = distill(list(read_jsonl(args.train)), list(read_jsonl(args.val)), settings, paths, str(args.train))
    if metrics is None:  # not rank 0
        return
    write_json(args.cost, metrics.pop("cost"))  # timings differ run to run: kept out of the compared metrics
    write_json(args.metrics, metrics)
    write_card(paths.student.adapter, metrics, settings.training, str(args.train))
    loss, agreement = metrics["loss"], metrics["agreement"]
    print(f"distill: {metrics['teacher']['model']} -> {metrics['student']['preset'] or metrics['student']['source']} "
          f"({metrics['teacher']['mode']}), {metrics['steps']} steps, eval loss {loss['eval_final']} "
          f"(CE {loss['eval_ce_final']}, KD {loss['eval_kd_final']}), top-1 agreement with the teacher "
          f"{agreement['before']} -> {agreement['after']} on {agreement['tokens']} val tokens")


if __name__ == "__main__":
    run_stage("distill", main)
