"""The benchmark section of params.yaml, checked into BenchmarkSettings before the harness or a model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koraft.core.config import check_number, check_seed, reject_unknown_keys, section
from koraft.core.errors import ParamError

KEYS = {"enabled", "tasks", "variants", "limit", "num_fewshot", "batch_size", "z"}
VARIANTS = ("base", "finetuned", "preferred", "student_base", "distilled")


@dataclass(frozen=True)
class BenchmarkSettings:
    tasks: tuple[str, ...]  # harness task (or group) names
    variants: tuple[str, ...]  # model variants, in VARIANTS order
    limit: int | None  # examples per task; None: all
    num_fewshot: int
    batch_size: int
    z: float  # a drop counts when it exceeds z standard errors of the difference
    seed: int  # the top-level seed, for the harness's own seeds (few-shot sampling among them)
    model: dict[str, Any]  # the `model:` section: the base variant
    student: dict[str, Any] | None  # distill.student, when student_base is listed
    system_prompt: str


def load_benchmark(params: dict[str, Any]) -> BenchmarkSettings | None:
    """The checked settings, or None when the stage is switched off (the default)."""
    settings = section(params, "benchmark")
    reject_unknown_keys(settings, KEYS, "benchmark")
    if not isinstance(settings.get("enabled"), bool):
        raise ParamError("benchmark.enabled", f"must be true or false, got {settings.get('enabled')!r}")
    if not settings["enabled"]:
        return None
    tasks, variants = settings.get("tasks"), settings.get("variants")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks) \
            or len(set(tasks)) != len(tasks):
        raise ParamError("benchmark.tasks", f"a list of distinct lm-evaluation-harness task names, got {tasks!r}")
    if not isinstance(variants, list) or not variants or len(set(variants)) != len(variants) or any(
            name not in VARIANTS for name in variants):
        raise ParamError("benchmark.variants", f"a list of distinct model variants ({', '.join(VARIANTS)}), "
                                               f"got {variants!r}")
    if settings.get("limit") is not None:
        check_number(settings, "limit", "benchmark", 1, 10**9, integer=True)
    check_number(settings, "num_fewshot", "benchmark", 0, 100, integer=True)
    check_number(settings, "batch_size", "benchmark", 1, 4096, integer=True)
    check_number(settings, "z", "benchmark", 0.0, 10.0)
    model = section(params, "model")
    student = dict(section(section(params, "distill"), "student", "distill.")) if "student_base" in variants else None
    return BenchmarkSettings(
        tasks=tuple(tasks), variants=tuple(name for name in VARIANTS if name in variants), limit=settings.get("limit"),
        num_fewshot=settings["num_fewshot"], batch_size=settings["batch_size"], z=float(settings["z"]),
        seed=check_seed(params), model=dict(model), student=student, system_prompt=model.get("system_prompt", ""))
