"""distill: logit distillation of the fine-tuned teacher (models/train/adapter) into distill.student.

Outputs: models/distill/student/ (adapter or full weights, tokenizer, manifest, model card), metrics/distill.json,
metrics/distill/ (DVCLive curves: total, CE and KD losses). Offline mode reads the teacher stage's
cache; online mode runs the teacher every step. With distill.launcher: accelerate this script
starts `accelerate launch` on itself (see koraft.launch).
"""

from pathlib import Path

from koraft.card import write_card
from koraft.cli import run_stage
from koraft.distill import DistillPaths, distill
from koraft.jsonl import read_jsonl, write_json
from koraft.launch import launched_elsewhere
from koraft.params import load_params, section
from koraft.train import TrainPaths

TRAIN = "data/split/train.jsonl"
VAL = "data/split/val.jsonl"
METRICS = "metrics/distill.json"
PATHS = DistillPaths(teacher=Path("models/train/adapter"), cache=Path("data/distill/teacher"),
                     student=TrainPaths(adapter=Path("models/distill/student"),
                                        checkpoints=Path("checkpoints/distill"), plots=Path("metrics/distill")))


def main() -> None:
    settings = section(load_params(), "distill")
    if launched_elsewhere(settings, "distill", __file__):
        return
    metrics = distill(list(read_jsonl(TRAIN)), list(read_jsonl(VAL)), settings, PATHS, TRAIN)
    if metrics is None:  # not rank 0
        return
    write_json(METRICS, metrics)
    write_card(PATHS.student.adapter, metrics, settings, TRAIN)
    loss, agreement = metrics["loss"], metrics["agreement"]
    print(f"distill: {metrics['teacher']['model']} -> {metrics['student']['preset'] or metrics['student']['source']} "
          f"({metrics['teacher']['mode']}), {metrics['steps']} steps, eval loss {loss['eval_final']} "
          f"(CE {loss['eval_ce_final']}, KD {loss['eval_kd_final']}), top-1 agreement with the teacher "
          f"{agreement['before']} -> {agreement['after']} on {agreement['tokens']} val tokens")


if __name__ == "__main__":
    run_stage("distill", main)
