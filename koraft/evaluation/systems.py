"""What the evaluation's systems hand to scoring: their raw outputs, the documents their prompts showed, and cost.

Model variants (koraft.evaluation.variants), served GGUFs and endpoints (koraft.evaluation.served) and a
predictions file each become a SystemOutput; scoring reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvalPaths:
    adapter: Path  # the train stage's output
    student: Path  # the distill stage's output
    tiny_models: Path  # the base stage's output
    predictions: Path  # the folder eval.predictions_file must lie in
    exports: Path | None = None  # the export stage's output, for the served variant
    judge_calls: Path | None = None  # the judge's call cache (kept between runs)
    preferred: Path | None = None  # the prefer stage's adapter


@dataclass
class SystemOutput:
    """One system's raw answers to the scored records, and what producing them cost."""

    outputs: dict[str, str]  # record id -> raw output
    documents: dict[str, list[str]] = field(default_factory=dict)  # record id -> documents the fitted prompt showed
    stopped: dict[str, bool] = field(default_factory=dict)
    new_tokens: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    unfit: list[dict[str, Any]] = field(default_factory=list)  # id and reason: scored as failures
    prompts: dict[str, Any] | None = None  # how the prompts were fitted
    cost: dict[str, Any] | None = None
    failures: dict[str, str] | None = None  # an endpoint's failed requests: record id -> reason
    compare_to: str | None = None  # the variant an endpoint's parity is measured against
    long_targets: int | None = None  # test targets longer than max_new_tokens: they cannot be generated whole
    conditions: dict[str, SystemOutput] = field(default_factory=dict)  # test condition -> its answers
    perplexity: dict[str, Any] = field(default_factory=dict)  # held-out text source -> its TokenLosses
