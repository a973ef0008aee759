"""lm-evaluation-harness, in-process, on each model variant: did fine-tuning cost the model general ability?

The harness (pinned in requirements.txt) scores each task; koraft loads every variant as evaluate does
(koraft.evaluation.loading: the base model, + the LoRA adapter, the distilled student) and hands it to the
harness's HFLM as a loaded model, so QLoRA adapters and the packaged Gemma work as they train. Each task's
dataset is fetched first, task by task: one that cannot be had (offline, with HF_HUB_OFFLINE=1, or an
unknown name) is one line in `unavailable`, and the other tasks still run. Tasks over local files work
offline: koraft's own (koraft.benchmark.tasks), and the harness's YAML tasks in the folder the stage names.

For each task the primary metric (acc, else acc_norm, exact_match, f1, mcc) is reported per variant with
the harness's standard error, and each comparison (fine-tuned - base, distilled - base, distilled -
student base) with the standard error of the difference, sqrt(se_a^2 + se_b^2): the two runs see the same
examples, so this overstates the noise of a paired difference, and a flagged drop is a real one.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

from koraft.benchmark.config import BenchmarkSettings

PRIMARY = ("acc", "acc_norm", "exact_match", "f1", "mcc")
COMPARISONS = {"finetuned_vs_base": ("base", "finetuned"), "preferred_vs_finetuned": ("finetuned", "preferred"),
               "distilled_vs_base": ("base", "distilled"),
               "distilled_vs_student_base": ("student_base", "distilled")}


def task_manager(folders: list[Path]):
    """The harness's task index with the YAML tasks of any extra task folders."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(folder) for folder in folders if folder.is_dir()] or None)


def fetch_tasks(tasks: tuple[str, ...], manager) -> tuple[list[str | dict[str, Any]], dict[str, str]]:
    """(the tasks whose data loaded, by name or, for koraft's own, config; task -> one line on why it did not).
    Each task is built on its own, so one task that cannot be had stops nothing else."""
    from lm_eval.tasks import get_task_dict

    from koraft.benchmark.tasks import shipped_tasks

    shipped = shipped_tasks()
    available, unavailable = [], {}
    for task in tasks:
        if task not in shipped and task not in manager.all_tasks:
            unavailable[task] = "no such task in lm-evaluation-harness or the task folders"
            continue
        task = shipped.get(task, task)
        try:
            get_task_dict([task], manager)
        except Exception as exc:  # noqa: BLE001 - a hub error, a missing file, a bad YAML: that task's one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            unavailable[task if isinstance(task, str) else task["task"]] = f"{type(exc).__name__}: {first[:200]}"
            continue
        available.append(task)
    return available, unavailable


def primary_metric(row: dict[str, Any]) -> tuple[str, float, float | None] | None:
    """(metric, value, standard error or None) of a harness result row."""
    for metric in PRIMARY:
        value = row.get(f"{metric},none")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            stderr = row.get(f"{metric}_stderr,none")
            return metric, float(value), float(stderr) if isinstance(stderr, (int, float)) else None
    return None


def run_harness(model, tokenizer, tasks: list[str | dict[str, Any]], settings: BenchmarkSettings, manager
                ) -> dict[str, Any]:
    """The harness's `results` and `n-samples` for one loaded model."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    output = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=settings.num_fewshot, limit=settings.limit, task_manager=manager,
        log_samples=False, bootstrap_iters=1000, random_seed=settings.seed, numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    return {"results": output["results"], "n-samples": output.get("n-samples", {})}


def task_scores(outputs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Task -> variant -> {metric, value, stderr, samples}, for every row the harness reported."""
    scores: dict[str, dict[str, Any]] = {}
    for variant, output in outputs.items():
        for task, row in output["results"].items():
            found = primary_metric(row)
            if found is None:
                continue
            metric, value, stderr = found
            samples = output["n-samples"].get(task, {}).get("effective")
            scores.setdefault(task, {})[variant] = {"metric": metric, "value": round(value, 4),
                                                    "stderr": round(stderr, 4) if stderr is not None else None,
                                                    **({"samples": samples} if samples is not None else {})}
    return scores


def compare(scores: dict[str, dict[str, Any]], z: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per task, each comparison's change and its standard error; and one line per drop beyond z of them."""
    warnings = []
    for task, by_variant in scores.items():
        for label, (before, after) in COMPARISONS.items():
            if before not in by_variant or after not in by_variant:
                continue
            a, b = by_variant[before], by_variant[after]
            delta = b["value"] - a["value"]
            stderr = math.hypot(a["stderr"], b["stderr"]) if a["stderr"] is not None and b["stderr"] is not None \
                else None
            dropped = stderr is not None and delta < -z * stderr
            by_variant[label] = {"delta": round(delta, 4), "stderr": round(stderr, 4) if stderr is not None else None,
                                 "dropped": dropped}
            if dropped:
                warnings.append(f"{task}: {after} {b['metric']} {b['value']} against {before} {a['value']} "
                                f"({delta:+.4f}, more than {z:g} standard errors of {stderr:.4f})")
    return scores, warnings


def run_benchmark(settings: BenchmarkSettings, base_models: Path, trained: dict[str, tuple[Path, str]],
                  task_folders: list[Path]) -> dict[str, Any]:
    """metrics/benchmark.json: per task and variant the primary metric, the comparisons, what could not run."""
    import lm_eval

    from koraft.evaluation.loading import load_named_variant

    manager = task_manager(task_folders)
    available, unavailable = fetch_tasks(settings.tasks, manager)
    outputs = {}
    if available:
        for name in settings.variants:
            model, tokenizer, *_ = load_named_variant(
                name, settings.model, settings.student, settings.system_prompt, base_models, trained,
                f"benchmark.variants ({name})", f"drop {name} from benchmark.variants")
            outputs[name] = run_harness(model, tokenizer, available, settings, manager)
            del model
            gc.collect()
    scores, warnings = compare(task_scores(outputs), settings.z)
    return {"harness": f"lm-eval {lm_eval.__version__}", "limit": settings.limit, "num_fewshot": settings.num_fewshot,
            "variants": list(settings.variants), "tasks": scores, "unavailable": unavailable,
            **({"warnings": warnings} if warnings else {})}
