"""benchmark: lm-evaluation-harness tasks on the model variants (off unless benchmark.enabled).

Output: metrics/benchmark.json, per task the primary metric of each variant with its standard error, the
fine-tuned - base (and distilled) changes, the tasks that could not run and why, and a warning per task
that dropped by more than benchmark.z standard errors. Switched off, it records just that.
"""

from koraft.benchmark.config import load_benchmark
from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import write_json

OPTIONS = ("base_models", "adapter", "preferred", "student", "tasks", "metrics")


def main() -> None:
    args = stage_paths("benchmark", *OPTIONS)
    settings = load_benchmark(load_params())
    if settings is None:
        write_json(args.metrics, {"enabled": False})
        print("benchmark: off (benchmark.enabled: false)")
        return
    from koraft.benchmark.harness import run_benchmark

    trained = {"finetuned": (args.adapter, "train"), "preferred": (args.preferred, "prefer"),
               "distilled": (args.student, "distill")}
    report = run_benchmark(settings, args.base_models, trained, [args.tasks])
    write_json(args.metrics, {"enabled": True, **report})
    for task, by_variant in report["tasks"].items():
        values = ", ".join(f"{name} {entry['metric']} {entry['value']}" for name, entry in by_variant.items()
                           if "metric" in entry)
        print(f"benchmark: {task}: {values}")
    for task, reason in report["unavailable"].items():
        print(f"benchmark: {task}: not run: {reason}")
    for warning in report.get("warnings", []):
        print(f"benchmark: warning: {warning}")


if __name__ == "__main__":
    run_stage("benchmark", main)
